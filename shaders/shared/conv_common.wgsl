// What the register-tiled convolution modules share (shaders/conv_registers.wgsl, conv_subgroup.wgsl and
// conv_rows.wgsl): the params, every binding but `src` (which the including module declares: array<f32>, or
// array<vec4<f32>> in conv_rows), the 8 x 8 multiply-add of a thread's block, its stores, and the channel rows.

// Keep in sync with `ConvRegistersParams` in src/kernels/conv_registers.rs.
struct Params {
    batch: u32,         // N
    src_channels: u32,
    src_height: u32,
    src_width: u32,
    dst_channels: u32,
    dst_height: u32,
    dst_width: u32,
    kernel_h: u32,      // KH
    kernel_w: u32,      // KW
    stride: u32,        // S
    padding: u32,       // P
    has_bias: u32,      // 1: the gathers add bias[c]
    // The weight gradient sums images first_image .. first_image + images, and with accumulate = 1 goes on from
    // the sums in dst: the host splits a long batch into launches that fit the CPU drivers' loop limit.
    first_image: u32,
    images: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;  // the gathers
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // the gathers; read only when has_bias = 1
@group(0) @binding(5) var<storage, read> grad: array<f32>;    // weight_gradient

const BLOCK: u32 = 8u;      // pixels (or rows) and channels (or columns) per thread
const SPAN: u32 = 64u;       // pixels (or columns) of the 8 threads along x: local.x + 8 r, r = 0..7

// acc[2 r] += v[r] * w[0] and acc[2 r + 1] += v[r] * w[1]: pixel (or row) r times 8 channels (or columns).
fn multiply_add(acc: ptr<function, array<vec4<f32>, 16>>, v: array<vec4<f32>, 2>, w: array<vec4<f32>, 2>) {
    *acc = multiply_added(*acc, v, w);
}

// multiply_add on a value (a block of Accumulators is updated through it: naga 30's SPIR-V writer panics on a
// pointer into an array passed to a call).
fn multiply_added(block: array<vec4<f32>, 16>, v: array<vec4<f32>, 2>, w: array<vec4<f32>, 2>) -> array<vec4<f32>, 16> {
    var acc = block;
    acc[0] += v[0].x * w[0];
    acc[1] += v[0].x * w[1];
    acc[2] += v[0].y * w[0];
    acc[3] += v[0].y * w[1];
    acc[4] += v[0].z * w[0];
    acc[5] += v[0].z * w[1];
    acc[6] += v[0].w * w[0];
    acc[7] += v[0].w * w[1];
    acc[8] += v[1].x * w[0];
    acc[9] += v[1].x * w[1];
    acc[10] += v[1].y * w[0];
    acc[11] += v[1].y * w[1];
    acc[12] += v[1].z * w[0];
    acc[13] += v[1].z * w[1];
    acc[14] += v[1].w * w[0];
    acc[15] += v[1].w * w[1];
    return acc;
}

// bias[c0 .. c0 + 7] (channels past the last clamped: they are not stored), read once per block of pixels; zero
// when the layer has no bias (then nothing is added: adding 0 would turn a -0 into +0).
fn block_bias(c0: u32) -> array<vec4<f32>, 2> {
    if params.has_bias == 0u {
        return array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let last = vec4<u32>(params.dst_channels - 1u);
    let lo = min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), last);
    let hi = min(vec4<u32>(c0) + vec4<u32>(4u, 5u, 6u, 7u), last);
    return array<vec4<f32>, 2>(vec4<f32>(bias[lo.x], bias[lo.y], bias[lo.z], bias[lo.w]),
        vec4<f32>(bias[hi.x], bias[hi.y], bias[hi.z], bias[hi.w]));
}

// Writes pixel `pixel` = (n, h, w) of dst for channels c0 .. c0 + 7 (values in lo, hi), plus the block's bias `b`
// (from block_bias); the stores unrolled (a dynamic index into the values would put them in memory).
fn store_biased(pixel: u32, c0: u32, lo: vec4<f32>, hi: vec4<f32>, b: array<vec4<f32>, 2>) {
    let plane = params.dst_height * params.dst_width;
    if pixel >= params.batch * plane || c0 >= params.dst_channels {
        return;
    }
    var v_lo = lo;
    var v_hi = hi;
    if params.has_bias != 0u {
        v_lo += b[0];
        v_hi += b[1];
    }
    let n = pixel / plane;
    let at = (n * params.dst_channels + c0) * plane + pixel % plane;
    let channels = params.dst_channels - c0;
    dst[at] = v_lo.x;
    if channels > 1u {
        dst[at + plane] = v_lo.y;
    }
    if channels > 2u {
        dst[at + 2u * plane] = v_lo.z;
    }
    if channels > 3u {
        dst[at + 3u * plane] = v_lo.w;
    }
    if channels > 4u {
        dst[at + 4u * plane] = v_hi.x;
    }
    if channels > 5u {
        dst[at + 5u * plane] = v_hi.y;
    }
    if channels > 6u {
        dst[at + 6u * plane] = v_hi.z;
    }
    if channels > 7u {
        dst[at + 7u * plane] = v_hi.w;
    }
}

fn store_block(pixels: array<vec4<u32>, 2>, c0: u32, acc: array<vec4<f32>, 16>) {
    if c0 >= params.dst_channels {
        return;
    }
    let b = block_bias(c0);
    store_biased(pixels[0].x, c0, acc[0], acc[1], b);
    store_biased(pixels[0].y, c0, acc[2], acc[3], b);
    store_biased(pixels[0].z, c0, acc[4], acc[5], b);
    store_biased(pixels[0].w, c0, acc[6], acc[7], b);
    store_biased(pixels[1].x, c0, acc[8], acc[9], b);
    store_biased(pixels[1].y, c0, acc[10], acc[11], b);
    store_biased(pixels[1].z, c0, acc[12], acc[13], b);
    store_biased(pixels[1].w, c0, acc[14], acc[15], b);
}

// The thread's 8 indices first, first + 8, ..., first + 56 (first = the span's start + local.x).
fn block_indices(first: u32) -> array<vec4<u32>, 2> {
    return array<vec4<u32>, 2>(
        vec4<u32>(first) + vec4<u32>(0u, 8u, 16u, 24u),
        vec4<u32>(first) + vec4<u32>(32u, 40u, 48u, 56u),
    );
}

// Where the rows of 8 channels c0 .. c0 + 7 start in weight or grad (`lo`, `hi`: channel c0 + r at
// component r % 4), and the row of channel c0 + lane, lane = local.x (`own`: what that lane reads for the others
// when the module shares loads across a subgroup). Channels past the last are clamped to it; their results are not
// stored.
struct Channels {
    lo: vec4<u32>,
    hi: vec4<u32>,
    own: u32,
}

// The rows of channels c0 .. c0 + 7 at `step` elements per channel: weight[c, 0, 0, 0] (step = src channels *
// taps), weight[0, c, 0, 0] (step = taps) or grad[0, c, 0, 0] (step = the grad plane).
fn channel_rows(c0: u32, lane: u32, step: u32) -> Channels {
    let last = params.dst_channels - 1u;
    return Channels(
        min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last)) * step,
        min(vec4<u32>(c0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last)) * step,
        min(c0 + lane, last) * step,
    );
}

// Whether each index lies in 0 .. n - 1: one unsigned compare (a negative index wraps past n).
fn inside(i: vec4<i32>, n: u32) -> vec4<bool> {
    return vec4<u32>(i) < vec4<u32>(n);
}

// Channels per workgroup row: 8, or 32 in the `*_wide` entry points, for layers of more than 8 channels: four times
// the multiply-adds per load of src (measured on lavapipe: 16 channels made the ddpm step 1.3x faster than 8, and 32
// another 1.2x; more accumulators than fit the registers cost less there than the loads they save).
fn channel_block(wide: bool) -> u32 {
    return select(BLOCK, 4u * BLOCK, wide);
}

// The gathers' accumulators: `blocks` (1, 4 or 8) blocks of 8 pixels x 8 channels (see multiply_add), block b
// for channels c0 + 8 b .. c0 + 8 b + 7. The `*_wider` gathers keep 8 blocks, 64 channels, for layers of more
// than 32: each value loaded from src then feeds 512 multiply-adds (measured on lavapipe, the gan's 64- and
// 128-channel layers: 7-8% faster than 32 channels).
alias Accumulators = array<array<vec4<f32>, 16>, 8>;
alias BlockRows = array<Channels, 8>;

// The channel rows of the 8 blocks from c0 (see channel_rows).
fn block_rows(c0: u32, lane: u32, step: u32) -> BlockRows {
    return BlockRows(
        channel_rows(c0, lane, step),
        channel_rows(c0 + BLOCK, lane, step),
        channel_rows(c0 + 2u * BLOCK, lane, step),
        channel_rows(c0 + 3u * BLOCK, lane, step),
        channel_rows(c0 + 4u * BLOCK, lane, step),
        channel_rows(c0 + 5u * BLOCK, lane, step),
        channel_rows(c0 + 6u * BLOCK, lane, step),
        channel_rows(c0 + 7u * BLOCK, lane, step),
    );
}

// The multiply-adds of one tap: the 8 pixels' values v times tap `tap`'s weights of the first `blocks` blocks.
fn accumulate_tap(acc: ptr<function, Accumulators>, blocks: u32, rows: BlockRows, v: array<vec4<f32>, 2>,
    tap: u32) {
    (*acc)[0] = multiply_added((*acc)[0], v, channel_weights(rows[0], tap));
    if blocks >= 4u {
        (*acc)[1] = multiply_added((*acc)[1], v, channel_weights(rows[1], tap));
        (*acc)[2] = multiply_added((*acc)[2], v, channel_weights(rows[2], tap));
        (*acc)[3] = multiply_added((*acc)[3], v, channel_weights(rows[3], tap));
    }
    if blocks == 8u {
        (*acc)[4] = multiply_added((*acc)[4], v, channel_weights(rows[4], tap));
        (*acc)[5] = multiply_added((*acc)[5], v, channel_weights(rows[5], tap));
        (*acc)[6] = multiply_added((*acc)[6], v, channel_weights(rows[6], tap));
        (*acc)[7] = multiply_added((*acc)[7], v, channel_weights(rows[7], tap));
    }
}

fn store_blocks(pixels: array<vec4<u32>, 2>, c0: u32, blocks: u32, acc: ptr<function, Accumulators>) {
    store_block(pixels, c0, (*acc)[0]);
    if blocks >= 4u {
        store_block(pixels, c0 + BLOCK, (*acc)[1]);
        store_block(pixels, c0 + 2u * BLOCK, (*acc)[2]);
        store_block(pixels, c0 + 3u * BLOCK, (*acc)[3]);
    }
    if blocks == 8u {
        store_block(pixels, c0 + 4u * BLOCK, (*acc)[4]);
        store_block(pixels, c0 + 5u * BLOCK, (*acc)[5]);
        store_block(pixels, c0 + 6u * BLOCK, (*acc)[6]);
        store_block(pixels, c0 + 7u * BLOCK, (*acc)[7]);
    }
}
