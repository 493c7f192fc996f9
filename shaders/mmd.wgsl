// Maximum mean discrepancy between encoded codes and prior samples: the WAE-MMD regulariser (Tolstikhin et al.
// 2018, Algorithm 2), with the inverse multiquadratic kernel, reduced deterministically (no atomics).
//
// Dimensions: B = batch (codes, and as many prior samples), D = latent dimensions.
//   k(a, b) = Σ_s sC / (sC + |a - b|²),  s in {0.1, 0.2, 0.5, 1, 2, 5, 10},  C = 2 D σ² (σ² = 1, the variance of
//   the N(0, I) prior). The sum over scales is the WAE authors' code: a single scale's gradient vanishes for codes
//   far from the prior (it falls as |a - b|^-3), the larger scales keep pulling them in.
// The unbiased estimate (a U-statistic: the diagonal i = j of the two within-set sums is left out):
//   MMD = 1/(B(B-1)) Σ_{i≠j} k(p_i, p_j) + 1/(B(B-1)) Σ_{i≠j} k(z_i, z_j) - 2/B² Σ_{i,j} k(z_i, p_j)
// split into one share per sample i, so that the shares sum to MMD:
//   share_i = 1/(B(B-1)) Σ_{j≠i} (k(p_i, p_j) + k(z_i, z_j)) - 2/B² Σ_j k(z_i, p_j)
// The loss is weight · MMD (weight = λ = 10 for the WAE), so that it adds to the reconstruction like any loss:
//   mmd_forward:  per_sample (B) = weight · B · share_i  (one workgroup a sample; loss_mean of loss.wgsl then
//                 takes scale 1/B and gives weight · MMD)
//   mmd_backward: dz (B, D) = weight · (2/(B(B-1)) Σ_{j≠i} g(z_i, z_j) - 2/B² Σ_j g(z_i, p_j)), with
//                 g(a, b) = ∂k(a, b)/∂a = -2 (a - b) Σ_s sC / (sC + |a - b|²)². (Each pair {i, j} of the z-z
//                 sum appears twice, hence the 2.) The prior samples are constants: no gradient reaches them.
//
// include: shared/common.wgsl
// include: shared/reduce.wgsl

// Keep in sync with `MmdParams` in src/kernels/mmd.rs.
struct Params {
    batch: u32,        // B (at least 2)
    dim: u32,          // D
    c: f32,            // C = 2 D σ², the base scale
    weight: f32,       // λ
    accumulate: u32,   // mmd_backward: 1 adds into dz instead of overwriting
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // per_sample (B), or dz (B, D)
@group(0) @binding(2) var<storage, read> z: array<f32>;           // (B, D) codes from the encoder
@group(0) @binding(3) var<storage, read> prior: array<f32>;       // (B, D) samples of N(0, I)

// |a_i - b_j|² over the D dimensions, a and b selected by `a_is_z` / `b_is_z`.
fn squared_distance(a_is_z: bool, i: u32, b_is_z: bool, j: u32) -> f32 {
    var total = 0.0;
    for (var d = 0u; d < params.dim; d = d + 1u) {
        let a = select(prior[i * params.dim + d], z[i * params.dim + d], a_is_z);
        let b = select(prior[j * params.dim + d], z[j * params.dim + d], b_is_z);
        total = total + (a - b) * (a - b);
    }
    return total;
}

// The scale factors s of the kernel's terms.
fn scale(index: u32) -> f32 {
    var scales = array<f32, 7>(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0);
    return scales[index];
}

// k = Σ_s sC / (sC + |a - b|²)
fn imq(squared: f32) -> f32 {
    var total = 0.0;
    for (var s = 0u; s < 7u; s = s + 1u) {
        let c = scale(s) * params.c;
        total = total + c / (c + squared);
    }
    return total;
}

// -dk/d|a - b|² = Σ_s sC / (sC + |a - b|²)²
fn imq_slope(squared: f32) -> f32 {
    var total = 0.0;
    for (var s = 0u; s < 7u; s = s + 1u) {
        let c = scale(s) * params.c;
        total = total + c / ((c + squared) * (c + squared));
    }
    return total;
}

// per_sample[i] = weight · B · share_i
@compute @workgroup_size(256)
fn mmd_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = group.x + group.y * groups.x;
    if i >= params.batch { return; }  // the whole workgroup leaves together
    let n = f32(params.batch);
    let within = 1.0 / (n * (n - 1.0));
    let across = 2.0 / (n * n);
    var partial = 0.0;
    for (var j = local; j < params.batch; j = j + WG_REDUCE) {
        if j != i {
            partial = partial + within * (imq(squared_distance(false, i, false, j)) + imq(squared_distance(true, i, true, j)));
        }
        partial = partial - across * imq(squared_distance(true, i, false, j));
    }
    let total = workgroup_sum(local, partial);
    if local == 0u {
        out[i] = params.weight * n * total;
    }
}

// dz[i, d] = weight · (2/(B(B-1)) Σ_{j≠i} g(z_i, z_j)[d] - 2/B² Σ_j g(z_i, p_j)[d]), one thread per (i, d)
@compute @workgroup_size(256)
fn mmd_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = linear_index(id, groups);
    if index >= params.batch * params.dim { return; }
    let i = index / params.dim;
    let d = index % params.dim;
    let n = f32(params.batch);
    let zi = z[index];
    var within = 0.0;  // Σ_{j≠i} g(z_i, z_j)[d] without the factor -2
    var across = 0.0;  // Σ_j g(z_i, p_j)[d] without the factor -2
    for (var j = 0u; j < params.batch; j = j + 1u) {
        if j != i {
            within = within + (zi - z[j * params.dim + d]) * imq_slope(squared_distance(true, i, true, j));
        }
        across = across + (zi - prior[j * params.dim + d]) * imq_slope(squared_distance(true, i, false, j));
    }
    let g = -2.0 * (2.0 / (n * (n - 1.0)) * within - 2.0 / (n * n) * across);
    let value = params.weight * g;
    if params.accumulate != 0u {
        out[index] = out[index] + value;
    } else {
        out[index] = value;
    }
}
