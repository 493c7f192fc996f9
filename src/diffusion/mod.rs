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
pub mod ddim;
pub mod inpaint;

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

/// A network that predicts the noise: x_t (N, C, H, W) and t (N) -> eps_theta (N, C, H, W).
pub struct Denoiser {
    pub graph: Graph,
    pub x: TensorId,
    pub t: TensorId,
    pub eps_theta: TensorId,
}

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

/// The sampler called `name` (`ddpm` is ancestral's other name), DDIM with `steps` steps.
pub fn sampler(name: &str, steps: usize) -> Result<Box<dyn Sampler>, TrainError> {
    match name {
        "ancestral" | "ddpm" => Ok(Box::new(Ancestral::default())),
        "ddim" => Ok(Box::new(Ddim::new(steps))),
        _ => Err(TrainError::Config(format!(
            "unknown sampler {name:?}: choose {}",
            SAMPLERS.join(" or ")
        ))),
    }
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
    pub steps: Vec<SampleStep>,
    /// Values in x.
    pub values: usize,
    seed: u64,
}

impl ReversePlan {
    /// Compiles the reverse process of `denoiser` (its batch is the number of images) with `sampler` over
    /// `schedule`, inpainting when `inpaint`. `seed` keys x_T and every noise draw.
    pub fn new(
        gpu: &Gpu,
        denoiser: Denoiser,
        mut sampler: Box<dyn Sampler>,
        schedule: &Schedule,
        seed: u64,
        inpaint: bool,
    ) -> Result<Self, TrainError> {
        let sample_steps = sampler.timesteps(schedule)?;
        let Denoiser {
            graph: mut g,
            x,
            t,
            eps_theta,
        } = denoiser;
        let shape = g.shape(x).to_vec();
        let values: usize = shape.iter().product();
        let n = shape[0];
        sampler.prepare(&mut g, &shape);
        let inpainting = inpaint.then(|| Inpainting::add_to(&mut g, &shape));
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
                bytemuck::cast_slice(&vec![timestep; n]).to_vec()
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
        };
        let mut dispatches = vec![("sampling step", sampler.step(gpu, &buffers)?)];
        if let Some(inpainting) = &inpainting {
            dispatches.push(("inpaint mix", inpainting.mix(gpu, &buffers)?));
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
            steps: Arc::try_unwrap(shared_steps).unwrap_or_else(|shared| (*shared).clone()),
            values,
            seed,
        })
    }

    /// Loads the weights from a checkpoint: the EMA copies (`ema.<name>`) or the trained values.
    pub fn load_weights(&self, gpu: &Gpu, checkpoint: &Checkpoint, ema: bool) -> Result<(), TrainError> {
        for entry in &self.store.entries {
            let name = if ema {
                format!("ema.{}", entry.name)
            } else {
                entry.name.clone()
            };
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
