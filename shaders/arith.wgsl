// Vector arithmetic on flattened tensors.
//
// Dimensions: n = number of elements; for the channel broadcast, the tensor is (N, C, H, W) with
// C = params.channels and inner = H * W = params.inner.
//
// include: shared/common.wgsl
// include: shared/arith.wgsl

alias Value = f32;

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
