// The VAE's reparameterisation trick (Kingma & Welling 2014), forward and backward side by side.
//
// Dimensions: n = B * L elements (batch B, latent size L; the vae uses 128 x 20).
// Forward:  z = mu + eps * exp(logvar / 2), with eps ~ N(0, I) drawn beforehand (rng::normal_fill).
// Backward: dmu = dz,  dlogvar = dz * eps * exp(logvar / 2) / 2   (d z / d logvar = eps * exp(logvar / 2) / 2).
//           Only the path through z; the KL term's gradient is the loss's.
//
// include: shared/common.wgsl

// Keep in sync with `ReparamParams` in src/kernels/reparam.rs.
struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Outputs.
@group(0) @binding(1) var<storage, read_write> z: array<f32>;        // (B, L)
@group(0) @binding(2) var<storage, read_write> dmu: array<f32>;      // (B, L)
@group(0) @binding(3) var<storage, read_write> dlogvar: array<f32>;  // (B, L)
// Saved values and inputs.
@group(0) @binding(4) var<storage, read> eps: array<f32>;            // (B, L) the standard normal draw, saved
@group(0) @binding(5) var<storage, read> mu: array<f32>;             // (B, L)
@group(0) @binding(6) var<storage, read> logvar: array<f32>;         // (B, L)
@group(0) @binding(7) var<storage, read> dz: array<f32>;             // (B, L) upstream gradient

@compute @workgroup_size(256)
fn reparam_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    z[i] = mu[i] + eps[i] * exp(0.5 * logvar[i]);
}

@compute @workgroup_size(256)
fn reparam_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let g = dz[i];
    dmu[i] = g;
    dlogvar[i] = g * eps[i] * 0.5 * exp(0.5 * logvar[i]);
}
