//! Diffusion runs end to end: `latent train ddpm`, and `sample`, `diffuse`, `inpaint`, `eval` on a ddpm run.
//!
//! Training (Ho et al. 2020, Algorithm 1) replays one plan per step: the batch x0 and the timesteps t (N), drawn
//! on the host from ChaCha8 keyed by (seed, step), are written as inputs; eps is drawn on the GPU from
//! (seed, step, stream 0); q_sample, the U-Net, the MSE, its backward, Adam, and then the EMA update of every
//! weight (`ema = 0.999 ema + 0.001 p`, dispatches appended to the training plan) run in one submit.
//!
//! Sampling ([`ReversePlan`]) records one plan, `[U-Net forward, ddpm_step | ddim_step, (inpaint_mix)]`, and
//! replays it once per timestep: the per-iteration values (t for every sample, the step (t, t_prev), the fresh
//! noise draws) are `StepWrite`s keyed by the iteration, so the host writes a few bytes per iteration and reads
//! the images back once at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::{self, Batcher, Dataset, ImageShape, PixelRange};
use crate::generate::LoadedRun;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::graph::{Graph, TensorId};
use crate::kernels::diffusion::{self as kernels, SampleStep, Schedule};
use crate::kernels::{arith, optim as optim_kernels};
use crate::models::ddpm::{self as model, DdpmConfig, ScheduleKind};
use crate::models::ModelKind;
use crate::optim::Optimizer;
use crate::plan::{self, ParamStore, Phase, Plan, PlanOptions, Step, StepWrite, TrainOptions};
use crate::run::{self, RunConfig};
use crate::train::{self, RunSetup, TrainError, TrainRequest, TrainSummary};

/// The image size of the command line's runs (the datasets are checked to be 1x28x28).
pub const IMAGE: (usize, usize) = (28, 28);
const PIXELS: usize = 28 * 28;
/// Images in each epoch's preview grid, and DDIM steps to make them.
const PREVIEW_COUNT: usize = 32;
const PREVIEW_STEPS: usize = 20;

/// Random streams of the sampling noise (apart from training's stream 0 and the other models' streams).
const X_T_STREAM: u32 = 3000;
const Z_STREAM: u32 = 3001;
const INPAINT_STREAM: u32 = 3002;
const DIFFUSE_STREAM: u32 = 3003;

/// What a stream of host-drawn timesteps is for: part of its generator's key, so streams never overlap.
#[derive(Clone, Copy, Debug)]
pub enum TimestepPurpose {
    Train = 1,
    Test = 2,
}

/// t (N) ~ U{0..T-1}, from ChaCha8 keyed by (seed, purpose, index): batch `index` gets the same timesteps on
/// every run and every machine, so a resumed run continues exactly.
pub fn draw_timesteps(seed: u64, purpose: TimestepPurpose, index: u64, n: usize, steps: usize) -> Vec<u32> {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64 + 0x7464_6470_6d00).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    (0..n).map(|_| rng.random_range(0..steps as u32)).collect()
}

/// The options of `latent train ddpm` beyond the common ones (None: models.md's value, or the resumed run's).
#[derive(Clone, Debug, Default)]
pub struct DdpmOptions {
    pub schedule: Option<ScheduleKind>,
    pub width: Option<usize>,
    pub groups: Option<usize>,
    /// DDIM steps of each epoch's preview grid (default 20).
    pub preview_steps: Option<usize>,
}

/// Gives every trainable parameter of `store` an EMA buffer starting as a copy of its value (unless it has one),
/// and appends `ema = decay ema + (1 - decay) p` for each to `plan`, after its optimizer updates.
pub fn attach_ema(gpu: &Gpu, store: &mut ParamStore, plan: &mut Plan, decay: f64) -> Result<(), GpuError> {
    for entry in store.entries.iter_mut().filter(|e| e.trainable) {
        let n = entry.len();
        if entry.ema.is_none() {
            let mut values: Vec<f32> = gpu.read(&entry.value)?;
            values.truncate(n);
            let label = format!("ema.{}", entry.name);
            entry.ema = Some(Arc::new(gpu.buffer_from(
                &label,
                crate::gpu::BufferRole::OptimizerState,
                &values,
            )?));
        }
        let ema = entry.ema.as_ref().expect("made above");
        let dispatch = optim_kernels::ema_update(gpu, ema, &entry.value, decay, 0, n)?;
        plan.steps.push(Step {
            label: format!("{} ema", entry.name),
            phase: Phase::Optimizer,
            bytes: dispatch.bytes,
            dispatch,
            flops: 2 * n as u64,
        });
    }
    Ok(())
}

/// The test epsilon-MSE (mean over elements) of `dataset` with the weights behind `plan` (a forward plan of the
/// objective at batch `batch`): t uniform per image and eps fresh per batch, both from `seed`, so two calls
/// agree. The last partial batch is padded with repeated images that are not counted.
pub fn test_mse(
    gpu: &Gpu,
    plan: &Plan,
    objective: &model::Objective,
    dataset: &Dataset,
    seed: u64,
) -> Result<f64, TrainError> {
    let shape = objective.graph.shape(objective.x).to_vec();
    let (batch, per_image) = (shape[0], shape[1..].iter().product::<usize>());
    let mut images = vec![0.0f32; batch * per_image];
    let mut sum = 0.0f64;
    for (index, start) in (0..dataset.len()).step_by(batch).enumerate() {
        let indices: Vec<usize> = (0..batch).map(|i| (start + i) % dataset.len()).collect();
        let valid = batch.min(dataset.len() - start);
        dataset.fill_images(&indices, PixelRange::MinusOneToOne, &mut images);
        let t = draw_timesteps(seed, TimestepPurpose::Test, index as u64, batch, model::TIMESTEPS);
        plan.write_input(gpu, objective.x, &images)?;
        plan.write_input(gpu, objective.t, &t)?;
        plan.run(gpu, index as u64);
        // Per-sample values are sums of squares over the image.
        let per_sample = plan.read_per_sample(gpu, objective.loss)?;
        sum += per_sample[..valid].iter().map(|&v| v as f64).sum::<f64>();
    }
    Ok(sum / (dataset.len() * per_image) as f64)
}

fn progress_bar(total: u64, enabled: bool, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let template =
        format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}  (elapsed {{elapsed}}, left {{eta}})");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// `latent train ddpm`: the run directory of `latent train` (checkpoint with `ema.` weights, config.json,
/// metrics.jsonl with train and test MSE, samples/epoch-NNN.png from the EMA weights by DDIM, loss.png).
pub fn train(gpu: &Gpu, request: &TrainRequest, options: &DdpmOptions) -> Result<TrainSummary, TrainError> {
    let kind = ModelKind::Ddpm;
    // As in train::train, a new run's directory is made (place.into_dir) only once the data has checked out.
    let RunSetup {
        place,
        config,
        resume_from,
    } = train::setup_run(request, kind, || {
        let defaults = DdpmConfig::default();
        let ddpm = DdpmConfig {
            width: options.width.unwrap_or(defaults.width),
            groups: options.groups.unwrap_or(defaults.groups),
            schedule: options.schedule.unwrap_or(defaults.schedule),
        };
        ddpm.validate().map_err(TrainError::Config)?;
        Ok(RunConfig {
            model: kind.name().into(),
            epochs: train::default_epochs(kind),
            steps: None,
            batch: 128,
            lr: model::LEARNING_RATE,
            seed: 0,
            data: request.data.clone(),
            adapter: gpu.describe(),
            latent_version: env!("CARGO_PKG_VERSION").into(),
            ddpm: Some(ddpm),
            wae: None,
        })
    })?;
    let ddpm = config.ddpm.unwrap_or_default();

    let splits = train::load_data(config.data.as_ref())?;
    data::check_shape(&splits.train, ImageShape::MNIST)?;
    let mut batcher = Batcher::new(&splits.train, config.batch, config.seed)?.with_range(PixelRange::MinusOneToOne);
    let steps_per_epoch = batcher.steps_per_epoch() as u64;
    let total_steps = config.steps.unwrap_or(config.epochs * steps_per_epoch);
    let total_epochs = total_steps.div_ceil(steps_per_epoch);
    let run = place.into_dir()?;
    let _lock = run.lock_for_writing()?; // held until training returns; refuses a second writer
    run.write_config(&config)?;

    let objective = model::objective(&ddpm, config.batch, IMAGE)?;
    let mut store = ParamStore::new(config.seed);
    let train_options = TrainOptions {
        optimizer: Optimizer::adam(config.lr),
        update_prefixes: vec![],
    };
    let mut plan = plan::compile(
        gpu,
        &objective.graph,
        &mut store,
        &PlanOptions {
            name: "ddpm train".into(),
            train: Some(train_options),
            seed: config.seed,
        },
    )?;
    attach_ema(gpu, &mut store, &mut plan, model::EMA_DECAY)?;
    let eval_plan = plan::compile(
        gpu,
        &objective.graph,
        &mut store,
        &PlanOptions {
            name: "ddpm test".into(),
            train: None,
            seed: config.seed,
        },
    )?;
    let mut first_step = 0;
    if let Some(checkpoint) = &resume_from {
        store.load_from(gpu, checkpoint)?;
        first_step = checkpoint.meta("step")?;
        eprintln!("Resuming {} at step {first_step} of {total_steps}", run.path.display());
    }
    let counts = plan.dispatch_counts();
    eprintln!(
        "ddpm: {} parameters (width {}, {} groups, {:?} schedule) on {}; {} dispatches per step",
        store.parameter_count(),
        ddpm.width,
        ddpm.groups,
        ddpm.schedule,
        gpu.describe(),
        counts.values().sum::<usize>()
    );
    let preview = ReversePlan::new(
        gpu,
        &ddpm,
        PREVIEW_COUNT,
        Sampler::Ddim,
        options.preview_steps.unwrap_or(PREVIEW_STEPS),
        config.seed,
        false,
    )?;
    let preview_copy = preview.copy_weights_from(gpu, &store, true)?;

    let mut images = vec![0.0f32; batcher.images_len()];
    let bar = progress_bar(total_steps, request.progress, "steps");
    bar.set_position(first_step);
    let mut step = first_step;
    let mut last_metrics = json!({});
    while step < total_steps {
        let (epoch, within) = batcher.position(step);
        let epoch_start = Instant::now();
        let first_of_epoch = step;
        plan.reset_loss_sums(gpu)?;
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, total_epochs));
        for index in within..steps_per_epoch as usize {
            if step >= total_steps {
                break;
            }
            batcher.fill(epoch, index, &mut images, None);
            let t = draw_timesteps(
                config.seed,
                TimestepPurpose::Train,
                step,
                config.batch,
                model::TIMESTEPS,
            );
            plan.write_input(gpu, objective.x, &images)?;
            plan.write_input(gpu, objective.t, &t)?;
            plan.run(gpu, step);
            step += 1;
            bar.set_position(step);
            if step % request.log_every.max(1) == 0 {
                let loss = plan.read_losses(gpu)?[0];
                let rate = (step - first_of_epoch) as f64 * config.batch as f64 / epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!("mse {loss:.4}  {rate:.1} img/s"));
            }
        }
        let steps_done = step - first_of_epoch;
        let train_mse = plan.read_loss_sums(gpu)?[0] as f64 / steps_done as f64;
        let seconds = epoch_start.elapsed().as_secs_f64();
        let test = test_mse(gpu, &eval_plan, &objective, &splits.test, config.seed)?;
        let epoch_number = epoch + 1;
        let record = train::epoch_record(
            epoch_number,
            step,
            json!({ "mse": train_mse, "loss": train_mse }),
            json!({ "mse": test, "loss": test }),
            seconds,
            steps_done as f64 * config.batch as f64,
        );
        train::save_checkpoint(gpu, &run, &store, kind, &config, step)?;
        gpu.run(&preview_copy.iter().collect::<Vec<_>>())?;
        let samples = preview.sample(gpu, &ProgressBar::hidden())?;
        run::save_png(
            &run.sample_path(epoch_number),
            &run::image_grid(&to_unit(&samples), [PREVIEW_COUNT, 1, IMAGE.0, IMAGE.1], 8),
        )?;
        run.append_metrics(&record)?;
        train::plot_run(&run, kind)?;
        let line = format!(
            "epoch {epoch_number}/{total_epochs}: train mse {train_mse:.4}, test mse {test:.4}, {:.1} img/s, {seconds:.1} s",
            record["images_per_second"].as_f64().unwrap_or(0.0),
        );
        train::print_epoch_line(&bar, line);
        last_metrics = record;
    }
    bar.finish_and_clear();
    Ok(TrainSummary {
        run: run.path.clone(),
        steps: step,
        epochs: total_epochs,
        final_metrics: last_metrics,
    })
}

/// [-1, 1] to [0, 1] (the model's range to the images' and samples.npy's).
pub fn to_unit(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect()
}

/// How to run the reverse process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Algorithm 2 of Ho et al.: every timestep T-1 .. 0, fresh noise at each.
    Ancestral,
    /// DDIM with eta = 0 over an evenly spaced subsequence of timesteps.
    Ddim,
}

impl std::str::FromStr for Sampler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ancestral" | "ddpm" => Ok(Self::Ancestral),
            "ddim" => Ok(Self::Ddim),
            _ => Err(format!("unknown sampler {s:?}: choose ancestral or ddim")),
        }
    }
}

/// The reverse process of `n` images, recorded once: `[U-Net forward, sampling step, (inpainting mix)]`,
/// replayed once per timestep with only the per-iteration values rewritten.
pub struct ReversePlan {
    pub plan: Plan,
    pub store: ParamStore,
    /// x (n, 1, H, W): x_T on entry, the sample in [-1, 1] after the last iteration (updated in place).
    pub x: TensorId,
    /// Known pixels x0 (n, 1, H, W) and the mask (n, 1, H, W; 1 keeps) when inpainting.
    pub known: Option<(TensorId, TensorId)>,
    pub steps: Vec<SampleStep>,
    pub n: usize,
    pub size: (usize, usize),
    seed: u64,
}

impl ReversePlan {
    /// Compiles the reverse process of `n` images of the ddpm `config` (28x28). `steps` is DDIM's number of steps;
    /// the ancestral sampler always walks all T timesteps. `seed` keys x_T and every noise draw.
    pub fn new(
        gpu: &Gpu,
        config: &DdpmConfig,
        n: usize,
        sampler: Sampler,
        steps: usize,
        seed: u64,
        inpaint: bool,
    ) -> Result<Self, TrainError> {
        Self::with_size(gpu, config, n, sampler, steps, seed, inpaint, IMAGE)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn with_size(
        gpu: &Gpu,
        config: &DdpmConfig,
        n: usize,
        sampler: Sampler,
        steps: usize,
        seed: u64,
        inpaint: bool,
        size: (usize, usize),
    ) -> Result<Self, TrainError> {
        if n == 0 {
            return Err(TrainError::Config("--n must be at least 1".into()));
        }
        let schedule: Schedule = config.schedule.schedule();
        let sample_steps = match sampler {
            Sampler::Ancestral => (0..schedule.len() as u32).rev().map(SampleStep::ddpm).collect(),
            Sampler::Ddim => {
                if steps == 0 || steps > schedule.len() {
                    return Err(TrainError::Config(format!(
                        "--steps must be between 1 and {} for DDIM, got {steps}",
                        schedule.len()
                    )));
                }
                schedule.ddim_steps(steps)
            }
        };
        let shape = [n, 1, size.0, size.1];
        let values = n * size.0 * size.1;
        // The graph: the U-Net, and the noise each iteration draws fresh (z for the ancestral step, z' for the
        // known pixels' q_sample when inpainting).
        let denoiser = model::denoiser(config, n, size)?;
        let (x, t, eps_theta) = (denoiser.x, denoiser.t, denoiser.eps_theta);
        let mut g: Graph = denoiser.graph;
        let z = (sampler == Sampler::Ancestral).then(|| g.normal_noise("z", &shape, Z_STREAM));
        let known = inpaint.then(|| {
            let x0 = g.input("x0", &shape);
            let mask = g.input("mask", &shape);
            let z_known = g.normal_noise("z_known", &shape, INPAINT_STREAM);
            (x0, mask, z_known)
        });
        let mut store = ParamStore::new(0);
        let mut plan = plan::compile(
            gpu,
            &g,
            &mut store,
            &PlanOptions {
                name: format!("ddpm {sampler:?} sampling"),
                train: None,
                seed,
            },
        )?;

        // Per-iteration values: the step (t, t_prev) and t for every sample.
        let table = Arc::new(kernels::schedule_buffer(gpu, &schedule)?);
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
        let push = |plan: &mut Plan, label: &str, dispatch: Dispatch| {
            plan.steps.push(Step {
                label: label.into(),
                phase: Phase::Forward,
                bytes: dispatch.bytes,
                dispatch,
                flops: 0,
            })
        };
        let step_dispatch = match z {
            Some(z) => kernels::ddpm_step(
                gpu,
                &x_buffer,
                &eps_buffer,
                plan.buffer(z),
                &table,
                &step_buffer,
                true,
                values,
            )?,
            None => kernels::ddim_step(gpu, &x_buffer, &eps_buffer, &table, &step_buffer, true, values)?,
        };
        push(&mut plan, "sampling step", step_dispatch);
        if let Some((x0, mask, z_known)) = known {
            let d = kernels::inpaint_mix(
                gpu,
                &x_buffer,
                plan.buffer(x0),
                plan.buffer(z_known),
                plan.buffer(mask),
                &table,
                &step_buffer,
                values,
                values,
            )?;
            push(&mut plan, "inpaint mix", d);
        }
        Ok(Self {
            plan,
            store,
            x,
            known: known.map(|(x0, mask, _)| (x0, mask)),
            steps: Arc::try_unwrap(shared_steps).unwrap_or_else(|shared| (*shared).clone()),
            n,
            size,
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

    /// Runs the whole reverse process from x_T ~ N(0, I) (drawn from the seed) and reads the images back once:
    /// (n, 1, H, W) in [-1, 1]. `bar` advances once per timestep.
    pub fn sample(&self, gpu: &Gpu, bar: &ProgressBar) -> Result<Vec<f32>, TrainError> {
        let values = self.n * self.size.0 * self.size.1;
        let x_t = train::gpu_normals(gpu, values, self.seed, X_T_STREAM)?;
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

    /// Inpainting: `known` (n, 1, H, W) in [-1, 1] and `mask` (1 keeps the known pixel, 0 regenerates).
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

fn ddpm_config(run: &LoadedRun) -> Result<DdpmConfig, TrainError> {
    if run.model != ModelKind::Ddpm {
        return Err(TrainError::Config(format!(
            "{} is a {} run; this command works on ddpm runs",
            run.dir.path.display(),
            run.model
        )));
    }
    Ok(run.config.ddpm.unwrap_or_default())
}

/// Sampling runs at most this many images at once.
const SAMPLE_CHUNK: usize = 64;

/// `n` images (n, 1, 28, 28) in [0, 1] from a ddpm run's EMA weights: the hook for FID and other metrics.
pub fn generate_images(
    gpu: &Gpu,
    run: &LoadedRun,
    n: usize,
    sampler: Sampler,
    steps: usize,
) -> Result<Vec<f32>, TrainError> {
    generate_images_with(gpu, run, n, sampler, steps, 0, true, false)
}

/// [`generate_images`] with a seed, a choice of weights (EMA or trained) and a progress bar on stderr.
#[allow(clippy::too_many_arguments)]
pub fn generate_images_with(
    gpu: &Gpu,
    run: &LoadedRun,
    n: usize,
    sampler: Sampler,
    steps: usize,
    seed: u64,
    ema: bool,
    progress: bool,
) -> Result<Vec<f32>, TrainError> {
    let config = ddpm_config(run)?;
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    let mut images = Vec::with_capacity(n * PIXELS);
    for (chunk, start) in (0..n).step_by(SAMPLE_CHUNK).enumerate() {
        let count = SAMPLE_CHUNK.min(n - start);
        // One plan per chunk (compiled once, replayed per timestep); each chunk has its own noise.
        let chunk_seed = seed.wrapping_add((chunk as u64) << 32);
        let reverse = ReversePlan::new(gpu, &config, count, sampler, steps, chunk_seed, false)?;
        reverse.load_weights(gpu, &run.checkpoint, ema)?;
        let bar = progress_bar(0, progress, "timesteps");
        bar.set_prefix(format!("images {}..{} of {n}", start + 1, start + count));
        images.extend(to_unit(&reverse.sample(gpu, &bar)?));
        bar.finish_and_clear();
    }
    Ok(images)
}

/// Output directory: `--out`, or the run directory.
fn out_dir(run: &LoadedRun, out: Option<&Path>) -> Result<PathBuf, TrainError> {
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| run.dir.path.clone());
    std::fs::create_dir_all(&dir).map_err(|source| run::RunError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// `latent sample` on a ddpm run: grid.png and samples.npy ([N, 1, 28, 28] float32 in [0, 1]).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    gpu: &Gpu,
    path: &Path,
    n: usize,
    sampler: Sampler,
    steps: usize,
    seed: u64,
    ema: bool,
    out: Option<&Path>,
    progress: bool,
) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    ddpm_config(&run)?;
    let start = Instant::now();
    let images = generate_images_with(gpu, &run, n, sampler, steps, seed, ema, progress)?;
    let seconds = start.elapsed().as_secs_f64();
    let dir = out_dir(&run, out)?;
    run::save_png(
        &dir.join("grid.png"),
        &run::image_grid(&images, [n, 1, 28, 28], 8.max((n as f64).sqrt().ceil() as usize)),
    )?;
    run::save_npy(&dir.join("samples.npy"), &images, &[n, 1, 28, 28])?;
    let network_evaluations = match sampler {
        Sampler::Ancestral => model::TIMESTEPS,
        Sampler::Ddim => steps,
    };
    Ok(json!({
        "grid": dir.join("grid.png"),
        "samples": dir.join("samples.npy"),
        "n": n,
        "sampler": format!("{sampler:?}").to_lowercase(),
        "steps": network_evaluations,
        "weights": if ema { "ema" } else { "trained" },
        "seconds": seconds,
    }))
}

/// The timesteps `latent diffuse` shows.
pub const DIFFUSE_TIMESTEPS: [u32; 8] = [0, 50, 100, 200, 300, 500, 700, 999];

/// `latent diffuse`: `count` test images (rows) noised by q(x_t | x0) at [`DIFFUSE_TIMESTEPS`] (columns), on the
/// GPU through the q_sample op: diffuse.png.
pub fn diffuse(gpu: &Gpu, path: &Path, count: usize, out: Option<&Path>) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    let config = ddpm_config(&run)?;
    let test = train::load_data(run.config.data.as_ref())?.test;
    let count = count.clamp(1, test.len());
    let columns = DIFFUSE_TIMESTEPS.len();
    let rows = count * columns;
    let mut g = Graph::new();
    let shape = [rows, 1, 28, 28];
    let x0 = g.input("x0", &shape);
    let t = g.integer_input("t", &[rows]);
    let eps = g.normal_noise("eps", &shape, DIFFUSE_STREAM);
    let x_t = g.q_sample(x0, eps, t, Arc::new(config.schedule.schedule()))?;
    let mut store = ParamStore::new(0);
    let plan = plan::compile(
        gpu,
        &g,
        &mut store,
        &PlanOptions {
            name: "diffuse".into(),
            train: None,
            seed: run.config.seed,
        },
    )?;
    // Row r of the grid is image r at every timestep.
    let indices: Vec<usize> = (0..rows).map(|i| i / columns).collect();
    let timesteps: Vec<u32> = (0..rows).map(|i| DIFFUSE_TIMESTEPS[i % columns]).collect();
    let mut images = vec![0.0f32; rows * PIXELS];
    test.fill_images(&indices, PixelRange::MinusOneToOne, &mut images);
    plan.write_input(gpu, x0, &images)?;
    plan.write_input(gpu, t, &timesteps)?;
    plan.run(gpu, 0);
    let noised = plan.read(gpu, x_t)?;
    let dir = out_dir(&run, out)?;
    let file = dir.join("diffuse.png");
    run::save_png(&file, &run::image_grid(&to_unit(&noised), shape, columns))?;
    Ok(json!({ "image": file, "images": count, "timesteps": DIFFUSE_TIMESTEPS }))
}

/// The built-in masks of `latent inpaint --demo` (1 keeps, 0 regenerates): a centred 14x14 box, the lower half.
pub fn demo_masks() -> [Vec<f32>; 2] {
    let box_mask = (0..PIXELS)
        .map(|i| {
            let (r, c) = (i / 28, i % 28);
            if (7..21).contains(&r) && (7..21).contains(&c) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let half = (0..PIXELS).map(|i| if i / 28 < 14 { 1.0 } else { 0.0 }).collect();
    [box_mask, half]
}

/// What `latent inpaint` works on.
pub enum InpaintSource {
    /// One image and its mask (PNG files; the mask's white pixels are kept, black ones regenerated).
    Files { image: PathBuf, mask: PathBuf },
    /// The first test images with each built-in mask.
    Demo { images: usize },
}

/// `latent inpaint`: for each (image, mask), `n` completions; inpaint.png has one row per pair:
/// original | masked input | completions. Also inpainted.npy ([pairs * n, 1, 28, 28] in [0, 1]). Reports the
/// largest change of a known pixel (zero up to rounding: they are put back exactly at the last step).
#[allow(clippy::too_many_arguments)]
pub fn inpaint(
    gpu: &Gpu,
    path: &Path,
    source: &InpaintSource,
    n: usize,
    sampler: Sampler,
    steps: usize,
    seed: u64,
    out: Option<&Path>,
    progress: bool,
) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    let config = ddpm_config(&run)?;
    let n = n.max(1);
    // (image in [0, 1], mask) pairs.
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = match source {
        InpaintSource::Files { image, mask } => {
            let fit = data::Fit::default();
            let image_bytes = data::folder::load_image(image, ImageShape::MNIST, fit)?;
            let mask_bytes = data::folder::load_image(mask, ImageShape::MNIST, fit)?;
            vec![(
                image_bytes.iter().map(|&b| b as f32 / 255.0).collect(),
                mask_bytes.iter().map(|&b| if b >= 128 { 1.0 } else { 0.0 }).collect(),
            )]
        }
        InpaintSource::Demo { images } => {
            let test = train::load_data(run.config.data.as_ref())?.test;
            let count = (*images).clamp(1, test.len());
            let mut pixels = vec![0.0f32; count * PIXELS];
            test.fill_images(&(0..count).collect::<Vec<_>>(), PixelRange::ZeroToOne, &mut pixels);
            let masks = demo_masks();
            masks
                .iter()
                .flat_map(|mask| {
                    pixels
                        .chunks(PIXELS)
                        .map(|image| (image.to_vec(), mask.clone()))
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    };
    let total = pairs.len() * n;
    let mut known = Vec::with_capacity(total * PIXELS);
    let mut masks = Vec::with_capacity(total * PIXELS);
    for (image, mask) in &pairs {
        for _ in 0..n {
            known.extend(image.iter().map(|&v| 2.0 * v - 1.0));
            masks.extend_from_slice(mask);
        }
    }
    let reverse = ReversePlan::new(gpu, &config, total, sampler, steps, seed, true)?;
    reverse.load_weights(gpu, &run.checkpoint, true)?;
    let bar = progress_bar(0, progress, "timesteps");
    bar.set_prefix("inpainting");
    let completed = to_unit(&reverse.inpaint(gpu, &known, &masks, &bar)?);
    bar.finish_and_clear();
    let known_unit = to_unit(&known);
    let max_known_change = completed
        .iter()
        .zip(&known_unit)
        .zip(&masks)
        .filter(|(_, &m)| m == 1.0)
        .map(|((a, b), _)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // Grid rows: original | masked (regenerated pixels shown mid-grey) | n completions.
    let mut grid = Vec::with_capacity(pairs.len() * (n + 2) * PIXELS);
    for (p, (image, mask)) in pairs.iter().enumerate() {
        grid.extend_from_slice(image);
        grid.extend(image.iter().zip(mask).map(|(&v, &m)| if m == 1.0 { v } else { 0.5 }));
        grid.extend_from_slice(&completed[p * n * PIXELS..(p + 1) * n * PIXELS]);
    }
    let dir = out_dir(&run, out)?;
    let file = dir.join("inpaint.png");
    run::save_png(
        &file,
        &run::image_grid(&grid, [pairs.len() * (n + 2), 1, 28, 28], n + 2),
    )?;
    let npy = dir.join("inpainted.npy");
    run::save_npy(&npy, &completed, &[total, 1, 28, 28])?;
    Ok(json!({
        "image": file,
        "samples": npy,
        "pairs": pairs.len(),
        "completions_per_pair": n,
        "max_known_pixel_change": max_known_change,
    }))
}

/// `latent eval` on a ddpm run: the test epsilon-MSE over uniformly drawn t (seeded), with the EMA weights and
/// with the trained weights.
pub fn evaluate(gpu: &Gpu, run: &LoadedRun) -> Result<serde_json::Value, TrainError> {
    let config = ddpm_config(run)?;
    let test = train::load_data(run.config.data.as_ref())?.test;
    let batch = run.config.batch.clamp(1, 128);
    let objective = model::objective(&config, batch, IMAGE)?;
    let mut report = json!({
        "run": run.dir.path,
        "model": "ddpm",
        "step": run.checkpoint.meta::<u64>("step").ok(),
        "adapter": gpu.describe(),
        "test_images": test.len(),
        "schedule": config.schedule,
        "timesteps": "uniform in 0..999, seeded by the run's seed",
    });
    for (key, ema) in [("test_mse_ema", true), ("test_mse", false)] {
        let mut store = ParamStore::new(run.config.seed);
        let plan = plan::compile(
            gpu,
            &objective.graph,
            &mut store,
            &PlanOptions {
                name: "ddpm eval".into(),
                train: None,
                seed: run.config.seed,
            },
        )?;
        for entry in &store.entries {
            let name = if ema {
                format!("ema.{}", entry.name)
            } else {
                entry.name.clone()
            };
            gpu.write(&entry.value, run.checkpoint.f32(&name, &entry.shape)?)?;
        }
        report[key] = json!(test_mse(gpu, &plan, &objective, &test, run.config.seed)?);
    }
    Ok(report)
}
