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

// Keep in sync with `MatmulParams` in src/kernels/matmul.rs.
struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,    // 1: add bias[n] before the activation
    stride_a: u32,    // elements between consecutive products of the batch
    stride_b: u32,
    stride_c: u32,
    accumulate: u32,  // 1: C = C + result; 0: C = result (C is not read)
    activation: u32,  // 0 none, 1 ReLU, 2 LeakyReLU(slope), 3 sigmoid, 4 tanh, 5 SiLU
    slope: f32,       // LeakyReLU's negative slope
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;  // (batch, M, N), product z at z * stride_c
@group(0) @binding(2) var<storage, read> a: array<f32>;        // (batch, M, K), or (batch, K, M) for matmul_tn
@group(0) @binding(3) var<storage, read> b: array<f32>;        // (batch, K, N), or (batch, N, K) for matmul_nt
@group(0) @binding(4) var<storage, read> bias: array<f32>;     // (N); read only when has_bias

const TILE: u32 = 64u;        // edge of the C tile of one workgroup
const TILE_K: u32 = 16u;      // K values staged per step
const PER_THREAD: u32 = 4u;   // each thread owns PER_THREAD x PER_THREAD outputs
const THREADS: u32 = 256u;    // 16 x 16
const LOADS: u32 = 4u;        // TILE * TILE_K / THREADS values of each staged slice per thread

var<workgroup> tile_a: array<array<f32, 64>, 16>;  // [k][m]: op(A) rows row0 .. row0 + 63, k0 .. k0 + 15
var<workgroup> tile_b: array<array<f32, 64>, 16>;  // [k][n]: op(B) columns col0 .. col0 + 63

const ACT_NONE: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_LEAKY_RELU: u32 = 2u;
const ACT_SIGMOID: u32 = 3u;
const ACT_TANH: u32 = 4u;
const ACT_SILU: u32 = 5u;

fn sigmoid(v: f32) -> f32 {
    // Stable for both signs: exp of a non-positive number never overflows.
    if v >= 0.0 {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

fn activate(v: f32) -> f32 {
    switch params.activation {
        case ACT_RELU: { return max(v, 0.0); }
        case ACT_LEAKY_RELU: { return select(params.slope * v, v, v > 0.0); }
        case ACT_SIGMOID: { return sigmoid(v); }
        case ACT_TANH: { return tanh(v); }
        case ACT_SILU: { return v * sigmoid(v); }
        default: { return v; }
    }
}

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
            var v = acc[i][j];
            if params.has_bias != 0u {
                v = v + bias[col];
            }
            v = activate(v);
            let index = c_base + row * params.n + col;
            if params.accumulate != 0u {
                v = c[index] + v;
            }
            c[index] = v;
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
