// Matrix multiplication for CPU drivers whose subgroups are 8 lanes wide (lavapipe on 256-bit SIMD): the
// products, layouts and epilogue of shaders/matmul.wgsl, computed with fewer loads.
//
// Why: lavapipe runs 8 invocations as the 8 lanes of one SIMD register, but it reads a storage buffer one lane
// at a time (a loop over the lanes with a bounds check and a branch per element), so in the `*_registers`
// kernels the loads, not the multiply-adds, are ~85% of the time. These kernels cut the loads per multiply-add
// about 4-fold:
// - One workgroup is one subgroup of 8 lanes, and the lanes share their 16 rows of C. op(A) is read 8 values
//   of k at a time, lane l reading k0 + l for each of the 16 rows, and `subgroupBroadcast` hands each value to
//   the other lanes: one load per 8 uses instead of one per use.
// - Each lane owns 8 adjacent columns of C and reads op(B) as vec4 (one lane loop per 4 values): along N for
//   matmul_nn and matmul_tn, along K for matmul_nt. So B must be vec4-aligned: N % 4 == 0 (nn, tn) or
//   K % 4 == 0 (nt), and stride_b % 4 == 0; the host runs the `*_registers` kernels for other shapes.
// - C is written as vec4 and the bias read once per lane, not once per row: N % 4 == 0 and stride_c % 4 == 0
//   in every layout.
// A workgroup computes a 16 x 64 tile of C with 32 vec4 accumulators per lane. Indices into private arrays are
// constants: one dynamic index anywhere keeps the whole array in memory. Each output is still summed over
// k = 0, 1, ..., K-1 in increasing order with the same multiply-add as the other kernels, so the results are
// bit-identical to matmul.wgsl's `*_registers`. Rows and columns past the edges are clamped and discarded at
// the store.

// include: shared/matmul_common.wgsl

@group(0) @binding(1) var<storage, read_write> c: array<vec4<f32>>;  // (batch, M, N), N % 4 == 0
@group(0) @binding(3) var<storage, read> b: array<vec4<f32>>;  // (batch, K, N), or (batch, N, K) for matmul_nt

const ROWS: u32 = 16u;  // rows of C per workgroup, shared by its 8 lanes
const COLS: u32 = 64u;  // columns of C per workgroup, 8 adjacent ones per lane
const CHUNK: u32 = 8u;  // k values of op(A) read per lane per round (one per lane)

// 16 rows x 8 columns of C: acc[2 r] holds row r, columns 0..3 of the lane; acc[2 r + 1] columns 4..7.
alias Block = array<vec4<f32>, 32>;

// acc += op(A)[rows, kk] ⊗ op(B)[kk, columns]: a0..a3 are the 16 rows' values, b0 and b1 the 8 columns'.
fn multiply_add(acc: ptr<function, Block>, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
                b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[0] += a0.x * b0;
    (*acc)[1] += a0.x * b1;
    (*acc)[2] += a0.y * b0;
    (*acc)[3] += a0.y * b1;
    (*acc)[4] += a0.z * b0;
    (*acc)[5] += a0.z * b1;
    (*acc)[6] += a0.w * b0;
    (*acc)[7] += a0.w * b1;
    (*acc)[8] += a1.x * b0;
    (*acc)[9] += a1.x * b1;
    (*acc)[10] += a1.y * b0;
    (*acc)[11] += a1.y * b1;
    (*acc)[12] += a1.z * b0;
    (*acc)[13] += a1.z * b1;
    (*acc)[14] += a1.w * b0;
    (*acc)[15] += a1.w * b1;
    (*acc)[16] += a2.x * b0;
    (*acc)[17] += a2.x * b1;
    (*acc)[18] += a2.y * b0;
    (*acc)[19] += a2.y * b1;
    (*acc)[20] += a2.z * b0;
    (*acc)[21] += a2.z * b1;
    (*acc)[22] += a2.w * b0;
    (*acc)[23] += a2.w * b1;
    (*acc)[24] += a3.x * b0;
    (*acc)[25] += a3.x * b1;
    (*acc)[26] += a3.y * b0;
    (*acc)[27] += a3.y * b1;
    (*acc)[28] += a3.z * b0;
    (*acc)[29] += a3.z * b1;
    (*acc)[30] += a3.w * b0;
    (*acc)[31] += a3.w * b1;
}

// op(B)[kk, col0 .. col0 + 7] as two vec4: `cols` are the vec4 indices of op(B)[0, col0] and [0, col0 + 4] (nn, tn).
fn b_row(cols: vec2<u32>, kk: u32) -> array<vec4<f32>, 2> {
    let step = kk * (params.n / 4u);
    return array<vec4<f32>, 2>(b[cols.x + step], b[cols.y + step]);
}

// B's element at `offset` (the remainder of K in matmul_nt).
fn b_element(offset: u32) -> f32 {
    return b[offset / 4u][offset % 4u];
}

// bias[col .. col + 3] (columns clamped: past N they are discarded at the store), or 0 without a bias.
fn bias4(col: u32) -> vec4<f32> {
    if params.has_bias == 0u {
        return vec4<f32>(0.0);
    }
    let cols = min(vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.n - 1u));
    return vec4<f32>(bias[cols.x], bias[cols.y], bias[cols.z], bias[cols.w]);
}

fn activate4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(activate(v.x), activate(v.y), activate(v.z), activate(v.w));
}

// The epilogue of four adjacent outputs of C at vec4 index `index4`: bias, activation, store or accumulate.
// The bias is added only when there is one (adding 0 would turn a -0 into +0: other bits than matmul.wgsl's).
fn store4(index4: u32, sum: vec4<f32>, bias: vec4<f32>) {
    var v = sum;
    if params.has_bias != 0u {
        v = v + bias;
    }
    v = activate4(v);
    if params.accumulate != 0u {
        v = c[index4] + v;
    }
    c[index4] = v;
}

// One row of the lane's block: columns col0 .. col0 + 7 from `lo` (first four) and `hi` (last four). N % 4 == 0,
// so each half is in C or past it whole.
fn store_row(c_base4: u32, row: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>, bias_lo: vec4<f32>,
             bias_hi: vec4<f32>) {
    if row >= params.m || col0 >= params.n {
        return;
    }
    let index4 = c_base4 + (row * params.n + col0) / 4u;
    store4(index4, lo, bias_lo);
    if col0 + 4u < params.n {
        store4(index4 + 1u, hi, bias_hi);
    }
}

// The lane's 16 x 8 block of C at (row0, col0), row by row; C is read and written as vec4 (N % 4 == 0).
fn store_block(c_base: u32, row0: u32, col0: u32, acc: ptr<function, Block>) {
    let c_base4 = c_base / 4u;
    let bias_lo = bias4(col0);
    let bias_hi = bias4(col0 + 4u);
    store_row(c_base4, row0 + 0u, col0, (*acc)[0], (*acc)[1], bias_lo, bias_hi);
    store_row(c_base4, row0 + 1u, col0, (*acc)[2], (*acc)[3], bias_lo, bias_hi);
    store_row(c_base4, row0 + 2u, col0, (*acc)[4], (*acc)[5], bias_lo, bias_hi);
    store_row(c_base4, row0 + 3u, col0, (*acc)[6], (*acc)[7], bias_lo, bias_hi);
    store_row(c_base4, row0 + 4u, col0, (*acc)[8], (*acc)[9], bias_lo, bias_hi);
    store_row(c_base4, row0 + 5u, col0, (*acc)[10], (*acc)[11], bias_lo, bias_hi);
    store_row(c_base4, row0 + 6u, col0, (*acc)[12], (*acc)[13], bias_lo, bias_hi);
    store_row(c_base4, row0 + 7u, col0, (*acc)[14], (*acc)[15], bias_lo, bias_hi);
    store_row(c_base4, row0 + 8u, col0, (*acc)[16], (*acc)[17], bias_lo, bias_hi);
    store_row(c_base4, row0 + 9u, col0, (*acc)[18], (*acc)[19], bias_lo, bias_hi);
    store_row(c_base4, row0 + 10u, col0, (*acc)[20], (*acc)[21], bias_lo, bias_hi);
    store_row(c_base4, row0 + 11u, col0, (*acc)[22], (*acc)[23], bias_lo, bias_hi);
    store_row(c_base4, row0 + 12u, col0, (*acc)[24], (*acc)[25], bias_lo, bias_hi);
    store_row(c_base4, row0 + 13u, col0, (*acc)[26], (*acc)[27], bias_lo, bias_hi);
    store_row(c_base4, row0 + 14u, col0, (*acc)[28], (*acc)[29], bias_lo, bias_hi);
    store_row(c_base4, row0 + 15u, col0, (*acc)[30], (*acc)[31], bias_lo, bias_hi);
}

// Element offsets of op(A)[row, 0] for rows first .. first + 3 of the product at a_base, clamped into A.
fn row_offsets(a_transposed: bool, a_base: u32, first: u32) -> vec4<u32> {
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.m - 1u));
    return vec4<u32>(a_base) + vec4<u32>(a_offset(a_transposed, rows.x), a_offset(a_transposed, rows.y),
        a_offset(a_transposed, rows.z), a_offset(a_transposed, rows.w));
}

fn matmul_b_rows(a_transposed: bool, group: vec3<u32>, lane: u32) {
    let row0 = group.y * ROWS;
    let col0 = group.x * COLS + 8u * lane;
    let a_base = group.z * params.stride_a;
    let rows0 = row_offsets(a_transposed, a_base, row0 + 0u);
    let rows1 = row_offsets(a_transposed, a_base, row0 + 4u);
    let rows2 = row_offsets(a_transposed, a_base, row0 + 8u);
    let rows3 = row_offsets(a_transposed, a_base, row0 + 12u);
    // vec4 indices of op(B)[0, col0] and op(B)[0, col0 + 4], clamped into the row (N % 4 == 0).
    let last4 = params.n / 4u - 1u;
    let b_base4 = group.z * params.stride_b / 4u;
    let cols = vec2<u32>(b_base4 + min(col0 / 4u, last4), b_base4 + min(col0 / 4u + 1u, last4));
    var acc: Block;
    let whole = params.k / CHUNK * CHUNK;
    for (var k0 = 0u; k0 < whole; k0 += CHUNK) {
        // Lane l holds op(A)[row, k0 + l] of each row.
        let own0 = a_column(a_transposed, rows0, k0 + lane);
        let own1 = a_column(a_transposed, rows1, k0 + lane);
        let own2 = a_column(a_transposed, rows2, k0 + lane);
        let own3 = a_column(a_transposed, rows3, k0 + lane);
        let b0 = b_row(cols, k0 + 0u);
        multiply_add(&acc, subgroupBroadcast(own0, 0u), subgroupBroadcast(own1, 0u),
            subgroupBroadcast(own2, 0u), subgroupBroadcast(own3, 0u), b0[0], b0[1]);
        let b1 = b_row(cols, k0 + 1u);
        multiply_add(&acc, subgroupBroadcast(own0, 1u), subgroupBroadcast(own1, 1u),
            subgroupBroadcast(own2, 1u), subgroupBroadcast(own3, 1u), b1[0], b1[1]);
        let b2 = b_row(cols, k0 + 2u);
        multiply_add(&acc, subgroupBroadcast(own0, 2u), subgroupBroadcast(own1, 2u),
            subgroupBroadcast(own2, 2u), subgroupBroadcast(own3, 2u), b2[0], b2[1]);
        let b3 = b_row(cols, k0 + 3u);
        multiply_add(&acc, subgroupBroadcast(own0, 3u), subgroupBroadcast(own1, 3u),
            subgroupBroadcast(own2, 3u), subgroupBroadcast(own3, 3u), b3[0], b3[1]);
        let b4 = b_row(cols, k0 + 4u);
        multiply_add(&acc, subgroupBroadcast(own0, 4u), subgroupBroadcast(own1, 4u),
            subgroupBroadcast(own2, 4u), subgroupBroadcast(own3, 4u), b4[0], b4[1]);
        let b5 = b_row(cols, k0 + 5u);
        multiply_add(&acc, subgroupBroadcast(own0, 5u), subgroupBroadcast(own1, 5u),
            subgroupBroadcast(own2, 5u), subgroupBroadcast(own3, 5u), b5[0], b5[1]);
        let b6 = b_row(cols, k0 + 6u);
        multiply_add(&acc, subgroupBroadcast(own0, 6u), subgroupBroadcast(own1, 6u),
            subgroupBroadcast(own2, 6u), subgroupBroadcast(own3, 6u), b6[0], b6[1]);
        let b7 = b_row(cols, k0 + 7u);
        multiply_add(&acc, subgroupBroadcast(own0, 7u), subgroupBroadcast(own1, 7u),
            subgroupBroadcast(own2, 7u), subgroupBroadcast(own3, 7u), b7[0], b7[1]);
    }
    // The last K % 8 values of k, one at a time.
    for (var kk = whole; kk < params.k; kk++) {
        let bk = b_row(cols, kk);
        multiply_add(&acc, a_column(a_transposed, rows0, kk), a_column(a_transposed, rows1, kk),
            a_column(a_transposed, rows2, kk), a_column(a_transposed, rows3, kk), bk[0], bk[1]);
    }
    store_block(group.z * params.stride_c, row0, col0, &acc);
}

fn matmul_b_columns(group: vec3<u32>, lane: u32) {
    let a_transposed = false;
    let row0 = group.y * ROWS;
    let col0 = group.x * COLS + 8u * lane;
    let a_base = group.z * params.stride_a;
    let rows0 = row_offsets(a_transposed, a_base, row0 + 0u);
    let rows1 = row_offsets(a_transposed, a_base, row0 + 4u);
    let rows2 = row_offsets(a_transposed, a_base, row0 + 8u);
    let rows3 = row_offsets(a_transposed, a_base, row0 + 12u);
    // Element offsets of B[col0 + j, 0] (B is (N, K), K % 4 == 0), columns clamped.
    let b_base = group.z * params.stride_b;
    let last_col = params.n - 1u;
    let column0 = b_base + min(col0 + 0u, last_col) * params.k;
    let column1 = b_base + min(col0 + 1u, last_col) * params.k;
    let column2 = b_base + min(col0 + 2u, last_col) * params.k;
    let column3 = b_base + min(col0 + 3u, last_col) * params.k;
    let column4 = b_base + min(col0 + 4u, last_col) * params.k;
    let column5 = b_base + min(col0 + 5u, last_col) * params.k;
    let column6 = b_base + min(col0 + 6u, last_col) * params.k;
    let column7 = b_base + min(col0 + 7u, last_col) * params.k;
    var acc: Block;
    let whole = params.k / CHUNK * CHUNK;
    for (var k0 = 0u; k0 < whole; k0 += CHUNK) {
        // Lane l holds op(A)[row, k0 + l] of each row.
        let own0 = a_column(a_transposed, rows0, k0 + lane);
        let own1 = a_column(a_transposed, rows1, k0 + lane);
        let own2 = a_column(a_transposed, rows2, k0 + lane);
        let own3 = a_column(a_transposed, rows3, k0 + lane);
        // Column j's values at k0 .. k0 + 3 and k0 + 4 .. k0 + 7.
        let lo0 = b[(column0 + k0) / 4u];
        let hi0 = b[(column0 + k0) / 4u + 1u];
        let lo1 = b[(column1 + k0) / 4u];
        let hi1 = b[(column1 + k0) / 4u + 1u];
        let lo2 = b[(column2 + k0) / 4u];
        let hi2 = b[(column2 + k0) / 4u + 1u];
        let lo3 = b[(column3 + k0) / 4u];
        let hi3 = b[(column3 + k0) / 4u + 1u];
        let lo4 = b[(column4 + k0) / 4u];
        let hi4 = b[(column4 + k0) / 4u + 1u];
        let lo5 = b[(column5 + k0) / 4u];
        let hi5 = b[(column5 + k0) / 4u + 1u];
        let lo6 = b[(column6 + k0) / 4u];
        let hi6 = b[(column6 + k0) / 4u + 1u];
        let lo7 = b[(column7 + k0) / 4u];
        let hi7 = b[(column7 + k0) / 4u + 1u];
        multiply_add(&acc, subgroupBroadcast(own0, 0u), subgroupBroadcast(own1, 0u),
            subgroupBroadcast(own2, 0u), subgroupBroadcast(own3, 0u),
            vec4<f32>(lo0.x, lo1.x, lo2.x, lo3.x), vec4<f32>(lo4.x, lo5.x, lo6.x, lo7.x));
        multiply_add(&acc, subgroupBroadcast(own0, 1u), subgroupBroadcast(own1, 1u),
            subgroupBroadcast(own2, 1u), subgroupBroadcast(own3, 1u),
            vec4<f32>(lo0.y, lo1.y, lo2.y, lo3.y), vec4<f32>(lo4.y, lo5.y, lo6.y, lo7.y));
        multiply_add(&acc, subgroupBroadcast(own0, 2u), subgroupBroadcast(own1, 2u),
            subgroupBroadcast(own2, 2u), subgroupBroadcast(own3, 2u),
            vec4<f32>(lo0.z, lo1.z, lo2.z, lo3.z), vec4<f32>(lo4.z, lo5.z, lo6.z, lo7.z));
        multiply_add(&acc, subgroupBroadcast(own0, 3u), subgroupBroadcast(own1, 3u),
            subgroupBroadcast(own2, 3u), subgroupBroadcast(own3, 3u),
            vec4<f32>(lo0.w, lo1.w, lo2.w, lo3.w), vec4<f32>(lo4.w, lo5.w, lo6.w, lo7.w));
        multiply_add(&acc, subgroupBroadcast(own0, 4u), subgroupBroadcast(own1, 4u),
            subgroupBroadcast(own2, 4u), subgroupBroadcast(own3, 4u),
            vec4<f32>(hi0.x, hi1.x, hi2.x, hi3.x), vec4<f32>(hi4.x, hi5.x, hi6.x, hi7.x));
        multiply_add(&acc, subgroupBroadcast(own0, 5u), subgroupBroadcast(own1, 5u),
            subgroupBroadcast(own2, 5u), subgroupBroadcast(own3, 5u),
            vec4<f32>(hi0.y, hi1.y, hi2.y, hi3.y), vec4<f32>(hi4.y, hi5.y, hi6.y, hi7.y));
        multiply_add(&acc, subgroupBroadcast(own0, 6u), subgroupBroadcast(own1, 6u),
            subgroupBroadcast(own2, 6u), subgroupBroadcast(own3, 6u),
            vec4<f32>(hi0.z, hi1.z, hi2.z, hi3.z), vec4<f32>(hi4.z, hi5.z, hi6.z, hi7.z));
        multiply_add(&acc, subgroupBroadcast(own0, 7u), subgroupBroadcast(own1, 7u),
            subgroupBroadcast(own2, 7u), subgroupBroadcast(own3, 7u),
            vec4<f32>(hi0.w, hi1.w, hi2.w, hi3.w), vec4<f32>(hi4.w, hi5.w, hi6.w, hi7.w));
    }
    // The last K % 8 values of k, one at a time.
    for (var kk = whole; kk < params.k; kk++) {
        let bk0 = vec4<f32>(b_element(column0 + kk), b_element(column1 + kk), b_element(column2 + kk),
            b_element(column3 + kk));
        let bk1 = vec4<f32>(b_element(column4 + kk), b_element(column5 + kk), b_element(column6 + kk),
            b_element(column7 + kk));
        multiply_add(&acc, a_column(a_transposed, rows0, kk), a_column(a_transposed, rows1, kk),
            a_column(a_transposed, rows2, kk), a_column(a_transposed, rows3, kk), bk0, bk1);
    }
    store_block(group.z * params.stride_c, row0, col0, &acc);
}

// C (M, N) = A (M, K) · B (K, N), N % 4 == 0
@compute @workgroup_size(8, 1)
fn matmul_nn_subgroup(@builtin(workgroup_id) group: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    matmul_b_rows(false, group, lane);
}

// C (M, N) = A (M, K) · B (N, K)ᵀ, K % 4 == 0
@compute @workgroup_size(8, 1)
fn matmul_nt_subgroup(@builtin(workgroup_id) group: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    matmul_b_columns(group, lane);
}

// C (M, N) = A (K, M)ᵀ · B (K, N), N % 4 == 0
@compute @workgroup_size(8, 1)
fn matmul_tn_subgroup(@builtin(workgroup_id) group: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    matmul_b_rows(true, group, lane);
}
