// The activations of shaders/activation.wgsl (one element per invocation, `alias Value = f32`) and
// shaders/activation_vec4.wgsl (four, `alias Value = vec4<f32>`), forward and backward: the same operations per
// component, so the same bits. The including module declares `alias Value`; params.n counts Values.

// Keep in sync with `ActivationParams` in src/kernels/activation.rs.
struct Params {
    n: u32,
    slope: f32,  // LeakyReLU's negative slope
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<Value>;  // (n) y, or dx for backward
@group(0) @binding(2) var<storage, read> x: array<Value>;          // (n) forward input
@group(0) @binding(3) var<storage, read> dout: array<Value>;       // (n) upstream gradient dy

fn sigmoid(v: Value) -> Value {
    // Stable for both signs: the value selected takes exp of a non-positive number only, which never overflows
    // (the other, which may be inf or NaN, is discarded).
    let e = exp(v);
    return select(e / (1.0 + e), 1.0 / (1.0 + exp(-v)), v >= Value(0.0));
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = max(x[i], Value(0.0));
}

@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    // d/dx max(x, 0) = 1 for x > 0, else 0 (PyTorch's choice at 0).
    out[i] = select(Value(0.0), dout[i], x[i] > Value(0.0));
}

@compute @workgroup_size(256)
fn leaky_relu_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let v = x[i];
    out[i] = select(params.slope * v, v, v > Value(0.0));
}

@compute @workgroup_size(256)
fn leaky_relu_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = dout[i] * select(Value(params.slope), Value(1.0), x[i] > Value(0.0));
}

@compute @workgroup_size(256)
fn sigmoid_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = sigmoid(x[i]);
}

@compute @workgroup_size(256)
fn sigmoid_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    // d/dx s(x) = s(x) (1 - s(x))
    let s = sigmoid(x[i]);
    out[i] = dout[i] * s * (1.0 - s);
}

@compute @workgroup_size(256)
fn tanh_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = tanh(x[i]);
}

@compute @workgroup_size(256)
fn tanh_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    // d/dx tanh(x) = 1 - tanh(x)^2
    let t = tanh(x[i]);
    out[i] = dout[i] * (1.0 - t * t);
}

@compute @workgroup_size(256)
fn silu_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let v = x[i];
    out[i] = v * sigmoid(v);
}

@compute @workgroup_size(256)
fn silu_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    // d/dx x s(x) = s(x) + x s(x) (1 - s(x)) = s(x) (1 + x (1 - s(x)))
    let v = x[i];
    let s = sigmoid(v);
    out[i] = dout[i] * s * (1.0 + v * (1.0 - s));
}
