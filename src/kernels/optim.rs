//! Optimizers (`shaders/optim.wgsl`): Adam, AdamW, SGD with momentum, the EMA of weights, and global-norm
//! gradient clipping, with PyTorch's semantics.
//!
//! Two kinds of values drive a kernel:
//! - constant hyperparameters (betas, eps, weight decay, momentum, max_norm, EMA decay) go in the `params`
//!   uniform each launcher makes once, when the plan is recorded ([`OptimParams`]);
//! - values that change every step (the learning rate, Adam's bias corrections of step t, AdamW's decay factor)
//!   go in one small uniform buffer per optimizer, made by [`step_buffer`] and rewritten by the host before each
//!   submit with [`write_step`] and [`AdamConfig::step`] or [`SgdConfig::step`]. The recorded dispatches are
//!   replayed unchanged.
//!
//! Every launcher updates `n` elements starting at `first`, so a tensor carved from one flat allocation per role
//! can be updated alone, and all tensors at once when the parameters, gradients and moments share one layout.
//!
//! Clipping like `torch.nn.utils.clip_grad_norm_(params, max_norm)` is three steps recorded after backward and
//! before the optimizer, all on the GPU: [`grad_norm_partial`] per gradient tensor (sums of squares per
//! workgroup), [`grad_norm_finish`] (the total norm and the scale, into a 2-float buffer), and [`clip_grad_scale`]
//! per gradient tensor. [`clip_grad_norm`] records the whole sequence.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::{optim as wgsl, optim_vec4 as wgsl_vec4, EntryPoint};

/// Keep in sync with `struct Params` in shaders/optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct OptimParams {
    pub n: u32,
    pub first: u32,
    pub partial_offset: u32,
    pub nesterov: u32,
    pub beta1: f32,
    pub beta2: f32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    pub max_norm: f32,
    pub ema_decay: f32,
    pub one_minus_ema_decay: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// The per-step values, rewritten by the host before each submit.
/// Keep in sync with `struct StepValues` in shaders/optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct OptimStep {
    /// The learning rate of this step.
    pub lr: f32,
    /// Adam: `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// Adam: `sqrt(1 - beta2^t)`.
    pub bias_correction2_sqrt: f32,
    /// AdamW: `1 - lr * weight_decay`; 1 otherwise.
    pub decay: f32,
}

impl OptimStep {
    /// Learning rate 0 and no decay: a step that leaves the weights as they are (moments still update), and no
    /// division by zero if the host forgets to write the buffer.
    pub const NO_OP: Self = Self {
        lr: 0.0,
        step_size: 0.0,
        bias_correction2_sqrt: 1.0,
        decay: 1.0,
    };
}

/// Adam or AdamW hyperparameters (torch.optim.Adam / AdamW).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: decay the weights directly (p *= 1 - lr wd) instead of adding wd p to the gradient.
    pub decoupled: bool,
}

impl AdamConfig {
    /// PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub const DEFAULT: Self = Self {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
    };

    /// The GAN's betas (0.5, 0.999).
    pub const GAN: Self = Self {
        beta1: 0.5,
        ..Self::DEFAULT
    };

    /// AdamW with PyTorch's default weight decay 0.01.
    pub const ADAMW: Self = Self {
        weight_decay: 0.01,
        decoupled: true,
        ..Self::DEFAULT
    };

    pub fn entry(&self) -> &'static EntryPoint {
        if self.decoupled {
            &wgsl::ADAMW_STEP
        } else {
            &wgsl::ADAM_STEP
        }
    }

    /// The kernel's four-elements-per-invocation twin (`shaders/optim_vec4.wgsl`).
    pub fn entry_vec4(&self) -> &'static EntryPoint {
        if self.decoupled {
            &wgsl_vec4::ADAMW_STEP
        } else {
            &wgsl_vec4::ADAM_STEP
        }
    }

    /// The constant part, for elements `first .. first + n`.
    pub fn params(&self, first: u32, n: u32) -> OptimParams {
        OptimParams {
            n,
            first,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            eps: self.eps as f32,
            // AdamW's decay is decoupled: it is in the step values, not in the gradient.
            weight_decay: if self.decoupled { 0.0 } else { self.weight_decay as f32 },
            ..Default::default()
        }
    }

    /// The per-step values of step `t` (1 for the first update), computed in f64 like PyTorch's Python floats.
    pub fn step(&self, t: u32, lr: f64) -> OptimStep {
        let t = t.max(1) as i32;
        let bias_correction1 = 1.0 - self.beta1.powi(t);
        let bias_correction2 = 1.0 - self.beta2.powi(t);
        OptimStep {
            lr: lr as f32,
            step_size: (lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            decay: if self.decoupled {
                (1.0 - lr * self.weight_decay) as f32
            } else {
                1.0
            },
        }
    }
}

/// SGD hyperparameters (torch.optim.SGD with dampening 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl SgdConfig {
    pub fn params(&self, first: u32, n: u32) -> OptimParams {
        OptimParams {
            n,
            first,
            nesterov: self.nesterov as u32,
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
            ..Default::default()
        }
    }

    /// The per-step values: only the learning rate.
    pub fn step(&self, lr: f64) -> OptimStep {
        OptimStep {
            lr: lr as f32,
            decay: 1.0,
            ..Default::default()
        }
    }
}

/// The EMA's constants: `ema = decay * ema + (1 - decay) * p`.
pub fn ema_params(decay: f64, first: u32, n: u32) -> OptimParams {
    OptimParams {
        n,
        first,
        ema_decay: decay as f32,
        one_minus_ema_decay: (1.0 - decay) as f32,
        ..Default::default()
    }
}

/// Elements summed by one workgroup of `grad_norm_partial`. Keep in sync with NORM_CHUNK in shaders/optim.wgsl.
pub const GRAD_NORM_CHUNK: usize = 4096;

/// How many partial sums `grad_norm_partial` writes for a tensor of `n` elements.
pub fn grad_norm_partial_count(n: usize) -> usize {
    n.div_ceil(GRAD_NORM_CHUNK)
}

/// The uniform buffer of per-step values for one optimizer; rewrite it with [`write_step`] before each submit.
/// Until then it holds [`OptimStep::NO_OP`].
pub fn step_buffer(gpu: &Gpu, label: &str) -> Result<GpuBuffer, GpuError> {
    gpu.uniform(label, &OptimStep::NO_OP)
}

/// Rewrites an optimizer's per-step values (lands before the next submit).
pub fn write_step(gpu: &Gpu, step_values: &GpuBuffer, values: OptimStep) -> Result<(), GpuError> {
    gpu.write(step_values, &[values])
}

/// Elements `first .. first + n` must lie in every buffer, and the indices must fit the shader's u32.
fn span(entry: &EntryPoint, buffers: &[&GpuBuffer], first: usize, n: usize) -> Result<(u32, u32), GpuError> {
    let end = first.checked_add(n).unwrap_or(usize::MAX);
    if let Some(short) = buffers.iter().find(|b| b.len_words() < end) {
        return Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!(
                "elements {first}..{end} do not fit buffer `{}` of {} elements",
                short.label,
                short.len_words()
            ),
        });
    }
    let first = u32::try_from(first);
    let n = u32::try_from(n);
    match (first, n) {
        (Ok(first), Ok(n)) if first.checked_add(n).is_some() => Ok((first, n)),
        _ => Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!("elements {first:?}..{end} exceed the 2^32 indices a kernel can address"),
        }),
    }
}

/// Adam or AdamW on elements `first .. first + n`: updates `param`, `exp_avg` (m) and `exp_avg_sq` (v) in place
/// from `grad`. `step_values` is the optimizer's [`step_buffer`], holding `config.step(t, lr)` for this step;
/// m and v start at zero.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    gpu: &Gpu,
    param: &GpuBuffer,
    exp_avg: &GpuBuffer,
    exp_avg_sq: &GpuBuffer,
    grad: &GpuBuffer,
    step_values: &GpuBuffer,
    config: &AdamConfig,
    first: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = config.entry();
    let (first32, n32) = span(entry, &[param, exp_avg, exp_avg_sq, grad], first, n)?;
    if gpu.takes_vec4(first, n, &[param, exp_avg, exp_avg_sq, grad]) {
        let entry = config.entry_vec4();
        let params = gpu.uniform(entry.name, &config.params(first32 / 4, n32 / 4))?;
        return gpu.dispatch_1d(
            entry,
            &[&params, param, exp_avg, exp_avg_sq, grad, step_values],
            (n / 4) as u64,
        );
    }
    let params = gpu.uniform(entry.name, &config.params(first32, n32))?;
    gpu.dispatch_1d(
        entry,
        &[&params, param, exp_avg, exp_avg_sq, grad, step_values],
        n as u64,
    )
}

/// SGD with momentum on elements `first .. first + n`: updates `param` and `momentum_buffer` (zero at start) in
/// place from `grad`. `step_values` holds `config.step(lr)`.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    param: &GpuBuffer,
    momentum_buffer: &GpuBuffer,
    grad: &GpuBuffer,
    step_values: &GpuBuffer,
    config: &SgdConfig,
    first: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::SGD_STEP;
    let (first, n32) = span(entry, &[param, momentum_buffer, grad], first, n)?;
    let params = gpu.uniform(entry.name, &config.params(first, n32))?;
    gpu.dispatch_1d(entry, &[&params, param, momentum_buffer, grad, step_values], n as u64)
}

/// `ema = decay * ema + (1 - decay) * param` on elements `first .. first + n` (decay 0.999 for the ddpm).
pub fn ema_update(
    gpu: &Gpu,
    ema: &GpuBuffer,
    param: &GpuBuffer,
    decay: f64,
    first: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::EMA_UPDATE;
    let (first, n32) = span(entry, &[ema, param], first, n)?;
    let params = gpu.uniform(entry.name, &ema_params(decay, first, n32))?;
    gpu.dispatch_1d(entry, &[&params, ema, param], n as u64)
}

/// Clipping stage 1: the sums of squares of `grad[first .. first + n]`, one per 4096 elements, written to
/// `partials[partial_offset ..]` ([`grad_norm_partial_count`] of them).
pub fn grad_norm_partial(
    gpu: &Gpu,
    partials: &GpuBuffer,
    grad: &GpuBuffer,
    partial_offset: usize,
    first: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::GRAD_NORM_PARTIAL;
    let (first, n32) = span(entry, &[grad], first, n)?;
    let count = grad_norm_partial_count(n);
    let (partial_offset, _) = span(entry, &[partials], partial_offset, count)?;
    let params = gpu.uniform(
        entry.name,
        &OptimParams {
            n: n32,
            first,
            partial_offset,
            ..Default::default()
        },
    )?;
    // One workgroup per chunk: dispatch_1d folds `count` workgroups of 256 threads into a legal grid.
    gpu.dispatch_1d(entry, &[&params, partials, grad], (count * 256) as u64)
}

/// Clipping stage 2: adds the first `partial_count` partial sums and writes `clip = [total_norm, scale]` with
/// `scale = min(1, max_norm / (total_norm + 1e-6))`.
pub fn grad_norm_finish(
    gpu: &Gpu,
    clip: &GpuBuffer,
    partials: &GpuBuffer,
    max_norm: f64,
    partial_count: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::GRAD_NORM_FINISH;
    let (_, count) = span(entry, &[partials], 0, partial_count)?;
    span(entry, &[clip], 0, 2)?;
    let params = gpu.uniform(
        entry.name,
        &OptimParams {
            n: count,
            max_norm: max_norm as f32,
            ..Default::default()
        },
    )?;
    gpu.dispatch(entry, &[&params, clip, partials], [1, 1, 1])
}

/// Clipping stage 3: `grad[first .. first + n] *= clip[1]`.
pub fn clip_grad_scale(
    gpu: &Gpu,
    grad: &GpuBuffer,
    clip: &GpuBuffer,
    first: usize,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::CLIP_GRAD_SCALE;
    let (first, n32) = span(entry, &[grad], first, n)?;
    span(entry, &[clip], 0, 2)?;
    let params = gpu.uniform(
        entry.name,
        &OptimParams {
            n: n32,
            first,
            ..Default::default()
        },
    )?;
    gpu.dispatch_1d(entry, &[&params, grad, clip], n as u64)
}

/// One gradient tensor: elements `first .. first + n` of `buffer`.
#[derive(Clone, Copy, Debug)]
pub struct GradTensor<'a> {
    pub buffer: &'a GpuBuffer,
    pub first: usize,
    pub n: usize,
}

/// The partial-sum buffer [`clip_grad_norm`] needs for these tensors.
pub fn grad_norm_partials_len(grads: &[GradTensor]) -> usize {
    grads.iter().map(|g| grad_norm_partial_count(g.n)).sum()
}

/// `clip_grad_norm_(grads, max_norm)` as a list of dispatches to record in order: the partial sums of every
/// tensor, the total norm and scale into `clip` (2 floats: the norm stays readable for logging), then the
/// scaling of every tensor. `partials` holds at least [`grad_norm_partials_len`] floats.
pub fn clip_grad_norm(
    gpu: &Gpu,
    grads: &[GradTensor],
    partials: &GpuBuffer,
    clip: &GpuBuffer,
    max_norm: f64,
) -> Result<Vec<Dispatch>, GpuError> {
    let mut dispatches = Vec::with_capacity(2 * grads.len() + 1);
    let mut offset = 0;
    for g in grads {
        dispatches.push(grad_norm_partial(gpu, partials, g.buffer, offset, g.first, g.n)?);
        offset += grad_norm_partial_count(g.n);
    }
    dispatches.push(grad_norm_finish(gpu, clip, partials, max_norm, offset)?);
    for g in grads {
        dispatches.push(clip_grad_scale(gpu, g.buffer, clip, g.first, g.n)?);
    }
    Ok(dispatches)
}

/// Sizes the checks use: odd ones, around the norm's 4096-element chunk, and the vae's 652,824 parameters as
/// one flat buffer.
pub const CHECK_SIZES: [usize; 7] = [1, 7, 33, 129, 4095, 4097, 652_824];

/// Random optimizer state: weights in [-1, 1], gradients in [-2, 2], m in [-0.5, 0.5], v in [0, 0.3].
struct State {
    param: Vec<f32>,
    grad: Vec<f32>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl State {
    fn random(len: usize, seed: u64) -> Self {
        let mut rng = TestRng::new(seed);
        Self {
            param: rng.uniform_vec(len, -1.0, 1.0),
            grad: rng.uniform_vec(len, -2.0, 2.0),
            exp_avg: rng.uniform_vec(len, -0.5, 0.5),
            exp_avg_sq: rng.uniform_vec(len, 0.0, 0.3),
        }
    }
}

/// Compares several outputs at once (the whole buffers: elements outside the span must stay untouched).
fn compare_all(gpu_parts: &[Vec<f32>], cpu_parts: &[Vec<f64>], tolerance: Tolerance) -> Comparison {
    let gpu: Vec<f32> = gpu_parts.concat();
    let cpu: Vec<f64> = cpu_parts.concat();
    check::compare(&gpu, &cpu, tolerance)
}

fn adam_check(config: AdamConfig, n: usize, first: usize) -> KernelCheck {
    KernelCheck::new(
        config.entry().qualified_name(),
        if n % 4 == 0 && first % 4 == 0 {
            format!("n={n} first={first} (vec4 on CPU adapters)")
        } else {
            format!("n={n} first={first}")
        },
        move |gpu| {
            let len = first + n + 3;
            let s = State::random(len, n as u64 + 11);
            let (t, lr) = (5, 1e-3);
            let step = config.step(t, lr);
            let param = check::upload(gpu, "param", &s.param)?;
            let exp_avg = check::upload(gpu, "exp_avg", &s.exp_avg)?;
            let exp_avg_sq = check::upload(gpu, "exp_avg_sq", &s.exp_avg_sq)?;
            let grad = check::upload(gpu, "grad", &s.grad)?;
            let step_values = step_buffer(gpu, "adam step")?;
            write_step(gpu, &step_values, step)?;
            let dispatch = adam_step(
                gpu,
                &param,
                &exp_avg,
                &exp_avg_sq,
                &grad,
                &step_values,
                &config,
                first,
                n,
            )?;
            gpu.run(&[&dispatch])?;
            let mut expected = cpu::optim::AdamState {
                param: check::to_f64(&s.param),
                exp_avg: check::to_f64(&s.exp_avg),
                exp_avg_sq: check::to_f64(&s.exp_avg_sq),
            };
            let range = first..first + n;
            cpu::optim::adam_step(
                &mut expected,
                &check::to_f64(&s.grad),
                &config.params(first as u32, n as u32),
                &step,
                range,
            );
            Ok(compare_all(
                &[
                    check::download(gpu, &param, len)?,
                    check::download(gpu, &exp_avg, len)?,
                    check::download(gpu, &exp_avg_sq, len)?,
                ],
                &[expected.param, expected.exp_avg, expected.exp_avg_sq],
                Tolerance::ELEMENTWISE,
            ))
        },
    )
}

fn sgd_check(config: SgdConfig, n: usize, first: usize) -> KernelCheck {
    let shape = format!("n={n} first={first}{}", if config.nesterov { " nesterov" } else { "" });
    KernelCheck::new(wgsl::SGD_STEP.qualified_name(), shape, move |gpu| {
        let len = first + n + 3;
        let s = State::random(len, n as u64 + 12);
        let step = config.step(0.05);
        let param = check::upload(gpu, "param", &s.param)?;
        let buf = check::upload(gpu, "momentum_buffer", &s.exp_avg)?;
        let grad = check::upload(gpu, "grad", &s.grad)?;
        let step_values = step_buffer(gpu, "sgd step")?;
        write_step(gpu, &step_values, step)?;
        gpu.run(&[&sgd_step(gpu, &param, &buf, &grad, &step_values, &config, first, n)?])?;
        let mut expected_param = check::to_f64(&s.param);
        let mut expected_buf = check::to_f64(&s.exp_avg);
        cpu::optim::sgd_step(
            &mut expected_param,
            &mut expected_buf,
            &check::to_f64(&s.grad),
            &config.params(first as u32, n as u32),
            &step,
            first..first + n,
        );
        Ok(compare_all(
            &[check::download(gpu, &param, len)?, check::download(gpu, &buf, len)?],
            &[expected_param, expected_buf],
            Tolerance::ELEMENTWISE,
        ))
    })
}

fn ema_check(n: usize, first: usize) -> KernelCheck {
    KernelCheck::new(
        wgsl::EMA_UPDATE.qualified_name(),
        format!("n={n} first={first}"),
        move |gpu| {
            let len = first + n + 3;
            let s = State::random(len, n as u64 + 13);
            let decay = 0.999;
            let ema = check::upload(gpu, "ema", &s.grad)?;
            let param = check::upload(gpu, "param", &s.param)?;
            gpu.run(&[&ema_update(gpu, &ema, &param, decay, first, n)?])?;
            let mut expected = check::to_f64(&s.grad);
            cpu::optim::ema_update(
                &mut expected,
                &check::to_f64(&s.param),
                &ema_params(decay, first as u32, n as u32),
                first..first + n,
            );
            Ok(check::compare(
                &check::download(gpu, &ema, len)?,
                &expected,
                Tolerance::ELEMENTWISE,
            ))
        },
    )
}

/// Gradient tensors of these sizes, each in its own buffer after `first` other elements (and before 2 more).
fn clip_checks(sizes: &[usize], first: usize, max_norm: f64) -> Vec<KernelCheck> {
    let names: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    let shape = format!("{} first={first} max={max_norm}", names.join("+"));
    let norm_sizes = sizes.to_vec();
    let norm = KernelCheck::new(wgsl::GRAD_NORM_FINISH.qualified_name(), shape.clone(), move |gpu| {
        let host = random_grads(&norm_sizes, first);
        let buffers = upload_grads(gpu, &host)?;
        let tensors = grad_tensors(&buffers, &norm_sizes, first);
        let partials = check::poisoned(gpu, "partials", grad_norm_partials_len(&tensors))?;
        let clip = check::poisoned(gpu, "clip", 2)?;
        let dispatches = clip_grad_norm(gpu, &tensors, &partials, &clip, max_norm)?;
        // The norm stages only: the partial sums of every tensor and the finish.
        let norm_stages: Vec<&Dispatch> = dispatches[..=tensors.len()].iter().collect();
        gpu.run(&norm_stages)?;
        let spans: Vec<Vec<f64>> = host.iter().map(|g| check::to_f64(&g[first..g.len() - 2])).collect();
        let (total_norm, scale) = cpu::optim::grad_norm(&spans, max_norm);
        Ok(check::compare(
            &check::download(gpu, &clip, 2)?,
            &[total_norm, scale],
            Tolerance::ACCUMULATED,
        ))
    });
    let scale_sizes = sizes.to_vec();
    let scale = KernelCheck::new(wgsl::CLIP_GRAD_SCALE.qualified_name(), shape, move |gpu| {
        let host = random_grads(&scale_sizes, first);
        let buffers = upload_grads(gpu, &host)?;
        let tensors = grad_tensors(&buffers, &scale_sizes, first);
        let partials = check::poisoned(gpu, "partials", grad_norm_partials_len(&tensors))?;
        let clip = check::poisoned(gpu, "clip", 2)?;
        let dispatches = clip_grad_norm(gpu, &tensors, &partials, &clip, max_norm)?;
        gpu.run(&dispatches.iter().collect::<Vec<_>>())?;
        // Scale by the GPU's own factor, so that this check sees only the scaling (the finish check sees the rest).
        let scale = check::download(gpu, &clip, 2)?[1] as f64;
        let mut got = Vec::new();
        let mut expected = Vec::new();
        for (buffer, values) in buffers.iter().zip(&host) {
            got.extend(check::download(gpu, buffer, values.len())?);
            let mut scaled = check::to_f64(values);
            cpu::optim::clip_grad_scale(&mut scaled, scale, first..values.len() - 2);
            expected.extend(scaled);
        }
        Ok(check::compare(&got, &expected, Tolerance::ELEMENTWISE))
    });
    vec![norm, scale]
}

fn random_grads(sizes: &[usize], first: usize) -> Vec<Vec<f32>> {
    let mut rng = TestRng::new(sizes.iter().sum::<usize>() as u64);
    sizes
        .iter()
        .map(|&n| rng.uniform_vec(first + n + 2, -1.0, 1.0))
        .collect()
}

fn upload_grads(gpu: &Gpu, host: &[Vec<f32>]) -> Result<Vec<GpuBuffer>, GpuError> {
    host.iter()
        .map(|g| gpu.buffer_from("grad", BufferRole::Gradients, g))
        .collect()
}

fn grad_tensors<'a>(buffers: &'a [GpuBuffer], sizes: &[usize], first: usize) -> Vec<GradTensor<'a>> {
    buffers
        .iter()
        .zip(sizes)
        .map(|(buffer, &n)| GradTensor { buffer, first, n })
        .collect()
}

/// Every optimizer kernel against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let adamw = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::ADAMW
    };
    let adam_l2 = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::DEFAULT
    };
    for n in CHECK_SIZES {
        checks.push(adam_check(AdamConfig::DEFAULT, n, 0));
        if n < 100_000 {
            checks.push(adam_check(adamw, n, 0));
            checks.push(sgd_check(
                SgdConfig {
                    momentum: 0.9,
                    weight_decay: 0.0,
                    nesterov: false,
                },
                n,
                0,
            ));
            checks.push(ema_check(n, 0));
        }
    }
    checks.push(adam_check(adam_l2, 129, 0));
    checks.push(adam_check(AdamConfig::GAN, 33, 7));
    checks.push(adam_check(AdamConfig::DEFAULT, 4097, 1000));
    // vec4-aligned spans, which CPU adapters run four elements per invocation (optim_vec4.wgsl).
    checks.push(adam_check(AdamConfig::DEFAULT, 4096, 1000));
    checks.push(adam_check(adamw, 132, 8));
    checks.push(adam_check(adam_l2, 4, 0));
    checks.push(sgd_check(
        SgdConfig {
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: true,
        },
        129,
        3,
    ));
    checks.push(ema_check(652_824, 0));
    checks.push(ema_check(33, 2));
    // Clipping over several tensors: one small, one across chunk boundaries; under and over max_norm.
    checks.extend(clip_checks(&[7, 4097], 0, 1e6));
    checks.extend(clip_checks(&[1, 33, 129], 0, 1.0));
    checks.extend(clip_checks(&[4095, 9000], 5, 1.0));
    checks.extend(clip_checks(&[652_824], 0, 1.0));
    checks
}
