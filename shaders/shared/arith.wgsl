// The elementwise kernels of shaders/arith.wgsl (one element per invocation, `alias Value = f32`) and
// shaders/arith_vec4.wgsl (four, `alias Value = vec4<f32>`): the same operations per component, so the same bits.
// The including module declares `alias Value`; params.n counts Values.

// Keep in sync with `ArithParams` in src/kernels/arith.rs.
struct Params {
    n: u32,
    channels: u32,
    inner: u32,
    _pad: u32,
    alpha: f32,
    beta: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<Value>;  // (n)
@group(0) @binding(2) var<storage, read> a: array<Value>;          // (n)
@group(0) @binding(3) var<storage, read> b: array<Value>;          // (n), or (C) for the channel broadcast

// out = a + b
@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = a[i] + b[i];
}

// out = alpha * a
@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = params.alpha * a[i];
}

// out = beta * out + alpha * a  (axpy with beta = 1; gradient accumulation)
@compute @workgroup_size(256)
fn axpy(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = params.beta * out[i] + params.alpha * a[i];
}

// out = a (a copy)
@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = a[i];
}

// out = alpha everywhere
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = Value(params.alpha);
}
