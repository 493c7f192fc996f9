//! BatchNorm2d (`shaders/batchnorm.wgsl`): training forward (batch statistics, running-statistics update),
//! evaluation forward (running statistics), and the training backward (dx, dweight, dbias).
//!
//! The backward needs from the training forward: its input `x` and the per-channel `mean` and `rstd` it saved.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Tiling, CPU_LOOP_LIMIT};
use crate::shaders::batchnorm as wgsl;

/// Keep in sync with `struct Params` in shaders/batchnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BatchNormParams {
    pub batch: u32,
    pub channels: u32,
    pub inner: u32,
    pub count: u32,
    pub eps: f32,
    pub momentum: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// The shape and hyperparameters of one BatchNorm2d over (N, C, H, W).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm2d {
    pub batch: usize,
    pub channels: usize,
    /// H * W
    pub inner: usize,
    pub eps: f32,
    pub momentum: f32,
    /// The serial kernels (`Some(true)`), the tree ones (`Some(false)`), or the adapter's choice (None; see
    /// [`BatchNorm2d::serial`]).
    pub kernels: Option<bool>,
}

impl BatchNorm2d {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1.
    pub fn new(batch: usize, channels: usize, height: usize, width: usize) -> Self {
        Self {
            batch,
            channels,
            inner: height * width,
            eps: 1e-5,
            momentum: 0.1,
            kernels: None,
        }
    }

    /// Elements of the (N, C, H, W) tensor.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.inner
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the training forward (`backward` false) or the backward runs `batchnorm_serial_*` on `gpu`: one
    /// invocation per channel walking the tree kernels' reductions (the same bits), on CPU adapters where the
    /// channel's loops fit [`CPU_LOOP_LIMIT`] with 1,000 to spare (a reduction over N H W values loops N H W + 513
    /// times, the outputs' loop N H W + N + 1; the forward reduces twice, the backward once).
    pub fn serial(&self, gpu: &Gpu, backward: bool) -> bool {
        self.serial_fits(backward) && self.prefers_serial(gpu)
    }

    /// Whether the serial kernels are wanted where they fit: as `kernels` says, else on CPU adapters.
    fn prefers_serial(&self, gpu: &Gpu) -> bool {
        self.kernels.unwrap_or(gpu.tiling == Tiling::Registers)
    }

    /// Whether the serial training forward (`backward` false) or backward keeps under [`CPU_LOOP_LIMIT`].
    pub fn serial_fits(&self, backward: bool) -> bool {
        let count = self.count();
        let reductions = if backward { 1 } else { 2 };
        reductions * (count + 513) + count + self.batch + 1 + 1_000 < CPU_LOOP_LIMIT
    }

    /// Whether the training forward runs as two serial launches, the statistics then the outputs
    /// (`batchnorm_serial_statistics`, `batchnorm_serial_normalize`: the same bits): where the one-launch serial
    /// forward would pass the loop limit but each half keeps under it (the gan's 14 x 14 layer at batch 128).
    pub fn serial_split(&self, gpu: &Gpu) -> bool {
        !self.serial_fits(false) && self.split_fits() && self.prefers_serial(gpu)
    }

    /// Whether both launches of the split serial forward keep under [`CPU_LOOP_LIMIT`].
    pub fn split_fits(&self) -> bool {
        let count = self.count();
        2 * (count + 513) + 1_000 < CPU_LOOP_LIMIT && count + self.batch + 1 + 1_000 < CPU_LOOP_LIMIT
    }

    /// Elements per channel, N * H * W: what the statistics are taken over.
    pub fn count(&self) -> usize {
        self.batch * self.inner
    }

    fn params(&self, op: &str) -> Result<BatchNormParams, GpuError> {
        let fits = u32::try_from(self.len()).is_ok();
        if !fits || self.channels == 0 {
            return Err(GpuError::Validation {
                context: op.to_string(),
                message: format!(
                    "BatchNorm2d over (N={}, C={}, H*W={}) is empty or has more than 2^32 elements; \
                     use a smaller batch",
                    self.batch, self.channels, self.inner
                ),
            });
        }
        Ok(BatchNormParams {
            batch: self.batch as u32,
            channels: self.channels as u32,
            inner: self.inner as u32,
            count: self.count() as u32,
            eps: self.eps,
            momentum: self.momentum,
            ..Default::default()
        })
    }
}

/// An error unless `buffer` holds at least `words` f32 values.
pub(crate) fn require(buffer: &GpuBuffer, words: usize) -> Result<(), GpuError> {
    if buffer.len_words() < words {
        return Err(GpuError::BufferSize {
            label: buffer.label.clone(),
            capacity: buffer.bytes,
            bytes: words as u64 * 4,
        });
    }
    Ok(())
}

/// Training forward. y (N, C, H, W) = (x - mean) * rstd * weight + bias with the batch statistics of each channel;
/// writes mean (C) and rstd (C) for the backward and updates running_mean (C) and running_var (C) in place.
/// As in PyTorch, a channel needs more than one value (N * H * W > 1) for the unbiased running variance.
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    gpu: &Gpu,
    y: &GpuBuffer,
    mean: &GpuBuffer,
    rstd: &GpuBuffer,
    running_mean: &GpuBuffer,
    running_var: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: &GpuBuffer,
    shape: &BatchNorm2d,
) -> Result<Dispatch, GpuError> {
    let params = shape.params("batchnorm_forward_train")?;
    if shape.count() < 2 {
        return Err(GpuError::Validation {
            context: "batchnorm_forward_train".to_string(),
            message: format!(
                "BatchNorm2d in training needs more than one value per channel, got N * H * W = {} \
                 (as PyTorch); use a batch of at least 2 or evaluation mode",
                shape.count()
            ),
        });
    }
    for (buffer, words) in [(y, shape.len()), (x, shape.len())] {
        require(buffer, words)?;
    }
    for buffer in [mean, rstd, running_mean, running_var, weight, bias] {
        require(buffer, shape.channels)?;
    }
    let params = gpu.uniform("batchnorm_forward_train", &params)?;
    let buffers = [&params, y, mean, rstd, running_mean, running_var, x, weight, bias];
    if shape.serial(gpu, false) {
        return gpu.dispatch_1d(&wgsl::BATCHNORM_SERIAL_FORWARD_TRAIN, &buffers, shape.channels as u64);
    }
    if shape.serial_split(gpu) {
        let channels = shape.channels as u64;
        let statistics = [&params, mean, rstd, running_mean, running_var, x];
        let statistics = gpu.dispatch_1d(&wgsl::BATCHNORM_SERIAL_STATISTICS, &statistics, channels)?;
        let outputs = [&params, y, mean, rstd, x, weight, bias];
        let outputs = gpu.dispatch_1d(&wgsl::BATCHNORM_SERIAL_NORMALIZE, &outputs, channels)?;
        return Ok(statistics.followed_by(outputs));
    }
    // One workgroup per channel.
    gpu.dispatch_1d(&wgsl::BATCHNORM_FORWARD_TRAIN, &buffers, shape.channels as u64 * 256)
}

/// Evaluation forward: y (N, C, H, W) = (x - running_mean) / sqrt(running_var + eps) * weight + bias.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    gpu: &Gpu,
    y: &GpuBuffer,
    running_mean: &GpuBuffer,
    running_var: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: &GpuBuffer,
    shape: &BatchNorm2d,
) -> Result<Dispatch, GpuError> {
    let params = shape.params("batchnorm_forward_eval")?;
    for (buffer, words) in [(y, shape.len()), (x, shape.len())] {
        require(buffer, words)?;
    }
    for buffer in [running_mean, running_var, weight, bias] {
        require(buffer, shape.channels)?;
    }
    let params = gpu.uniform("batchnorm_forward_eval", &params)?;
    let buffers = [&params, y, running_mean, running_var, x, weight, bias];
    gpu.dispatch_1d(&wgsl::BATCHNORM_FORWARD_EVAL, &buffers, shape.len() as u64)
}

/// Training backward through the batch statistics: dx (N, C, H, W), dweight (C) and dbias (C), overwritten
/// (not accumulated), from the forward's input x, its saved mean (C) and rstd (C), dy and weight.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    dweight: &GpuBuffer,
    dbias: &GpuBuffer,
    x: &GpuBuffer,
    mean: &GpuBuffer,
    rstd: &GpuBuffer,
    dy: &GpuBuffer,
    weight: &GpuBuffer,
    shape: &BatchNorm2d,
) -> Result<Dispatch, GpuError> {
    let params = shape.params("batchnorm_backward")?;
    for (buffer, words) in [(dx, shape.len()), (x, shape.len()), (dy, shape.len())] {
        require(buffer, words)?;
    }
    for buffer in [dweight, dbias, mean, rstd, weight] {
        require(buffer, shape.channels)?;
    }
    let params = gpu.uniform("batchnorm_backward", &params)?;
    let buffers = [&params, dx, dweight, dbias, x, mean, rstd, dy, weight];
    if shape.serial(gpu, true) {
        return gpu.dispatch_1d(&wgsl::BATCHNORM_SERIAL_BACKWARD, &buffers, shape.channels as u64);
    }
    gpu.dispatch_1d(&wgsl::BATCHNORM_BACKWARD, &buffers, shape.channels as u64 * 256)
}

/// Compares several outputs of one kernel at once. Element indices in the report run through the outputs
/// one after another (in the order given); the Frobenius bound applies to every output on its own, and the
/// reported relative Frobenius error is the worst output's.
pub(crate) fn compare_outputs(outputs: &[(&[f32], &[f64])], tolerance: Tolerance) -> Comparison {
    let gpu: Vec<f32> = outputs.iter().flat_map(|(g, _)| g.iter().copied()).collect();
    let cpu: Vec<f64> = outputs.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let mut all = check::compare(&gpu, &cpu, tolerance);
    for (g, c) in outputs {
        let part = check::compare(g, c, tolerance);
        all.relative_frobenius = all.relative_frobenius.max(part.relative_frobenius);
        all.frobenius_ok &= part.frobenius_ok;
        all.length_ok &= part.length_ok;
    }
    all
}

/// Rounds f64 values to f32, as the GPU would hold them.
pub(crate) fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// (N, C, H, W) shapes the checks use: odd ones, and the gan's generator and discriminator BatchNorms
/// (128 x 128 x 7 x 7 and 128 x 64 x 14 x 14, batch 128). Not two values per channel: their normalised
/// values are +-1 whatever x, so dx is O(eps), all cancellation, and only its absolute error (~5e-8) means
/// anything.
pub const CHECK_SHAPES: [(usize, usize, usize, usize); 6] = [
    (3, 1, 1, 1),
    (1, 7, 3, 3),
    (3, 33, 1, 7),
    (5, 3, 11, 11),
    (128, 128, 7, 7),
    (128, 64, 14, 14),
];

struct Inputs {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    dy: Vec<f32>,
}

/// Random inputs; each channel gets its own offset and spread so the statistics differ per channel.
fn inputs(shape: &BatchNorm2d, seed: u64) -> Inputs {
    let mut rng = TestRng::new(seed);
    let offsets = rng.uniform_vec(shape.channels, -2.0, 2.0);
    let spreads = rng.uniform_vec(shape.channels, 0.2, 3.0);
    let x = (0..shape.len())
        .map(|i| {
            let c = (i / shape.inner) % shape.channels;
            offsets[c] + spreads[c] * rng.uniform(-1.0, 1.0)
        })
        .collect();
    Inputs {
        x,
        weight: rng.uniform_vec(shape.channels, 0.5, 1.5),
        bias: rng.uniform_vec(shape.channels, -0.5, 0.5),
        running_mean: rng.uniform_vec(shape.channels, -1.0, 1.0),
        running_var: rng.uniform_vec(shape.channels, 0.5, 2.0),
        dy: rng.uniform_vec(shape.len(), -1.0, 1.0),
    }
}

/// Every BatchNorm kernel against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    // The tree and the serial kernels on every adapter (the serial ones where a channel's loops fit).
    let shapes = CHECK_SHAPES
        .into_iter()
        .flat_map(|(n, c, h, w)| [false, true].map(|serial| (n, c, h, w, serial)));
    for (n, c, h, w, serial) in shapes {
        let shape = BatchNorm2d {
            kernels: Some(serial),
            ..BatchNorm2d::new(n, c, h, w)
        };
        let label = format!("N={n} C={c} H={h} W={w}");
        let [forward_name, backward_name] = if serial && !shape.serial_fits(false) && shape.split_fits() {
            [&wgsl::BATCHNORM_SERIAL_STATISTICS, &wgsl::BATCHNORM_SERIAL_BACKWARD]
        } else if serial {
            [&wgsl::BATCHNORM_SERIAL_FORWARD_TRAIN, &wgsl::BATCHNORM_SERIAL_BACKWARD]
        } else {
            [&wgsl::BATCHNORM_FORWARD_TRAIN, &wgsl::BATCHNORM_BACKWARD]
        }
        .map(|entry| entry.qualified_name());
        // A serial kernel whose loops would not fit never runs (the tree one does, checked above).
        if !serial || shape.serial_fits(false) || shape.split_fits() {
            checks.push(KernelCheck::new(
                forward_name,
                format!("{label}; outputs y, mean, rstd, running_mean, running_var"),
                move |gpu| {
                    let inp = inputs(&shape, shape.len() as u64);
                    let (y, mean, rstd) = (
                        check::poisoned(gpu, "y", shape.len())?,
                        check::poisoned(gpu, "mean", c)?,
                        check::poisoned(gpu, "rstd", c)?,
                    );
                    let running_mean = check::upload(gpu, "running_mean", &inp.running_mean)?;
                    let running_var = check::upload(gpu, "running_var", &inp.running_var)?;
                    let x = check::upload(gpu, "x", &inp.x)?;
                    let weight = check::upload(gpu, "weight", &inp.weight)?;
                    let bias = check::upload(gpu, "bias", &inp.bias)?;
                    let dispatch = forward_train(
                        gpu,
                        &y,
                        &mean,
                        &rstd,
                        &running_mean,
                        &running_var,
                        &x,
                        &weight,
                        &bias,
                        &shape,
                    )?;
                    gpu.run(&[&dispatch])?;
                    let expected = cpu::batchnorm::forward_train(
                        &check::to_f64(&inp.x),
                        &check::to_f64(&inp.weight),
                        &check::to_f64(&inp.bias),
                        &check::to_f64(&inp.running_mean),
                        &check::to_f64(&inp.running_var),
                        n,
                        c,
                        h * w,
                        shape.eps as f64,
                        shape.momentum as f64,
                    );
                    Ok(compare_outputs(
                        &[
                            (&check::download(gpu, &y, shape.len())?, &expected.y),
                            (&check::download(gpu, &mean, c)?, &expected.mean),
                            (&check::download(gpu, &rstd, c)?, &expected.rstd),
                            (&check::download(gpu, &running_mean, c)?, &expected.running_mean),
                            (&check::download(gpu, &running_var, c)?, &expected.running_var),
                        ],
                        Tolerance::ACCUMULATED,
                    ))
                },
            ));
        }
        if !serial {
            checks.push(KernelCheck::new(
                wgsl::BATCHNORM_FORWARD_EVAL.qualified_name(),
                label.clone(),
                move |gpu| {
                    let inp = inputs(&shape, shape.len() as u64 + 1);
                    let y = check::poisoned(gpu, "y", shape.len())?;
                    let running_mean = check::upload(gpu, "running_mean", &inp.running_mean)?;
                    let running_var = check::upload(gpu, "running_var", &inp.running_var)?;
                    let x = check::upload(gpu, "x", &inp.x)?;
                    let weight = check::upload(gpu, "weight", &inp.weight)?;
                    let bias = check::upload(gpu, "bias", &inp.bias)?;
                    let dispatch = forward_eval(gpu, &y, &running_mean, &running_var, &x, &weight, &bias, &shape)?;
                    gpu.run(&[&dispatch])?;
                    let expected = cpu::batchnorm::forward_eval(
                        &check::to_f64(&inp.x),
                        &check::to_f64(&inp.weight),
                        &check::to_f64(&inp.bias),
                        &check::to_f64(&inp.running_mean),
                        &check::to_f64(&inp.running_var),
                        c,
                        h * w,
                        shape.eps as f64,
                    );
                    Ok(check::compare(
                        &check::download(gpu, &y, shape.len())?,
                        &expected,
                        Tolerance::ELEMENTWISE,
                    ))
                },
            ));
        }
        if !serial || shape.serial_fits(true) {
            checks.push(KernelCheck::new(
                backward_name,
                format!("{label}; outputs dx, dweight, dbias"),
                move |gpu| {
                    let inp = inputs(&shape, shape.len() as u64 + 2);
                    let x64 = check::to_f64(&inp.x);
                    // The saved statistics as the forward would have left them, in f32.
                    let stats = cpu::batchnorm::forward_train(
                        &x64,
                        &check::to_f64(&inp.weight),
                        &check::to_f64(&inp.bias),
                        &check::to_f64(&inp.running_mean),
                        &check::to_f64(&inp.running_var),
                        n,
                        c,
                        h * w,
                        shape.eps as f64,
                        shape.momentum as f64,
                    );
                    let (mean, rstd) = (to_f32(&stats.mean), to_f32(&stats.rstd));
                    let (dx, dweight, dbias) = (
                        check::poisoned(gpu, "dx", shape.len())?,
                        check::poisoned(gpu, "dweight", c)?,
                        check::poisoned(gpu, "dbias", c)?,
                    );
                    let x = check::upload(gpu, "x", &inp.x)?;
                    let mean_gpu = check::upload(gpu, "mean", &mean)?;
                    let rstd_gpu = check::upload(gpu, "rstd", &rstd)?;
                    let dy = check::upload(gpu, "dy", &inp.dy)?;
                    let weight = check::upload(gpu, "weight", &inp.weight)?;
                    let dispatch = backward(
                        gpu, &dx, &dweight, &dbias, &x, &mean_gpu, &rstd_gpu, &dy, &weight, &shape,
                    )?;
                    gpu.run(&[&dispatch])?;
                    let expected = cpu::batchnorm::backward(
                        &x64,
                        &check::to_f64(&mean),
                        &check::to_f64(&rstd),
                        &check::to_f64(&inp.dy),
                        &check::to_f64(&inp.weight),
                        n,
                        c,
                        h * w,
                    );
                    Ok(compare_outputs(
                        &[
                            (&check::download(gpu, &dx, shape.len())?, &expected.dx),
                            (&check::download(gpu, &dweight, c)?, &expected.dweight),
                            (&check::download(gpu, &dbias, c)?, &expected.dbias),
                        ],
                        Tolerance::ACCUMULATED,
                    ))
                },
            ));
        }
    }
    checks
}
