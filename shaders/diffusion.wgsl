// Denoising diffusion: the forward process q(x_t | x_0), DDPM's ancestral sampling step (Ho et al. 2020,
// Algorithm 2), the DDIM step with eta = 0 (Song et al. 2021), the sinusoidal timestep embedding, and the
// inpainting mix with RePaint's jump back (renoise).
//
// Dimensions: N = samples, C, H, W = image channels and size, D = C * H * W values per sample (per_sample),
//             n = N * D; T = schedule length (1000); E = embedding width (64), E / 2 frequencies.
//
// The schedule is computed on the host in f64 (src/kernels/diffusion.rs, `Schedule`) and uploaded once as a table
// of rows, one per timestep t = 0 .. T-1. A timestep of -1 means clean data: \bar\alpha = 1.
// Training draws one t per sample (the u32 buffer `t`, (N)); sampling moves every sample from `sample_step.t`
// to `sample_step.t_prev`, in a small uniform buffer the host rewrites before each submit (`SampleStep`), so the
// recorded dispatches are replayed unchanged. Everything in `params` is constant.
//
// include: shared/common.wgsl

// Keep in sync with `DiffusionParams` in src/kernels/diffusion.rs.
struct Params {
    n: u32,
    per_sample: u32,   // D, or E for the embedding
    steps: u32,        // T: timesteps past the table are clamped to T - 1
    mask_len: u32,     // inpaint_mix: the mask repeats every mask_len values (D: one mask for all samples; n)
    clamp_final: u32,  // 1: clamp to [-1, 1] when a sampling step reaches clean data (t_prev = -1)
    eta: f32,          // ddim_eta_step: the noise of Song et al.'s eta (1: as much as the ancestral step's)
    _pad1: u32,
    _pad2: u32,
}

// Keep in sync with `SampleStep` in src/kernels/diffusion.rs. Rewritten by the host before each submit.
struct SampleStep {
    t: u32,       // x holds x_t
    t_prev: i32,  // the step goes to x_{t_prev}: t - 1 for DDPM, the previous timestep of DDIM's subsequence;
                  // -1 is clean data. inpaint_mix mixes at level t_prev.
    _pad0: u32,
    _pad1: u32,
}

// Keep in sync with `ScheduleRow` in src/kernels/diffusion.rs (all f32: no padding).
struct ScheduleRow {
    sqrt_alpha_bar: f32,            // \sqrt{\bar\alpha_t},  \bar\alpha_t = \prod_{s<=t} (1 - \beta_s)
    sqrt_one_minus_alpha_bar: f32,  // \sqrt{1 - \bar\alpha_t}
    inv_sqrt_alpha: f32,            // 1 / \sqrt{\alpha_t} = 1 / \sqrt{1 - \beta_t}
    eps_coef: f32,                  // \beta_t / \sqrt{1 - \bar\alpha_t}
    sigma: f32,                     // \sigma_t = \sqrt{\beta_t}
    beta: f32,                      // \beta_t
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x_t: array<f32>;        // (N, C, H, W) q_sample's output
@group(0) @binding(2) var<storage, read_write> x: array<f32>;          // (N, C, H, W) the sample, in place
@group(0) @binding(3) var<storage, read_write> emb: array<f32>;        // (N, E) timestep embedding
@group(0) @binding(4) var<storage, read> x0: array<f32>;               // (N, C, H, W) clean data (known pixels)
@group(0) @binding(5) var<storage, read> eps: array<f32>;              // (N, C, H, W) noise ~ N(0, I)
@group(0) @binding(6) var<storage, read> eps_theta: array<f32>;        // (N, C, H, W) the network's noise estimate
@group(0) @binding(7) var<storage, read> z: array<f32>;                // (N, C, H, W) fresh noise ~ N(0, I)
@group(0) @binding(8) var<storage, read> mask: array<f32>;             // (mask_len) 1 = known pixel, 0 = generate
@group(0) @binding(9) var<storage, read> t: array<u32>;                // (N) timestep per sample
@group(0) @binding(10) var<storage, read> frequencies: array<f32>;     // (E / 2) f_i = exp(-ln(10000) i / (E / 2))
@group(0) @binding(11) var<storage, read> schedule: array<ScheduleRow>; // (T)
@group(0) @binding(12) var<uniform> sample_step: SampleStep;

fn row(timestep: u32) -> ScheduleRow {
    return schedule[min(timestep, params.steps - 1u)];
}

// \sqrt{\bar\alpha} and \sqrt{1 - \bar\alpha} at a timestep that may be -1 (clean data: 1 and 0).
fn signal_noise(timestep: i32) -> vec2<f32> {
    if timestep < 0 {
        return vec2<f32>(1.0, 0.0);
    }
    let r = row(u32(timestep));
    return vec2<f32>(r.sqrt_alpha_bar, r.sqrt_one_minus_alpha_bar);
}

// Forward process (Algorithm 1): x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t} eps, t per sample.
@compute @workgroup_size(256)
fn q_sample(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let r = row(t[i / params.per_sample]);
    x_t[i] = r.sqrt_alpha_bar * x0[i] + r.sqrt_one_minus_alpha_bar * eps[i];
}

// Ancestral step (Algorithm 2) from sample_step.t to sample_step.t - 1:
//   x = (x - \beta_t / \sqrt{1 - \bar\alpha_t} eps_theta) / \sqrt{\alpha_t} + \sigma_t z,  z only for t > 0;
// at t = 0 the result is x_0, clamped to [-1, 1] when params.clamp_final is 1.
@compute @workgroup_size(256)
fn ddpm_step(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let r = row(sample_step.t);
    var value = r.inv_sqrt_alpha * (x[i] - r.eps_coef * eps_theta[i]);
    if sample_step.t > 0u {
        value += r.sigma * z[i];
    } else if params.clamp_final != 0u {
        value = clamp(value, -1.0, 1.0);
    }
    x[i] = value;
}

// DDIM step, eta = 0, from sample_step.t to sample_step.t_prev (deterministic):
//   x0_pred = (x - \sqrt{1 - \bar\alpha_t} eps_theta) / \sqrt{\bar\alpha_t}
//   x = \sqrt{\bar\alpha_{prev}} x0_pred + \sqrt{1 - \bar\alpha_{prev}} eps_theta   (t_prev = -1: x = x0_pred,
//   clamped to [-1, 1] when params.clamp_final is 1).
@compute @workgroup_size(256)
fn ddim_step(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let now = signal_noise(i32(sample_step.t));
    let prev = signal_noise(sample_step.t_prev);
    let e = eps_theta[i];
    let x0_pred = (x[i] - now.y * e) / now.x;
    if sample_step.t_prev < 0 {
        x[i] = select(x0_pred, clamp(x0_pred, -1.0, 1.0), params.clamp_final != 0u);
    } else {
        x[i] = prev.x * x0_pred + prev.y * e;
    }
}

// DDIM step with noise, eta > 0 (Song et al. 2021, eq. 12 and 16), from sample_step.t to sample_step.t_prev:
//   sigma = eta \sqrt{(1 - \bar\alpha_{prev}) / (1 - \bar\alpha_t)} \sqrt{1 - \bar\alpha_t / \bar\alpha_{prev}}
//   x = \sqrt{\bar\alpha_{prev}} x0_pred + \sqrt{1 - \bar\alpha_{prev} - sigma²} eps_theta + sigma z
// (t_prev = -1: x = x0_pred, clamped when params.clamp_final is 1). eta = 1 over every timestep is the ancestral
// step; over a subsequence it keeps the ancestral walk's noise at a fraction of its network evaluations.
@compute @workgroup_size(256)
fn ddim_eta_step(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let now = signal_noise(i32(sample_step.t));
    let prev = signal_noise(sample_step.t_prev);
    let e = eps_theta[i];
    let x0_pred = (x[i] - now.y * e) / now.x;
    if sample_step.t_prev < 0 {
        x[i] = select(x0_pred, clamp(x0_pred, -1.0, 1.0), params.clamp_final != 0u);
    } else {
        let ab_now = now.x * now.x;
        let ab_prev = prev.x * prev.x;
        let sigma = params.eta * sqrt((1.0 - ab_prev) / (1.0 - ab_now)) * sqrt(max(1.0 - ab_now / ab_prev, 0.0));
        x[i] = prev.x * x0_pred + sqrt(max(1.0 - ab_prev - sigma * sigma, 0.0)) * e + sigma * z[i];
    }
}

// Inpainting, after a sampling step has brought x to level sample_step.t_prev: the known pixels are replaced by
// a fresh sample of q(x_{t_prev} | x0), known = \sqrt{\bar\alpha} x0 + \sqrt{1 - \bar\alpha} z, and
//   x = mask known + (1 - mask) x.
// At t_prev = -1 (after the last step) known = x0 exactly, so mask-1 pixels come back bit for bit.
@compute @workgroup_size(256)
fn inpaint_mix(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    var known = x0[i];
    if sample_step.t_prev >= 0 {
        let level = signal_noise(sample_step.t_prev);
        known = level.x * known + level.y * z[i];
    }
    let m = mask[i % params.mask_len];
    x[i] = m * known + (1.0 - m) * x[i];
}

// RePaint's jump back (Lugmayr et al. 2022): x at level sample_step.t_prev (-1: clean data) re-noised to the
// higher level sample_step.t by q(x_to | x_from) = N(r x_from, (1 - r²) I), r = \sqrt{\bar\alpha_to / \bar\alpha_from}:
//   x = r x + \sqrt{1 - r²} z.
// With t_prev = t (no jump) r = 1 and x is left unchanged bit for bit.
@compute @workgroup_size(256)
fn renoise(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let below = signal_noise(sample_step.t_prev);
    let above = signal_noise(i32(sample_step.t));
    let r = above.x / below.x;
    x[i] = r * x[i] + sqrt(max(1.0 - r * r, 0.0)) * z[i];
}

// sin and cos of an angle of any size: the reduction to [-pi, pi] takes 2 pi in three parts (Cody and Waite)
// whose products with k are exact in f32, so large angles (t = 1000 radians) lose no accuracy to it.
const INV_TWO_PI: f32 = 0.15915494309189535;
const TWO_PI_A: f32 = 6.28125;                 // 8 significant bits
const TWO_PI_B: f32 = 0.0019350051879882812;   // 12 significant bits: k B is exact for |angle| < 25000
const TWO_PI_C: f32 = 3.019916050561733e-07;   // 2 pi - A - B, rounded

fn reduce_angle(angle: f32) -> f32 {
    let k = round(angle * INV_TWO_PI);
    return ((angle - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
}

// Sinusoidal timestep embedding: emb[s] = cat(sin(t_s f), cos(t_s f)), f = frequencies (E / 2 of them). The
// angle t f is rounded to f32 like PyTorch's `t[:, None].float() * freqs[None]`.
@compute @workgroup_size(256)
fn timestep_embedding(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.n { return; }
    let sample = i / params.per_sample;
    let column = i % params.per_sample;
    let half = params.per_sample / 2u;
    let angle = f32(t[sample]) * frequencies[column % half];
    let r = reduce_angle(angle);
    emb[i] = select(cos(r), sin(r), column < half);
}
