// The register-tiled convolution kernels, shared by shaders/conv_registers.wgsl and shaders/conv_subgroup.wgsl
// (see conv_registers.wgsl for what they compute). The including module defines how a thread gets the values
// that are the same in all its lanes, its 8 channels' weights and grads:
//   fn channel_weights(rows: Channels, tap: u32) -> array<vec4<f32>, 2>
//       weight[row + tap] for the 8 channels' rows
//   fn channel_grads(rows: Channels, at: u32) -> array<vec4<f32>, 2>
//       grad[row + at] for the 8 channels' rows

// include: shared/conv_common.wgsl

@group(0) @binding(2) var<storage, read> src: array<f32>;

// The 8 values of src at element offsets `at`, 0 where `inside` is false (the offset is then not read).
fn load_src(at_lo: vec4<u32>, at_hi: vec4<u32>, in_lo: vec4<bool>, in_hi: vec4<bool>) -> array<vec4<f32>, 2> {
    let i_lo = select(vec4<u32>(0u), at_lo, in_lo);
    let i_hi = select(vec4<u32>(0u), at_hi, in_hi);
    let v_lo = vec4<f32>(src[i_lo.x], src[i_lo.y], src[i_lo.z], src[i_lo.w]);
    let v_hi = vec4<f32>(src[i_hi.x], src[i_hi.y], src[i_hi.z], src[i_hi.w]);
    return array<vec4<f32>, 2>(select(vec4<f32>(0.0), v_lo, in_lo), select(vec4<f32>(0.0), v_hi, in_hi));
}

fn dense_gather_body(group: vec3<u32>, local: vec3<u32>, blocks: u32) {
    let plane = params.dst_height * params.dst_width;
    let count = params.batch * plane;
    // A row of the workgroup whose pixels are all past the end returns; in a row that is only partly past it
    // the lanes past it go on with clamped pixels (not stored), since every lane of a subgroup must reach the
    // loads it shares.
    let pixels = block_indices((group.x * BLOCK + local.y) * SPAN + local.x);
    if pixels[0].x - local.x >= count {
        return;
    }
    let c0 = group.y * blocks * BLOCK;
    let taps = params.kernel_h * params.kernel_w;
    let src_plane = params.src_height * params.src_width;
    // Weight rows of the blocks of 8 channels from c0.
    let weight_rows = block_rows(c0, local.x, params.src_channels * taps);

    // Per pixel: where its image starts in src and the top-left tap's position (may be negative).
    let last = vec4<u32>(count - 1u);
    let p_lo = min(pixels[0], last);
    let p_hi = min(pixels[1], last);
    let stride = vec4<i32>(i32(params.stride));
    let pad = vec4<i32>(i32(params.padding));
    let h0_lo = vec4<i32>((p_lo % plane) / params.dst_width) * stride - pad;
    let h0_hi = vec4<i32>((p_hi % plane) / params.dst_width) * stride - pad;
    let w0_lo = vec4<i32>(p_lo % params.dst_width) * stride - pad;
    let w0_hi = vec4<i32>(p_hi % params.dst_width) * stride - pad;
    let image = params.src_channels * src_plane;
    var plane_lo = (p_lo / plane) * image;
    var plane_hi = (p_hi / plane) * image;
    let src_width = vec4<u32>(params.src_width);

    var acc: Accumulators;
    // One loop over the taps (s, kh, kw) in their order: tap = (s KH + kh) KW + kw. On lavapipe every entry
    // into a loop costs about as much as a step's 256 multiply-adds (it moves the accumulators: measured with
    // examples/driver_costs.rs), so kh and kw advance by selects instead of loops of their own.
    var kh = 0u;
    var kw = 0u;
    for (var tap = 0u; tap < params.src_channels * taps; tap++) {
        let h_lo = h0_lo + vec4<i32>(i32(kh));
        let h_hi = h0_hi + vec4<i32>(i32(kh));
        let w_lo = w0_lo + vec4<i32>(i32(kw));
        let w_hi = w0_hi + vec4<i32>(i32(kw));
        let in_lo = inside(h_lo, params.src_height) & inside(w_lo, params.src_width);
        let in_hi = inside(h_hi, params.src_height) & inside(w_hi, params.src_width);
        let at_lo = plane_lo + vec4<u32>(h_lo) * src_width + vec4<u32>(w_lo);
        let at_hi = plane_hi + vec4<u32>(h_hi) * src_width + vec4<u32>(w_hi);
        let v = load_src(at_lo, at_hi, in_lo, in_hi);
        accumulate_tap(&acc, blocks, weight_rows, v, tap);
        let row_done = kw + 1u == params.kernel_w;
        kw = select(kw + 1u, 0u, row_done);
        let channel_done = row_done && kh + 1u == params.kernel_h;
        kh = select(select(kh, kh + 1u, row_done), 0u, channel_done);
        plane_lo = select(plane_lo, plane_lo + vec4<u32>(src_plane), vec4<bool>(channel_done));
        plane_hi = select(plane_hi, plane_hi + vec4<u32>(src_plane), vec4<bool>(channel_done));
    }
    store_blocks(pixels, c0, blocks, &acc);
}

fn strided_gather_body(group: vec3<u32>, local: vec3<u32>, blocks: u32) {
    // The phase of this workgroup's pixels: h = a*S + rh, w = b*S + rw.
    let stride = params.stride;
    let rh = group.z / stride;
    let rw = group.z % stride;
    if rh >= params.dst_height || rw >= params.dst_width {
        return;
    }
    let rows = (params.dst_height - rh + stride - 1u) / stride;   // values of a
    let cols = (params.dst_width - rw + stride - 1u) / stride;    // values of b
    let count = params.batch * rows * cols;
    let members = block_indices((group.x * BLOCK + local.y) * SPAN + local.x);
    if members[0].x - local.x >= count {
        return;   // the whole row of lanes is past the end (see dense_gather)
    }
    // The taps that reach this phase: kh = kh0 + t*S, from source row i = a + qh - t (qh = (rh + P - kh0) / S).
    let kh0 = (rh + params.padding) % stride;
    let kw0 = (rw + params.padding) % stride;
    let qh = i32((rh + params.padding - kh0) / stride);
    let qw = i32((rw + params.padding - kw0) / stride);
    let c0 = group.y * blocks * BLOCK;
    let taps = params.kernel_h * params.kernel_w;
    let src_plane = params.src_height * params.src_width;
    // Weight rows of the blocks of 8 channels from c0.
    let weight_rows = block_rows(c0, local.x, taps);

    let last = vec4<u32>(count - 1u);
    let m_lo = min(members[0], last);
    let m_hi = min(members[1], last);
    let per_image = rows * cols;
    let a_lo = vec4<i32>((m_lo % per_image) / cols) + vec4<i32>(qh);
    let a_hi = vec4<i32>((m_hi % per_image) / cols) + vec4<i32>(qh);
    let b_lo = vec4<i32>(m_lo % cols) + vec4<i32>(qw);
    let b_hi = vec4<i32>(m_hi % cols) + vec4<i32>(qw);
    let image = params.src_channels * src_plane;
    var plane_lo = (m_lo / per_image) * image;
    var plane_hi = (m_hi / per_image) * image;
    let src_width = vec4<u32>(params.src_width);

    var acc: Accumulators;
    // One loop over (s, t, u), kh = kh0 + t S and kw = kw0 + u S, in that order (see dense_gather: a loop entry
    // costs as much as a step's multiply-adds on lavapipe).
    let tap_rows = (params.kernel_h - min(kh0, params.kernel_h) + stride - 1u) / stride;
    let tap_cols = (params.kernel_w - min(kw0, params.kernel_w) + stride - 1u) / stride;
    var weight_plane = 0u;
    var t = 0u;
    var u = 0u;
    for (var k = 0u; k < params.src_channels * tap_rows * tap_cols; k++) {
        let h_lo = a_lo - vec4<i32>(i32(t));
        let h_hi = a_hi - vec4<i32>(i32(t));
        let w_lo = b_lo - vec4<i32>(i32(u));
        let w_hi = b_hi - vec4<i32>(i32(u));
        let in_lo = inside(h_lo, params.src_height) & inside(w_lo, params.src_width);
        let in_hi = inside(h_hi, params.src_height) & inside(w_hi, params.src_width);
        let at_lo = plane_lo + vec4<u32>(h_lo) * src_width + vec4<u32>(w_lo);
        let at_hi = plane_hi + vec4<u32>(h_hi) * src_width + vec4<u32>(w_hi);
        let v = load_src(at_lo, at_hi, in_lo, in_hi);
        let tap = weight_plane + (kh0 + t * stride) * params.kernel_w + kw0 + u * stride;
        accumulate_tap(&acc, blocks, weight_rows, v, tap);
        let row_done = u + 1u == tap_cols;
        u = select(u + 1u, 0u, row_done);
        let channel_done = row_done && t + 1u == tap_rows;
        t = select(select(t, t + 1u, row_done), 0u, channel_done);
        weight_plane = select(weight_plane, weight_plane + params.dst_channels * taps, channel_done);
        plane_lo = select(plane_lo, plane_lo + vec4<u32>(src_plane), vec4<bool>(channel_done));
        plane_hi = select(plane_hi, plane_hi + vec4<u32>(src_plane), vec4<bool>(channel_done));
    }

    // Back from phase members (n, a, b) to dst pixels (n, a*S + rh, b*S + rw).
    let plane = params.dst_height * params.dst_width;
    let pixels = array<vec4<u32>, 2>(
        phase_pixel(members[0], count, per_image, cols, rh, rw, plane),
        phase_pixel(members[1], count, per_image, cols, rh, rw, plane),
    );
    store_blocks(pixels, c0, blocks, &acc);
}

// The dst pixel index of phase members m (n, a, b), or an index past the end for members past `count`.
fn phase_pixel(m: vec4<u32>, count: u32, per_image: u32, cols: u32, rh: u32, rw: u32, plane: u32) -> vec4<u32> {
    let n = m / per_image;
    let h = ((m % per_image) / cols) * params.stride + rh;
    let w = (m % cols) * params.stride + rw;
    let pixel = n * plane + h * params.dst_width + w;
    return select(pixel, vec4<u32>(params.batch * plane), m >= vec4<u32>(count));
}

fn weight_gradient_body(group: vec3<u32>, local: vec3<u32>, blocks: u32) {
    let taps = params.kernel_h * params.kernel_w;
    let columns = params.src_channels * taps;   // (s, kh, kw)
    let col0 = (group.x * BLOCK + local.y) * SPAN + local.x;
    if col0 - local.x >= columns {
        return;   // the whole row of lanes is past the last column (see dense_gather)
    }
    let c0 = group.y * blocks * BLOCK;   // grad channels c0 .. c0 + 8 blocks - 1

    // Per column j (col0 + 8 j): where channel s starts in an image of src, and the tap offset kh - P, kw - P.
    let cols = block_indices(col0);
    let last_col = vec4<u32>(columns - 1u);
    let j_lo = min(cols[0], last_col);
    let j_hi = min(cols[1], last_col);
    let src_plane = params.src_height * params.src_width;
    let pad = vec4<i32>(i32(params.padding));
    let dh_lo = vec4<i32>((j_lo % taps) / params.kernel_w) - pad;
    let dh_hi = vec4<i32>((j_hi % taps) / params.kernel_w) - pad;
    let dw_lo = vec4<i32>(j_lo % params.kernel_w) - pad;
    let dw_hi = vec4<i32>(j_hi % params.kernel_w) - pad;
    let src_image = params.src_channels * src_plane;
    var plane_lo = (j_lo / taps) * src_plane + vec4<u32>(params.first_image * src_image);
    var plane_hi = (j_hi / taps) * src_plane + vec4<u32>(params.first_image * src_image);
    let src_width = vec4<u32>(params.src_width);

    // Grad rows grad[0, c, 0, 0] of the blocks of 8 channels from c0.
    let grad_plane = params.dst_height * params.dst_width;
    let grad_rows = block_rows(c0, local.x, grad_plane);
    let grad_image = params.dst_channels * grad_plane;

    var acc: Accumulators;
    if params.accumulate != 0u {
        // The sums of the earlier images: going on from them adds the same values in the same order.
        load_gradient_blocks(&acc, blocks, c0, col0, columns);
    }
    // One loop over (n, i, j) in that order (see dense_gather: a loop entry costs as much as a step's
    // multiply-adds on lavapipe).
    var n = params.first_image;
    var i = 0u;
    var j = 0u;
    for (var k = 0u; k < params.images * params.dst_height * params.dst_width; k++) {
        let at = n * grad_image + i * params.dst_width + j;   // grad[n, c, i, j] = row of c + at
        let h_lo = vec4<i32>(i32(i * params.stride)) + dh_lo;
        let h_hi = vec4<i32>(i32(i * params.stride)) + dh_hi;
        let w_lo = vec4<i32>(i32(j * params.stride)) + dw_lo;
        let w_hi = vec4<i32>(i32(j * params.stride)) + dw_hi;
        let in_lo = inside(h_lo, params.src_height) & inside(w_lo, params.src_width);
        let in_hi = inside(h_hi, params.src_height) & inside(w_hi, params.src_width);
        let at_lo = plane_lo + vec4<u32>(h_lo) * src_width + vec4<u32>(w_lo);
        let at_hi = plane_hi + vec4<u32>(h_hi) * src_width + vec4<u32>(w_hi);
        let v = load_src(at_lo, at_hi, in_lo, in_hi);
        accumulate_grads(&acc, blocks, grad_rows, v, at);
        let row_done = j + 1u == params.dst_width;
        j = select(j + 1u, 0u, row_done);
        let image_done = row_done && i + 1u == params.dst_height;
        i = select(select(i, i + 1u, row_done), 0u, image_done);
        n = select(n, n + 1u, image_done);
        plane_lo = select(plane_lo, plane_lo + vec4<u32>(src_image), vec4<bool>(image_done));
        plane_hi = select(plane_hi, plane_hi + vec4<u32>(src_image), vec4<bool>(image_done));
    }

    // dst[c, column]: row c0 + r of the weight gradient, columns col0 + 8 j (constant indices into acc).
    store_gradient_blocks(&acc, blocks, c0, col0, columns);
}

// The multiply-adds of one (n, i, j): the grads of the first `blocks` blocks of 8 channels times the 8 columns'
// values v.
fn accumulate_grads(acc: ptr<function, Accumulators>, blocks: u32, rows: BlockRows, v: array<vec4<f32>, 2>,
    at: u32) {
    (*acc)[0] = multiply_added((*acc)[0], channel_grads(rows[0], at), v);
    if blocks >= 4u {
        (*acc)[1] = multiply_added((*acc)[1], channel_grads(rows[1], at), v);
        (*acc)[2] = multiply_added((*acc)[2], channel_grads(rows[2], at), v);
        (*acc)[3] = multiply_added((*acc)[3], channel_grads(rows[3], at), v);
    }
    if blocks == 8u {
        (*acc)[4] = multiply_added((*acc)[4], channel_grads(rows[4], at), v);
        (*acc)[5] = multiply_added((*acc)[5], channel_grads(rows[5], at), v);
        (*acc)[6] = multiply_added((*acc)[6], channel_grads(rows[6], at), v);
        (*acc)[7] = multiply_added((*acc)[7], channel_grads(rows[7], at), v);
    }
}

fn load_gradient_blocks(acc: ptr<function, Accumulators>, blocks: u32, c0: u32, col0: u32, columns: u32) {
    (*acc)[0] = load_gradient_rows(c0, col0, columns);
    if blocks >= 4u {
        (*acc)[1] = load_gradient_rows(c0 + BLOCK, col0, columns);
        (*acc)[2] = load_gradient_rows(c0 + 2u * BLOCK, col0, columns);
        (*acc)[3] = load_gradient_rows(c0 + 3u * BLOCK, col0, columns);
    }
    if blocks == 8u {
        (*acc)[4] = load_gradient_rows(c0 + 4u * BLOCK, col0, columns);
        (*acc)[5] = load_gradient_rows(c0 + 5u * BLOCK, col0, columns);
        (*acc)[6] = load_gradient_rows(c0 + 6u * BLOCK, col0, columns);
        (*acc)[7] = load_gradient_rows(c0 + 7u * BLOCK, col0, columns);
    }
}

fn store_gradient_blocks(acc: ptr<function, Accumulators>, blocks: u32, c0: u32, col0: u32, columns: u32) {
    store_gradient_rows(c0, col0, columns, (*acc)[0]);
    if blocks >= 4u {
        store_gradient_rows(c0 + BLOCK, col0, columns, (*acc)[1]);
        store_gradient_rows(c0 + 2u * BLOCK, col0, columns, (*acc)[2]);
        store_gradient_rows(c0 + 3u * BLOCK, col0, columns, (*acc)[3]);
    }
    if blocks == 8u {
        store_gradient_rows(c0 + 4u * BLOCK, col0, columns, (*acc)[4]);
        store_gradient_rows(c0 + 5u * BLOCK, col0, columns, (*acc)[5]);
        store_gradient_rows(c0 + 6u * BLOCK, col0, columns, (*acc)[6]);
        store_gradient_rows(c0 + 7u * BLOCK, col0, columns, (*acc)[7]);
    }
}

// weight_gradient for layers of few columns (the host takes it for at most 32): a thread owns one column and 8
// (wide: 32) channels, and a workgroup is one row of 8 lanes, so a first layer's 9 or 16 columns spread over
// several workgroups (cores) instead of filling an eighth of one thread's 64. Each output sums the same products
// grad * src in the same order (n, i, j) as weight_gradient_body: the same bits.
fn weight_gradient_narrow_body(group: vec3<u32>, lane: u32, wide: bool) {
    let taps = params.kernel_h * params.kernel_w;
    let columns = params.src_channels * taps;   // (s, kh, kw)
    let column = group.x * BLOCK + lane;
    if column - lane >= columns {
        return;
    }
    let c0 = group.y * channel_block(wide);   // grad channels c0 .. c0 + 7 (.. c0 + 31 when wide)
    let j0 = min(column, columns - 1u);
    let src_plane = params.src_height * params.src_width;
    let dh = i32((j0 % taps) / params.kernel_w) - i32(params.padding);
    let dw = i32(j0 % params.kernel_w) - i32(params.padding);
    let src_image = params.src_channels * src_plane;
    var plane = (j0 / taps) * src_plane + params.first_image * src_image;
    let grad_plane = params.dst_height * params.dst_width;
    let g1 = channel_rows(c0, lane, grad_plane);
    let g2 = channel_rows(c0 + BLOCK, lane, grad_plane);
    let g3 = channel_rows(c0 + 2u * BLOCK, lane, grad_plane);
    let g4 = channel_rows(c0 + 3u * BLOCK, lane, grad_plane);
    let grad_image = params.dst_channels * grad_plane;

    // Channel c0 + 4 q + r at acc[q][r] (constant indices only: a dynamic one would put acc in memory).
    var acc: array<vec4<f32>, 8>;
    if params.accumulate != 0u {
        acc[0] = load_gradient_column(c0, column, columns);
        acc[1] = load_gradient_column(c0 + 4u, column, columns);
        if wide {
            acc[2] = load_gradient_column(c0 + 8u, column, columns);
            acc[3] = load_gradient_column(c0 + 12u, column, columns);
            acc[4] = load_gradient_column(c0 + 16u, column, columns);
            acc[5] = load_gradient_column(c0 + 20u, column, columns);
            acc[6] = load_gradient_column(c0 + 24u, column, columns);
            acc[7] = load_gradient_column(c0 + 28u, column, columns);
        }
    }
    var n = params.first_image;
    var i = 0u;
    var j = 0u;
    for (var k = 0u; k < params.images * params.dst_height * params.dst_width; k++) {
        let at = n * grad_image + i * params.dst_width + j;
        let h = i32(i * params.stride) + dh;
        let w = i32(j * params.stride) + dw;
        let in_image = u32(h) < params.src_height && u32(w) < params.src_width;
        let v = select(0.0, src[select(0u, plane + u32(h) * params.src_width + u32(w), in_image)], in_image);
        let gv1 = channel_grads(g1, at);
        acc[0] += gv1[0] * v;
        acc[1] += gv1[1] * v;
        if wide {
            let gv2 = channel_grads(g2, at);
            let gv3 = channel_grads(g3, at);
            let gv4 = channel_grads(g4, at);
            acc[2] += gv2[0] * v;
            acc[3] += gv2[1] * v;
            acc[4] += gv3[0] * v;
            acc[5] += gv3[1] * v;
            acc[6] += gv4[0] * v;
            acc[7] += gv4[1] * v;
        }
        let row_done = j + 1u == params.dst_width;
        j = select(j + 1u, 0u, row_done);
        let image_done = row_done && i + 1u == params.dst_height;
        i = select(select(i, i + 1u, row_done), 0u, image_done);
        n = select(n, n + 1u, image_done);
        plane = select(plane, plane + src_image, image_done);
    }
    if column >= columns {
        return;
    }
    store_gradient_column(c0, column, columns, acc[0]);
    store_gradient_column(c0 + 4u, column, columns, acc[1]);
    if wide {
        store_gradient_column(c0 + 8u, column, columns, acc[2]);
        store_gradient_column(c0 + 12u, column, columns, acc[3]);
        store_gradient_column(c0 + 16u, column, columns, acc[4]);
        store_gradient_column(c0 + 20u, column, columns, acc[5]);
        store_gradient_column(c0 + 24u, column, columns, acc[6]);
        store_gradient_column(c0 + 28u, column, columns, acc[7]);
    }
}

// dst[c .. c + 3, column] = values, the channels past the last skipped.
fn store_gradient_column(c: u32, column: u32, columns: u32, values: vec4<f32>) {
    if c < params.dst_channels {
        dst[c * columns + column] = values.x;
    }
    if c + 1u < params.dst_channels {
        dst[(c + 1u) * columns + column] = values.y;
    }
    if c + 2u < params.dst_channels {
        dst[(c + 2u) * columns + column] = values.z;
    }
    if c + 3u < params.dst_channels {
        dst[(c + 3u) * columns + column] = values.w;
    }
}

// dst[c .. c + 3, column] (0 past the last channel or column).
fn load_gradient_column(c: u32, column: u32, columns: u32) -> vec4<f32> {
    let channels = vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u);
    let inside = (channels < vec4<u32>(params.dst_channels)) & vec4<bool>(column < columns);
    let at = select(vec4<u32>(0u), channels * columns + vec4<u32>(column), inside);
    return select(vec4<f32>(0.0), vec4<f32>(dst[at.x], dst[at.y], dst[at.z], dst[at.w]), inside);
}

// The accumulators store_gradient_rows writes, read back (0 past the last row or column).
fn load_gradient_rows(c0: u32, col0: u32, columns: u32) -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>;
    acc[0] = load_gradient_half(c0, col0, columns);
    acc[1] = load_gradient_half(c0, col0 + 32u, columns);
    acc[2] = load_gradient_half(c0 + 1u, col0, columns);
    acc[3] = load_gradient_half(c0 + 1u, col0 + 32u, columns);
    acc[4] = load_gradient_half(c0 + 2u, col0, columns);
    acc[5] = load_gradient_half(c0 + 2u, col0 + 32u, columns);
    acc[6] = load_gradient_half(c0 + 3u, col0, columns);
    acc[7] = load_gradient_half(c0 + 3u, col0 + 32u, columns);
    acc[8] = load_gradient_half(c0 + 4u, col0, columns);
    acc[9] = load_gradient_half(c0 + 4u, col0 + 32u, columns);
    acc[10] = load_gradient_half(c0 + 5u, col0, columns);
    acc[11] = load_gradient_half(c0 + 5u, col0 + 32u, columns);
    acc[12] = load_gradient_half(c0 + 6u, col0, columns);
    acc[13] = load_gradient_half(c0 + 6u, col0 + 32u, columns);
    acc[14] = load_gradient_half(c0 + 7u, col0, columns);
    acc[15] = load_gradient_half(c0 + 7u, col0 + 32u, columns);
    return acc;
}

// dst[c, col + 8 j] for j = 0..3 (0 past the last row or column).
fn load_gradient_half(c: u32, col: u32, columns: u32) -> vec4<f32> {
    let cols = vec4<u32>(col) + vec4<u32>(0u, 8u, 16u, 24u);
    let inside = vec4<bool>(c < params.dst_channels) & (cols < vec4<u32>(columns));
    let at = select(vec4<u32>(0u), vec4<u32>(c * columns) + cols, inside);
    let v = vec4<f32>(dst[at.x], dst[at.y], dst[at.z], dst[at.w]);
    return select(vec4<f32>(0.0), v, inside);
}

fn store_gradient_rows(c0: u32, col0: u32, columns: u32, acc: array<vec4<f32>, 16>) {
    store_gradient_row(c0, col0, columns, acc[0], acc[1]);
    store_gradient_row(c0 + 1u, col0, columns, acc[2], acc[3]);
    store_gradient_row(c0 + 2u, col0, columns, acc[4], acc[5]);
    store_gradient_row(c0 + 3u, col0, columns, acc[6], acc[7]);
    store_gradient_row(c0 + 4u, col0, columns, acc[8], acc[9]);
    store_gradient_row(c0 + 5u, col0, columns, acc[10], acc[11]);
    store_gradient_row(c0 + 6u, col0, columns, acc[12], acc[13]);
    store_gradient_row(c0 + 7u, col0, columns, acc[14], acc[15]);
}

// Row c of the weight gradient at columns col0 + 8 j, j = 0..7, those past the last skipped; unrolled (a dynamic
// index into the values would put them in memory).
fn store_gradient_row(c: u32, col0: u32, columns: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if c >= params.dst_channels || col0 >= columns {
        return;
    }
    let at = c * columns + col0;
    let count = columns - col0;   // columns from col0 on: column col0 + 8 j exists where 8 j < count
    dst[at] = lo.x;
    if count > 8u {
        dst[at + 8u] = lo.y;
    }
    if count > 16u {
        dst[at + 16u] = lo.z;
    }
    if count > 24u {
        dst[at + 24u] = lo.w;
    }
    if count > 32u {
        dst[at + 32u] = hi.x;
    }
    if count > 40u {
        dst[at + 40u] = hi.y;
    }
    if count > 48u {
        dst[at + 48u] = hi.z;
    }
    if count > 56u {
        dst[at + 56u] = hi.w;
    }
}

@compute @workgroup_size(8, 8)
fn dense_gather(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    dense_gather_body(group, local, 1u);
}

@compute @workgroup_size(8, 8)
fn dense_gather_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    dense_gather_body(group, local, 4u);
}

@compute @workgroup_size(8, 8)
fn dense_gather_wider(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    dense_gather_body(group, local, 8u);
}

@compute @workgroup_size(8, 8)
fn strided_gather(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    strided_gather_body(group, local, 1u);
}

@compute @workgroup_size(8, 8)
fn strided_gather_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    strided_gather_body(group, local, 4u);
}

@compute @workgroup_size(8, 8)
fn strided_gather_wider(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    strided_gather_body(group, local, 8u);
}

@compute @workgroup_size(8, 8)
fn weight_gradient(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    weight_gradient_body(group, local, 1u);
}

@compute @workgroup_size(8, 8)
fn weight_gradient_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    weight_gradient_body(group, local, 4u);
}

@compute @workgroup_size(8, 8)
fn weight_gradient_wider(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    weight_gradient_body(group, local, 8u);
}

@compute @workgroup_size(8)
fn weight_gradient_narrow(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    weight_gradient_narrow_body(group, local.x, false);
}

@compute @workgroup_size(8)
fn weight_gradient_narrow_wide(@builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>) {
    weight_gradient_narrow_body(group, local.x, true);
}
