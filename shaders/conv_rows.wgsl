// Stride-1 convolution gathers for CPU drivers whose subgroups are 8 lanes wide (lavapipe), reading the image
// four values at a time.
//
// In conv_subgroup.wgsl a thread owns pixels local.x + 8 r (r = 0..7) and reads each of them with its own load
// per tap; lavapipe runs every load as a loop over the 8 lanes. Here a thread owns 8 consecutive pixels of one
// image, 8 local.x + r, so at stride 1, where src rows are as wide as dst rows, the values a row of taps (one kh)
// needs for them are consecutive in src: src[q .. q + KW + 6]. Four aligned vec4 loads hold them, and each tap
// takes its 8 values out of those 16 by a shift (`window8`). Values outside the image are masked to 0 as before,
// so every output sums the same values in the same order (s, kh, kw) as conv_subgroup.wgsl: the same bits.
//
//   dense_rows    dense_gather at stride 1:    sum of src[n, s, h - P + kh, w - P + kw] * weight[c, s, kh, kw]
//                 (Conv2d forward, ConvTranspose2d input gradient)
//   strided_rows  strided_gather at stride 1:  sum of src[n, s, h + P - kh, w + P - kw] * weight[s, c, kh, kw]
//                 (Conv2d input gradient, ConvTranspose2d forward)
//
// The host takes these when the stride is 1, src and dst rows are equally wide, KW <= 5 (a tap's shift, at most
// 3 + KW - 1, must leave 8 of the 16 values) and src holds a whole number of vec4s.
//
// include: shared/conv_common.wgsl
// include: shared/conv_share.wgsl

@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;

// Values shift .. shift + 7 of the 16 in w (shift <= 7), by a barrel shifter of selects: the shift is a value,
// not an index (a dynamic index into a private array would send it to memory).
fn window8(w: array<vec4<f32>, 4>, shift: u32) -> array<vec4<f32>, 2> {
    let by4 = (shift & 4u) != 0u;
    let a0 = select(w[0], w[1], by4);
    let a1 = select(w[1], w[2], by4);
    let a2 = select(w[2], w[3], by4);
    let by2 = (shift & 2u) != 0u;
    let b0 = select(a0, vec4<f32>(a0.zw, a1.xy), by2);
    let b1 = select(a1, vec4<f32>(a1.zw, a2.xy), by2);
    let b2 = select(a2.x, a2.z, by2);   // value 8 of the b's, the only one used past b1
    let by1 = (shift & 1u) != 0u;
    return array<vec4<f32>, 2>(
        select(b0, vec4<f32>(b0.yzw, b1.x), by1),
        select(b1, vec4<f32>(b1.yzw, b2), by1),
    );
}

// The 8 values at `shift` in the window, 0 where `inside` is false.
fn window_values(w: array<vec4<f32>, 4>, shift: u32, in_lo: vec4<bool>, in_hi: vec4<bool>) -> array<vec4<f32>, 2> {
    let v = window8(w, shift);
    return array<vec4<f32>, 2>(select(vec4<f32>(0.0), v[0], in_lo), select(vec4<f32>(0.0), v[1], in_hi));
}

// What a row's taps share, fixed for the thread (see rows_body).
struct Geometry {
    kh0: u32,
    kw0: u32,
    stride: u32,
    pad: i32,
    qh: i32,
    start: i32,   // the window's first column, relative to a member's
    last: i32,    // the last vec4 of src
    taps: u32,
    transposed: bool,
}

// Tap row t of src channel s: which members' rows lie in the image, the 16 values of src from the window's start
// (value `shift` of `window` is src[q], q = the first member's window start) and the weight index of its first
// tap (kw = kw0): dense weight[c, s, kh, kw], transposed weight[s, c, kh, kw].
struct Row {
    in_lo: vec4<bool>,
    in_hi: vec4<bool>,
    window: array<vec4<f32>, 4>,
    shift: u32,
    tap: u32,
}

fn row_at(g: Geometry, s: u32, t: u32, image_at: i32, h_lo: vec4<i32>, h_hi: vec4<i32>, valid_lo: vec4<bool>,
    valid_hi: vec4<bool>) -> Row {
    let kh = g.kh0 + t * g.stride;
    let dh = select(i32(t) - g.pad, g.qh - i32(t), g.transposed);
    let row_lo = h_lo + vec4<i32>(dh);
    let row_hi = h_hi + vec4<i32>(dh);
    // Value 0 of the window, src[q], may lie before the buffer (then only masked members use the values of the
    // clamped loads; likewise past its end).
    let q = image_at + dh * i32(params.src_width) + g.start;
    let q4 = q >> 2u;
    return Row(
        valid_lo & inside(row_lo, params.src_height),
        valid_hi & inside(row_hi, params.src_height),
        array<vec4<f32>, 4>(
            src[clamp(q4, 0, g.last)],
            src[clamp(q4 + 1, 0, g.last)],
            src[clamp(q4 + 2, 0, g.last)],
            src[clamp(q4 + 3, 0, g.last)],
        ),
        u32(q & 3),
        select((s * params.kernel_h + kh) * params.kernel_w + g.kw0,
            s * params.dst_channels * g.taps + kh * params.kernel_w + g.kw0, g.transposed),
    );
}

// The 8 members' values at window position `position` of a row (members at columns w_lo, w_hi; the window starts
// at column `start` of each), 0 outside the image.
fn row_values(row: Row, position: u32, w_lo: vec4<i32>, w_hi: vec4<i32>, start: i32) -> array<vec4<f32>, 2> {
    let col_lo = w_lo + vec4<i32>(start + i32(position));
    let col_hi = w_hi + vec4<i32>(start + i32(position));
    let in_lo = row.in_lo & inside(col_lo, params.src_width);
    let in_hi = row.in_hi & inside(col_hi, params.src_width);
    return window_values(row.window, row.shift + position, in_lo, in_hi);
}

// `wide`: 32 channels per row of lanes; `single`: dst has one channel, which every lane reads for itself and sums
// into 8 values instead of 64 (the same products in the same order as channel 0 of the 8-channel block).
fn rows_body(group: vec3<u32>, local: vec3<u32>, wide: bool, transposed: bool, single: bool) {
    // The pixels of one phase (h mod S, w mod S) of dst: workgroup layer z = rh * S + rw (one phase, z = 0, for the
    // dense gather at stride 1). Its members (a, b) are the pixels (a S + rh, b S + rw), `cols` of them to a row;
    // every phase's rows are as wide as src's, so a row of taps reads consecutive values of src for consecutive
    // members.
    let stride = select(1u, params.stride, transposed);
    let rh = group.z / stride;
    let rw = group.z % stride;
    if rh >= params.dst_height || rw >= params.dst_width {
        return;
    }
    let rows = (params.dst_height - rh + stride - 1u) / stride;
    let cols = (params.dst_width - rw + stride - 1u) / stride;
    let members = rows * cols;   // per image, in blocks of 8
    let blocks = (members + BLOCK - 1u) / BLOCK;
    let count = params.batch * blocks;
    let block = (group.x * BLOCK + local.y) * BLOCK + local.x;
    // A row of lanes wholly past the end returns; lanes past it in a partial row go on with the last block (not
    // stored), since every lane of a subgroup must reach the loads it shares.
    if block - local.x >= count {
        return;
    }
    let past = block >= count;
    let b = min(block, count - 1u);
    let n = b / blocks;
    let first = (b % blocks) * BLOCK;
    let m_lo = vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u);
    let m_hi = vec4<u32>(first) + vec4<u32>(4u, 5u, 6u, 7u);
    let valid_lo = (m_lo < vec4<u32>(members)) & vec4<bool>(!past);
    let valid_hi = (m_hi < vec4<u32>(members)) & vec4<bool>(!past);
    let a_lo = m_lo / vec4<u32>(cols);
    let a_hi = m_hi / vec4<u32>(cols);
    let b_lo = m_lo % vec4<u32>(cols);
    let b_hi = m_hi % vec4<u32>(cols);
    // The dst pixel of each member (store_block skips the end).
    let plane = params.dst_height * params.dst_width;
    let end = vec4<u32>(params.batch * plane);
    let image = vec4<u32>(n * plane);
    let pixels = array<vec4<u32>, 2>(
        select(end, image + (a_lo * stride + rh) * params.dst_width + b_lo * stride + rw, valid_lo),
        select(end, image + (a_hi * stride + rh) * params.dst_width + b_hi * stride + rw, valid_hi),
    );
    let h_lo = vec4<i32>(a_lo);
    let h_hi = vec4<i32>(a_hi);
    let w_lo = vec4<i32>(b_lo);
    let w_hi = vec4<i32>(b_hi);

    let c0 = group.y * channel_block(wide);
    let taps = params.kernel_h * params.kernel_w;
    let step = select(params.src_channels * taps, taps, transposed);
    let weight_rows = block_rows(c0, local.x, step);

    // The taps that reach this phase: kh = kh0 + t S (t = 0 .. T - 1) from src row a + row_offset(t), and
    // kw = kw0 + u S (u = 0 .. U - 1) from src column b + column_offset(u). Dense (stride 1): kh = t, row a - P + t;
    // transposed: row a + qh - t with qh = (rh + P - kh0) / S (as strided_gather). The U columns of a row of taps
    // are a window starting at `start`, tap u at window position `position(u)`.
    let pad = i32(params.padding);
    let kh0 = select(0u, (rh + params.padding) % stride, transposed);
    let kw0 = select(0u, (rw + params.padding) % stride, transposed);
    let qh = i32((rh + params.padding - kh0) / stride);
    let qw = i32((rw + params.padding - kw0) / stride);
    let tap_rows = (params.kernel_h - min(kh0, params.kernel_h) + stride - 1u) / stride;   // T
    let tap_cols = (params.kernel_w - min(kw0, params.kernel_w) + stride - 1u) / stride;   // U
    let start = select(-pad, qw - i32(tap_cols) + 1, transposed);
    let src_plane = params.src_height * params.src_width;
    let last = i32(arrayLength(&src)) - 1;
    // src index of member `first` of image n, channel s (the phase's rows are src rows' width).
    var image_at = i32(n * params.src_channels * src_plane + first);

    // The 1 or (wide) 4 blocks of 8 channels from c0.
    let channel_blocks = select(1u, 4u, wide);
    var acc: Accumulators;
    // When single: the 8 pixels' sums of the one channel.
    var single_lo = vec4<f32>(0.0);
    var single_hi = vec4<f32>(0.0);
    // The taps in the order (s, t, u) with no loop inside the loop: a loop entry costs about as much as a step's
    // multiply-adds on lavapipe (it moves the accumulators: examples/driver_costs.rs), so t and u advance by
    // selects. Rows of 3 taps (3 x 3 kernels at stride 1, past 1 channel) and of 2 (4 x 4 kernels at stride 2)
    // take one step per (s, t), reading its window once for the row; other rows one step per tap.
    let geometry = Geometry(kh0, kw0, stride, pad, qh, start, last, taps, transposed);
    let position0 = select(0u, tap_cols - 1u, transposed);
    // s, t and u are counted, not divided out of k: on lavapipe a vector division is eight scalar ones.
    var s = 0u;
    var t = 0u;
    var u = 0u;
    if tap_cols == 3u && !single {
        for (var k = 0u; k < params.src_channels * tap_rows; k++) {
            let row = row_at(geometry, s, t, image_at, h_lo, h_hi, valid_lo, valid_hi);
            accumulate_tap(&acc, channel_blocks, weight_rows, row_values(row, position0, w_lo, w_hi, start),
                row.tap);
            accumulate_tap(&acc, channel_blocks, weight_rows, row_values(row, 1u, w_lo, w_hi, start),
                row.tap + stride);
            accumulate_tap(&acc, channel_blocks, weight_rows, row_values(row, 2u - position0, w_lo, w_hi, start),
                row.tap + 2u * stride);
            let channel_done = t + 1u == tap_rows;
            t = select(t + 1u, 0u, channel_done);
            s = select(s, s + 1u, channel_done);
            image_at = select(image_at, image_at + i32(src_plane), channel_done);
        }
    } else if tap_cols == 2u {
        for (var k = 0u; k < params.src_channels * tap_rows; k++) {
            let row = row_at(geometry, s, t, image_at, h_lo, h_hi, valid_lo, valid_hi);
            let v0 = row_values(row, position0, w_lo, w_hi, start);
            let v1 = row_values(row, 1u - position0, w_lo, w_hi, start);
            if single {
                let weight0 = weight[weight_rows[0].own + row.tap];   // channel 0's row: every lane's own is it
                let weight1 = weight[weight_rows[0].own + row.tap + stride];
                single_lo += v0[0] * weight0;
                single_hi += v0[1] * weight0;
                single_lo += v1[0] * weight1;
                single_hi += v1[1] * weight1;
            } else {
                accumulate_tap(&acc, channel_blocks, weight_rows, v0, row.tap);
                accumulate_tap(&acc, channel_blocks, weight_rows, v1, row.tap + stride);
            }
            let channel_done = t + 1u == tap_rows;
            t = select(t + 1u, 0u, channel_done);
            s = select(s, s + 1u, channel_done);
            image_at = select(image_at, image_at + i32(src_plane), channel_done);
        }
    } else {
        let per_channel = tap_rows * tap_cols;
        for (var k = 0u; k < params.src_channels * per_channel; k++) {
            let row = row_at(geometry, s, t, image_at, h_lo, h_hi, valid_lo, valid_hi);
            let v = row_values(row, select(u, tap_cols - 1u - u, transposed), w_lo, w_hi, start);
            let tap = row.tap + u * stride;
            if single {
                let w = weight[weight_rows[0].own + tap];
                single_lo += v[0] * w;
                single_hi += v[1] * w;
            } else {
                accumulate_tap(&acc, channel_blocks, weight_rows, v, tap);
            }
            let row_done = u + 1u == tap_cols;
            u = select(u + 1u, 0u, row_done);
            let channel_done = row_done && t + 1u == tap_rows;
            t = select(select(t, t + 1u, row_done), 0u, channel_done);
            s = select(s, s + 1u, channel_done);
            image_at = select(image_at, image_at + i32(src_plane), channel_done);
        }
    }
    if single {
        let zero = vec4<f32>(0.0);
        let b = block_bias(c0);
        store_biased(pixels[0].x, c0, vec4<f32>(single_lo.x, zero.yzw), zero, b);
        store_biased(pixels[0].y, c0, vec4<f32>(single_lo.y, zero.yzw), zero, b);
        store_biased(pixels[0].z, c0, vec4<f32>(single_lo.z, zero.yzw), zero, b);
        store_biased(pixels[0].w, c0, vec4<f32>(single_lo.w, zero.yzw), zero, b);
        store_biased(pixels[1].x, c0, vec4<f32>(single_hi.x, zero.yzw), zero, b);
        store_biased(pixels[1].y, c0, vec4<f32>(single_hi.y, zero.yzw), zero, b);
        store_biased(pixels[1].z, c0, vec4<f32>(single_hi.z, zero.yzw), zero, b);
        store_biased(pixels[1].w, c0, vec4<f32>(single_hi.w, zero.yzw), zero, b);
        return;
    }
    store_blocks(pixels, c0, channel_blocks, &acc);
}

@compute @workgroup_size(8, 8)
fn dense_rows(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    rows_body(group, local, false, false, false);
}

@compute @workgroup_size(8, 8)
fn dense_rows_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    rows_body(group, local, true, false, false);
}

@compute @workgroup_size(8, 8)
fn strided_rows(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    rows_body(group, local, false, true, false);
}

@compute @workgroup_size(8, 8)
fn strided_rows_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    rows_body(group, local, true, true, false);
}

@compute @workgroup_size(8, 8)
fn dense_rows_single(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    rows_body(group, local, false, false, true);
}

@compute @workgroup_size(8, 8)
fn strided_rows_single(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    rows_body(group, local, false, true, true);
}
