// Channel concatenation (torch.cat([a, b], dim=1)) and its backward, the split of the gradient.
//
// Dimensions: N batch, Ca and Cb channels of the two parts, plane = H*W pixels per channel.
//   out[n, c, p] = a[n, c, p] for c < Ca, b[n, c - Ca, p] otherwise      out: (N, Ca + Cb, H, W)
//   da[n, c, p] = dout[n, c, p],  db[n, c, p] = dout[n, Ca + c, p]
//
// include: shared/common.wgsl

// Keep in sync with `ConcatParams` in src/kernels/concat.rs.
struct Params {
    batch: u32,       // N
    channels_a: u32,  // Ca
    channels_b: u32,  // Cb
    plane: u32,       // H*W
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // (N, Ca + Cb, H, W)
@group(0) @binding(2) var<storage, read_write> da: array<f32>;   // (N, Ca, H, W) gradient of a
@group(0) @binding(3) var<storage, read_write> db: array<f32>;   // (N, Cb, H, W) gradient of b
@group(0) @binding(4) var<storage, read> a: array<f32>;          // (N, Ca, H, W)
@group(0) @binding(5) var<storage, read> b: array<f32>;          // (N, Cb, H, W)
@group(0) @binding(6) var<storage, read> dout: array<f32>;       // (N, Ca + Cb, H, W) upstream gradient

// One thread per element of out (or dout): (n, c, p) of the concatenated tensor.
@compute @workgroup_size(256)
fn concat_channels_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    let channels = params.channels_a + params.channels_b;
    if i >= params.batch * channels * params.plane { return; }
    let n = i / (channels * params.plane);
    let c = (i / params.plane) % channels;
    let p = i % params.plane;
    if c < params.channels_a {
        out[i] = a[(n * params.channels_a + c) * params.plane + p];
    } else {
        out[i] = b[(n * params.channels_b + c - params.channels_a) * params.plane + p];
    }
}

@compute @workgroup_size(256)
fn concat_channels_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    let channels = params.channels_a + params.channels_b;
    if i >= params.batch * channels * params.plane { return; }
    let n = i / (channels * params.plane);
    let c = (i / params.plane) % channels;
    let p = i % params.plane;
    if c < params.channels_a {
        da[(n * params.channels_a + c) * params.plane + p] = dout[i];
    } else {
        db[(n * params.channels_b + c - params.channels_a) * params.plane + p] = dout[i];
    }
}
