// 2-D convolution (PyTorch's Conv2d, NCHW, zero padding), forward and backward side by side.
//
// Dimensions: N batch, Ci input channels, H x W input image, Co output channels, KH x KW kernel, S stride and
// P padding (the same along height and width), Ho = (H + 2P - KH) / S + 1 and Wo = (W + 2P - KW) / S + 1.
//   y[n, co, oh, ow] = bias[co] + sum_{ci, kh, kw} x[n, ci, oh*S - P + kh, ow*S - P + kw] * w[co, ci, kh, kw]
// (x read as 0 outside the image).
//
// Implicit GEMM: each kernel is a matrix product C (M x NC) = A (M x K) * B (K x NC) in which one operand is the
// im2col matrix of an image. It is gathered tile by tile into workgroup memory and never stored.
//   forward          y : M = N*Ho*Wo rows (n, oh, ow), NC = Co,         K = Ci*KH*KW (ci, kh, kw)
//                        A = im2col(x), B[(ci, kh, kw), co] = w[co, ci, kh, kw]
//   input_backward   dx: M = N*H*W rows (n, ih, iw),   NC = Ci,         K = Co*KH*KW (co, kh, kw)
//                        A[(n, ih, iw), (co, kh, kw)] = dy[n, co, oh, ow] where oh*S - P + kh = ih, ow likewise
//                        (0 where no such whole oh, ow exists), B[(co, kh, kw), ci] = w[co, ci, kh, kw]
//   weight_backward  dw: M = Co,                       NC = Ci*KH*KW,   K = N*Ho*Wo (n, oh, ow)
//                        A[co, (n, oh, ow)] = dy[n, co, oh, ow], B = im2col(x)^T
// A workgroup computes one TILE_M x TILE_N tile of C; each of its 256 threads holds 4 x 4 outputs (rows
// tm + 16 i, columns tn + 16 j). K is walked in steps of TILE_K in increasing order, so every output is summed in
// a fixed order: results are bit-identical from run to run. The bias gradient is a workgroup tree reduction.
//
// include: shared/reduce.wgsl

// Keep in sync with `Conv2dParams` in src/kernels/conv2d.rs.
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
@group(0) @binding(1) var<storage, read_write> y: array<f32>;      // (N, Co, Ho, Wo) forward output
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;     // (N, Ci, H, W) input gradient
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;     // [Co, Ci, KH, KW] weight gradient
@group(0) @binding(4) var<storage, read_write> dbias: array<f32>;  // [Co] bias gradient
@group(0) @binding(5) var<storage, read> x: array<f32>;            // (N, Ci, H, W) input
@group(0) @binding(6) var<storage, read> w: array<f32>;            // [Co, Ci, KH, KW] weight
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // [Co] (one unused word when has_bias = 0)
@group(0) @binding(8) var<storage, read> dy: array<f32>;           // (N, Co, Ho, Wo) upstream gradient

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const THREADS: u32 = 256u;           // 16 x 16 threads, each 4 x 4 outputs
const LOADS: u32 = TILE_K * TILE_M / THREADS;  // elements of each tile one thread loads (TILE_M = TILE_N)

var<workgroup> tile_a: array<f32, 1024>;  // [TILE_K][TILE_M], A's tile transposed
var<workgroup> tile_b: array<f32, 1024>;  // [TILE_K][TILE_N]

// The first row and column of the C tile this workgroup computes. Row tiles are folded over x and z so that
// no grid dimension exceeds 65535 (see `gemm_grid` in src/kernels/conv2d.rs); column tiles run along y.
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

// im2col(x)[(n, oh, ow), (ci, kh, kw)] = x[n, ci, oh*S - P + kh, ow*S - P + kw], 0 outside the image or the matrix.
fn im2col_x(row: u32, col: u32) -> f32 {
    let plane_out = params.out_height * params.out_width;
    let taps = params.kernel_h * params.kernel_w;
    if row >= params.batch * plane_out || col >= params.in_channels * taps {
        return 0.0;
    }
    let n = row / plane_out;
    let oh = (row % plane_out) / params.out_width;
    let ow = row % params.out_width;
    let ci = col / taps;
    let kh = (col % taps) / params.kernel_w;
    let kw = col % params.kernel_w;
    let ih = i32(oh * params.stride + kh) - i32(params.padding);
    let iw = i32(ow * params.stride + kw) - i32(params.padding);
    if ih < 0 || iw < 0 || ih >= i32(params.in_height) || iw >= i32(params.in_width) {
        return 0.0;
    }
    return x[((n * params.in_channels + ci) * params.in_height + u32(ih)) * params.in_width + u32(iw)];
}

// y (N, Co, Ho, Wo) = im2col(x) (N*Ho*Wo, Ci*KH*KW) * w^T (Ci*KH*KW, Co) + bias
@compute @workgroup_size(256)
fn conv2d_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let origin = tile_origin(group, groups);
    let plane_out = params.out_height * params.out_width;
    let rows = params.batch * plane_out;
    let k_total = params.in_channels * params.kernel_h * params.kernel_w;
    if origin.x >= rows { return; }

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k_total; k0 += TILE_K) {
        for (var r = 0u; r < LOADS; r++) {
            let e = local + r * THREADS;
            let kk = e / TILE_M;
            let mm = e % TILE_M;
            tile_a[e] = im2col_x(origin.x + mm, k0 + kk);
            // B[k, co] = w[co, k]: neighbouring threads read neighbouring k of one output channel.
            let nn = e / TILE_K;
            let kb = e % TILE_K;
            let co = origin.y + nn;
            let k = k0 + kb;
            var value = 0.0;
            if co < params.out_channels && k < k_total {
                value = w[co * k_total + k];
            }
            tile_b[kb * TILE_N + nn] = value;
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

// dx (N, Ci, H, W) = A (N*H*W, Co*KH*KW) * B (Co*KH*KW, Ci), A gathering dy where oh*S - P + kh = ih.
@compute @workgroup_size(256)
fn conv2d_input_backward(
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
            let row = origin.x + mm;
            let k = k0 + kk;
            var a = 0.0;
            if row < rows && k < k_total {
                let n = row / plane_in;
                let ih = (row % plane_in) / params.in_width;
                let iw = row % params.in_width;
                let co = k / taps;
                let kh = (k % taps) / params.kernel_w;
                let kw = k % params.kernel_w;
                // oh = (ih + P - kh) / S when that is a whole number inside the output.
                let th = i32(ih + params.padding) - i32(kh);
                let tw = i32(iw + params.padding) - i32(kw);
                let s = i32(params.stride);
                if th >= 0 && tw >= 0 && th % s == 0 && tw % s == 0 {
                    let oh = u32(th / s);
                    let ow = u32(tw / s);
                    if oh < params.out_height && ow < params.out_width {
                        a = dy[((n * params.out_channels + co) * params.out_height + oh) * params.out_width + ow];
                    }
                }
            }
            tile_a[e] = a;
            // B[(co, kh, kw), ci] = w[co, ci, kh, kw]
            let kb = e / TILE_N;
            let nn = e % TILE_N;
            let ci = origin.y + nn;
            let kw_index = k0 + kb;
            var b = 0.0;
            if ci < params.in_channels && kw_index < k_total {
                let co = kw_index / taps;
                b = w[(co * params.in_channels + ci) * taps + kw_index % taps];
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
        let n = row / plane_in;
        let pixel = row % plane_in;
        for (var j = 0u; j < 4u; j++) {
            let ci = origin.y + local / 16u + 16u * j;
            if ci >= params.in_channels { continue; }
            dx[(n * params.in_channels + ci) * plane_in + pixel] = acc[i][j];
        }
    }
}

// dw [Co, Ci*KH*KW] = dy (Co, N*Ho*Wo) * im2col(x) (N*Ho*Wo, Ci*KH*KW)
@compute @workgroup_size(256)
fn conv2d_weight_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let origin = tile_origin(group, groups);
    let plane_out = params.out_height * params.out_width;
    let rows = params.out_channels;
    let cols = params.in_channels * params.kernel_h * params.kernel_w;
    let k_total = params.batch * plane_out;
    if origin.x >= rows { return; }

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k_total; k0 += TILE_K) {
        for (var r = 0u; r < LOADS; r++) {
            let e = local + r * THREADS;
            // A[co, (n, oh, ow)] = dy[n, co, oh, ow]: neighbouring threads read neighbouring pixels.
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            let co = origin.x + mm;
            let k = k0 + kk;
            var a = 0.0;
            if co < rows && k < k_total {
                a = dy[((k / plane_out) * params.out_channels + co) * plane_out + k % plane_out];
            }
            tile_a[kk * TILE_M + mm] = a;
            // B[(n, oh, ow), (ci, kh, kw)] = im2col(x)[(n, oh, ow), (ci, kh, kw)]
            let kb = e / TILE_N;
            let nn = e % TILE_N;
            tile_b[e] = im2col_x(k0 + kb, origin.y + nn);
        }
        workgroupBarrier();
        multiply_tiles(local, &acc);
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let co = origin.x + local % 16u + 16u * i;
        if co >= rows { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = origin.y + local / 16u + 16u * j;
            if col >= cols { continue; }
            dw[co * cols + col] = acc[i][j];
        }
    }
}

// dbias[co] = sum_{n, oh, ow} dy[n, co, oh, ow]: one workgroup per channel (folded over x and y), a strided
// per-thread sum and then a tree reduction.
@compute @workgroup_size(256)
fn conv2d_bias_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let co = group.x + group.y * groups.x;
    if co >= params.out_channels { return; }
    let plane_out = params.out_height * params.out_width;
    let count = params.batch * plane_out;
    // Elements i = local, local + 256, ... in that order, at (n, p) = (i / plane, i % plane) counted forward: a
    // vector division is eight scalar ones on lavapipe (x86 has no SIMD integer division).
    let step_n = WG_REDUCE / plane_out;
    let step_p = WG_REDUCE % plane_out;
    var n = local / plane_out;
    var p = local % plane_out;
    var partial = 0.0;
    for (var i = local; i < count; i += WG_REDUCE) {
        partial += dy[(n * params.out_channels + co) * plane_out + p];
        p += step_p;
        let wrap = p >= plane_out;
        p = select(p, p - plane_out, wrap);
        n += select(step_n, step_n + 1u, wrap);
    }
    let total = workgroup_sum(local, partial);
    if local == 0u {
        dbias[co] = total;
    }
}
