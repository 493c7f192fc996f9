//! The ddpm's recipe: training (Ho et al. 2020, Algorithm 1) and `sample`, `diffuse`, `inpaint`, `eval`.
//!
//! A training step replays one plan: the batch x0 and the timesteps t (N), drawn on the host from ChaCha8 keyed
//! by (seed, step), are written as inputs; eps is drawn on the GPU from (seed, step, stream 0); q_sample, the
//! U-Net, the MSE, its backward, Adam, and then the EMA update of every weight (`ema = 0.999 ema + 0.001 p`,
//! dispatches appended to the training plan) run in one submit. Sampling is `crate::diffusion`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use super::{denoiser, objective, DdpmConfig, Objective, EMA_DECAY, LEARNING_RATE, TIMESTEPS};
use crate::data::{Dataset, ImageShape, PixelRange, Splits};
use crate::diffusion::{self, Conditioning, ReverseOptions, ReversePlan};
use crate::error::TrainError;
use crate::generate::{grid_shape, progress_bar, to_unit, write_samples_in_columns, LoadedRun, GRID_LIMIT};
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::graph::{Graph, TensorId};
use crate::kernels::optim as optim_kernels;
use crate::optim::Optimizer;
use crate::plan::{self, ParamStore, Phase, Plan, Step};
use crate::recipe::{
    forward_options, train_options, Batch, Command, Completion, Defaults, DiffusionOptions, EvalOptions, Flag,
    MeasuredSet, ModelOptions, Recipe, SampleRequest, StepPlan, TrainGraph, Training, DEFAULT_GUIDANCE, EVAL_GUIDANCE,
};
use crate::run::{self, RunConfig};

/// Images in each epoch's preview grid, and DDIM steps to make them.
const PREVIEW_COUNT: usize = 32;
const PREVIEW_STEPS: usize = 20;
/// DDIM's steps unless told otherwise.
const SAMPLING_STEPS: usize = 50;
/// The random stream of `latent diffuse`'s noise.
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

/// Gives every trainable parameter of `store` an EMA buffer starting as a copy of its value (unless it has one),
/// and appends `ema = decay ema + (1 - decay) p` for each to `plan`, after its optimizer updates.
pub fn attach_ema(gpu: &Gpu, store: &mut ParamStore, plan: &mut Plan, decay: f64) -> Result<(), GpuError> {
    attach_ema_with_prefix(gpu, store, plan, decay, "")
}

/// [`attach_ema`] for the trainable parameters whose names start with `prefix` (the ldm's denoiser, not its
/// frozen first stage).
pub fn attach_ema_with_prefix(
    gpu: &Gpu,
    store: &mut ParamStore,
    plan: &mut Plan,
    decay: f64,
    prefix: &str,
) -> Result<(), GpuError> {
    for entry in store
        .entries
        .iter_mut()
        .filter(|e| e.trainable && e.name.starts_with(prefix))
    {
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
    objective: &Objective,
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
        let t = draw_timesteps(seed, TimestepPurpose::Test, index as u64, batch, TIMESTEPS);
        plan.write_input(gpu, objective.x, &images)?;
        plan.write_input(gpu, objective.t, &t)?;
        if let Some(class) = objective.class {
            // The true class of every test image (no null class).
            let mut labels = vec![0u32; batch];
            dataset.fill_labels(&indices, &mut labels);
            let width = objective.graph.shape(class)[1];
            plan.write_input(gpu, class, &diffusion::one_hot(&labels, width))?;
        }
        plan.run(gpu, index as u64);
        // Per-sample values are sums of squares over the image.
        let per_sample = plan.read_per_sample(gpu, objective.loss)?;
        sum += per_sample[..valid].iter().map(|&v| v as f64).sum::<f64>();
    }
    Ok(sum / (dataset.len() * per_image) as f64)
}

/// The reverse process of `n` images of the ddpm `config`, walked by `options.sampler`, for the classes and
/// guidance of `conditioning` when the model is conditional.
fn reverse_plan(
    gpu: &Gpu,
    config: &DdpmConfig,
    n: usize,
    options: &DiffusionOptions,
    image: ImageShape,
    seed: u64,
    inpaint: Option<(usize, usize)>,
    conditioning: Option<&Conditioning>,
) -> Result<ReversePlan, TrainError> {
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    if let Some(guide) = &options.guide {
        return Err(TrainError::Config(format!(
            "--guide {}: autoguidance is built for the ldm only, for now; sample this ddpm without --guide",
            guide.display()
        )));
    }
    let sampler = options.sampler(SAMPLING_STEPS, 0.0)?;
    let schedule = config.schedule.schedule();
    let reverse_options = ReverseOptions {
        guidance: conditioning.map(|c| c.guidance),
        resampling: inpaint,
        ..ReverseOptions::pixels(inpaint.is_some())
    };
    let build = |batch| denoiser(config, batch, image);
    let labels = conditioning.map(|c| &c.labels[..]);
    ReversePlan::for_samples(gpu, &build, n, sampler, &schedule, seed, reverse_options, labels)
}

/// A ddpm's training step, its test plan, and the preview: DDIM from a copy of the EMA weights.
struct DdpmTraining {
    store: ParamStore,
    plans: Vec<StepPlan>,
    objective: Objective,
    eval: Plan,
    config: DdpmConfig,
    image: ImageShape,
    seed: u64,
    preview: ReversePlan,
    preview_copy: Vec<Dispatch>,
}

impl Training for DdpmTraining {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn plans(&self) -> &[StepPlan] {
        &self.plans
    }

    fn uses_labels(&self) -> bool {
        self.objective.class.is_some()
    }

    fn write_batch(&self, gpu: &Gpu, batch: &Batch, step: u64) -> Result<(), TrainError> {
        let n = batch.images.len() / self.image.numel();
        // The whole batch's timesteps, of which this part takes its samples' own.
        let t = draw_timesteps(self.seed, TimestepPurpose::Train, step, batch.global, TIMESTEPS);
        let t = &t[batch.first..batch.first + n];
        let plan = &self.plans[0].plan;
        plan.write_input(gpu, self.objective.x, batch.images)?;
        plan.write_input(gpu, self.objective.t, t)?;
        write_training_classes(
            gpu,
            plan,
            self.objective.class,
            self.config.classes,
            batch,
            self.seed,
            step,
        )
    }

    fn describe(&self) -> String {
        format!(
            "width {}, {} groups, {:?} schedule{}",
            self.config.width,
            self.config.groups,
            self.config.schedule,
            conditional_description(self.config.classes),
        )
    }

    fn test_metrics(&self, gpu: &Gpu, splits: &Splits) -> Result<Map<String, Value>, TrainError> {
        let test = test_mse(gpu, &self.eval, &self.objective, &splits.test, self.seed)?;
        Ok(json!({ "mse": test, "loss": test })
            .as_object()
            .cloned()
            .unwrap_or_default())
    }

    fn preview(&self, gpu: &Gpu, _splits: &Splits) -> Result<Option<image::RgbImage>, TrainError> {
        gpu.run(&self.preview_copy.iter().collect::<Vec<_>>())?;
        let samples = self.preview.sample(gpu, &ProgressBar::hidden())?;
        Ok(Some(run::image_grid(
            &to_unit(&samples),
            grid_shape(PREVIEW_COUNT, self.image),
            8,
        )))
    }

    fn summary(&self, record: &Value) -> String {
        format!(
            "train mse {:.4}, test mse {:.4}",
            record["train"]["mse"].as_f64().unwrap_or(f64::NAN),
            record["test"]["mse"].as_f64().unwrap_or(f64::NAN),
        )
    }
}

/// The class rows of a conditional model's training batch (labels dropped to the null class with probability
/// 0.1), written into `plan`; nothing for an unconditional model.
pub fn write_training_classes(
    gpu: &Gpu,
    plan: &Plan,
    input: Option<TensorId>,
    classes: Option<usize>,
    batch: &Batch,
    seed: u64,
    step: u64,
) -> Result<(), TrainError> {
    let (Some(input), Some(classes)) = (input, classes) else {
        return Ok(());
    };
    let labels = batch.labels.ok_or_else(|| {
        TrainError::Config("a class-conditional model needs labelled data (IDX labels or class folders)".into())
    })?;
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(TrainError::Config(format!(
            "label {bad} is out of range for a {classes}-class conditional model"
        )));
    }
    let rows = diffusion::training_class_rows(seed, step, labels, classes, batch.first);
    plan.write_input(gpu, input, &rows)?;
    Ok(())
}

/// Refuses `--conditional` on resuming a run that was trained without it (a run keeps what it was trained as).
pub fn check_resume_conditional(options: &ModelOptions, classes: Option<usize>) -> Result<(), TrainError> {
    if options.switch("conditional") && classes.is_none() {
        return Err(TrainError::Config(
            "this run was trained without --conditional; resume it without the flag, or start a new run".into(),
        ));
    }
    Ok(())
}

/// ", conditional on K classes" for the first line of a conditional run.
pub fn conditional_description(classes: Option<usize>) -> String {
    classes
        .map(|k| format!(", conditional on {k} classes (null class with p = 0.1)"))
        .unwrap_or_default()
}

/// Sampling runs at most this many images at once.
pub const SAMPLE_CHUNK: usize = 64;

/// `n` images (n, C, H, W) in [0, 1] from a ddpm run's weights, with a progress bar on stderr if `progress`;
/// image i of a conditional model gets class `conditioning.labels[i]`.
fn generate_images(
    gpu: &Gpu,
    run: &LoadedRun,
    n: usize,
    options: &DiffusionOptions,
    seed: u64,
    progress: bool,
    conditioning: Option<&Conditioning>,
) -> Result<Vec<f32>, TrainError> {
    let config = ddpm_config(&run.config)?;
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    let mut images = Vec::with_capacity(n * run.image().numel());
    for (chunk, start) in (0..n).step_by(SAMPLE_CHUNK).enumerate() {
        let count = SAMPLE_CHUNK.min(n - start);
        // One plan per chunk (compiled once, replayed per timestep); each chunk has its own noise.
        let chunk_seed = seed.wrapping_add((chunk as u64) << 32);
        let chunk_conditioning = conditioning.map(|c| Conditioning {
            labels: c.labels[start..start + count].to_vec(),
            guidance: c.guidance,
        });
        let reverse = reverse_plan(
            gpu,
            &config,
            count,
            options,
            run.image(),
            chunk_seed,
            None,
            chunk_conditioning.as_ref(),
        )?;
        reverse.load_weights(gpu, &run.checkpoint, options.ema)?;
        let bar = progress_bar(0, progress, "timesteps");
        bar.set_prefix(format!("images {}..{} of {n}", start + 1, start + count));
        images.extend(to_unit(&reverse.sample(gpu, &bar)?));
        bar.finish_and_clear();
    }
    Ok(images)
}

/// A conditional model's samples at each guidance weight of `EVAL_GUIDANCE`, classes i mod K, for `latent eval`'s
/// trade-off between the accuracy of the asked class and FID; nothing for an unconditional model.
pub fn guidance_sets(
    classes: Option<usize>,
    n: usize,
    generate: &dyn Fn(&Conditioning) -> Result<Vec<f32>, TrainError>,
) -> Result<Vec<MeasuredSet>, TrainError> {
    let Some(k) = classes else { return Ok(Vec::new()) };
    EVAL_GUIDANCE
        .iter()
        .map(|&guidance| {
            let conditioning = Conditioning {
                labels: (0..n).map(|i| (i % k) as u32).collect(),
                guidance,
            };
            Ok(MeasuredSet {
                name: format!("guidance_{guidance}"),
                description: format!(
                    "{n} samples, classes in turn, guidance w = {guidance} (the sampler of fid_sampler, EMA)"
                ),
                images: generate(&conditioning)?,
                labels: Some(conditioning.labels),
                guidance: Some(guidance),
            })
        })
        .collect()
}

/// Image i of `n` gets class i mod K at the default guidance: FID's samples of a conditional model.
pub fn uniform_classes(classes: Option<usize>, n: usize) -> Option<Conditioning> {
    classes.map(|k| Conditioning {
        labels: (0..n).map(|i| (i % k) as u32).collect(),
        guidance: DEFAULT_GUIDANCE,
    })
}

/// The ddpm's part of a run's configuration (models.md's for a config.json without one), checked.
fn ddpm_config(config: &RunConfig) -> Result<DdpmConfig, TrainError> {
    let own: DdpmConfig = config.model_config()?;
    own.validate()
        .map_err(|e| TrainError::Config(format!("{}: {e}", crate::run::CONFIG)))?;
    Ok(own)
}

/// `completed` with the known pixels (mask 1) replaced by `known`, exactly.
pub fn paste_known(completed: &[f32], known: &[f32], masks: &[f32]) -> Vec<f32> {
    completed
        .iter()
        .zip(known)
        .zip(masks)
        .map(|((&c, &k), &m)| if m == 1.0 { k } else { c })
        .collect()
}

/// The timesteps `latent diffuse` shows.
pub const DIFFUSE_TIMESTEPS: [u32; 8] = [0, 50, 100, 200, 300, 500, 700, 999];

/// The built-in masks of `latent inpaint --demo` (1 keeps, 0 regenerates) for images of `image`, every channel
/// alike: a centred box of half the height and width (14x14 on 28x28), the lower half.
pub fn demo_masks(image: ImageShape) -> [Vec<f32>; 2] {
    let (h, w) = (image.height, image.width);
    let pixel = |i: usize| ((i / w) % h, i % w);
    let box_mask = (0..image.numel())
        .map(|i| {
            let (r, c) = pixel(i);
            if (h / 4..h / 4 + h / 2).contains(&r) && (w / 4..w / 4 + w / 2).contains(&c) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let half = (0..image.numel())
        .map(|i| if pixel(i).0 < h / 2 { 1.0 } else { 0.0 })
        .collect();
    [box_mask, half]
}

/// The ddpm of models.md: 60 epochs, batch 128, Adam 2e-4, EMA 0.999, the linear schedule, data in [-1, 1].
pub struct Ddpm;

/// `--conditional`: class conditioning with a null class (classifier-free guidance).
pub const CONDITIONAL: Flag = Flag {
    name: "conditional",
    value: "",
    help: "condition on the class labels (a learned class embedding added to the time embedding, the label \
           replaced by a null class with probability 0.1): `latent sample --class K --guidance W`",
};

/// The number of classes of a conditional model (the labelled datasets are digits or Fashion-MNIST's 10).
pub const CLASSES: usize = crate::models::classifier::CLASSES;

const FLAGS: [Flag; 5] = [
    CONDITIONAL,
    Flag {
        name: "schedule",
        value: "linear|cosine",
        help: "the noise schedule, `linear` (models.md) or `cosine`",
    },
    Flag {
        name: "width",
        value: "N",
        help: "the network's width (ddpm: the U-Net's base width, 64; ldm: the MLP's, 256; smaller nets train faster)",
    },
    Flag {
        name: "groups",
        value: "N",
        help: "GroupNorm groups (ddpm 8, ldm 1; must divide --width)",
    },
    Flag {
        name: "preview-steps",
        value: "N",
        help: "DDIM steps of each epoch's sample grid (20)",
    },
];

impl Recipe for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 60,
            batch: 128,
            lr: LEARNING_RATE,
            range: PixelRange::MinusOneToOne,
        }
    }

    fn flags(&self) -> &'static [Flag] {
        &FLAGS
    }

    fn configure(&self, options: &ModelOptions) -> Result<Option<Value>, TrainError> {
        let defaults = DdpmConfig::default();
        let config = DdpmConfig {
            width: options.get("width")?.unwrap_or(defaults.width),
            groups: options.get("groups")?.unwrap_or(defaults.groups),
            schedule: options.get("schedule")?.unwrap_or(defaults.schedule),
            classes: options.switch("conditional").then_some(CLASSES),
        };
        config.validate().map_err(TrainError::Config)?;
        Ok(Some(json!(config)))
    }

    /// The graph only: training writes the timesteps t too.
    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, crate::graph::GraphError> {
        crate::models::check_multiple(image, 4, "ddpm")?;
        let o = objective(&DdpmConfig::default(), batch, image)?;
        Ok(TrainGraph::new(o.graph, o.x, vec![("mse", o.loss)]))
    }

    fn check_config(&self, config: &RunConfig) -> Result<(), TrainError> {
        ddpm_config(config).map(|_| ())
    }

    fn check_resume(&self, options: &ModelOptions, config: &RunConfig) -> Result<(), TrainError> {
        check_resume_conditional(options, ddpm_config(config)?.classes)
    }

    /// The U-Net's configuration only (as before the recipe interface, no batch-size check).
    fn check(&self, _gpu: &Gpu, config: &RunConfig) -> Result<(), TrainError> {
        self.check_config(config)
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, options: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let ddpm = ddpm_config(config)?;
        let seed = config.seed;
        let objective = objective(&ddpm, config.batch, config.image)?;
        let mut store = ParamStore::new(seed);
        let options_train = train_options("ddpm train", Optimizer::adam(config.lr), &[], seed);
        let mut plan = plan::compile(gpu, &objective.graph, &mut store, &options_train)?;
        attach_ema(gpu, &mut store, &mut plan, EMA_DECAY)?;
        let eval = plan::compile(gpu, &objective.graph, &mut store, &forward_options("ddpm test", seed))?;
        let preview_options = DiffusionOptions {
            sampler: "ddim".into(),
            steps: Some(options.get("preview-steps")?.unwrap_or(PREVIEW_STEPS)),
            eta: None,
            ema: true,
            ..DiffusionOptions::default()
        };
        // A conditional model's preview shows the classes in turn, unguided.
        let preview_classes = ddpm.classes.map(|k| Conditioning {
            labels: (0..PREVIEW_COUNT).map(|i| (i % k) as u32).collect(),
            guidance: 0.0,
        });
        let preview = reverse_plan(
            gpu,
            &ddpm,
            PREVIEW_COUNT,
            &preview_options,
            config.image,
            seed,
            None,
            preview_classes.as_ref(),
        )?;
        let preview_copy = preview.copy_weights_from(gpu, &store, true)?;
        Ok(Box::new(DdpmTraining {
            store,
            plans: vec![StepPlan {
                plan,
                losses: vec!["mse"],
            }],
            objective,
            eval,
            config: ddpm,
            image: config.image,
            seed,
            preview,
            preview_copy,
        }))
    }

    /// The test epsilon-MSE over uniformly drawn t (seeded), with the EMA weights and with the trained weights.
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, options: &EvalOptions) -> Result<Value, TrainError> {
        let config = ddpm_config(&run.config)?;
        let test = run.test_set()?;
        let batch = run.config.batch.clamp(1, 128);
        let objective = objective(&config, batch, run.image())?;
        let mut report = run.report(gpu, test.len());
        report["fid_sampler"] = json!(options.sampling.describe(SAMPLING_STEPS, 0.0));
        report["schedule"] = json!(config.schedule);
        report["timesteps"] = json!("uniform in 0..999, seeded by the run's seed");
        for (key, ema) in [("test_mse_ema", true), ("test_mse", false)] {
            let mut store = ParamStore::new(run.config.seed);
            let plan = plan::compile(
                gpu,
                &objective.graph,
                &mut store,
                &forward_options("ddpm eval", run.config.seed),
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

    /// DDIM with 50 steps from the EMA weights, as the per-epoch grids.
    fn generate(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        n: usize,
        sampling: &DiffusionOptions,
    ) -> Option<Result<Vec<f32>, TrainError>> {
        let conditioning = match ddpm_config(&run.config) {
            Ok(config) => uniform_classes(config.classes, n),
            Err(e) => return Some(Err(e)),
        };
        Some(generate_images(gpu, run, n, sampling, 0, false, conditioning.as_ref()))
    }

    fn measured_sets(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        n: usize,
        sampling: &DiffusionOptions,
    ) -> Result<Vec<MeasuredSet>, TrainError> {
        let generate = |c: &Conditioning| generate_images(gpu, run, n, sampling, 0, false, Some(c));
        guidance_sets(ddpm_config(&run.config)?.classes, n, &generate)
    }

    fn supports(&self, command: Command) -> bool {
        matches!(command, Command::Sample | Command::Diffuse | Command::Inpaint)
    }

    /// grid.png and samples.npy ([N, C, H, W] float32 in [0, 1]).
    fn sample(&self, gpu: &Gpu, run: &LoadedRun, request: &SampleRequest) -> Result<Value, TrainError> {
        let options = &request.diffusion;
        let classes = ddpm_config(&run.config)?.classes;
        let (n, conditioning) = request.conditioning(classes)?;
        let start = Instant::now();
        let images = generate_images(
            gpu,
            run,
            n,
            options,
            request.seed,
            request.progress,
            conditioning.as_ref(),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        let columns = request.grid_columns(n, classes);
        let dir = run.out_dir(request.out.as_deref())?;
        let (grid, samples) = write_samples_in_columns(&dir, &images, run.image(), Some(columns))?;
        let sampler = options.sampler(SAMPLING_STEPS, 0.0)?;
        let network_evaluations = sampler.timesteps(&ddpm_config(&run.config)?.schedule.schedule())?.len();
        Ok(json!({
            "grid": grid,
            "grid_images": n.min(GRID_LIMIT),
            "samples": samples,
            "n": n,
            "classes": conditioning.as_ref().map(|c| c.labels.clone()),
            "guidance": conditioning.as_ref().map(|c| c.guidance),
            "sampler": sampler.name(),
            "steps": network_evaluations,
            "weights": if options.ema { "ema" } else { "trained" },
            "seconds": seconds,
        }))
    }

    /// `count` test images (rows) noised by q(x_t | x0) at [`DIFFUSE_TIMESTEPS`] (columns), on the GPU through
    /// the q_sample op: diffuse.png.
    fn diffuse(&self, gpu: &Gpu, run: &LoadedRun, count: usize, out: Option<PathBuf>) -> Result<Value, TrainError> {
        let config = ddpm_config(&run.config)?;
        let test = run.test_set()?;
        let count = count.clamp(1, test.len());
        let columns = DIFFUSE_TIMESTEPS.len();
        let rows = count * columns;
        let mut g = Graph::new();
        let shape = grid_shape(rows, run.image());
        let x0 = g.input("x0", &shape);
        let t = g.integer_input("t", &[rows]);
        let eps = g.normal_noise("eps", &shape, DIFFUSE_STREAM);
        let x_t = g.q_sample(x0, eps, t, Arc::new(config.schedule.schedule()))?;
        let mut store = ParamStore::new(0);
        let plan = plan::compile(gpu, &g, &mut store, &forward_options("diffuse", run.config.seed))?;
        // Row r of the grid is image r at every timestep.
        let indices: Vec<usize> = (0..rows).map(|i| i / columns).collect();
        let timesteps: Vec<u32> = (0..rows).map(|i| DIFFUSE_TIMESTEPS[i % columns]).collect();
        let mut images = vec![0.0f32; rows * run.image().numel()];
        test.fill_images(&indices, PixelRange::MinusOneToOne, &mut images);
        plan.write_input(gpu, x0, &images)?;
        plan.write_input(gpu, t, &timesteps)?;
        plan.run(gpu, 0);
        let noised = plan.read(gpu, x_t)?;
        let file = run.out_dir(out.as_deref())?.join("diffuse.png");
        run::save_png(&file, &run::image_grid(&to_unit(&noised), shape, columns))?;
        Ok(json!({ "image": file, "images": count, "timesteps": DIFFUSE_TIMESTEPS }))
    }

    /// Inpainting in pixel space: after each step the known pixels are put back, noised to the step's level
    /// (RePaint's jumps back when `resample` > 1); the known pixels are returned exactly as given.
    fn complete(&self, gpu: &Gpu, run: &LoadedRun, completion: &Completion) -> Result<Vec<f32>, TrainError> {
        let config = ddpm_config(&run.config)?;
        let known: Vec<f32> = completion.images.iter().map(|&v| 2.0 * v - 1.0).collect();
        let total = known.len() / run.image().numel();
        let options = completion.diffusion;
        let resampling = Some((completion.jump, completion.resample));
        let reverse = reverse_plan(
            gpu,
            &config,
            total,
            options,
            run.image(),
            completion.seed,
            resampling,
            None,
        )?;
        reverse.load_weights(gpu, &run.checkpoint, options.ema)?;
        let bar = progress_bar(0, completion.progress, "network evaluations");
        bar.set_prefix("inpainting");
        let completed = to_unit(&reverse.inpaint(gpu, &known, completion.masks, &bar)?);
        bar.finish_and_clear();
        Ok(paste_known(&completed, completion.images, completion.masks))
    }
}
