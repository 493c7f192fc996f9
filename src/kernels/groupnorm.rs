//! GroupNorm (`shaders/groupnorm.wgsl`): forward, and the backward split by target (Burn style):
//! `groupnorm_input_backward` (dx) and `groupnorm_weight_backward` (dweight and dbias).
//!
//! Each comes in three variants over the same bindings ([`Reduction`]): one workgroup per (sample, group) or per
//! channel with a tree reduction (GPUs); `groupnorm_serial_*`, one invocation each walking the same tree, with the
//! same bits (CPU adapters, where the tree's barriers and workgroup memory cost more than the sums); and
//! `groupnorm_rows_*`, one invocation each with a loop in index order, for H * W = 1 (an MLP's GroupNorm over
//! feature rows) on every adapter.
//!
//! Both backward kernels need from the forward: its input `x` and the per-(sample, group) `mean` and `rstd` it
//! saved. They are independent of each other and can run in either order.

use bytemuck::{Pod, Zeroable};

use super::batchnorm::{compare_outputs, require, to_f32};
use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Tiling, CPU_LOOP_LIMIT};
use crate::shaders::groupnorm as wgsl;
use crate::shaders::EntryPoint;

/// Keep in sync with `struct Params` in shaders/groupnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GroupNormParams {
    pub batch: u32,
    pub channels: u32,
    pub groups: u32,
    pub inner: u32,
    pub eps: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// How a GroupNorm's reductions run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// One 256-thread workgroup per reduction, summing in a tree (GPUs).
    Tree,
    /// One invocation per reduction, walking the same tree: the same bits (CPU adapters).
    Serial,
    /// One invocation per reduction, a loop in index order (H * W = 1, on every adapter).
    Rows,
}

/// The shape and eps of one GroupNorm(G, C) over (N, C, H, W).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNorm {
    pub batch: usize,
    pub channels: usize,
    pub groups: usize,
    /// H * W
    pub inner: usize,
    pub eps: f32,
    /// The kernels to run; None: the adapter's choice ([`GroupNorm::reduction`]).
    pub kernels: Option<Reduction>,
}

impl GroupNorm {
    /// PyTorch's default eps 1e-5.
    pub fn new(batch: usize, channels: usize, groups: usize, height: usize, width: usize) -> Self {
        Self {
            batch,
            channels,
            groups,
            inner: height * width,
            eps: 1e-5,
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

    /// The kernels this shape runs on `gpu`: `kernels` if set, else rows for H * W = 1 (the ldm's denoiser, where
    /// each reduction is short), serial on CPU adapters, the tree elsewhere. A serial kernel whose loops would not
    /// fit [`CPU_LOOP_LIMIT`] runs as the tree ([`Self::serial_fits`]).
    pub fn reduction(&self, gpu: &Gpu) -> Reduction {
        match self.kernels {
            Some(reduction) => reduction,
            None if self.inner == 1 => Reduction::Rows,
            None if gpu.tiling == Tiling::Registers => Reduction::Serial,
            None => Reduction::Tree,
        }
    }

    /// Whether serial kernel `which` (0: forward, 1: input backward, 2: weight backward) keeps its loop iterations
    /// per invocation under [`CPU_LOOP_LIMIT`], with 1,000 to spare. A reduction over m elements loops m + 513
    /// times (256 leaves, each loop's last test counting too), writing an (n, g)'s M = C / G * H * W outputs
    /// about M + 2 C / G: the forward reduces M twice and writes, the input backward reduces M once and writes,
    /// the weight backward reduces a channel's N * H * W.
    pub fn serial_fits(&self, which: usize) -> bool {
        let per_group = self.channels / self.groups.max(1);
        let size = per_group * self.inner;
        let write = size + 2 * per_group + 1;
        let iterations = match which {
            0 => 2 * (size + 513) + write,
            1 => size + 513 + write,
            _ => self.batch * self.inner + 513,
        };
        iterations + 1_000 < CPU_LOOP_LIMIT
    }

    /// The kernels of `reduction`: (forward, input backward, weight backward).
    pub fn entries(reduction: Reduction) -> [&'static EntryPoint; 3] {
        match reduction {
            Reduction::Tree => [
                &wgsl::GROUPNORM_FORWARD,
                &wgsl::GROUPNORM_INPUT_BACKWARD,
                &wgsl::GROUPNORM_WEIGHT_BACKWARD,
            ],
            Reduction::Serial => [
                &wgsl::GROUPNORM_SERIAL_FORWARD,
                &wgsl::GROUPNORM_SERIAL_INPUT_BACKWARD,
                &wgsl::GROUPNORM_SERIAL_WEIGHT_BACKWARD,
            ],
            Reduction::Rows => [
                &wgsl::GROUPNORM_ROWS_FORWARD,
                &wgsl::GROUPNORM_ROWS_INPUT_BACKWARD,
                &wgsl::GROUPNORM_ROWS_WEIGHT_BACKWARD,
            ],
        }
    }

    /// Kernel `which` (0: forward, 1: input backward, 2: weight backward) on `gpu`, and its invocations for
    /// `reductions` reductions (a workgroup each for the tree, one invocation each otherwise).
    fn kernel(&self, gpu: &Gpu, which: usize, reductions: usize) -> (&'static EntryPoint, u64) {
        let reduction = match self.reduction(gpu) {
            Reduction::Serial if !self.serial_fits(which) => Reduction::Tree,
            reduction => reduction,
        };
        let entry = Self::entries(reduction)[which];
        let per_reduction = match reduction {
            Reduction::Tree => entry.workgroup_size[0] as u64,
            Reduction::Serial | Reduction::Rows => 1,
        };
        (entry, reductions as u64 * per_reduction)
    }

    /// N * G: how many (sample, group) statistics there are.
    pub fn statistics(&self) -> usize {
        self.batch * self.groups
    }

    fn params(&self, op: &str) -> Result<GroupNormParams, GpuError> {
        if self.groups == 0 || self.channels % self.groups != 0 {
            return Err(GpuError::Validation {
                context: op.to_string(),
                message: format!(
                    "GroupNorm needs the channels ({}) to be a multiple of the groups ({}), as in PyTorch",
                    self.channels, self.groups
                ),
            });
        }
        if u32::try_from(self.len()).is_err() || self.is_empty() {
            return Err(GpuError::Validation {
                context: op.to_string(),
                message: format!(
                    "GroupNorm over (N={}, C={}, H*W={}) is empty or has more than 2^32 elements; \
                     use a smaller batch",
                    self.batch, self.channels, self.inner
                ),
            });
        }
        Ok(GroupNormParams {
            batch: self.batch as u32,
            channels: self.channels as u32,
            groups: self.groups as u32,
            inner: self.inner as u32,
            eps: self.eps,
            ..Default::default()
        })
    }
}

/// y (N, C, H, W) = (x - mean) * rstd * weight + bias, with the mean and biased variance of each (sample, group);
/// writes mean (N, G) and rstd (N, G) for the backward.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    y: &GpuBuffer,
    mean: &GpuBuffer,
    rstd: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: &GpuBuffer,
    shape: &GroupNorm,
) -> Result<Dispatch, GpuError> {
    let params = shape.params("groupnorm_forward")?;
    for (buffer, words) in [
        (y, shape.len()),
        (mean, shape.statistics()),
        (rstd, shape.statistics()),
        (x, shape.len()),
        (weight, shape.channels),
        (bias, shape.channels),
    ] {
        require(buffer, words)?;
    }
    let params = gpu.uniform("groupnorm_forward", &params)?;
    // One reduction per (sample, group).
    let (entry, invocations) = shape.kernel(gpu, 0, shape.statistics());
    gpu.dispatch_1d(entry, &[&params, y, mean, rstd, x, weight, bias], invocations)
}

/// dx (N, C, H, W) through the group statistics, from the forward's input x, its saved mean and rstd (N, G),
/// dy and weight (C).
#[allow(clippy::too_many_arguments)]
pub fn input_backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    x: &GpuBuffer,
    mean: &GpuBuffer,
    rstd: &GpuBuffer,
    dy: &GpuBuffer,
    weight: &GpuBuffer,
    shape: &GroupNorm,
) -> Result<Dispatch, GpuError> {
    let params = shape.params("groupnorm_input_backward")?;
    for (buffer, words) in [
        (dx, shape.len()),
        (x, shape.len()),
        (mean, shape.statistics()),
        (rstd, shape.statistics()),
        (dy, shape.len()),
        (weight, shape.channels),
    ] {
        require(buffer, words)?;
    }
    let params = gpu.uniform("groupnorm_input_backward", &params)?;
    let (entry, invocations) = shape.kernel(gpu, 1, shape.statistics());
    gpu.dispatch_1d(entry, &[&params, dx, x, mean, rstd, dy, weight], invocations)
}

/// dweight (C) = sum over n, hw of dy * xhat and dbias (C) = sum over n, hw of dy, overwritten (not accumulated).
#[allow(clippy::too_many_arguments)]
pub fn weight_backward(
    gpu: &Gpu,
    dweight: &GpuBuffer,
    dbias: &GpuBuffer,
    x: &GpuBuffer,
    mean: &GpuBuffer,
    rstd: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &GroupNorm,
) -> Result<Dispatch, GpuError> {
    let params = shape.params("groupnorm_weight_backward")?;
    for (buffer, words) in [
        (dweight, shape.channels),
        (dbias, shape.channels),
        (x, shape.len()),
        (mean, shape.statistics()),
        (rstd, shape.statistics()),
        (dy, shape.len()),
    ] {
        require(buffer, words)?;
    }
    let params = gpu.uniform("groupnorm_weight_backward", &params)?;
    // One reduction per channel.
    let (entry, invocations) = shape.kernel(gpu, 2, shape.channels);
    gpu.dispatch_1d(entry, &[&params, dweight, dbias, x, mean, rstd, dy], invocations)
}

/// (N, C, G, H, W) shapes the checks use: odd ones, the ddpm's GroupNorm(8, C) for every C it uses
/// (64, 128, 192, 256) at its real resolutions, and the ldm denoiser's rows (GroupNorm(1, 256) over 128 rows);
/// only the three at batch 128 are full-size, to keep `latent check` fast on a CPU driver. The shapes with
/// H * W = 1 run the rows kernels.
pub const CHECK_SHAPES: [(usize, usize, usize, usize, usize); 10] = [
    (1, 1, 1, 1, 1),
    (2, 7, 7, 1, 1),
    (5, 12, 3, 1, 1),
    (128, 256, 1, 1, 1),
    (3, 6, 3, 5, 7),
    (1, 33, 3, 11, 3),
    (128, 128, 8, 7, 7),
    (128, 64, 8, 28, 28),
    (2, 192, 8, 28, 28),
    (2, 256, 8, 14, 14),
];

struct Inputs {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
}

/// Random inputs; each channel gets its own offset and spread.
fn inputs(shape: &GroupNorm, seed: u64) -> Inputs {
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
        dy: rng.uniform_vec(shape.len(), -1.0, 1.0),
    }
}

/// The forward's statistics as the GPU would have saved them (f32), and the backward twin's result.
fn saved_statistics_and_gradients(shape: &GroupNorm, inp: &Inputs) -> (Vec<f32>, Vec<f32>, cpu::groupnorm::Backward) {
    let (n, c, g, hw) = (shape.batch, shape.channels, shape.groups, shape.inner);
    let x = check::to_f64(&inp.x);
    let weight = check::to_f64(&inp.weight);
    let forward = cpu::groupnorm::forward(&x, &weight, &check::to_f64(&inp.bias), n, c, g, hw, shape.eps as f64);
    let (mean, rstd) = (to_f32(&forward.mean), to_f32(&forward.rstd));
    let grads = cpu::groupnorm::backward(
        &x,
        &check::to_f64(&mean),
        &check::to_f64(&rstd),
        &check::to_f64(&inp.dy),
        &weight,
        n,
        c,
        g,
        hw,
    );
    (mean, rstd, grads)
}

/// Every GroupNorm kernel against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    // Every kernel a shape can run, on every adapter: the tree and the serial kernels, or the rows kernels.
    let shapes = CHECK_SHAPES.into_iter().flat_map(|(n, c, g, h, w)| {
        let reductions = if h * w == 1 {
            vec![Reduction::Rows]
        } else {
            vec![Reduction::Tree, Reduction::Serial]
        };
        reductions.into_iter().map(move |reduction| (n, c, g, h, w, reduction))
    });
    for (n, c, g, h, w, reduction) in shapes {
        let shape = GroupNorm {
            kernels: Some(reduction),
            ..GroupNorm::new(n, c, g, h, w)
        };
        // A serial kernel whose loops would not fit the CPU drivers' limit is never run (the tree runs instead).
        let runs = |which| reduction != Reduction::Serial || shape.serial_fits(which);
        let entries = GroupNorm::entries(reduction);
        let label = format!("N={n} C={c} G={g} H={h} W={w}");
        if runs(0) {
            checks.push(KernelCheck::new(
                entries[0].qualified_name(),
                format!("{label}; outputs y, mean, rstd"),
                move |gpu| {
                    let inp = inputs(&shape, shape.len() as u64);
                    let (y, mean, rstd) = (
                        check::poisoned(gpu, "y", shape.len())?,
                        check::poisoned(gpu, "mean", shape.statistics())?,
                        check::poisoned(gpu, "rstd", shape.statistics())?,
                    );
                    let x = check::upload(gpu, "x", &inp.x)?;
                    let weight = check::upload(gpu, "weight", &inp.weight)?;
                    let bias = check::upload(gpu, "bias", &inp.bias)?;
                    gpu.run(&[&forward(gpu, &y, &mean, &rstd, &x, &weight, &bias, &shape)?])?;
                    let expected = cpu::groupnorm::forward(
                        &check::to_f64(&inp.x),
                        &check::to_f64(&inp.weight),
                        &check::to_f64(&inp.bias),
                        n,
                        c,
                        g,
                        h * w,
                        shape.eps as f64,
                    );
                    Ok(compare_outputs(
                        &[
                            (&check::download(gpu, &y, shape.len())?, &expected.y),
                            (&check::download(gpu, &mean, shape.statistics())?, &expected.mean),
                            (&check::download(gpu, &rstd, shape.statistics())?, &expected.rstd),
                        ],
                        Tolerance::ACCUMULATED,
                    ))
                },
            ));
        }
        if runs(1) {
            checks.push(KernelCheck::new(
                entries[1].qualified_name(),
                label.clone(),
                move |gpu| {
                    let inp = inputs(&shape, shape.len() as u64 + 1);
                    let (mean, rstd, expected) = saved_statistics_and_gradients(&shape, &inp);
                    let dx = check::poisoned(gpu, "dx", shape.len())?;
                    let x = check::upload(gpu, "x", &inp.x)?;
                    let mean = check::upload(gpu, "mean", &mean)?;
                    let rstd = check::upload(gpu, "rstd", &rstd)?;
                    let dy = check::upload(gpu, "dy", &inp.dy)?;
                    let weight = check::upload(gpu, "weight", &inp.weight)?;
                    gpu.run(&[&input_backward(gpu, &dx, &x, &mean, &rstd, &dy, &weight, &shape)?])?;
                    Ok(check::compare(
                        &check::download(gpu, &dx, shape.len())?,
                        &expected.dx,
                        Tolerance::ACCUMULATED,
                    ))
                },
            ));
        }
        if runs(2) {
            checks.push(KernelCheck::new(
                entries[2].qualified_name(),
                format!("{label}; outputs dweight, dbias"),
                move |gpu| {
                    let inp = inputs(&shape, shape.len() as u64 + 2);
                    let (mean, rstd, expected) = saved_statistics_and_gradients(&shape, &inp);
                    let (dweight, dbias) = (check::poisoned(gpu, "dweight", c)?, check::poisoned(gpu, "dbias", c)?);
                    let x = check::upload(gpu, "x", &inp.x)?;
                    let mean = check::upload(gpu, "mean", &mean)?;
                    let rstd = check::upload(gpu, "rstd", &rstd)?;
                    let dy = check::upload(gpu, "dy", &inp.dy)?;
                    gpu.run(&[&weight_backward(gpu, &dweight, &dbias, &x, &mean, &rstd, &dy, &shape)?])?;
                    Ok(compare_outputs(
                        &[
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
