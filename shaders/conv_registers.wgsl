// Convolutions without workgroup memory, for CPU drivers (lavapipe): Conv2d and ConvTranspose2d, forward and
// both gradients, as three kernels over images named by their role.
//
// The workgroup-tiled implicit GEMMs of shaders/conv2d.wgsl and shaders/conv_transpose2d.wgsl stage im2col
// tiles in workgroup memory; on a CPU driver every barrier switches between the workgroup's invocations, and
// each im2col element costs several integer divisions. Here each thread keeps an 8 x 8 block of outputs in
// sixteen vec4 accumulators, reads its operands itself, and walks the kernel taps in nested loops, so the index
// arithmetic in the loops is additions and compares. Private arrays are only indexed by constants (a dynamic
// index sends them to memory). Every output is summed in a fixed order, so results are bit-identical from run
// to run. The kernels, with `src` the image read, `dst` the image (or weight gradient) written:
//
//   dense_gather    dst[n, c, h, w] = bias[c] + sum_{s, kh, kw} src[n, s, h*S - P + kh, w*S - P + kw]
//                                                              * weight[c, s, kh, kw]
//                   Conv2d forward (src x, dst y) and ConvTranspose2d input gradient (src dy, dst dx: its
//                   weight [Ci, Co, KH, KW] is [dst channel, src channel, ...]).
//   strided_gather  dst[n, c, h, w] = bias[c] + sum over s, kh, kw, i, j with i*S - P + kh = h and j*S - P + kw = w
//                                     of src[n, s, i, j] * weight[s, c, kh, kw]
//                   Conv2d input gradient (src dy, dst dx) and ConvTranspose2d forward (src x, dst y).
//                   Only the taps kh = (h + P) mod S + t*S reach a pixel, so each workgroup takes the pixels of
//                   one phase (h mod S, w mod S), whose taps are the same, and skips the others.
//   weight_gradient dst[c, s, kh, kw] = sum_{n, i, j} grad[n, c, i, j] * src[n, s, i*S - P + kh, j*S - P + kw]
//                   Conv2d weight gradient (grad dy, src x) and ConvTranspose2d weight gradient (grad x, src dy).
// (src read as 0 outside its image.) `dst_*` sizes in Params describe dst for the gathers and grad for the
// weight gradient.
//
// Threads: workgroups of 8 x 8. In the gathers a thread owns 8 pixels, local.x + 8 r (r = 0..7) of a block of
// 64, so the 8 lanes a CPU driver runs side by side read neighbouring pixels, and 8 channels, the same for the
// whole workgroup, so the weights it reads are the same in every lane. In the weight gradient a thread owns 8
// grad channels and 8 (s, kh, kw) columns, local.x + 8 j.

// include: shared/conv_registers.wgsl

// Each lane reads all 8 channels' values itself.
fn channel_weights(rows: Channels, tap: u32) -> array<vec4<f32>, 2> {
    let i_lo = rows.lo + vec4<u32>(tap);
    let i_hi = rows.hi + vec4<u32>(tap);
    return array<vec4<f32>, 2>(
        vec4<f32>(weight[i_lo.x], weight[i_lo.y], weight[i_lo.z], weight[i_lo.w]),
        vec4<f32>(weight[i_hi.x], weight[i_hi.y], weight[i_hi.z], weight[i_hi.w]),
    );
}

fn channel_grads(rows: Channels, at: u32) -> array<vec4<f32>, 2> {
    let i_lo = rows.lo + vec4<u32>(at);
    let i_hi = rows.hi + vec4<u32>(at);
    return array<vec4<f32>, 2>(
        vec4<f32>(grad[i_lo.x], grad[i_lo.y], grad[i_lo.z], grad[i_lo.w]),
        vec4<f32>(grad[i_hi.x], grad[i_hi.y], grad[i_hi.z], grad[i_hi.w]),
    );
}
