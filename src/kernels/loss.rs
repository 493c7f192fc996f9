//! Losses and their gradients (`shaders/loss.wgsl`): mean squared error, BCE-with-logits, the VAE's Gaussian
//! KL and softmax cross-entropy, with PyTorch's semantics and the reductions of the default models.
//!
//! A forward is two dispatches: per-sample losses (B), summed over each sample's values by one workgroup (on CPU
//! adapters by one invocation walking the same tree, `*_forward_serial`: the same bits), then their mean into one scalar of a small loss buffer (`LossSlot`), which the training loop reads every few
//! steps. A backward is one dispatch writing (or adding to) the gradient of the batch loss; it needs no value
//! from the forward, so gradients never wait for a host round trip.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError, Tiling, CPU_LOOP_LIMIT};
use crate::shaders::{loss as wgsl, EntryPoint};

/// Keep in sync with `struct Params` in shaders/loss.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LossParams {
    pub batch: u32,
    pub features: u32,
    pub scale: f32,
    pub accumulate: u32,
    pub target_value: f32,
    pub constant_target: u32,
    pub slot: u32,
    pub _pad: u32,
}

/// Where a batch loss lands: `buffer[slot]`, overwritten, or added to (e.g. the GAN's discriminator loss
/// on real plus fake, or the VAE's BCE plus KL).
#[derive(Clone, Copy, Debug)]
pub struct LossSlot<'a> {
    pub buffer: &'a GpuBuffer,
    pub slot: usize,
    pub accumulate: bool,
}

impl<'a> LossSlot<'a> {
    /// `buffer[0]`, overwritten: a loss tensor of its own.
    pub fn first(buffer: &'a GpuBuffer) -> Self {
        Self {
            buffer,
            slot: 0,
            accumulate: false,
        }
    }
}

/// The targets of a BCE: a tensor like the logits, or one value for every logit (the GAN's 1 and 0).
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Values(&'a GpuBuffer),
    Constant(f32),
}

fn params(batch: usize, features: usize, scale: f64, accumulate: bool, context: &str) -> Result<LossParams, GpuError> {
    let elements = batch.checked_mul(features).filter(|&n| n > 0 && n <= u32::MAX as usize);
    if elements.is_none() {
        return Err(GpuError::Validation {
            context: context.to_string(),
            message: format!("batch {batch} x {features} values must be between 1 and 2^32 - 1 elements"),
        });
    }
    Ok(LossParams {
        batch: batch as u32,
        features: features as u32,
        scale: scale as f32,
        accumulate: accumulate as u32,
        ..Default::default()
    })
}

/// The per-sample sums of a loss's forward, per_sample (B) = the loss of each sample summed over its P values, from
/// x (B, P) and y: the targets (ignored for a constant BCE target), logvar for the kl, the labels (B) for
/// cross-entropy. With `Tiling::Workgroup` one 256-thread workgroup per sample sums them in a tree; CPU adapters
/// (`Tiling::Registers`) run mse, bce and kl as `*_forward_serial`, one invocation per sample walking the same
/// tree (no barriers or workgroup memory), which gives the same bits.
#[allow(clippy::too_many_arguments)]
pub fn per_sample_sums(
    gpu: &Gpu,
    tiling: Tiling,
    kind: LossKind,
    per_sample: &GpuBuffer,
    x: &GpuBuffer,
    y: &GpuBuffer,
    batch: usize,
    features: usize,
) -> Result<Dispatch, GpuError> {
    // Serial where the invocation's loops (P values and 256 leaves, each loop's last test counting too) fit the
    // CPU drivers' limit.
    let serial = tiling == Tiling::Registers && features + 513 + 1_000 < CPU_LOOP_LIMIT;
    let entry = match (kind, serial) {
        (LossKind::Mse | LossKind::SquaredError, false) => &wgsl::MSE_FORWARD,
        (LossKind::Mse | LossKind::SquaredError, true) => &wgsl::MSE_FORWARD_SERIAL,
        (LossKind::Bce(_), false) => &wgsl::BCE_WITH_LOGITS_FORWARD,
        (LossKind::Bce(_), true) => &wgsl::BCE_WITH_LOGITS_FORWARD_SERIAL,
        (LossKind::Kl, false) => &wgsl::KL_FORWARD,
        (LossKind::Kl, true) => &wgsl::KL_FORWARD_SERIAL,
        (LossKind::CrossEntropy, _) => &wgsl::CROSS_ENTROPY_FORWARD,
    };
    let mut p = params(batch, features, 0.0, false, &entry.qualified_name())?;
    if let LossKind::Bce(Some(value)) = kind {
        p.constant_target = 1;
        p.target_value = value;
    }
    let params = gpu.uniform(entry.name, &p)?;
    let buffers = [&params, per_sample, x, y];
    if entry.workgroup_size[0] == 256 {
        // One workgroup per sample, folded into 2-D past the per-dimension limit.
        gpu.dispatch_1d(entry, &buffers, batch as u64 * 256)
    } else {
        let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
        let groups = batch.div_ceil(entry.workgroup_size[0] as usize);
        if groups > max {
            return Err(GpuError::Validation {
                context: entry.qualified_name(),
                message: format!(
                    "batch {batch} needs {groups} workgroups, over the adapter's {max}: use a smaller batch"
                ),
            });
        }
        gpu.dispatch(entry, &buffers, [groups as u32, 1, 1])
    }
}

/// One workgroup per row, folded into 2-D past the per-dimension limit.
fn per_sample_dispatch(
    gpu: &Gpu,
    entry: &'static EntryPoint,
    p: &LossParams,
    buffers: &[&GpuBuffer],
) -> Result<Dispatch, GpuError> {
    let params = gpu.uniform(entry.name, p)?;
    let mut all = vec![&params];
    all.extend_from_slice(buffers);
    gpu.dispatch_1d(entry, &all, p.batch as u64 * entry.workgroup_size[0] as u64)
}

/// One thread per value.
fn elementwise_dispatch(
    gpu: &Gpu,
    entry: &'static EntryPoint,
    p: &LossParams,
    buffers: &[&GpuBuffer],
) -> Result<Dispatch, GpuError> {
    let params = gpu.uniform(entry.name, p)?;
    let mut all = vec![&params];
    all.extend_from_slice(buffers);
    gpu.dispatch_1d(entry, &all, p.batch as u64 * p.features as u64)
}

/// loss[slot] = scale * sum over b of per_sample (B).
pub(crate) fn mean_dispatch(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    batch: usize,
    scale: f64,
) -> Result<Dispatch, GpuError> {
    let mut p = params(batch, 1, scale, loss.accumulate, "loss::loss_mean")?;
    p.slot = u32::try_from(loss.slot).map_err(|_| GpuError::Validation {
        context: "loss::loss_mean".into(),
        message: format!("slot {} is out of range", loss.slot),
    })?;
    if (loss.slot as u64 + 1) * 4 > loss.buffer.bytes {
        return Err(GpuError::BufferSize {
            label: loss.buffer.label.clone(),
            capacity: loss.buffer.bytes,
            bytes: (loss.slot as u64 + 1) * 4,
        });
    }
    let params = gpu.uniform("loss_mean", &p)?;
    gpu.dispatch(&wgsl::LOSS_MEAN, &[&params, loss.buffer, per_sample], [1, 1, 1])
}

/// Squared error per sample, then `scale` times their sum: per_sample (B) = sum over p of
/// (prediction - target)², loss[slot] = scale * sum.
#[allow(clippy::too_many_arguments)]
fn squared_difference_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    batch: usize,
    features: usize,
    scale: f64,
    context: &str,
) -> Result<[Dispatch; 2], GpuError> {
    params(batch, features, 0.0, false, context)?; // the shape's error under the caller's name
    Ok([
        per_sample_sums(
            gpu,
            gpu.tiling,
            LossKind::Mse,
            per_sample,
            prediction,
            target,
            batch,
            features,
        )?,
        mean_dispatch(gpu, loss, per_sample, batch, scale)?,
    ])
}

/// Mean squared error over all B P values (the ddpm loss): per_sample (B) = sum over p of (prediction - target)²,
/// loss[slot] = sum / (B P).
pub fn mse_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    batch: usize,
    features: usize,
) -> Result<[Dispatch; 2], GpuError> {
    let scale = 1.0 / (batch * features) as f64;
    squared_difference_forward(
        gpu,
        loss,
        per_sample,
        prediction,
        target,
        batch,
        features,
        scale,
        "loss::mse_forward",
    )
}

/// dprediction (B, P) = 2 (prediction - target) / (B P), or += with `accumulate`.
pub fn mse_backward(
    gpu: &Gpu,
    dprediction: &GpuBuffer,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    features: usize,
) -> Result<Dispatch, GpuError> {
    let scale = 1.0 / (batch * features) as f64;
    let p = params(batch, features, scale, accumulate, "loss::mse_backward")?;
    elementwise_dispatch(gpu, &wgsl::MSE_BACKWARD, &p, &[dprediction, prediction, target])
}

/// The squared L2 distance per image, mean over the batch (the WAE's reconstruction cost |x - x̂|²): the same
/// kernels as mse with scale 1 / B. per_sample (B) = sum over p of (prediction - target)², loss[slot] = sum / B.
pub fn squared_error_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    batch: usize,
    features: usize,
) -> Result<[Dispatch; 2], GpuError> {
    squared_difference_forward(
        gpu,
        loss,
        per_sample,
        prediction,
        target,
        batch,
        features,
        1.0 / batch as f64,
        "loss::squared_error_forward",
    )
}

/// dprediction (B, P) = 2 (prediction - target) / B, or += with `accumulate`.
pub fn squared_error_backward(
    gpu: &Gpu,
    dprediction: &GpuBuffer,
    prediction: &GpuBuffer,
    target: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    features: usize,
) -> Result<Dispatch, GpuError> {
    let p = params(
        batch,
        features,
        1.0 / batch as f64,
        accumulate,
        "loss::squared_error_backward",
    )?;
    elementwise_dispatch(gpu, &wgsl::MSE_BACKWARD, &p, &[dprediction, prediction, target])
}

fn with_target<'a>(mut p: LossParams, logits: &'a GpuBuffer, target: Target<'a>) -> (LossParams, &'a GpuBuffer) {
    match target {
        Target::Values(values) => (p, values),
        Target::Constant(value) => {
            p.constant_target = 1;
            p.target_value = value;
            // The binding needs a buffer; it is never read in this mode.
            (p, logits)
        }
    }
}

/// BCE-with-logits summed over each sample's P values, mean over the batch (ae and vae; the GAN with P = 1):
/// per_sample (B) = sum over p of max(x, 0) - x y + log(1 + exp(-|x|)), loss[slot] = sum / B.
pub fn bce_with_logits_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    logits: &GpuBuffer,
    target: Target,
    batch: usize,
    features: usize,
) -> Result<[Dispatch; 2], GpuError> {
    let (kind, target) = match target {
        Target::Values(values) => (LossKind::Bce(None), values),
        Target::Constant(value) => (LossKind::Bce(Some(value)), logits),
    };
    Ok([
        per_sample_sums(gpu, gpu.tiling, kind, per_sample, logits, target, batch, features)?,
        mean_dispatch(gpu, loss, per_sample, batch, 1.0 / batch as f64)?,
    ])
}

/// dlogits (B, P) = (sigmoid(logits) - target) / B, or += with `accumulate`.
pub fn bce_with_logits_backward(
    gpu: &Gpu,
    dlogits: &GpuBuffer,
    logits: &GpuBuffer,
    target: Target,
    accumulate: bool,
    batch: usize,
    features: usize,
) -> Result<Dispatch, GpuError> {
    let p = params(
        batch,
        features,
        1.0 / batch as f64,
        accumulate,
        "loss::bce_with_logits_backward",
    )?;
    let (p, target) = with_target(p, logits, target);
    elementwise_dispatch(gpu, &wgsl::BCE_WITH_LOGITS_BACKWARD, &p, &[dlogits, logits, target])
}

/// The VAE's KL(N(mu, exp(logvar)) || N(0, I)): per_sample (B) = -0.5 sum over the latent of
/// (1 + logvar - mu² - exp(logvar)), loss[slot] = weight * sum / B (weight 1 for the vae).
#[allow(clippy::too_many_arguments)]
pub fn kl_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    mu: &GpuBuffer,
    logvar: &GpuBuffer,
    batch: usize,
    latent: usize,
    weight: f64,
) -> Result<[Dispatch; 2], GpuError> {
    Ok([
        per_sample_sums(gpu, gpu.tiling, LossKind::Kl, per_sample, mu, logvar, batch, latent)?,
        mean_dispatch(gpu, loss, per_sample, batch, weight / batch as f64)?,
    ])
}

/// dmu (B, L) = weight mu / B and dlogvar (B, L) = weight 0.5 (exp(logvar) - 1) / B, or both += with `accumulate`
/// (the decoder's gradient through z = mu + eps * exp(logvar / 2) lands in the same buffers).
#[allow(clippy::too_many_arguments)]
pub fn kl_backward(
    gpu: &Gpu,
    dmu: &GpuBuffer,
    dlogvar: &GpuBuffer,
    mu: &GpuBuffer,
    logvar: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    latent: usize,
    weight: f64,
) -> Result<Dispatch, GpuError> {
    let p = params(batch, latent, weight / batch as f64, accumulate, "loss::kl_backward")?;
    elementwise_dispatch(gpu, &wgsl::KL_BACKWARD, &p, &[dmu, dlogvar, mu, logvar])
}

/// Softmax cross-entropy with class labels (u32, in 0 .. classes), mean over the batch (the classifier):
/// per_sample (B) = logsumexp(logits_b) - logits_b[label_b], loss[slot] = sum / B. A label out of range gives NaN.
pub fn cross_entropy_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    batch: usize,
    classes: usize,
) -> Result<[Dispatch; 2], GpuError> {
    let p = params(batch, classes, 0.0, false, "loss::cross_entropy_forward")?;
    Ok([
        per_sample_dispatch(gpu, &wgsl::CROSS_ENTROPY_FORWARD, &p, &[per_sample, logits, labels])?,
        mean_dispatch(gpu, loss, per_sample, batch, 1.0 / batch as f64)?,
    ])
}

/// dlogits (B, C) = (softmax(logits_b) - onehot(label_b)) / B, or += with `accumulate`. One workgroup a row.
pub fn cross_entropy_backward(
    gpu: &Gpu,
    dlogits: &GpuBuffer,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    classes: usize,
) -> Result<Dispatch, GpuError> {
    let p = params(
        batch,
        classes,
        1.0 / batch as f64,
        accumulate,
        "loss::cross_entropy_backward",
    )?;
    per_sample_dispatch(gpu, &wgsl::CROSS_ENTROPY_BACKWARD, &p, &[dlogits, logits, labels])
}

/// A loss to check, with how its inputs are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossKind {
    Mse,
    /// Squared L2 per sample, mean over the batch.
    SquaredError,
    /// BCE-with-logits with targets in [0, 1], or one constant target.
    Bce(Option<f32>),
    Kl,
    CrossEntropy,
}

impl LossKind {
    fn name(self) -> &'static str {
        match self {
            Self::Mse => "mse",
            Self::SquaredError => "squared_error",
            Self::Bce(_) => "bce_with_logits",
            Self::Kl => "kl",
            Self::CrossEntropy => "cross_entropy",
        }
    }
}

/// Random inputs of one loss: x (prediction, logits or mu), y (target or logvar), labels.
pub struct LossInputs {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub labels: Vec<u32>,
}

impl LossInputs {
    pub fn random(kind: LossKind, batch: usize, features: usize, seed: u64) -> Self {
        let n = batch * features;
        let mut rng = TestRng::new(seed);
        let (x, y) = match kind {
            LossKind::Mse | LossKind::SquaredError => (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(n, -2.0, 2.0)),
            LossKind::Bce(None) => (rng.uniform_vec(n, -8.0, 8.0), rng.uniform_vec(n, 0.0, 1.0)),
            LossKind::Bce(Some(value)) => (rng.uniform_vec(n, -8.0, 8.0), vec![value; n]),
            LossKind::Kl => (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(n, -4.0, 2.0)),
            LossKind::CrossEntropy => (rng.uniform_vec(n, -8.0, 8.0), Vec::new()),
        };
        let labels = (0..batch).map(|_| (rng.next_u64() % features as u64) as u32).collect();
        Self { x, y, labels }
    }

    /// The CPU twin's per-sample losses and batch scale.
    pub fn expected_per_sample(&self, kind: LossKind, batch: usize, features: usize) -> (Vec<f64>, f64) {
        let (x, y) = (check::to_f64(&self.x), check::to_f64(&self.y));
        match kind {
            LossKind::Mse => (
                cpu::loss::mse_per_sample(&x, &y, batch, features),
                1.0 / (batch * features) as f64,
            ),
            LossKind::SquaredError => (cpu::loss::mse_per_sample(&x, &y, batch, features), 1.0 / batch as f64),
            LossKind::Bce(_) => (
                cpu::loss::bce_with_logits_per_sample(&x, &y, batch, features),
                1.0 / batch as f64,
            ),
            LossKind::Kl => (cpu::loss::kl_per_sample(&x, &y, batch, features), 1.0 / batch as f64),
            LossKind::CrossEntropy => (
                cpu::loss::cross_entropy_per_sample(&x, &self.labels, batch, features),
                1.0 / batch as f64,
            ),
        }
    }

    /// The CPU twin's gradients (for kl: dmu then dlogvar).
    pub fn expected_gradient(&self, kind: LossKind, batch: usize, features: usize) -> Vec<f64> {
        let (x, y) = (check::to_f64(&self.x), check::to_f64(&self.y));
        match kind {
            LossKind::Mse => cpu::loss::mse_backward(&x, &y, batch, features),
            LossKind::SquaredError => cpu::loss::squared_error_backward(&x, &y, batch),
            LossKind::Bce(_) => cpu::loss::bce_with_logits_backward(&x, &y, batch),
            LossKind::Kl => {
                let (dmu, dlogvar) = cpu::loss::kl_backward(&x, &y, batch);
                [dmu, dlogvar].concat()
            }
            LossKind::CrossEntropy => cpu::loss::cross_entropy_backward(&x, &self.labels, batch, features),
        }
    }
}

/// Runs a loss's forward on the GPU with `tiling`'s per-sample kernel; compares the per-sample losses followed by
/// the batch loss (in slot 1 of a 3-slot buffer, added to 0.75 with `accumulate`) with the twin.
pub fn run_forward_check(
    gpu: &Gpu,
    tiling: Tiling,
    kind: LossKind,
    batch: usize,
    features: usize,
    accumulate: bool,
    seed: u64,
) -> Result<Comparison, GpuError> {
    let inputs = LossInputs::random(kind, batch, features, seed);
    let start = if accumulate { 0.75 } else { f32::NAN };
    let slots = check::upload(gpu, "loss", &[f32::NAN, start, f32::NAN])?;
    let loss = LossSlot {
        buffer: &slots,
        slot: 1,
        accumulate,
    };
    let per_sample = check::poisoned(gpu, "per_sample", batch)?;
    let x = check::upload(gpu, "x", &inputs.x)?;
    let y = check::upload(gpu, "y", &inputs.y)?;
    let labels = gpu.buffer_from("labels", BufferRole::Scratch, &inputs.labels)?;
    let y = if kind == LossKind::CrossEntropy { &labels } else { &y };
    let (mut expected, scale) = inputs.expected_per_sample(kind, batch, features);
    gpu.run(&[
        &per_sample_sums(gpu, tiling, kind, &per_sample, &x, y, batch, features)?,
        &mean_dispatch(gpu, &loss, &per_sample, batch, scale)?,
    ])?;
    let mut got = check::download(gpu, &per_sample, batch)?;
    got.push(check::download(gpu, &slots, 3)?[1]);
    let mean = cpu::loss::mean(&expected, scale) + if accumulate { 0.75 } else { 0.0 };
    expected.push(mean);
    Ok(check::compare(&got, &expected, Tolerance::ACCUMULATED))
}

/// Runs a loss's backward on the GPU (adding to a random start with `accumulate`) against the twin.
pub fn run_backward_check(
    gpu: &Gpu,
    kind: LossKind,
    batch: usize,
    features: usize,
    accumulate: bool,
    seed: u64,
) -> Result<Comparison, GpuError> {
    let n = batch * features;
    let inputs = LossInputs::random(kind, batch, features, seed);
    let outputs = if kind == LossKind::Kl { 2 * n } else { n };
    let start = if accumulate {
        TestRng::new(seed + 1).uniform_vec(outputs, -0.01, 0.01)
    } else {
        vec![f32::NAN; outputs]
    };
    let dx = check::upload(gpu, "dx", &start[..n])?;
    let dlogvar = check::upload(gpu, "dlogvar", &start[n..])?;
    let x = check::upload(gpu, "x", &inputs.x)?;
    let y = check::upload(gpu, "y", &inputs.y)?;
    let labels = gpu.buffer_from("labels", BufferRole::Scratch, &inputs.labels)?;
    let dispatch = match kind {
        LossKind::Mse => mse_backward(gpu, &dx, &x, &y, accumulate, batch, features)?,
        LossKind::SquaredError => squared_error_backward(gpu, &dx, &x, &y, accumulate, batch, features)?,
        LossKind::Bce(constant) => {
            let target = constant.map_or(Target::Values(&y), Target::Constant);
            bce_with_logits_backward(gpu, &dx, &x, target, accumulate, batch, features)?
        }
        LossKind::Kl => kl_backward(gpu, &dx, &dlogvar, &x, &y, accumulate, batch, features, 1.0)?,
        LossKind::CrossEntropy => cross_entropy_backward(gpu, &dx, &x, &labels, accumulate, batch, features)?,
    };
    gpu.run(&[&dispatch])?;
    let mut got = check::download(gpu, &dx, n)?;
    if kind == LossKind::Kl {
        got.extend(check::download(gpu, &dlogvar, n)?);
    }
    let mut expected = inputs.expected_gradient(kind, batch, features);
    if accumulate {
        for (e, s) in expected.iter_mut().zip(&start) {
            *e += *s as f64;
        }
    }
    Ok(check::compare(&got, &expected, Tolerance::ELEMENTWISE))
}

/// Every loss, forward and backward, on odd shapes and the default models' shapes, against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let odd = [(1, 1), (7, 33), (3, 300), (129, 7)];
    let cases: [(LossKind, &[(usize, usize)]); 7] = [
        // ddpm: 128 x 1 x 28 x 28
        (LossKind::Mse, &[(128, 784)]),
        // the wae's reconstruction cost
        (LossKind::SquaredError, &[(128, 784)]),
        // ae / vae reconstruction
        (LossKind::Bce(None), &[(128, 784)]),
        // the GAN's one logit per image against 1 (real) and 0 (fake)
        (LossKind::Bce(Some(1.0)), &[(128, 1)]),
        (LossKind::Bce(Some(0.0)), &[(128, 1)]),
        // the VAE's 20-dimensional latent
        (LossKind::Kl, &[(128, 20)]),
        // the classifier's 10 classes
        (LossKind::CrossEntropy, &[(128, 10)]),
    ];
    for (kind, real) in cases {
        let constant = match kind {
            LossKind::Bce(Some(value)) => format!(" target={value}"),
            _ => String::new(),
        };
        for (index, &(batch, features)) in odd.iter().chain(real).enumerate() {
            // Accumulate into the loss slot and the gradient on one odd shape.
            let accumulate = index == 1;
            let suffix = if accumulate { " accumulate" } else { "" };
            let shape = format!("B={batch} P={features}{constant}{suffix}");
            let seed = (batch * 1000 + features) as u64;
            // Both per-sample kernels on every adapter (the serial ones are CPU adapters' choice).
            for (tiling, serial) in [(Tiling::Workgroup, ""), (Tiling::Registers, "_serial")] {
                if kind == LossKind::CrossEntropy && tiling == Tiling::Registers {
                    continue; // one kernel for both
                }
                checks.push(KernelCheck::new(
                    format!("loss::{}_forward{serial}", kind.name()),
                    shape.clone(),
                    move |gpu| run_forward_check(gpu, tiling, kind, batch, features, accumulate, seed),
                ));
            }
            checks.push(KernelCheck::new(
                format!("loss::{}_backward", kind.name()),
                shape,
                move |gpu| run_backward_check(gpu, kind, batch, features, accumulate, seed),
            ));
        }
    }
    checks
}
