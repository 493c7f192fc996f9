// Vector arithmetic on flattened tensors.
//
// Dimensions: n = number of elements; for the channel broadcast, the tensor is (N, C, H, W) with
// C = params.channels and inner = H * W = params.inner.
//
// include: shared/common.wgsl
// include: shared/arith.wgsl

alias Value = f32;

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

// out (N, C, H, W) = a (N, C, H, W) + b (C) broadcast over N, H, W
@compute @workgroup_size(256)
fn add_channel_bias(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let c = (i / params.inner) % params.channels;
    out[i] = a[i] + b[c];
}

// out (copies * inner) = a (inner) repeated: out[i] = a[i mod inner]. Classifier-free guidance runs the
// conditional and the unconditional pass as one batch of twice the samples.
@compute @workgroup_size(256)
fn repeat(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = a[i % params.inner];
}

// out (n) = alpha * a[0 .. n] + beta * a[n .. 2n]: the two halves of a (2n) combined. Classifier-free guidance
// (Ho & Salimans 2022): eps = (1 + w) eps(x, c) - w eps(x, null) with alpha = 1 + w, beta = -w.
@compute @workgroup_size(256)
fn combine_halves(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    out[i] = params.alpha * a[i] + params.beta * a[i + params.n];
}
