//! Denoising diffusion (`shaders/diffusion.wgsl`): the noise schedule, q_sample, the DDPM ancestral step
//! (Ho et al. 2020, Algorithm 2), the DDIM step with eta = 0 (Song et al. 2021), the sinusoidal timestep
//! embedding and the inpainting mix.
//!
//! Constant data: the schedule table ([`schedule_buffer`], one [`ScheduleRow`] per timestep, computed here in f64)
//! and the embedding's frequencies ([`frequencies_buffer`]) are uploaded once; each launcher's `params` uniform
//! is made once, when the plan is recorded.
//!
//! Per-step data: training draws a timestep per sample into a u32 buffer (N) that q_sample and the embedding
//! read. Sampling moves every sample from `t` to `t_prev` ([`SampleStep`]), kept in one small uniform buffer
//! ([`sample_step_buffer`]) that the host rewrites with [`write_sample_step`] before each submit; the DDPM or
//! DDIM step and the inpainting mix of one iteration read the same buffer. A sampling loop is therefore recorded
//! once: `[embedding, network..., ddpm_step, (inpaint_mix)]`, and replayed with t = T-1 .. 0.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::{diffusion as wgsl, EntryPoint};

/// Keep in sync with `struct Params` in shaders/diffusion.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct DiffusionParams {
    pub n: u32,
    pub per_sample: u32,
    pub steps: u32,
    pub mask_len: u32,
    pub clamp_final: u32,
    /// `ddim_eta_step`'s eta.
    pub eta: f32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Where a sampling step goes, rewritten by the host before each submit.
/// Keep in sync with `struct SampleStep` in shaders/diffusion.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SampleStep {
    /// x holds x_t.
    pub t: u32,
    /// The step brings x to x_{t_prev}; -1 is clean data (alpha_bar = 1). The inpainting mix works at this level.
    pub t_prev: i32,
    pub _pad0: u32,
    pub _pad1: u32,
}

impl SampleStep {
    pub fn new(t: u32, t_prev: i32) -> Self {
        Self {
            t,
            t_prev,
            ..Default::default()
        }
    }

    /// The DDPM step from t to t - 1 (-1 after t = 0).
    pub fn ddpm(t: u32) -> Self {
        Self::new(t, t as i32 - 1)
    }
}

/// One timestep of the schedule table, as the shaders read it. Keep in sync with `struct ScheduleRow` in
/// shaders/diffusion.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ScheduleRow {
    /// \sqrt{\bar\alpha_t}
    pub sqrt_alpha_bar: f32,
    /// \sqrt{1 - \bar\alpha_t}
    pub sqrt_one_minus_alpha_bar: f32,
    /// 1 / \sqrt{\alpha_t}, \alpha_t = 1 - \beta_t
    pub inv_sqrt_alpha: f32,
    /// \beta_t / \sqrt{1 - \bar\alpha_t}
    pub eps_coef: f32,
    /// \sigma_t = \sqrt{\beta_t}
    pub sigma: f32,
    /// \beta_t
    pub beta: f32,
}

/// A noise schedule in f64: beta_t for t = 0 .. T-1 and alpha_bar_t = prod_{s<=t} (1 - beta_s).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// \beta_t
    pub betas: Vec<f64>,
    /// \bar\alpha_t = \prod_{s<=t} (1 - \beta_s)
    pub alpha_bars: Vec<f64>,
}

impl Schedule {
    /// The ddpm's schedule: T = 1000, beta linear from 1e-4 to 0.02.
    pub fn ddpm() -> Self {
        Self::linear(1000, 1e-4, 0.02)
    }

    /// beta_t = start + (end - start) t / (T - 1) (torch.linspace(start, end, T), in f64).
    pub fn linear(steps: usize, beta_start: f64, beta_end: f64) -> Self {
        let last = steps.saturating_sub(1).max(1) as f64;
        let betas = (0..steps)
            .map(|t| beta_start + (beta_end - beta_start) * t as f64 / last)
            .collect();
        Self::from_betas(betas)
    }

    /// The cosine schedule of Nichol & Dhariwal (2021): alpha_bar(u) = f(u) / f(0), f(u) = cos((u + s) / (1 + s)
    /// pi / 2)^2 with s = 0.008, beta_t = min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), 0.999).
    pub fn cosine(steps: usize) -> Self {
        const S: f64 = 0.008;
        let f = |u: f64| ((u + S) / (1.0 + S) * std::f64::consts::FRAC_PI_2).cos().powi(2);
        let total = steps as f64;
        let betas = (0..steps)
            .map(|t| (1.0 - f((t + 1) as f64 / total) / f(t as f64 / total)).min(0.999))
            .collect();
        Self::from_betas(betas)
    }

    pub fn from_betas(betas: Vec<f64>) -> Self {
        let alpha_bars = betas
            .iter()
            .scan(1.0, |product, beta| {
                *product *= 1.0 - beta;
                Some(*product)
            })
            .collect();
        Self { betas, alpha_bars }
    }

    /// T
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// The table the shaders read, each quantity computed in f64 and rounded once.
    pub fn rows(&self) -> Vec<ScheduleRow> {
        self.betas
            .iter()
            .zip(&self.alpha_bars)
            .map(|(&beta, &alpha_bar)| ScheduleRow {
                sqrt_alpha_bar: alpha_bar.sqrt() as f32,
                sqrt_one_minus_alpha_bar: (1.0 - alpha_bar).sqrt() as f32,
                inv_sqrt_alpha: (1.0 / (1.0 - beta).sqrt()) as f32,
                eps_coef: (beta / (1.0 - alpha_bar).sqrt()) as f32,
                sigma: beta.sqrt() as f32,
                beta: beta as f32,
            })
            .collect()
    }

    /// DDIM's evenly spaced subsequence of `count` timesteps, from the last to 0, as sampling steps
    /// (t, t_prev), the last one to -1: T = 1000, count 50 gives (980, 960), (960, 940), ..., (0, -1).
    pub fn ddim_steps(&self, count: usize) -> Vec<SampleStep> {
        let count = count.clamp(1, self.len().max(1));
        let stride = self.len() / count;
        let timesteps: Vec<i32> = (0..count).rev().map(|i| (i * stride) as i32).collect();
        timesteps
            .iter()
            .enumerate()
            .map(|(k, &t)| SampleStep::new(t as u32, timesteps.get(k + 1).copied().unwrap_or(-1)))
            .collect()
    }
}

/// The frequencies of the sinusoidal embedding of width `dim`: f_i = exp(-ln(10000) i / (dim / 2)),
/// i = 0 .. dim/2 - 1, computed in f64 and rounded to f32 (the ddpm: dim 64, 32 frequencies).
pub fn timestep_frequencies(dim: usize) -> Vec<f32> {
    let half = dim / 2;
    (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect()
}

/// Uploads the schedule table (T rows).
pub fn schedule_buffer(gpu: &Gpu, schedule: &Schedule) -> Result<GpuBuffer, GpuError> {
    if schedule.is_empty() {
        return Err(GpuError::Validation {
            context: "diffusion schedule".into(),
            message: "the schedule has no timesteps; use at least T = 1".into(),
        });
    }
    gpu.buffer_from("diffusion schedule", BufferRole::Inputs, &schedule.rows())
}

/// Uploads the embedding's frequencies for width `dim`.
pub fn frequencies_buffer(gpu: &Gpu, dim: usize) -> Result<GpuBuffer, GpuError> {
    let frequencies = timestep_frequencies(dim);
    if frequencies.is_empty() {
        return Err(GpuError::Validation {
            context: "timestep embedding".into(),
            message: format!("embedding width {dim} gives no frequencies; use an even width >= 2"),
        });
    }
    gpu.buffer_from("timestep frequencies", BufferRole::Inputs, &frequencies)
}

/// The uniform buffer of a sampling loop's [`SampleStep`]; rewrite it with [`write_sample_step`] before each
/// submit.
pub fn sample_step_buffer(gpu: &Gpu) -> Result<GpuBuffer, GpuError> {
    gpu.uniform("sample step", &SampleStep::default())
}

pub fn write_sample_step(gpu: &Gpu, buffer: &GpuBuffer, step: SampleStep) -> Result<(), GpuError> {
    gpu.write(buffer, &[step])
}

const ROW_WORDS: usize = size_of::<ScheduleRow>() / 4;

/// Checks the sizes against the buffers and makes the params: `n = samples * per_sample` values.
fn params_for(
    entry: &EntryPoint,
    schedule: Option<&GpuBuffer>,
    buffers: &[(&GpuBuffer, usize)],
    samples: usize,
    per_sample: usize,
) -> Result<DiffusionParams, GpuError> {
    let invalid = |message: String| GpuError::Validation {
        context: entry.qualified_name(),
        message,
    };
    let n = samples
        .checked_mul(per_sample)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(format!("{samples} x {per_sample} values exceed 2^32")))?;
    if per_sample == 0 {
        return Err(invalid("a sample has no values".into()));
    }
    for (buffer, needed) in buffers {
        if buffer.len_words() < *needed {
            return Err(invalid(format!(
                "buffer `{}` holds {} values, {needed} are needed",
                buffer.label,
                buffer.len_words()
            )));
        }
    }
    let steps = schedule.map_or(0, |s| s.len_words() / ROW_WORDS);
    if schedule.is_some() && steps == 0 {
        return Err(invalid("the schedule table is empty".into()));
    }
    Ok(DiffusionParams {
        n,
        per_sample: per_sample as u32,
        steps: steps as u32,
        ..Default::default()
    })
}

/// x_t = sqrt(alpha_bar[t_s]) x0 + sqrt(1 - alpha_bar[t_s]) eps, with t_s = `t[s]` for sample s; x_t, x0, eps
/// are (samples, per_sample) = (N, C*H*W), `t` is (N) u32.
#[allow(clippy::too_many_arguments)]
pub fn q_sample(
    gpu: &Gpu,
    x_t: &GpuBuffer,
    x0: &GpuBuffer,
    eps: &GpuBuffer,
    t: &GpuBuffer,
    schedule: &GpuBuffer,
    samples: usize,
    per_sample: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::Q_SAMPLE;
    let n = samples * per_sample;
    let params = params_for(
        entry,
        Some(schedule),
        &[(x_t, n), (x0, n), (eps, n), (t, samples)],
        samples,
        per_sample,
    )?;
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, x_t, x0, eps, t, schedule], n as u64)
}

/// The ancestral step from `sample_step.t` to t - 1, in place on x (n values):
/// x = (x - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(1 - beta_t) + sqrt(beta_t) z, z only for t > 0;
/// at t = 0 the result is clamped to [-1, 1] when `clamp_final`.
#[allow(clippy::too_many_arguments)]
pub fn ddpm_step(
    gpu: &Gpu,
    x: &GpuBuffer,
    eps_theta: &GpuBuffer,
    z: &GpuBuffer,
    schedule: &GpuBuffer,
    sample_step: &GpuBuffer,
    clamp_final: bool,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::DDPM_STEP;
    let params = params_for(entry, Some(schedule), &[(x, n), (eps_theta, n), (z, n)], n, 1)?;
    let params = DiffusionParams {
        clamp_final: clamp_final as u32,
        ..params
    };
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, x, eps_theta, z, schedule, sample_step], n as u64)
}

/// The DDIM step (eta = 0) from `sample_step.t` to `sample_step.t_prev`, in place on x (n values):
/// x0_pred = (x - sqrt(1 - ab_t) eps_theta) / sqrt(ab_t), x = sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev) eps_theta,
/// ab_prev = 1 for t_prev = -1 (then clamped to [-1, 1] when `clamp_final`).
#[allow(clippy::too_many_arguments)]
pub fn ddim_step(
    gpu: &Gpu,
    x: &GpuBuffer,
    eps_theta: &GpuBuffer,
    schedule: &GpuBuffer,
    sample_step: &GpuBuffer,
    clamp_final: bool,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::DDIM_STEP;
    let params = params_for(entry, Some(schedule), &[(x, n), (eps_theta, n)], n, 1)?;
    let params = DiffusionParams {
        clamp_final: clamp_final as u32,
        ..params
    };
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, x, eps_theta, schedule, sample_step], n as u64)
}

/// The DDIM step with noise (eta > 0) from `sample_step.t` to `sample_step.t_prev`, in place on x (n values):
/// x = sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev - sigma²) eps_theta + sigma z,
/// sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev); x0_pred at t_prev = -1.
#[allow(clippy::too_many_arguments)]
pub fn ddim_eta_step(
    gpu: &Gpu,
    x: &GpuBuffer,
    eps_theta: &GpuBuffer,
    z: &GpuBuffer,
    schedule: &GpuBuffer,
    sample_step: &GpuBuffer,
    clamp_final: bool,
    eta: f32,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::DDIM_ETA_STEP;
    let params = params_for(entry, Some(schedule), &[(x, n), (eps_theta, n), (z, n)], n, 1)?;
    let params = DiffusionParams {
        clamp_final: clamp_final as u32,
        eta,
        ..params
    };
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, x, eps_theta, z, schedule, sample_step], n as u64)
}

/// Inpainting at level `sample_step.t_prev`, in place on x (n values): x = mask known + (1 - mask) x with
/// known = sqrt(ab) x0 + sqrt(1 - ab) z, or known = x0 exactly at t_prev = -1. `mask` (mask_len) repeats over x:
/// mask_len = C*H*W for one mask for every sample, n for one per sample; 1 keeps the known pixel.
#[allow(clippy::too_many_arguments)]
pub fn inpaint_mix(
    gpu: &Gpu,
    x: &GpuBuffer,
    x0: &GpuBuffer,
    z: &GpuBuffer,
    mask: &GpuBuffer,
    schedule: &GpuBuffer,
    sample_step: &GpuBuffer,
    n: usize,
    mask_len: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::INPAINT_MIX;
    let params = params_for(
        entry,
        Some(schedule),
        &[(x, n), (x0, n), (z, n), (mask, mask_len)],
        n,
        1,
    )?;
    if mask_len == 0 || n % mask_len != 0 {
        return Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!("a mask of {mask_len} values does not tile {n} values; give C*H*W or N*C*H*W"),
        });
    }
    let params = DiffusionParams {
        mask_len: mask_len as u32,
        ..params
    };
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, x, x0, z, mask, schedule, sample_step], n as u64)
}

/// RePaint's jump back, in place on x (n values): from level `sample_step.t_prev` (-1: clean) up to level
/// `sample_step.t`, x = r x + sqrt(1 - r²) z with r = sqrt(ab_t / ab_t_prev); unchanged when the two are equal.
pub fn renoise(
    gpu: &Gpu,
    x: &GpuBuffer,
    z: &GpuBuffer,
    schedule: &GpuBuffer,
    sample_step: &GpuBuffer,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::RENOISE;
    let params = params_for(entry, Some(schedule), &[(x, n), (z, n)], n, 1)?;
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, x, z, schedule, sample_step], n as u64)
}

/// emb (samples, dim) = cat(sin(t f), cos(t f)) per sample, t from the u32 buffer `t` (samples), f from
/// [`frequencies_buffer`] (dim / 2).
pub fn timestep_embedding(
    gpu: &Gpu,
    emb: &GpuBuffer,
    t: &GpuBuffer,
    frequencies: &GpuBuffer,
    samples: usize,
    dim: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::TIMESTEP_EMBEDDING;
    if dim < 2 || dim % 2 != 0 {
        return Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!("embedding width {dim} must be even and at least 2"),
        });
    }
    let params = params_for(
        entry,
        None,
        &[(emb, samples * dim), (t, samples), (frequencies, dim / 2)],
        samples,
        dim,
    )?;
    let params = gpu.uniform(entry.name, &params)?;
    gpu.dispatch_1d(entry, &[&params, emb, t, frequencies], (samples * dim) as u64)
}

/// (N, C, H, W) shapes the checks use: tiny, odd, and the ddpm's batch.
pub const CHECK_SHAPES: [[usize; 4]; 4] = [[1, 1, 1, 1], [3, 1, 7, 7], [5, 3, 11, 13], [128, 1, 28, 28]];

fn shape_name(shape: [usize; 4], extra: &str) -> String {
    let [n, c, h, w] = shape;
    format!("{n}x{c}x{h}x{w} {extra}")
}

/// Random timesteps in 0..T, the first and last forced to 0 and T-1.
fn random_timesteps(rng: &mut TestRng, samples: usize, steps: usize) -> Vec<u32> {
    let mut t: Vec<u32> = (0..samples).map(|_| (rng.next_u64() % steps as u64) as u32).collect();
    t[0] = 0;
    if samples > 1 {
        t[samples - 1] = steps as u32 - 1;
    }
    t
}

fn upload_u32(gpu: &Gpu, label: &str, data: &[u32]) -> Result<GpuBuffer, GpuError> {
    gpu.buffer_from(label, BufferRole::Scratch, data)
}

fn q_sample_check(shape: [usize; 4]) -> KernelCheck {
    KernelCheck::new(wgsl::Q_SAMPLE.qualified_name(), shape_name(shape, ""), move |gpu| {
        let [samples, c, h, w] = shape;
        let (per_sample, n) = (c * h * w, shape.iter().product::<usize>());
        let mut rng = TestRng::new(n as u64);
        let schedule = Schedule::ddpm();
        let x0 = rng.uniform_vec(n, -1.0, 1.0);
        let eps = rng.uniform_vec(n, -3.0, 3.0);
        let t = random_timesteps(&mut rng, samples, schedule.len());
        let x_t = check::poisoned(gpu, "x_t", n)?;
        let (x0_gpu, eps_gpu) = (check::upload(gpu, "x0", &x0)?, check::upload(gpu, "eps", &eps)?);
        let t_gpu = upload_u32(gpu, "t", &t)?;
        let table = schedule_buffer(gpu, &schedule)?;
        gpu.run(&[&q_sample(
            gpu, &x_t, &x0_gpu, &eps_gpu, &t_gpu, &table, samples, per_sample,
        )?])?;
        let expected = cpu::diffusion::q_sample(
            &schedule.rows(),
            &check::to_f64(&x0),
            &check::to_f64(&eps),
            &t,
            per_sample,
        );
        Ok(check::compare(
            &check::download(gpu, &x_t, n)?,
            &expected,
            Tolerance::ELEMENTWISE,
        ))
    })
}

#[derive(Clone, Copy, Debug)]
enum Sampler {
    Ddpm,
    Ddim,
}

fn step_check(sampler: Sampler, shape: [usize; 4], step: SampleStep, clamp_final: bool) -> KernelCheck {
    let entry = match sampler {
        Sampler::Ddpm => &wgsl::DDPM_STEP,
        Sampler::Ddim => &wgsl::DDIM_STEP,
    };
    let extra = format!(
        "t={}->{}{}",
        step.t,
        step.t_prev,
        if clamp_final { " clamp" } else { "" }
    );
    KernelCheck::new(entry.qualified_name(), shape_name(shape, &extra), move |gpu| {
        let n = shape.iter().product::<usize>();
        let mut rng = TestRng::new(n as u64 + step.t as u64);
        let schedule = Schedule::ddpm();
        // x beyond [-1, 1] so that clamping shows.
        let x = rng.uniform_vec(n, -3.0, 3.0);
        let eps_theta = rng.uniform_vec(n, -3.0, 3.0);
        let z = rng.uniform_vec(n, -3.0, 3.0);
        let x_gpu = check::upload(gpu, "x", &x)?;
        let (eps_gpu, z_gpu) = (
            check::upload(gpu, "eps_theta", &eps_theta)?,
            check::upload(gpu, "z", &z)?,
        );
        let table = schedule_buffer(gpu, &schedule)?;
        let step_buffer = sample_step_buffer(gpu)?;
        write_sample_step(gpu, &step_buffer, step)?;
        let rows = schedule.rows();
        let mut expected = check::to_f64(&x);
        let dispatch = match sampler {
            Sampler::Ddpm => {
                cpu::diffusion::ddpm_step(
                    &rows,
                    &mut expected,
                    &check::to_f64(&eps_theta),
                    &check::to_f64(&z),
                    step,
                    clamp_final,
                );
                ddpm_step(gpu, &x_gpu, &eps_gpu, &z_gpu, &table, &step_buffer, clamp_final, n)?
            }
            Sampler::Ddim => {
                cpu::diffusion::ddim_step(&rows, &mut expected, &check::to_f64(&eps_theta), step, clamp_final);
                ddim_step(gpu, &x_gpu, &eps_gpu, &table, &step_buffer, clamp_final, n)?
            }
        };
        gpu.run(&[&dispatch])?;
        Ok(check::compare(
            &check::download(gpu, &x_gpu, n)?,
            &expected,
            Tolerance::ELEMENTWISE,
        ))
    })
}

fn inpaint_check(shape: [usize; 4], t_prev: i32, shared_mask: bool) -> KernelCheck {
    let extra = format!("t_prev={t_prev}{}", if shared_mask { " shared" } else { "" });
    KernelCheck::new(
        wgsl::INPAINT_MIX.qualified_name(),
        shape_name(shape, &extra),
        move |gpu| {
            let n = shape.iter().product::<usize>();
            let mask_len = if shared_mask { n / shape[0] } else { n };
            let mut rng = TestRng::new(n as u64 + 5);
            let schedule = Schedule::ddpm();
            let x = rng.uniform_vec(n, -3.0, 3.0);
            let x0 = rng.uniform_vec(n, -1.0, 1.0);
            let z = rng.uniform_vec(n, -3.0, 3.0);
            // Mostly hard 0/1 masks, with a few soft values.
            let mask: Vec<f32> = (0..mask_len)
                .map(|i| match i % 5 {
                    0 | 1 => 1.0,
                    2 => rng.uniform(0.0, 1.0),
                    _ => 0.0,
                })
                .collect();
            let x_gpu = check::upload(gpu, "x", &x)?;
            let (x0_gpu, z_gpu) = (check::upload(gpu, "x0", &x0)?, check::upload(gpu, "z", &z)?);
            let mask_gpu = check::upload(gpu, "mask", &mask)?;
            let table = schedule_buffer(gpu, &schedule)?;
            let step_buffer = sample_step_buffer(gpu)?;
            let step = SampleStep::new((t_prev + 1) as u32, t_prev);
            write_sample_step(gpu, &step_buffer, step)?;
            let dispatch = inpaint_mix(
                gpu,
                &x_gpu,
                &x0_gpu,
                &z_gpu,
                &mask_gpu,
                &table,
                &step_buffer,
                n,
                mask_len,
            )?;
            gpu.run(&[&dispatch])?;
            let mut expected = check::to_f64(&x);
            cpu::diffusion::inpaint_mix(
                &schedule.rows(),
                &mut expected,
                &check::to_f64(&x0),
                &check::to_f64(&z),
                &check::to_f64(&mask),
                step,
            );
            Ok(check::compare(
                &check::download(gpu, &x_gpu, n)?,
                &expected,
                Tolerance::ELEMENTWISE,
            ))
        },
    )
}

/// The DDIM step with eta against the twin, from `step`.
fn ddim_eta_check(shape: [usize; 4], step: SampleStep, eta: f32) -> KernelCheck {
    KernelCheck::new(
        wgsl::DDIM_ETA_STEP.qualified_name(),
        shape_name(shape, &format!("t={} t_prev={} eta={eta}", step.t, step.t_prev)),
        move |gpu| {
            let n = shape.iter().product::<usize>();
            let mut rng = TestRng::new(n as u64 + 23);
            let schedule = Schedule::ddpm();
            let x = rng.uniform_vec(n, -3.0, 3.0);
            let (eps, z) = (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(n, -2.0, 2.0));
            let x_gpu = check::upload(gpu, "x", &x)?;
            let (eps_gpu, z_gpu) = (check::upload(gpu, "eps", &eps)?, check::upload(gpu, "z", &z)?);
            let table = schedule_buffer(gpu, &schedule)?;
            let step_buffer = sample_step_buffer(gpu)?;
            write_sample_step(gpu, &step_buffer, step)?;
            let dispatch = ddim_eta_step(gpu, &x_gpu, &eps_gpu, &z_gpu, &table, &step_buffer, false, eta, n)?;
            gpu.run(&[&dispatch])?;
            let mut expected = check::to_f64(&x);
            let (eps, z) = (check::to_f64(&eps), check::to_f64(&z));
            cpu::diffusion::ddim_eta_step(&schedule.rows(), &mut expected, &eps, &z, step, eta as f64);
            Ok(check::compare(
                &check::download(gpu, &x_gpu, n)?,
                &expected,
                Tolerance::new(1e-4, 1e-4),
            ))
        },
    )
}

/// The jump back from `from` to `to` (equal: x unchanged, exactly).
fn renoise_check(shape: [usize; 4], from: i32, to: u32) -> KernelCheck {
    KernelCheck::new(
        wgsl::RENOISE.qualified_name(),
        shape_name(shape, &format!("{from}->{to}")),
        move |gpu| {
            let n = shape.iter().product::<usize>();
            let mut rng = TestRng::new(n as u64 + 17);
            let schedule = Schedule::ddpm();
            let (x, z) = (rng.uniform_vec(n, -3.0, 3.0), rng.uniform_vec(n, -3.0, 3.0));
            let (x_gpu, z_gpu) = (check::upload(gpu, "x", &x)?, check::upload(gpu, "z", &z)?);
            let table = schedule_buffer(gpu, &schedule)?;
            let step_buffer = sample_step_buffer(gpu)?;
            let step = SampleStep::new(to, from);
            write_sample_step(gpu, &step_buffer, step)?;
            gpu.run(&[&renoise(gpu, &x_gpu, &z_gpu, &table, &step_buffer, n)?])?;
            let mut expected = check::to_f64(&x);
            cpu::diffusion::renoise(&schedule.rows(), &mut expected, &check::to_f64(&z), step);
            let tolerance = if from == to as i32 {
                Tolerance::new(0.0, 0.0)
            } else {
                Tolerance::ELEMENTWISE
            };
            Ok(check::compare(&check::download(gpu, &x_gpu, n)?, &expected, tolerance))
        },
    )
}

/// The embedding at random t in 0..=1000 (and t = 0, 999, 1000), width 64.
fn embedding_check(samples: usize) -> KernelCheck {
    const DIM: usize = 64;
    KernelCheck::new(
        wgsl::TIMESTEP_EMBEDDING.qualified_name(),
        format!("N={samples} E={DIM}"),
        move |gpu| {
            let mut rng = TestRng::new(samples as u64 + 9);
            let mut t: Vec<u32> = (0..samples).map(|_| (rng.next_u64() % 1001) as u32).collect();
            for (slot, value) in t.iter_mut().zip([0, 1000, 999, 1]) {
                *slot = value;
            }
            let emb = check::poisoned(gpu, "emb", samples * DIM)?;
            let t_gpu = upload_u32(gpu, "t", &t)?;
            let frequencies = frequencies_buffer(gpu, DIM)?;
            gpu.run(&[&timestep_embedding(gpu, &emb, &t_gpu, &frequencies, samples, DIM)?])?;
            let expected = cpu::diffusion::timestep_embedding(&t, &timestep_frequencies(DIM));
            Ok(check::compare(
                &check::download(gpu, &emb, samples * DIM)?,
                &expected,
                Tolerance::ELEMENTWISE,
            ))
        },
    )
}

/// Every diffusion kernel against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let [tiny, small, odd, real] = CHECK_SHAPES;
    for (shape, step, eta) in [
        (tiny, SampleStep::new(999, 979), 1.0),
        (odd, SampleStep::new(500, 480), 0.5),
        (real, SampleStep::new(20, 0), 1.0),
        (small, SampleStep::new(19, -1), 1.0),
    ] {
        checks.push(ddim_eta_check(shape, step, eta));
    }
    for (shape, from, to) in [(tiny, -1, 9), (odd, 40, 49), (real, 500, 520), (small, 300, 300)] {
        checks.push(renoise_check(shape, from, to));
    }
    for shape in CHECK_SHAPES {
        checks.push(q_sample_check(shape));
    }
    for (shape, t, clamp) in [
        (tiny, 0, true),
        (small, 500, true),
        (odd, 0, false),
        (odd, 1, true),
        (real, 999, true),
    ] {
        checks.push(step_check(Sampler::Ddpm, shape, SampleStep::ddpm(t), clamp));
    }
    for (shape, step, clamp) in [
        (tiny, SampleStep::new(999, -1), false),
        (small, SampleStep::new(500, 480), true),
        (odd, SampleStep::new(20, -1), true),
        (real, SampleStep::new(980, 960), true),
    ] {
        checks.push(step_check(Sampler::Ddim, shape, step, clamp));
    }
    for (shape, t_prev, shared) in [
        (tiny, -1, false),
        (small, 300, true),
        (odd, -1, true),
        (real, 499, true),
    ] {
        checks.push(inpaint_check(shape, t_prev, shared));
    }
    for samples in [1, 7, 129, 128] {
        checks.push(embedding_check(samples));
    }
    checks
}
