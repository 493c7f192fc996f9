// Resampling by 2 along height and width (PyTorch's MaxPool2d(2) and Upsample(scale_factor=2, mode="nearest")),
// forward and backward side by side.
//
// Dimensions: P = N*C planes (batch times channels), H x W input plane, Ho x Wo output plane.
// max_pool2d (kernel 2, stride 2): Ho = H / 2, Wo = W / 2, rounded down (an odd last row or column is dropped).
//   y[p, oh, ow]  = max_{a, b in {0, 1}} x[p, 2 oh + a, 2 ow + b]
//   dx[p, ih, iw] = dy[p, ih / 2, iw / 2] if (ih, iw) is its window's first maximum in row-major window order
//                   (PyTorch's tie rule), else 0; also 0 in a dropped row or column.
// upsample_nearest2d (scale 2): Ho = 2 H, Wo = 2 W.
//   y[p, oh, ow]  = x[p, oh / 2, ow / 2]
//   dx[p, ih, iw] = sum_{a, b in {0, 1}} dy[p, 2 ih + a, 2 iw + b]
// Every kernel is a gather, one thread per element it writes: no atomics, a fixed summation order.
//
// include: shared/common.wgsl

// Keep in sync with `ResampleParams` in src/kernels/resample.rs.
struct Params {
    planes: u32,      // P = N*C
    in_height: u32,   // H
    in_width: u32,    // W
    out_height: u32,  // Ho
    out_width: u32,   // Wo
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;   // (P, Ho, Wo) forward output
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;  // (P, H, W) input gradient
@group(0) @binding(3) var<storage, read> x: array<f32>;         // (P, H, W) forward input
@group(0) @binding(4) var<storage, read> dy: array<f32>;        // (P, Ho, Wo) upstream gradient

// Output element i as (plane p, row oh, column ow).
fn output_pixel(i: u32) -> vec3<u32> {
    let plane_out = params.out_height * params.out_width;
    return vec3<u32>(i / plane_out, (i % plane_out) / params.out_width, i % params.out_width);
}

// The 2x2 window at (oh, ow) of plane p: the row-major index (0..3) of its first maximum, and that value.
struct WindowMax {
    index: u32,
    value: f32,
}

fn window_max(p: u32, oh: u32, ow: u32) -> WindowMax {
    let top = (p * params.in_height + 2u * oh) * params.in_width + 2u * ow;
    let bottom = top + params.in_width;
    let values = vec4<f32>(x[top], x[top + 1u], x[bottom], x[bottom + 1u]);
    // Strictly greater: on a tie the earlier element keeps the gradient. (Selects, not a dynamic index into an
    // array, which CPU drivers keep in memory.)
    var best = WindowMax(0u, values.x);
    if values.y > best.value { best = WindowMax(1u, values.y); }
    if values.z > best.value { best = WindowMax(2u, values.z); }
    if values.w > best.value { best = WindowMax(3u, values.w); }
    return best;
}

@compute @workgroup_size(256)
fn max_pool2d_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.planes * params.out_height * params.out_width { return; }
    let at = output_pixel(i);
    let p = at.x;
    let oh = at.y;
    let ow = at.z;
    y[i] = window_max(p, oh, ow).value;
}

@compute @workgroup_size(256)
fn max_pool2d_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    let plane_in = params.in_height * params.in_width;
    if i >= params.planes * plane_in { return; }
    let p = i / plane_in;
    let ih = (i % plane_in) / params.in_width;
    let iw = i % params.in_width;
    let oh = ih / 2u;
    let ow = iw / 2u;
    var gradient = 0.0;
    if oh < params.out_height && ow < params.out_width {
        // d max / d x_k = 1 for the first maximum k, 0 for the others.
        if window_max(p, oh, ow).index == (ih % 2u) * 2u + iw % 2u {
            gradient = dy[(p * params.out_height + oh) * params.out_width + ow];
        }
    }
    dx[i] = gradient;
}

// max_pool2d_backward with one thread per window, writing its four dx values, for even H and W (no dropped row or
// column to zero): each window's maximum is found once instead of by each of its four pixels. CPU drivers take it.
@compute @workgroup_size(256)
fn max_pool2d_backward_windows(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = linear_index(id, groups);
    if i >= params.planes * params.out_height * params.out_width { return; }
    let at = output_pixel(i);
    let p = at.x;
    let oh = at.y;
    let ow = at.z;
    let best = window_max(p, oh, ow).index;
    let g = dy[i];
    let top = (p * params.in_height + 2u * oh) * params.in_width + 2u * ow;
    let bottom = top + params.in_width;
    dx[top] = select(0.0, g, best == 0u);
    dx[top + 1u] = select(0.0, g, best == 1u);
    dx[bottom] = select(0.0, g, best == 2u);
    dx[bottom + 1u] = select(0.0, g, best == 3u);
}

@compute @workgroup_size(256)
fn upsample_nearest2d_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = linear_index(id, groups);
    if i >= params.planes * params.out_height * params.out_width { return; }
    let at = output_pixel(i);
    let p = at.x;
    let oh = at.y;
    let ow = at.z;
    y[i] = x[(p * params.in_height + oh / 2u) * params.in_width + ow / 2u];
}

@compute @workgroup_size(256)
fn upsample_nearest2d_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = linear_index(id, groups);
    let plane_in = params.in_height * params.in_width;
    if i >= params.planes * plane_in { return; }
    let p = i / plane_in;
    let ih = (i % plane_in) / params.in_width;
    let iw = i % params.in_width;
    // Each input pixel was copied to the 2x2 block at (2 ih, 2 iw): its gradient is the block's sum.
    let top = (p * params.out_height + 2u * ih) * params.out_width + 2u * iw;
    let bottom = top + params.out_width;
    dx[i] = (dy[top] + dy[top + 1u]) + (dy[bottom] + dy[bottom + 1u]);
}
