// Shared by shaders/matmul.wgsl and shaders/matmul_subgroup.wgsl: the parameters, the bindings other than B and
// C, the epilogue's activations and the reads of op(A) by the register-tiled kernels.

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
// binding 1, C: array<f32> in matmul.wgsl, array<vec4<f32>> in matmul_subgroup.wgsl
@group(0) @binding(2) var<storage, read> a: array<f32>;        // (batch, M, K), or (batch, K, M) for matmul_tn
// binding 3, B: the same
@group(0) @binding(4) var<storage, read> bias: array<f32>;     // (N); read only when has_bias

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

// Element offset of op(A)[row, 0] and the step between op(A)[row, kk] and op(A)[row, kk + 1].
fn a_offset(a_transposed: bool, row: u32) -> u32 {
    return select(row * params.k, row, a_transposed);
}

// op(A)[row, kk] for the four rows whose offsets are in `rows` (A in bounds: rows are clamped).
fn a_column(a_transposed: bool, rows: vec4<u32>, kk: u32) -> vec4<f32> {
    let step = select(kk, kk * params.m, a_transposed);
    let o = rows + vec4<u32>(step);
    return vec4<f32>(a[o.x], a[o.y], a[o.z], a[o.w]);
}
