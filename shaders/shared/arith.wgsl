// The elementwise kernels of shaders/arith.wgsl (one element per invocation, `alias Value = f32`) and
// shaders/arith_vec4.wgsl (four, `alias Value = vec4<f32>`): the same operations per component, so the same bits.
// The including module declares params (with params.n counted in Values) and out, a, b as array<Value>.

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
