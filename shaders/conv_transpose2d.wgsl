// 2-D transposed convolution (PyTorch's ConvTranspose2d, NCHW, no output padding), forward and backward side by
// side.
//
// Dimensions: N batch, Ci input channels, H x W input image, Co output channels, KH x KW kernel, S stride and
// P padding (the same along height and width), Ho = (H - 1)*S - 2P + KH and Wo = (W - 1)*S - 2P + KW.
// The weight is [Ci, Co, KH, KW] (PyTorch's layout for the transposed convolution). Each input pixel scatters
// its weighted kernel into the output:
//   y[n, co, oh, ow] = bias[co] + sum over ci, kh, kw with ih*S - P + kh = oh and iw*S - P + kw = ow of
//                      x[n, ci, ih, iw] * w[ci, co, kh, kw]
// It is the input gradient of Conv2d(Co -> Ci) with the same weight, and its own input gradient is that Conv2d:
//   dx[n, ci, ih, iw] = sum_{co, kh, kw} dy[n, co, ih*S - P + kh, iw*S - P + kw] * w[ci, co, kh, kw]
//   dw[ci, co, kh, kw] = sum_{n, ih, iw} x[n, ci, ih, iw] * dy[n, co, ih*S - P + kh, iw*S - P + kw]
// (dy read as 0 outside the output). The bias gradient is conv2d_bias_backward of shaders/conv2d.wgsl.
//
// Implicit GEMM, as in shaders/conv2d.wgsl: C (M x NC) = A (M x K) * B (K x NC) with one operand gathered from an
// image tile by tile into workgroup memory.
//   forward          y : M = N*Ho*Wo rows (n, oh, ow), NC = Co,         K = Ci*KH*KW (ci, kh, kw)
//                        A[(n, oh, ow), (ci, kh, kw)] = x[n, ci, ih, iw] where ih*S - P + kh = oh, iw likewise
//                        (0 where no such whole ih, iw exists), B[(ci, kh, kw), co] = w[ci, co, kh, kw]
//   input_backward   dx: M = N*H*W rows (n, ih, iw),   NC = Ci,         K = Co*KH*KW (co, kh, kw)
//                        A = im2col(dy), B[(co, kh, kw), ci] = w[ci, co, kh, kw]
//   weight_backward  dw: M = Ci,                       NC = Co*KH*KW,   K = N*H*W (n, ih, iw)
//                        A[ci, (n, ih, iw)] = x[n, ci, ih, iw], B = im2col(dy)^T
// A workgroup computes one TILE_M x TILE_N tile of C; each of its 256 threads holds 4 x 4 outputs (rows
// tm + 16 i, columns tn + 16 j). K is walked in steps of TILE_K in increasing order: a fixed summation order.

// Keep in sync with `ConvTranspose2dParams` in src/kernels/conv_transpose2d.rs.
struct Params {
    batch: u32,         // N
    in_channels: u32,   // Ci
    in_height: u32,     // H
    in_width: u32,      // W
    out_channels: u32,  // Co
    out_height: u32,    // Ho
    out_width: u32,     // Wo
    kernel_h: u32,      // KH
    kernel_w: u32,      // KW
    stride: u32,        // S
    padding: u32,       // P
    has_bias: u32,      // 1 when the forward adds bias
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;   // (N, Co, Ho, Wo) forward output
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;  // (N, Ci, H, W) input gradient
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;  // [Ci, Co, KH, KW] weight gradient
@group(0) @binding(4) var<storage, read> x: array<f32>;         // (N, Ci, H, W) input
@group(0) @binding(5) var<storage, read> w: array<f32>;         // [Ci, Co, KH, KW] weight
@group(0) @binding(6) var<storage, read> bias: array<f32>;      // [Co] (one unused word when has_bias = 0)
@group(0) @binding(7) var<storage, read> dy: array<f32>;        // (N, Co, Ho, Wo) upstream gradient

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const THREADS: u32 = 256u;           // 16 x 16 threads, each 4 x 4 outputs
const LOADS: u32 = TILE_K * TILE_M / THREADS;  // elements of each tile one thread loads (TILE_M = TILE_N)

var<workgroup> tile_a: array<f32, 1024>;  // [TILE_K][TILE_M], A's tile transposed
var<workgroup> tile_b: array<f32, 1024>;  // [TILE_K][TILE_N]

// The first row and column of the C tile this workgroup computes (row tiles folded over x and z).
fn tile_origin(group: vec3<u32>, groups: vec3<u32>) -> vec2<u32> {
    return vec2<u32>((group.x + group.z * groups.x) * TILE_M, group.y * TILE_N);
}

// acc[i][j] += sum_kk tile_a[kk][tm + 16 i] * tile_b[kk][tn + 16 j], kk in increasing order.
fn multiply_tiles(local: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
    let tm = local % 16u;
    let tn = local / 16u;
    for (var kk = 0u; kk < TILE_K; kk++) {
        let ra = kk * TILE_M + tm;
        let a = vec4<f32>(tile_a[ra], tile_a[ra + 16u], tile_a[ra + 32u], tile_a[ra + 48u]);
        let rb = kk * TILE_N + tn;
        let b = vec4<f32>(tile_b[rb], tile_b[rb + 16u], tile_b[rb + 32u], tile_b[rb + 48u]);
        (*acc)[0] += a.x * b;
        (*acc)[1] += a.y * b;
        (*acc)[2] += a.z * b;
        (*acc)[3] += a.w * b;
    }
}

// im2col(dy)[(n, ih, iw), (co, kh, kw)] = dy[n, co, ih*S - P + kh, iw*S - P + kw], 0 outside the output or the
// matrix.
fn im2col_dy(row: u32, col: u32) -> f32 {
    let plane_in = params.in_height * params.in_width;
    let taps = params.kernel_h * params.kernel_w;
    if row >= params.batch * plane_in || col >= params.out_channels * taps {
        return 0.0;
    }
    let n = row / plane_in;
    let ih = (row % plane_in) / params.in_width;
    let iw = row % params.in_width;
    let co = col / taps;
    let kh = (col % taps) / params.kernel_w;
    let kw = col % params.kernel_w;
    let oh = i32(ih * params.stride + kh) - i32(params.padding);
    let ow = i32(iw * params.stride + kw) - i32(params.padding);
    if oh < 0 || ow < 0 || oh >= i32(params.out_height) || ow >= i32(params.out_width) {
        return 0.0;
    }
    return dy[((n * params.out_channels + co) * params.out_height + u32(oh)) * params.out_width + u32(ow)];
}

// y (N, Co, Ho, Wo) = A (N*Ho*Wo, Ci*KH*KW) * B (Ci*KH*KW, Co) + bias, A gathering x where ih*S - P + kh = oh.
@compute @workgroup_size(256)
fn conv_transpose2d_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let origin = tile_origin(group, groups);
    let plane_out = params.out_height * params.out_width;
    let rows = params.batch * plane_out;
    let taps = params.kernel_h * params.kernel_w;
    let k_total = params.in_channels * taps;
    if origin.x >= rows { return; }

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k_total; k0 += TILE_K) {
        for (var r = 0u; r < LOADS; r++) {
            let e = local + r * THREADS;
            let kk = e / TILE_M;
            let mm = e % TILE_M;
            let row = origin.x + mm;
            let k = k0 + kk;
            var a = 0.0;
            if row < rows && k < k_total {
                let n = row / plane_out;
                let oh = (row % plane_out) / params.out_width;
                let ow = row % params.out_width;
                let ci = k / taps;
                let kh = (k % taps) / params.kernel_w;
                let kw = k % params.kernel_w;
                // ih = (oh + P - kh) / S when that is a whole number inside the input.
                let th = i32(oh + params.padding) - i32(kh);
                let tw = i32(ow + params.padding) - i32(kw);
                let s = i32(params.stride);
                if th >= 0 && tw >= 0 && th % s == 0 && tw % s == 0 {
                    let ih = u32(th / s);
                    let iw = u32(tw / s);
                    if ih < params.in_height && iw < params.in_width {
                        a = x[((n * params.in_channels + ci) * params.in_height + ih) * params.in_width + iw];
                    }
                }
            }
            tile_a[e] = a;
            // B[(ci, kh, kw), co] = w[ci, co, kh, kw]
            let kb = e / TILE_N;
            let nn = e % TILE_N;
            let co = origin.y + nn;
            let kw_index = k0 + kb;
            var b = 0.0;
            if co < params.out_channels && kw_index < k_total {
                let ci = kw_index / taps;
                b = w[(ci * params.out_channels + co) * taps + kw_index % taps];
            }
            tile_b[e] = b;
        }
        workgroupBarrier();
        multiply_tiles(local, &acc);
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = origin.x + local % 16u + 16u * i;
        if row >= rows { continue; }
        let n = row / plane_out;
        let pixel = row % plane_out;
        for (var j = 0u; j < 4u; j++) {
            let co = origin.y + local / 16u + 16u * j;
            if co >= params.out_channels { continue; }
            var value = acc[i][j];
            if params.has_bias != 0u {
                value += bias[co];
            }
            y[(n * params.out_channels + co) * plane_out + pixel] = value;
        }
    }
}

// dx (N, Ci, H, W) = im2col(dy) (N*H*W, Co*KH*KW) * B (Co*KH*KW, Ci)
@compute @workgroup_size(256)
fn conv_transpose2d_input_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let origin = tile_origin(group, groups);
    let plane_in = params.in_height * params.in_width;
    let rows = params.batch * plane_in;
    let taps = params.kernel_h * params.kernel_w;
    let k_total = params.out_channels * taps;
    if origin.x >= rows { return; }

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k_total; k0 += TILE_K) {
        for (var r = 0u; r < LOADS; r++) {
            let e = local + r * THREADS;
            let kk = e / TILE_M;
            let mm = e % TILE_M;
            tile_a[e] = im2col_dy(origin.x + mm, k0 + kk);
            // B[(co, kh, kw), ci] = w[ci, co, kh, kw]: neighbouring threads read neighbouring taps of one ci.
            let nn = e / TILE_K;
            let kb = e % TILE_K;
            let ci = origin.y + nn;
            let k = k0 + kb;
            var b = 0.0;
            if ci < params.in_channels && k < k_total {
                b = w[ci * k_total + k];
            }
            tile_b[kb * TILE_N + nn] = b;
        }
        workgroupBarrier();
        multiply_tiles(local, &acc);
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = origin.x + local % 16u + 16u * i;
        if row >= rows { continue; }
        let n = row / plane_in;
        let pixel = row % plane_in;
        for (var j = 0u; j < 4u; j++) {
            let ci = origin.y + local / 16u + 16u * j;
            if ci >= params.in_channels { continue; }
            dx[(n * params.in_channels + ci) * plane_in + pixel] = acc[i][j];
        }
    }
}

// dw [Ci, Co*KH*KW] = x (Ci, N*H*W) * im2col(dy) (N*H*W, Co*KH*KW)
@compute @workgroup_size(256)
fn conv_transpose2d_weight_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let origin = tile_origin(group, groups);
    let plane_in = params.in_height * params.in_width;
    let rows = params.in_channels;
    let cols = params.out_channels * params.kernel_h * params.kernel_w;
    let k_total = params.batch * plane_in;
    if origin.x >= rows { return; }

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k_total; k0 += TILE_K) {
        for (var r = 0u; r < LOADS; r++) {
            let e = local + r * THREADS;
            // A[ci, (n, ih, iw)] = x[n, ci, ih, iw]: neighbouring threads read neighbouring pixels.
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            let ci = origin.x + mm;
            let k = k0 + kk;
            var a = 0.0;
            if ci < rows && k < k_total {
                a = x[((k / plane_in) * params.in_channels + ci) * plane_in + k % plane_in];
            }
            tile_a[kk * TILE_M + mm] = a;
            let kb = e / TILE_N;
            let nn = e % TILE_N;
            tile_b[e] = im2col_dy(k0 + kb, origin.y + nn);
        }
        workgroupBarrier();
        multiply_tiles(local, &acc);
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let ci = origin.x + local % 16u + 16u * i;
        if ci >= rows { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = origin.y + local / 16u + 16u * j;
            if col >= cols { continue; }
            dw[ci * cols + col] = acc[i][j];
        }
    }
}
