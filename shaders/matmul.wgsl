// Matrix multiplication with a fused epilogue: C = act(op(A) · op(B) + bias), or C = C + act(...).
//
// Dimensions: M = rows of C, N = columns of C, K = the summed dimension; `batch` independent products run
// side by side (dispatch z), product z reading A at z * stride_a, B at z * stride_b and writing C at
// z * stride_c (element offsets). All matrices are row-major. Three layouts, named as in BLAS (N = as stored,
// T = transposed):
//   matmul_nn: C (M, N) = A (M, K) · B (K, N)    linear input gradient   dx (B, in) = dy (B, out) · W (out, in)
//   matmul_nt: C (M, N) = A (M, K) · B (N, K)ᵀ   linear forward          y (B, out) = x (B, in) · W (out, in)ᵀ + b
//   matmul_tn: C (M, N) = A (K, M)ᵀ · B (K, N)   linear weight gradient  dW (out, in) = dy (B, out)ᵀ · x (B, in)
// Epilogue, per element of C: v = acc + bias[n] (when has_bias); v = act(v); then C = v, or C = C + v when
// accumulate (beta = 1, for gradient accumulation). Activations use the formulas of shaders/activation.wgsl.
//
// Tiling: each workgroup of 16 x 16 threads computes a 64 x 64 tile of C; each thread keeps a 4 x 4 block of
// outputs in registers (rows 4 * ty .. 4 * ty + 3, four adjacent columns 4 * tx .. 4 * tx + 3). K is walked 16
// at a time: the workgroup stages a 64 x 16 slice of op(A) and a 16 x 64 slice of op(B) in workgroup memory
// (2 x 4 KiB), each global load reading along whichever axis is contiguous in memory, then every thread does
// 4 x 4 x 16 multiply-adds from it. Each output is summed over k = 0, 1, ..., K-1 in that order in f32, so
// results are deterministic. Elements past the edges of A and B load as 0, so any M, N, K works.
//
// The `*_registers` entry points compute the same products without workgroup memory, for CPU drivers
// (lavapipe), where a barrier switches between the workgroup's invocations and costs more than the loads it
// saves. A workgroup of 8 x 4 threads computes a 32 x 64 tile of C; each thread keeps 8 rows x 8 columns of C
// in sixteen vec4 accumulators, rows 8 ty .. 8 ty + 7 and columns tx, tx + 8, ..., tx + 56, so the 8 lanes a
// CPU driver runs side by side read neighbouring columns of B. Indices into private arrays are constants (a
// dynamic index sends the array to memory), and rows and columns past the edges are clamped to the last one
// and discarded at the store, so the K loop has no bounds checks. Each output is summed over k in increasing
// order, as in the tiled kernel.

// include: shared/matmul_common.wgsl

@group(0) @binding(1) var<storage, read_write> c: array<f32>;  // (batch, M, N), product z at z * stride_c
@group(0) @binding(3) var<storage, read> b: array<f32>;        // (batch, K, N), or (batch, N, K) for matmul_nt

// The epilogue of one output of C at `index` (column `col`): bias, activation, then store or accumulate.
fn store_output(index: u32, col: u32, sum: f32) {
    var v = sum;
    if params.has_bias != 0u {
        v = v + bias[col];
    }
    v = activate(v);
    if params.accumulate != 0u {
        v = c[index] + v;
    }
    c[index] = v;
}

const TILE: u32 = 64u;        // edge of the C tile of one workgroup
const TILE_K: u32 = 16u;      // K values staged per step
const PER_THREAD: u32 = 4u;   // each thread owns PER_THREAD x PER_THREAD outputs
const THREADS: u32 = 256u;    // 16 x 16
const LOADS: u32 = 4u;        // TILE * TILE_K / THREADS values of each staged slice per thread

var<workgroup> tile_a: array<array<f32, 64>, 16>;  // [k][m]: op(A) rows row0 .. row0 + 63, k0 .. k0 + 15
var<workgroup> tile_b: array<array<f32, 64>, 16>;  // [k][n]: op(B) columns col0 .. col0 + 63

// op(A)[row, kk] of product `base`, or 0 past the edge.
fn load_a(a_transposed: bool, base: u32, row: u32, kk: u32) -> f32 {
    if row >= params.m || kk >= params.k {
        return 0.0;
    }
    if a_transposed {
        return a[base + kk * params.m + row];
    }
    return a[base + row * params.k + kk];
}

// op(B)[kk, col] of product `base`, or 0 past the edge.
fn load_b(b_transposed: bool, base: u32, kk: u32, col: u32) -> f32 {
    if kk >= params.k || col >= params.n {
        return 0.0;
    }
    if b_transposed {
        return b[base + col * params.k + kk];
    }
    return b[base + kk * params.n + col];
}

// The whole kernel; the three entry points differ only in the layout flags (constants after inlining).
fn matmul_tile(a_transposed: bool, b_transposed: bool, group: vec3<u32>, local: vec3<u32>, local_index: u32) {
    let row0 = group.y * TILE;
    let col0 = group.x * TILE;
    let a_base = group.z * params.stride_a;
    let b_base = group.z * params.stride_b;
    let tx = local.x;
    let ty = local.y;

    var acc: array<array<f32, 4>, 4>;  // [i][j]: C[row0 + 4 ty + i, col0 + 4 tx + j], zero-initialised
    var a_reg: array<f32, 4>;
    var b_reg: array<f32, 4>;

    for (var k0 = 0u; k0 < params.k; k0 = k0 + TILE_K) {
        // Stage the slices. Consecutive threads read consecutive addresses of the stored layout.
        for (var l = 0u; l < LOADS; l = l + 1u) {
            let idx = local_index + l * THREADS;
            // A slice: 64 rows (m) x 16 k.
            var m_local = idx / TILE_K;   // A (M, K): k is contiguous
            var ka_local = idx % TILE_K;
            if a_transposed {             // A (K, M): m is contiguous
                m_local = idx % TILE;
                ka_local = idx / TILE;
            }
            tile_a[ka_local][m_local] = load_a(a_transposed, a_base, row0 + m_local, k0 + ka_local);
            // B slice: 16 k x 64 columns (n).
            var n_local = idx % TILE;      // B (K, N): n is contiguous
            var kb_local = idx / TILE;
            if b_transposed {              // B (N, K): k is contiguous
                n_local = idx / TILE_K;
                kb_local = idx % TILE_K;
            }
            tile_b[kb_local][n_local] = load_b(b_transposed, b_base, k0 + kb_local, col0 + n_local);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
            for (var i = 0u; i < PER_THREAD; i = i + 1u) {
                a_reg[i] = tile_a[kk][PER_THREAD * ty + i];
                b_reg[i] = tile_b[kk][PER_THREAD * tx + i];
            }
            for (var i = 0u; i < PER_THREAD; i = i + 1u) {
                for (var j = 0u; j < PER_THREAD; j = j + 1u) {
                    acc[i][j] = acc[i][j] + a_reg[i] * b_reg[j];
                }
            }
        }
        workgroupBarrier();
    }

    // Epilogue: bias, activation, store or accumulate.
    let c_base = group.z * params.stride_c;
    for (var i = 0u; i < PER_THREAD; i = i + 1u) {
        let row = row0 + PER_THREAD * ty + i;
        if row >= params.m {
            break;
        }
        for (var j = 0u; j < PER_THREAD; j = j + 1u) {
            let col = col0 + PER_THREAD * tx + j;
            if col >= params.n {
                break;
            }
            store_output(c_base + row * params.n + col, col, acc[i][j]);
        }
    }
}

// C (M, N) = A (M, K) · B (K, N)
@compute @workgroup_size(16, 16)
fn matmul_nn(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    matmul_tile(false, false, group, local, local_index);
}

// C (M, N) = A (M, K) · B (N, K)ᵀ
@compute @workgroup_size(16, 16)
fn matmul_nt(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    matmul_tile(false, true, group, local, local_index);
}

// C (M, N) = A (K, M)ᵀ · B (K, N)
@compute @workgroup_size(16, 16)
fn matmul_tn(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    matmul_tile(true, false, group, local, local_index);
}

// ---- Register-tiled variant (CPU drivers) ----

const REG_ROWS: u32 = 8u;   // rows of C per thread
const REG_TILE_M: u32 = 32u;  // 4 threads along y
const REG_TILE_N: u32 = 64u;  // 8 threads along x, 8 interleaved columns each

// op(B)[kk, col] for the four columns whose offsets are in `cols`.
fn b_row(b_transposed: bool, cols: vec4<u32>, kk: u32) -> vec4<f32> {
    let step = select(kk * params.n, kk, b_transposed);
    let o = cols + vec4<u32>(step);
    return vec4<f32>(b[o.x], b[o.y], b[o.z], b[o.w]);
}

// Epilogue for one row of a thread's block: columns col0, col0 + 8, ..., col0 + 56 from `lo` (first four) and
// `hi` (last four).
fn store_row(c_base: u32, row: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if row >= params.m {
        return;
    }
    let values = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    for (var j = 0u; j < 8u; j++) {
        let col = col0 + 8u * j;
        if col >= params.n {
            return;
        }
        store_output(c_base + row * params.n + col, col, values[j]);
    }
}

fn matmul_registers(a_transposed: bool, b_transposed: bool, group: vec3<u32>, local: vec3<u32>) {
    let row0 = group.y * REG_TILE_M + local.y * REG_ROWS;
    let col0 = group.x * REG_TILE_N + local.x;
    let a_base = group.z * params.stride_a;
    let b_base = group.z * params.stride_b;
    // Offsets of the thread's 8 rows of op(A) and 8 columns of op(B), clamped into the matrices.
    let last_row = vec4<u32>(params.m - 1u);
    let rows_lo = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), last_row);
    let rows_hi = min(vec4<u32>(row0) + vec4<u32>(4u, 5u, 6u, 7u), last_row);
    let ra_lo = vec4<u32>(a_base) + vec4<u32>(a_offset(a_transposed, rows_lo.x), a_offset(a_transposed, rows_lo.y),
        a_offset(a_transposed, rows_lo.z), a_offset(a_transposed, rows_lo.w));
    let ra_hi = vec4<u32>(a_base) + vec4<u32>(a_offset(a_transposed, rows_hi.x), a_offset(a_transposed, rows_hi.y),
        a_offset(a_transposed, rows_hi.z), a_offset(a_transposed, rows_hi.w));
    let last_col = vec4<u32>(params.n - 1u);
    let cols_lo = min(vec4<u32>(col0) + vec4<u32>(0u, 8u, 16u, 24u), last_col);
    let cols_hi = min(vec4<u32>(col0) + vec4<u32>(32u, 40u, 48u, 56u), last_col);
    let col_stride = vec4<u32>(select(1u, params.k, b_transposed));
    let cb_lo = vec4<u32>(b_base) + cols_lo * col_stride;
    let cb_hi = vec4<u32>(b_base) + cols_hi * col_stride;

    // acc[2 i]: row i, columns 0..3 of the block; acc[2 i + 1]: row i, columns 4..7.
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < params.k; kk++) {
        let b_lo = b_row(b_transposed, cb_lo, kk);
        let b_hi = b_row(b_transposed, cb_hi, kk);
        let a_lo = a_column(a_transposed, ra_lo, kk);
        let a_hi = a_column(a_transposed, ra_hi, kk);
        acc[0] += a_lo.x * b_lo;
        acc[1] += a_lo.x * b_hi;
        acc[2] += a_lo.y * b_lo;
        acc[3] += a_lo.y * b_hi;
        acc[4] += a_lo.z * b_lo;
        acc[5] += a_lo.z * b_hi;
        acc[6] += a_lo.w * b_lo;
        acc[7] += a_lo.w * b_hi;
        acc[8] += a_hi.x * b_lo;
        acc[9] += a_hi.x * b_hi;
        acc[10] += a_hi.y * b_lo;
        acc[11] += a_hi.y * b_hi;
        acc[12] += a_hi.z * b_lo;
        acc[13] += a_hi.z * b_hi;
        acc[14] += a_hi.w * b_lo;
        acc[15] += a_hi.w * b_hi;
    }

    let c_base = group.z * params.stride_c;
    store_row(c_base, row0, col0, acc[0], acc[1]);
    store_row(c_base, row0 + 1u, col0, acc[2], acc[3]);
    store_row(c_base, row0 + 2u, col0, acc[4], acc[5]);
    store_row(c_base, row0 + 3u, col0, acc[6], acc[7]);
    store_row(c_base, row0 + 4u, col0, acc[8], acc[9]);
    store_row(c_base, row0 + 5u, col0, acc[10], acc[11]);
    store_row(c_base, row0 + 6u, col0, acc[12], acc[13]);
    store_row(c_base, row0 + 7u, col0, acc[14], acc[15]);
}

// Products of one column (N = 1: a linear layer to one output, as the gan discriminator's last): a thread per row
// of C, summing over k in increasing order with the registers kernels' multiply-add, so the same bits; the 8 x 8
// tile of the registers kernels would keep one lane of 64 busy. op(B)[k, 0] is b[k] in every layout.
const COLUMN_ROWS: u32 = 64u;

fn matmul_column(a_transposed: bool, group: vec3<u32>, local: u32) {
    let row = group.y * COLUMN_ROWS + local;
    if row >= params.m {
        return;
    }
    let a_base = group.z * params.stride_a;
    let b_base = group.z * params.stride_b;
    let a_at = a_base + a_offset(a_transposed, row);
    let a_step = select(1u, params.m, a_transposed);
    var acc = 0.0;
    for (var kk = 0u; kk < params.k; kk++) {
        acc += a[a_at + kk * a_step] * b[b_base + kk];
    }
    store_output(group.z * params.stride_c + row, 0u, acc);
}

@compute @workgroup_size(64)
fn matmul_nn_column(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    matmul_column(false, group, local);
}

@compute @workgroup_size(64)
fn matmul_nt_column(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    matmul_column(false, group, local);
}

@compute @workgroup_size(64)
fn matmul_tn_column(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    matmul_column(true, group, local);
}

// C (M, N) = A (M, K) · B (K, N), register-tiled
@compute @workgroup_size(8, 4)
fn matmul_nn_registers(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_registers(false, false, group, local);
}

// C (M, N) = A (M, K) · B (N, K)ᵀ, register-tiled
@compute @workgroup_size(8, 4)
fn matmul_nt_registers(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_registers(false, true, group, local);
}

// C (M, N) = A (K, M)ᵀ · B (K, N), register-tiled
@compute @workgroup_size(8, 4)
fn matmul_tn_registers(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_registers(true, false, group, local);
}
