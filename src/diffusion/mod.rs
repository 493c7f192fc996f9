//! The reverse (denoising) process, recorded once and replayed per timestep, with samplers behind one interface.
//!
//! As diffusers' schedulers do, a [`Sampler`] chooses the timesteps of the walk from pure noise down to clean data,
//! then steps x_t to the next x from the network's noise estimate: `ancestral` (Ho et al. 2020, Algorithm 2) and
//! `ddim` (Song et al. 2021, eta = 0) are one file each. [`Inpainting`] works with any sampler: after each step
//! it puts the known pixels back, noised to the step's level.
//!
//! [`ReversePlan`] records `[network forward, sampler step, (inpainting mix)]` once over any denoiser graph
//! (x_t, t) -> eps_theta, and replays it once per timestep: the per-iteration values (t for every sample, the step
//! (t, t_prev), the fresh noise draws) are `StepWrite`s keyed by the iteration, so the host writes a few bytes per
//! iteration and reads the images back once at the end.

pub mod ancestral;
pub mod completion;
pub mod ddim;
pub mod inpaint;
pub mod repaint;

use std::sync::Arc;

use indicatif::ProgressBar;

pub use ancestral::Ancestral;
pub use ddim::Ddim;
pub use inpaint::Inpainting;

use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::generate::gpu_normals;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::graph::{Graph, TensorId};
use crate::kernels::arith;
use crate::kernels::diffusion::{self as kernels, SampleStep, Schedule};
use crate::plan::{self, ParamStore, Phase, Plan, PlanOptions, Step, StepWrite};

/// Random streams of the sampling noise (apart from training's stream 0 and the other models' streams).
pub const X_T_STREAM: u32 = 3000;
pub const Z_STREAM: u32 = 3001;
pub const INPAINT_STREAM: u32 = 3002;
/// The noise of RePaint's jumps back.
pub const RENOISE_STREAM: u32 = 3004;

/// A network that predicts the noise: x_t (N, C, H, W) and t (N) -> eps_theta (N, C, H, W), for a conditional
/// model also given the class as a one-hot row (N, K + 1), the last column being the null class.
pub struct Denoiser {
    pub graph: Graph,
    pub x: TensorId,
    pub t: TensorId,
    pub eps_theta: TensorId,
    pub class: Option<TensorId>,
}

/// How the reverse process is recorded.
#[derive(Clone, Copy, Debug)]
pub struct ReverseOptions {
    /// Mix the known pixels back after each step (`ReversePlan::inpaint`).
    pub inpaint: bool,
    /// Clamp the last step's x_0 to [-1, 1] (images; a latent map is not clamped).
    pub clamp: bool,
    /// Classifier-free guidance with weight w: the denoiser runs at twice the samples (each image with its class,
    /// then with the null class) and eps = (1 + w) eps(x, c) - w eps(x, null).
    pub guidance: Option<f32>,
    /// RePaint's resampling when inpainting: (jump length j, resamplings r); r = 1 is the plain walk.
    pub resampling: Option<(usize, usize)>,
    /// Autoguidance (Karras et al. 2024) with weight w: the denoiser gives two estimates of each image's noise,
    /// [model; guide] (2N), and eps = (1 + w) eps(x) - w eps_guide(x).
    pub autoguidance: Option<f32>,
}

impl ReverseOptions {
    /// Pixels in [-1, 1], no guidance.
    pub fn pixels(inpaint: bool) -> Self {
        Self {
            inpaint,
            clamp: true,
            guidance: None,
            resampling: None,
            autoguidance: None,
        }
    }
}

/// The name prefix of an autoguidance guide's parameters inside a sampling plan.
pub const GUIDE: &str = "guide.";

/// What a sampler's step dispatch works on: buffers of the compiled sampling plan.
pub struct StepBuffers<'a> {
    pub plan: &'a Plan,
    /// x_t on entry, x_{t_prev} after the step (updated in place).
    pub x: &'a GpuBuffer,
    pub eps_theta: &'a GpuBuffer,
    /// The schedule's rows (`kernels::schedule_buffer`) and this iteration's (t, t_prev).
    pub table: &'a GpuBuffer,
    pub step: &'a GpuBuffer,
    /// Values in x.
    pub values: usize,
    /// Clamp the last step's result to [-1, 1].
    pub clamp: bool,
}

/// A way to walk the reverse process.
pub trait Sampler {
    /// The name `--sampler` takes.
    fn name(&self) -> &'static str;
    /// The steps (t, t_prev) from the top of `schedule` down to clean data (t_prev = -1 last), in order.
    fn timesteps(&self, schedule: &Schedule) -> Result<Vec<SampleStep>, TrainError>;
    /// Adds what each step draws afresh (noise) to the sampling graph `g`, whose images have `shape`.
    fn prepare(&mut self, _g: &mut Graph, _shape: &[usize]) {}
    /// The dispatch of one step, recorded once: x <- step(x, eps_theta).
    fn step(&self, gpu: &Gpu, buffers: &StepBuffers) -> Result<Dispatch, GpuError>;
}

/// The samplers `--sampler` names.
pub const SAMPLERS: [&str; 2] = ["ancestral", "ddim"];

/// The sampler called `name` (`ddpm` is ancestral's other name), DDIM with `steps` steps and eta 0.
pub fn sampler(name: &str, steps: usize) -> Result<Box<dyn Sampler>, TrainError> {
    sampler_with_eta(name, steps, 0.0)
}

/// The sampler called `name`, DDIM with `steps` steps and noise `eta`.
pub fn sampler_with_eta(name: &str, steps: usize, eta: f32) -> Result<Box<dyn Sampler>, TrainError> {
    match name {
        "ancestral" | "ddpm" => Ok(Box::new(Ancestral::default())),
        "ddim" => Ok(Box::new(Ddim::with_eta(steps, eta))),
        _ => Err(TrainError::Config(format!(
            "unknown sampler {name:?}: choose {}",
            SAMPLERS.join(" or ")
        ))),
    }
}

/// The probability that training replaces a label by the null class (Ho & Salimans 2022, p_uncond = 0.1).
pub const NULL_PROBABILITY: f64 = 0.1;

/// The class rows of training batch `step`: each label one-hot among K + 1 columns, replaced by the null class K
/// with probability [`NULL_PROBABILITY`], drawn from ChaCha8 keyed by (seed, step) so a resumed run draws the
/// same. `labels` are the samples from global index `first` of the step's batch on (a part of a split batch
/// draws what the whole batch draws for them).
pub fn training_class_rows(seed: u64, step: u64, labels: &[u32], classes: usize, first: usize) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&0x6e75_6c6c_636c_6173u64.to_le_bytes());
    key[16..24].copy_from_slice(&step.to_le_bytes());
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(key);
    for _ in 0..first {
        rng.random_bool(NULL_PROBABILITY);
    }
    let rows: Vec<u32> = labels
        .iter()
        .map(|&label| {
            if rng.random_bool(NULL_PROBABILITY) {
                classes as u32
            } else {
                label
            }
        })
        .collect();
    one_hot(&rows, classes + 1)
}

/// What a conditional model is asked to sample: the class of each image and the guidance weight w >= 0.
#[derive(Clone, Debug)]
pub struct Conditioning {
    pub labels: Vec<u32>,
    pub guidance: f32,
}

/// One-hot rows (labels.len(), width) of class labels.
pub fn one_hot(labels: &[u32], width: usize) -> Vec<f32> {
    let mut rows = vec![0.0f32; labels.len() * width];
    for (row, &label) in rows.chunks_mut(width).zip(labels) {
        row[label as usize] = 1.0;
    }
    rows
}

/// The reverse process of `n` images, recorded once: `[denoiser forward, sampling step, (inpainting mix)]`,
/// replayed once per timestep with only the per-iteration values rewritten.
pub struct ReversePlan {
    pub plan: Plan,
    pub store: ParamStore,
    /// x (n, C, H, W): x_T on entry, the sample in [-1, 1] after the last iteration (updated in place).
    pub x: TensorId,
    /// Known pixels x0 and the mask (1 keeps) when inpainting, both shaped as x.
    pub known: Option<(TensorId, TensorId)>,
    /// The denoiser's one-hot class rows of a conditional model (twice the samples under guidance: the asked
    /// classes, then the null class), written by [`ReversePlan::set_classes`].
    pub class: Option<TensorId>,
    /// The number of classes K of a conditional model (the null class is K).
    classes: usize,
    guided: bool,
    /// The number of images.
    pub samples: usize,
    pub steps: Vec<SampleStep>,
    /// Values in x.
    pub values: usize,
    seed: u64,
}

impl ReversePlan {
    /// Compiles the reverse process of `denoiser` with `sampler` over `schedule`. Its batch is the number of
    /// images, or twice it under guidance. `seed` keys x_T and every noise draw.
    pub fn new(
        gpu: &Gpu,
        denoiser: Denoiser,
        mut sampler: Box<dyn Sampler>,
        schedule: &Schedule,
        seed: u64,
        options: &ReverseOptions,
    ) -> Result<Self, TrainError> {
        let walk: Vec<repaint::Iteration> = match options.resampling {
            Some((jump, resample)) => repaint::schedule(&sampler.timesteps(schedule)?, jump, resample)?,
            None => sampler
                .timesteps(schedule)?
                .into_iter()
                .map(|step| repaint::Iteration {
                    renoise: SampleStep::new(step.t, step.t as i32),
                    step,
                })
                .collect(),
        };
        let jumps_back = walk.iter().any(|i| i.renoise.t as i32 != i.renoise.t_prev);
        let sample_steps: Vec<SampleStep> = walk.iter().map(|i| i.step).collect();
        let Denoiser {
            graph: mut g,
            x: network_x,
            t,
            eps_theta: network_eps,
            class,
        } = denoiser;
        let network_shape = g.shape(network_x).to_vec();
        let batch = network_shape[0];
        let guided = options.guidance.is_some();
        if guided && (class.is_none() || batch % 2 != 0) {
            return Err(TrainError::Config(
                "classifier-free guidance needs a conditional denoiser at twice the number of samples".into(),
            ));
        }
        let mut estimates = network_shape.clone();
        if options.autoguidance.is_some() {
            if guided {
                return Err(TrainError::Config(
                    "classifier-free guidance and autoguidance at once: choose --guidance or --guide".into(),
                ));
            }
            estimates[0] = 2 * batch;
        }
        if g.shape(network_eps) != estimates {
            return Err(TrainError::Config(format!(
                "the denoiser gives {:?} for x of {network_shape:?}: it should give {estimates:?}",
                g.shape(network_eps)
            )));
        }
        // Under guidance the sample x (n) and the guided estimate (n) are tensors of their own; the network sees
        // x twice over (2n). Under autoguidance the network sees x once and gives two estimates (2n).
        let (x, eps_theta) = if guided {
            let mut shape = network_shape.clone();
            shape[0] = batch / 2;
            (g.input("x_sample", &shape), g.input("eps_guided", &shape))
        } else if options.autoguidance.is_some() {
            (network_x, g.input("eps_guided", &network_shape))
        } else {
            (network_x, network_eps)
        };
        let shape = g.shape(x).to_vec();
        let values: usize = shape.iter().product();
        let classes = class.map_or(0, |c| g.shape(c)[1] - 1);
        sampler.prepare(&mut g, &shape);
        let inpainting = options.inpaint.then(|| Inpainting::add_to(&mut g, &shape));
        let renoise_z = jumps_back.then(|| g.normal_noise("z_renoise", &shape, RENOISE_STREAM));
        let mut store = ParamStore::new(0);
        let mut plan = plan::compile(
            gpu,
            &g,
            &mut store,
            &PlanOptions {
                name: format!("{} sampling", sampler.name()),
                train: None,
                seed,
            },
        )?;

        // Per-iteration values: the step (t, t_prev) and t for every sample.
        let table = Arc::new(kernels::schedule_buffer(gpu, schedule)?);
        let step_buffer = Arc::new(kernels::sample_step_buffer(gpu)?);
        let shared_steps: Arc<Vec<SampleStep>> = Arc::new(sample_steps);
        let for_step = shared_steps.clone();
        plan.step_writes.push(StepWrite {
            buffer: step_buffer.clone(),
            bytes: Box::new(move |k| bytemuck::bytes_of(&for_step[k as usize % for_step.len()]).to_vec()),
        });
        let for_t = shared_steps.clone();
        plan.step_writes.push(StepWrite {
            buffer: plan.buffer(t).clone(),
            bytes: Box::new(move |k| {
                let timestep = for_t[k as usize % for_t.len()].t;
                bytemuck::cast_slice(&vec![timestep; batch]).to_vec()
            }),
        });
        let x_buffer = plan.buffer(x).clone();
        let eps_buffer = plan.buffer(eps_theta).clone();
        let buffers = StepBuffers {
            plan: &plan,
            x: &x_buffer,
            eps_theta: &eps_buffer,
            table: &table,
            step: &step_buffer,
            values,
            clamp: options.clamp,
        };
        let mut dispatches = Vec::new();
        let mut repeat = None;
        if let Some(w) = options.guidance {
            // Before the network: its input is x twice; after it: the guided combination of its two halves.
            repeat = Some(arith::repeat(gpu, plan.buffer(network_x), &x_buffer, values, 2)?);
            let combine = arith::combine_halves(gpu, &eps_buffer, plan.buffer(network_eps), 1.0 + w, -w, values)?;
            dispatches.push(("guidance: (1 + w) eps(x, c) - w eps(x, null)", combine));
        }
        if let Some(w) = options.autoguidance {
            let combine = arith::combine_halves(gpu, &eps_buffer, plan.buffer(network_eps), 1.0 + w, -w, values)?;
            dispatches.push(("autoguidance: (1 + w) eps(x) - w eps_guide(x)", combine));
        }
        dispatches.push(("sampling step", sampler.step(gpu, &buffers)?));
        if let Some(inpainting) = &inpainting {
            dispatches.push(("inpaint mix", inpainting.mix(gpu, &buffers)?));
        }
        let mut front = Vec::new();
        if let Some(z) = renoise_z {
            // Before the network: RePaint's jump back (the identity on iterations without one).
            let renoise_buffer = Arc::new(kernels::sample_step_buffer(gpu)?);
            let renoises: Vec<SampleStep> = walk.iter().map(|i| i.renoise).collect();
            plan.step_writes.push(StepWrite {
                buffer: renoise_buffer.clone(),
                bytes: Box::new(move |k| bytemuck::bytes_of(&renoises[k as usize % renoises.len()]).to_vec()),
            });
            let dispatch = kernels::renoise(gpu, &x_buffer, plan.buffer(z), &table, &renoise_buffer, values)?;
            front.push(("RePaint: jump back", dispatch));
        }
        if let Some(repeat) = repeat {
            front.push(("guidance: x twice", repeat));
        }
        for (index, (label, dispatch)) in front.into_iter().enumerate() {
            plan.steps.insert(
                index,
                Step {
                    label: label.into(),
                    phase: Phase::Forward,
                    bytes: dispatch.bytes,
                    dispatch,
                    flops: 0,
                },
            );
        }
        for (label, dispatch) in dispatches {
            plan.steps.push(Step {
                label: label.into(),
                phase: Phase::Forward,
                bytes: dispatch.bytes,
                dispatch,
                flops: 0,
            });
        }
        Ok(Self {
            plan,
            store,
            x,
            known: inpainting.map(|i| i.inputs()),
            class,
            classes,
            guided,
            samples: shape[0],
            steps: Arc::try_unwrap(shared_steps).unwrap_or_else(|shared| (*shared).clone()),
            values,
            seed,
        })
    }

    /// The reverse process of `n` samples of the denoiser that `build` makes at a batch size, with the classes
    /// `labels` written for a conditional model: under guidance w > 0 the denoiser runs at 2n (guidance 0 is the
    /// conditional model alone, at n). The caller loads the weights.
    #[allow(clippy::too_many_arguments)]
    pub fn for_samples(
        gpu: &Gpu,
        build: &dyn Fn(usize) -> Result<Denoiser, crate::graph::GraphError>,
        n: usize,
        sampler: Box<dyn Sampler>,
        schedule: &Schedule,
        seed: u64,
        options: ReverseOptions,
        labels: Option<&[u32]>,
    ) -> Result<Self, TrainError> {
        let guidance = options.guidance.filter(|&w| w != 0.0);
        let batch = if guidance.is_some() { 2 * n } else { n };
        let options = ReverseOptions { guidance, ..options };
        let reverse = Self::new(gpu, build(batch)?, sampler, schedule, seed, &options)?;
        match (reverse.class, labels) {
            (Some(_), Some(labels)) => reverse.set_classes(gpu, labels)?,
            (Some(_), None) => reverse.set_classes(gpu, &vec![reverse.classes as u32; n])?,
            (None, Some(_)) => {
                return Err(TrainError::Config(
                    "--class: this model is not class-conditional (train it with --conditional)".into(),
                ))
            }
            (None, None) => {}
        }
        Ok(reverse)
    }

    /// Writes the class of every sample (each below K, or K for the null class) into the denoiser's one-hot rows;
    /// under guidance the second half of the batch gets the null class.
    pub fn set_classes(&self, gpu: &Gpu, labels: &[u32]) -> Result<(), TrainError> {
        let Some(class) = self.class else {
            return Err(TrainError::Config("this sampling plan has no class input".into()));
        };
        let n = self.samples;
        if labels.len() != n {
            return Err(TrainError::Config(format!(
                "{} class labels for {n} samples",
                labels.len()
            )));
        }
        let mut rows: Vec<u32> = labels.to_vec();
        if self.guided {
            rows.extend(std::iter::repeat_n(self.classes as u32, n));
        }
        self.plan.write_input(gpu, class, &one_hot(&rows, self.classes + 1))?;
        Ok(())
    }

    /// Loads the weights from a checkpoint: the EMA copies (`ema.<name>`) or the trained values. An autoguidance
    /// guide's weights (`guide.*`) come from its own checkpoint ([`ReversePlan::load_guide`]).
    pub fn load_weights(&self, gpu: &Gpu, checkpoint: &Checkpoint, ema: bool) -> Result<(), TrainError> {
        self.load_entries(gpu, checkpoint, ema, "")
    }

    /// Loads the autoguidance guide's weights (`guide.<name>`) from its run's checkpoint (`<name>`, or its EMA).
    pub fn load_guide(&self, gpu: &Gpu, checkpoint: &Checkpoint, ema: bool) -> Result<(), TrainError> {
        self.load_entries(gpu, checkpoint, ema, GUIDE)
    }

    /// Loads the entries named `prefix<name>` (with `prefix` "": those without the guide's prefix).
    fn load_entries(&self, gpu: &Gpu, checkpoint: &Checkpoint, ema: bool, prefix: &str) -> Result<(), TrainError> {
        let entries = self.store.entries.iter().filter_map(|entry| match prefix {
            "" => (!entry.name.starts_with(GUIDE)).then_some((entry, &entry.name[..])),
            _ => entry.name.strip_prefix(prefix).map(|name| (entry, name)),
        });
        for (entry, name) in entries {
            let name = if ema { format!("ema.{name}") } else { name.to_string() };
            let values = checkpoint.f32(&name, &entry.shape).map_err(|e| {
                TrainError::Config(format!(
                    "{e}{}",
                    if ema {
                        "; this checkpoint has no EMA weights: sample the trained weights with --no-ema"
                    } else {
                        ""
                    }
                ))
            })?;
            gpu.write(&entry.value, values)?;
        }
        Ok(())
    }

    /// GPU copies from a training store's EMA (or trained) weights into this plan's weights; run them before
    /// sampling to see the current model.
    pub fn copy_weights_from(&self, gpu: &Gpu, source: &ParamStore, ema: bool) -> Result<Vec<Dispatch>, TrainError> {
        let mut copies = Vec::new();
        for entry in &self.store.entries {
            let from = source
                .get(&entry.name)
                .ok_or_else(|| TrainError::Config(format!("the training store has no parameter {}", entry.name)))?;
            let buffer: &GpuBuffer = if ema {
                from.ema
                    .as_ref()
                    .ok_or_else(|| TrainError::Config(format!("{} has no EMA", entry.name)))?
            } else {
                &from.value
            };
            copies.push(arith::copy(gpu, &entry.value, buffer, entry.len())?);
        }
        Ok(copies)
    }

    /// Runs the whole reverse process from x_T ~ N(0, I) (drawn from the seed) and reads the images back once,
    /// in [-1, 1]. `bar` advances once per timestep.
    pub fn sample(&self, gpu: &Gpu, bar: &ProgressBar) -> Result<Vec<f32>, TrainError> {
        let x_t = gpu_normals(gpu, self.values, self.seed, X_T_STREAM)?;
        self.plan.write_input(gpu, self.x, &x_t)?;
        bar.set_length(self.steps.len() as u64);
        for k in 0..self.steps.len() {
            self.plan.run(gpu, k as u64);
            // Waiting keeps the bar honest; nothing is read back until the end.
            gpu.wait()?;
            bar.set_position(k as u64 + 1);
        }
        Ok(self.plan.read(gpu, self.x)?)
    }

    /// Inpainting: `known` in [-1, 1] and `mask` (1 keeps the known pixel, 0 regenerates), both shaped as x.
    pub fn inpaint(&self, gpu: &Gpu, known: &[f32], mask: &[f32], bar: &ProgressBar) -> Result<Vec<f32>, TrainError> {
        let Some((x0, mask_input)) = self.known else {
            return Err(TrainError::Config(
                "this sampling plan was built without inpainting".into(),
            ));
        };
        self.plan.write_input(gpu, x0, known)?;
        self.plan.write_input(gpu, mask_input, mask)?;
        self.sample(gpu, bar)
    }
}
