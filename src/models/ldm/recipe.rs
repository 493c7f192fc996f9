//! The ldm's recipe: the first stage first (trained into the run's `autoencoder/`, or given), its latent scale
//! measured on the training set, then the ddpm's Algorithm 1 on scaled latents with EMA; `sample`, `inpaint` and
//! `eval` decode to pixels.
//!
//! A training step replays the objective's plan (q_sample, the denoiser, the MSE, its backward, Adam on `net.*`
//! only, the EMA of `net.*`) on z0 = scale mu, the frozen encoder's posterior means, which are deterministic: they
//! are computed once for the whole training set as training starts (and for the test set at the first test) by the
//! encoding plan, and each step writes its batch's rows. With `sample_posterior` the encoding plan (z = mu + eps
//! exp(logvar / 2), a fresh eps each step) runs before the objective's every step instead.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use serde_json::{json, Map, Value};

use super::first_stage::NAME as FIRST_STAGE_NAME;
use super::{
    decoding, denoiser, encoding, guided_denoiser, latent_description, latent_shape, latent_values, objective,
    Encoding, GuideConfig, LdmConfig, Objective, AUTOENCODER_DIR, DOWNSAMPLING, FIRST_STAGE,
};
use crate::data::{self, Dataset, ImageShape, PixelRange, Splits};
use crate::diffusion::{self, Conditioning, ReverseOptions, ReversePlan};
use crate::error::TrainError;
use crate::generate::{progress_bar, write_samples_in_columns, LoadedRun, GRID_LIMIT};
use crate::gpu::{Dispatch, Gpu};
use crate::graph::{Graph, TensorId};
use crate::kernels::arith;
use crate::models::ddpm::{
    attach_ema_with_prefix, check_resume_conditional, conditional_description, draw_timesteps, guidance_sets,
    paste_known, uniform_classes, write_training_classes, ScheduleKind, TimestepPurpose, CLASSES, CONDITIONAL,
    EMA_DECAY, SAMPLE_CHUNK, TIMESTEPS,
};
use crate::optim::Optimizer;
use crate::plan::{self, ParamStore, Phase, Plan, Step};
use crate::recipe::{
    forward_options, train_options, Batch, Command, Completion, Defaults, DiffusionOptions, EvalOptions, Flag,
    MeasuredSet, ModelOptions, Prerequisite, Recipe, SampleRequest, StepPlan, TrainGraph, Training,
};
use crate::run::{self, RunConfig};

const PREVIEW_COUNT: usize = 32;
const PREVIEW_STEPS: usize = 20;
/// The ldm's sampler unless told otherwise: DDIM over 100 timesteps with eta = 1 (the ancestral walk's noise).
/// Deterministic DDIM (eta = 0) decodes to blobs where this gives strokes (MODELS.md).
pub const SAMPLING_STEPS: usize = 100;
pub const SAMPLING_ETA: f32 = 1.0;
/// The denoiser's parameters (trained, with EMA).
const DENOISER: &str = "net.";

fn ldm_config(config: &RunConfig) -> Result<LdmConfig, TrainError> {
    let own: LdmConfig = config.model_config()?;
    own.validate()
        .map_err(|e| TrainError::Config(format!("{}: {e}", crate::run::CONFIG)))?;
    Ok(own)
}

/// The guide's directory of a run at `run`.
fn guide_dir(guide: &GuideConfig, run: &Path) -> PathBuf {
    if guide.dir.is_absolute() {
        guide.dir.clone()
    } else {
        run.join(&guide.dir)
    }
}

/// The first stage's directory of a run at `run`.
fn autoencoder_dir(config: &LdmConfig, run: &Path) -> PathBuf {
    if config.autoencoder.is_absolute() {
        config.autoencoder.clone()
    } else {
        run.join(&config.autoencoder)
    }
}

/// Copies `first`'s checkpoint (an ae-kl run) into the `first_stage.*` entries of `store`.
fn load_first_stage(gpu: &Gpu, store: &ParamStore, first: &crate::checkpoint::Checkpoint) -> Result<(), TrainError> {
    for entry in store.entries.iter().filter(|e| e.name.starts_with(FIRST_STAGE)) {
        let name = &entry.name[FIRST_STAGE.len()..];
        gpu.write(&entry.value, first.f32(name, &entry.shape)?)?;
    }
    Ok(())
}

/// The encoding of `batch` images into the scaled latent input `z0` of `target`: the encoder's plan with
/// `z0 = scale mu` (or `scale z`, a posterior sample, with `sample_posterior`) appended.
#[allow(clippy::too_many_arguments)]
fn encoding_plan(
    gpu: &Gpu,
    store: &mut ParamStore,
    batch: usize,
    target: &Plan,
    z0: TensorId,
    scale: f32,
    sample_posterior: bool,
    image: ImageShape,
    name: &str,
    seed: u64,
) -> Result<(Plan, Encoding), TrainError> {
    let enc = encoding(FIRST_STAGE, batch, image)?;
    let mut plan = plan::compile(gpu, &enc.graph, store, &forward_options(name, seed))?;
    let values = batch * latent_values(image);
    let latent = if sample_posterior { enc.z } else { enc.mu };
    let dispatch = arith::scale(gpu, target.buffer(z0), plan.buffer(latent), scale, values)?;
    plan.steps.push(Step {
        label: "z0 = scale z".into(),
        phase: Phase::Forward,
        bytes: dispatch.bytes,
        dispatch,
        flops: values as u64,
    });
    Ok((plan, enc))
}

/// Decodes scaled latents (N, C', H/4, W/4) to images (N, C·H·W) in [0, 1] with a decoding plan of batch `batch`.
#[allow(clippy::too_many_arguments)]
fn decode_latents(
    gpu: &Gpu,
    plan: &Plan,
    z: TensorId,
    images: TensorId,
    latents: &[f32],
    scale: f32,
    batch: usize,
    image: ImageShape,
) -> Result<Vec<f32>, TrainError> {
    let unscaled: Vec<f32> = latents.iter().map(|v| v / scale).collect();
    crate::generate::run_batched(gpu, plan, z, images, &unscaled, latent_values(image), batch)
}

struct LdmTraining {
    store: ParamStore,
    /// The encoding plan and the objective's; only the objective's once the training set's latents are cached.
    plans: Vec<StepPlan>,
    encode: Encoding,
    /// z0 = scale mu of every training image (`latent_values(image)` each), in the training set's order.
    latents: Option<Vec<f32>>,
    /// z0 of each test batch of [`latent_test_mse`], encoded at its first call.
    test_latents: std::cell::OnceCell<Vec<Vec<f32>>>,
    objective: Objective,
    eval_encode: (Plan, Encoding),
    eval: Plan,
    config: LdmConfig,
    image: ImageShape,
    seed: u64,
    preview: ReversePlan,
    preview_copy: Vec<Dispatch>,
    decode: (Plan, TensorId, TensorId),
}

impl LdmTraining {
    /// The objective's plan: the step's last.
    fn objective_plan(&self) -> &StepPlan {
        self.plans.last().expect("the ldm's step has the objective's plan")
    }
}

impl Training for LdmTraining {
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
        let n = batch.indices.len();
        let t = draw_timesteps(self.seed, TimestepPurpose::Train, step, batch.global, TIMESTEPS);
        let plan = &self.objective_plan().plan;
        match &self.latents {
            Some(latents) => {
                let values = latent_values(self.image);
                let mut z0 = Vec::with_capacity(n * values);
                for &i in batch.indices {
                    z0.extend_from_slice(&latents[i * values..(i + 1) * values]);
                }
                plan.write_input(gpu, self.objective.z0, &z0)?;
            }
            None => self.plans[0].plan.write_input(gpu, self.encode.x, batch.images)?,
        }
        plan.write_input(gpu, self.objective.t, &t[batch.first..batch.first + n])?;
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

    /// The posterior means are deterministic: encodes the training set once (with the encoding plan, so z0 has
    /// the bits the plan would write every step) and drops the encoding plan from the step.
    fn attach_training_set(&mut self, gpu: &Gpu, train: &Dataset) -> Result<(), TrainError> {
        if self.config.sample_posterior || self.latents.is_some() {
            return Ok(());
        }
        let (encode, objective) = (&self.plans[0].plan, &self.plans[1].plan);
        let chunks = encode_chunks(gpu, encode, &self.encode, objective, &self.objective, train)?;
        let mut latents: Vec<f32> = chunks.concat();
        latents.truncate(train.len() * latent_values(self.image));
        self.latents = Some(latents);
        self.plans.remove(0);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "latent {} scaled by {:.4}, MLP width {} x {} blocks, {} groups{}",
            latent_description(self.image),
            self.config.scale.unwrap_or(1.0),
            self.config.width,
            self.config.blocks,
            self.config.groups,
            conditional_description(self.config.classes),
        )
    }

    fn test_metrics(&self, gpu: &Gpu, splits: &Splits) -> Result<Map<String, Value>, TrainError> {
        let (encode_plan, encode) = &self.eval_encode;
        let latents = match self.test_latents.get() {
            Some(latents) => latents,
            None => {
                let chunks = encode_chunks(gpu, encode_plan, encode, &self.eval, &self.objective, &splits.test)?;
                self.test_latents.get_or_init(|| chunks)
            }
        };
        let mse = latent_test_mse(gpu, latents, &self.eval, &self.objective, &splits.test, self.seed)?;
        Ok(json!({ "mse": mse, "loss": mse })
            .as_object()
            .cloned()
            .unwrap_or_default())
    }

    fn preview(&self, gpu: &Gpu, _splits: &Splits) -> Result<Option<image::RgbImage>, TrainError> {
        gpu.run(&self.preview_copy.iter().collect::<Vec<_>>())?;
        let latents = self.preview.sample(gpu, &ProgressBar::hidden())?;
        let (plan, z, images) = &self.decode;
        let scale = self.config.scale.unwrap_or(1.0);
        let images = decode_latents(gpu, plan, *z, *images, &latents, scale, PREVIEW_COUNT, self.image)?;
        let shape = crate::models::batch_shape(PREVIEW_COUNT, self.image);
        Ok(Some(run::image_grid(&images, shape, 8)))
    }

    fn summary(&self, record: &Value) -> String {
        format!(
            "train latent mse {:.4}, test latent mse {:.4}",
            record["train"]["mse"].as_f64().unwrap_or(f64::NAN),
            record["test"]["mse"].as_f64().unwrap_or(f64::NAN),
        )
    }
}

/// `dataset` through the encoding plan in chunks of its batch: images start .. start + batch (wrapping round to
/// the first images to fill the last chunk), each chunk's z0 (a batch of latent maps) as the plan writes it into
/// the input `z0` of `target`, the plan compiled from `objective`. Chunk `index` is encoded as step `index`
/// (its posterior noise).
fn encode_chunks(
    gpu: &Gpu,
    encode_plan: &Plan,
    encode: &Encoding,
    target: &Plan,
    objective: &Objective,
    dataset: &Dataset,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let (z0, batch) = (objective.z0, objective.graph.shape(objective.z0)[0]);
    let mut images = vec![0.0f32; batch * dataset.shape().numel()];
    let mut chunks = Vec::new();
    for (index, start) in (0..dataset.len()).step_by(batch).enumerate() {
        let indices: Vec<usize> = (0..batch).map(|i| (start + i) % dataset.len()).collect();
        dataset.fill_images(&indices, PixelRange::ZeroToOne, &mut images);
        encode_plan.write_input(gpu, encode.x, &images)?;
        encode_plan.run(gpu, index as u64);
        chunks.push(target.read(gpu, z0)?);
    }
    Ok(chunks)
}

/// The test epsilon-MSE on latents (mean over elements): each test batch's z0 from `latents` (the chunks of
/// [`encode_chunks`]), t uniform per image, eps fresh per batch, all from `seed`, so two calls agree.
fn latent_test_mse(
    gpu: &Gpu,
    latents: &[Vec<f32>],
    eval: &Plan,
    objective: &Objective,
    dataset: &Dataset,
    seed: u64,
) -> Result<f64, TrainError> {
    let batch = objective.graph.shape(objective.z0)[0];
    let mut sum = 0.0f64;
    for (index, start) in (0..dataset.len()).step_by(batch).enumerate() {
        let indices: Vec<usize> = (0..batch).map(|i| (start + i) % dataset.len()).collect();
        let valid = batch.min(dataset.len() - start);
        eval.write_input(gpu, objective.z0, &latents[index])?;
        let t = draw_timesteps(seed, TimestepPurpose::Test, index as u64, batch, TIMESTEPS);
        eval.write_input(gpu, objective.t, &t)?;
        if let Some(class) = objective.class {
            let mut labels = vec![0u32; batch];
            dataset.fill_labels(&indices, &mut labels);
            let width = objective.graph.shape(class)[1];
            eval.write_input(gpu, class, &diffusion::one_hot(&labels, width))?;
        }
        eval.run(gpu, index as u64);
        let per_sample = eval.read_per_sample(gpu, objective.loss)?;
        sum += per_sample[..valid].iter().map(|&v| v as f64).sum::<f64>();
    }
    let values: usize = objective.graph.shape(objective.z0)[1..].iter().product();
    Ok(sum / (dataset.len() * values) as f64)
}

/// The reverse process of `n` latents (no clamping), for the classes of `conditioning`.
#[allow(clippy::too_many_arguments)]
fn reverse_plan(
    gpu: &Gpu,
    config: &LdmConfig,
    image: ImageShape,
    n: usize,
    options: &DiffusionOptions,
    seed: u64,
    inpaint: Option<(usize, usize)>,
    conditioning: Option<&Conditioning>,
) -> Result<ReversePlan, TrainError> {
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    let sampler = options.sampler(SAMPLING_STEPS, SAMPLING_ETA)?;
    let schedule = config.schedule.schedule();
    let autoguide = autoguide(options, config)?;
    let guide = autoguide.as_ref().map(|(dir, _)| open_guide(dir, config)).transpose()?;
    let reverse_options = ReverseOptions {
        inpaint: inpaint.is_some(),
        clamp: false,
        guidance: conditioning.map(|c| c.guidance),
        resampling: inpaint,
        autoguidance: autoguide.as_ref().map(|&(_, weight)| weight),
    };
    let build = |batch| match &guide {
        Some((guide_config, _)) => guided_denoiser(config, guide_config, batch, image),
        None => denoiser(config, batch, image),
    };
    let labels = conditioning.map(|c| &c.labels[..]);
    let reverse = ReversePlan::for_samples(gpu, &build, n, sampler, &schedule, seed, reverse_options, labels)?;
    if let Some((_, guide)) = &guide {
        reverse.load_guide(gpu, &guide.checkpoint, options.ema)?;
    }
    Ok(reverse)
}

/// Autoguidance's guide and weight W when sampling: `--guide` or else the guide the run was trained with, at
/// `--guide-weight` or else the run's weight (0.5 for a guide given with `--guide` alone); none at weight 0.
fn autoguide(options: &DiffusionOptions, config: &LdmConfig) -> Result<Option<(PathBuf, f32)>, TrainError> {
    let own = config.guide.as_ref();
    let dir = match (&options.guide, own) {
        (Some(dir), _) => dir.clone(),
        (None, Some(guide)) => guide.dir.clone(),
        (None, None) => return Ok(None),
    };
    let weight = options
        .guide_weight
        .or(own.map(|g| g.weight))
        .unwrap_or(GuideConfig::default().weight);
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(TrainError::Config(format!(
            "--guide-weight {weight}: give a weight of 0 (the model alone) or more"
        )));
    }
    Ok((weight > 0.0).then_some((dir, weight)))
}

/// The sampler of `options` in words, with the guide that [`autoguide`] chooses.
fn describe_sampling(options: &DiffusionOptions, config: &LdmConfig) -> Result<String, TrainError> {
    let sampler = options.describe(SAMPLING_STEPS, SAMPLING_ETA);
    Ok(match autoguide(options, config)? {
        Some((dir, weight)) => format!("{sampler}, autoguided by {} at weight {weight}", dir.display()),
        None => sampler,
    })
}

/// The guide run of autoguidance at `dir`: an ldm on the same first stage (the same latents and scale), schedule
/// and classes as the run of `config`, so that the two estimate the same noise.
fn open_guide(dir: &Path, config: &LdmConfig) -> Result<(LdmConfig, LoadedRun), TrainError> {
    let refuse = |why: String| TrainError::Config(format!("--guide {}: {why}", dir.display()));
    let guide =
        LoadedRun::open(dir).map_err(|e| refuse(format!("{e}; pass --guide-weight 0 to sample the model alone")))?;
    if guide.config.model != "ldm" {
        return Err(refuse(format!(
            "that run's model is {}, not ldm; the guide of an ldm is a weaker ldm run (smaller, or trained less) on \
             the same first stage",
            guide.config.model
        )));
    }
    let own = ldm_config(&guide.config)?;
    let first_stage = |c: &LdmConfig| (std::fs::canonicalize(&c.autoencoder).ok(), c.scale);
    if first_stage(&own) != first_stage(config) {
        return Err(refuse(format!(
            "its first stage is {} (scale {:?}), this run's is {} (scale {:?}); a guide must diffuse the same \
             latents: train it with --autoencoder {}",
            own.autoencoder.display(),
            own.scale,
            config.autoencoder.display(),
            config.scale,
            config.autoencoder.display()
        )));
    }
    if own.schedule != config.schedule || own.classes != config.classes {
        return Err(refuse(
            "its noise schedule or class conditioning differs from this run's; train the guide with the same ones"
                .into(),
        ));
    }
    Ok((own, guide))
}

/// `n` images (n, C·H·W) in [0, 1] from an ldm run: latents by the reverse process (chunks of 64), decoded.
fn generate_images(
    gpu: &Gpu,
    run: &LoadedRun,
    n: usize,
    options: &DiffusionOptions,
    seed: u64,
    progress: bool,
    conditioning: Option<&Conditioning>,
) -> Result<Vec<f32>, TrainError> {
    let config = ldm_config(&run.config)?;
    let scale = config.scale.unwrap_or(1.0);
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    let image = run.image();
    let (graph, z, out) = decoding(FIRST_STAGE, SAMPLE_CHUNK, image)?;
    let (decoder, _store) = run.forward_plan(gpu, &graph, "ldm decode")?;
    let mut images = Vec::with_capacity(n * image.numel());
    for (chunk, start) in (0..n).step_by(SAMPLE_CHUNK).enumerate() {
        let count = SAMPLE_CHUNK.min(n - start);
        let chunk_seed = seed.wrapping_add((chunk as u64) << 32);
        let chunk_conditioning = conditioning.map(|c| Conditioning {
            labels: c.labels[start..start + count].to_vec(),
            guidance: c.guidance,
        });
        let reverse = reverse_plan(
            gpu,
            &config,
            image,
            count,
            options,
            chunk_seed,
            None,
            chunk_conditioning.as_ref(),
        )?;
        reverse.load_weights(gpu, &run.checkpoint, options.ema)?;
        let bar = progress_bar(0, progress, "timesteps");
        bar.set_prefix(format!("images {}..{} of {n}", start + 1, start + count));
        let latents = reverse.sample(gpu, &bar)?;
        bar.finish_and_clear();
        images.extend(decode_latents(
            gpu,
            &decoder,
            z,
            out,
            &latents,
            scale,
            SAMPLE_CHUNK,
            image,
        )?);
    }
    Ok(images)
}

/// 1 / std over `dataset` of the first stage's posterior means mu, or of its samples z = mu + sigma eps with
/// `sample_posterior` (E[z²] = mu² + sigma²).
fn measure_scale(gpu: &Gpu, first: &LoadedRun, dataset: &Dataset, sample_posterior: bool) -> Result<f32, TrainError> {
    let (batch, pixels) = (128, dataset.shape().numel());
    let mut g = Graph::new();
    let x = g.input("x", &[batch, pixels]);
    let images = g.reshape(x, &crate::models::batch_shape(batch, dataset.shape()))?;
    let (mu, logvar) = super::encoder(&mut g, "", images)?;
    let (plan, _store) = first.forward_plan(gpu, &g, "latent scale")?;
    let images = crate::generate::test_images(dataset, dataset.len());
    let outputs = crate::generate::run_batched_outputs(gpu, &plan, x, &[mu, logvar], &images, pixels, batch)?;
    let (mut sum, mut square) = (0.0f64, 0.0f64);
    for (m, lv) in outputs[0].iter().zip(&outputs[1]) {
        let m = *m as f64;
        sum += m;
        square += m * m + if sample_posterior { (*lv as f64).exp() } else { 0.0 };
    }
    let count = outputs[0].len() as f64;
    let variance = square / count - (sum / count).powi(2);
    if !(variance.is_finite() && variance > 0.0) {
        return Err(TrainError::Config(format!(
            "{}: the first stage's latents have variance {variance}; it cannot serve as an autoencoder",
            first.dir.path.display()
        )));
    }
    Ok((1.0 / variance.sqrt()) as f32)
}

/// The ldm: the first stage for 10 epochs, then the diffusion on its latents (batch 128, Adam 1e-3, EMA 0.999).
pub struct Ldm;

const FLAGS: [Flag; 11] = [
    CONDITIONAL,
    Flag {
        name: "autoencoder",
        value: "RUN",
        help: "a trained ae-kl run to use as the first stage (default: train one into RUN/autoencoder)",
    },
    Flag {
        name: "autoencoder-epochs",
        value: "N",
        help: "epochs of the first stage it trains (10)",
    },
    Flag {
        name: "width",
        value: "N",
        help: "the network's width (ddpm: the U-Net's base width, 64; ldm: the MLP's, 512; smaller nets train faster)",
    },
    Flag {
        name: "blocks",
        value: "N",
        help: "the ldm denoiser's residual blocks (4)",
    },
    Flag {
        name: "groups",
        value: "N",
        help: "GroupNorm groups (ddpm 8, ldm 1; must divide --width)",
    },
    Flag {
        name: "schedule",
        value: "linear|cosine",
        help: "the noise schedule, `linear` (models.md) or `cosine`",
    },
    Flag {
        name: "preview-steps",
        value: "N",
        help: "DDIM steps of each epoch's sample grid (20)",
    },
    Flag {
        name: "guide-epochs",
        value: "N",
        help: "epochs of the autoguidance guide it trains first on the same first stage, a smaller ldm that sample \
               and eval use (60; 0: none; conditional runs have none)",
    },
    Flag {
        name: "guide-width",
        value: "N",
        help: "the guide's MLP width (256)",
    },
    Flag {
        name: "guide-blocks",
        value: "N",
        help: "the guide's residual blocks (3)",
    },
];

impl Recipe for Ldm {
    fn name(&self) -> &'static str {
        "ldm"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 60,
            batch: 128,
            lr: 1e-3,
            range: PixelRange::ZeroToOne,
        }
    }

    fn flags(&self) -> &'static [Flag] {
        &FLAGS
    }

    fn configure(&self, options: &ModelOptions) -> Result<Option<Value>, TrainError> {
        let defaults = LdmConfig::default();
        let autoencoder = match options.get::<PathBuf>("autoencoder")? {
            Some(path) => std::fs::canonicalize(&path).map_err(|e| {
                TrainError::Config(format!(
                    "--autoencoder {}: {e}; give the directory of an ae-kl run",
                    path.display()
                ))
            })?,
            None => AUTOENCODER_DIR.into(),
        };
        let classes = options.switch("conditional").then_some(CLASSES);
        let guide_defaults = GuideConfig::default();
        let guide_epochs = options.get("guide-epochs")?.unwrap_or(guide_defaults.epochs);
        // A conditional model has classifier-free guidance; autoguidance is for the unconditional one.
        let guide = (classes.is_none() && guide_epochs > 0)
            .then(|| -> Result<GuideConfig, TrainError> {
                Ok(GuideConfig {
                    width: options.get("guide-width")?.unwrap_or(guide_defaults.width),
                    blocks: options.get("guide-blocks")?.unwrap_or(guide_defaults.blocks),
                    epochs: guide_epochs,
                    ..guide_defaults
                })
            })
            .transpose()?;
        let config = LdmConfig {
            width: options.get("width")?.unwrap_or(defaults.width),
            blocks: options.get("blocks")?.unwrap_or(defaults.blocks),
            groups: options.get("groups")?.unwrap_or(defaults.groups),
            schedule: options.get("schedule")?.unwrap_or(defaults.schedule),
            classes,
            autoencoder,
            autoencoder_epochs: options
                .get("autoencoder-epochs")?
                .unwrap_or(defaults.autoencoder_epochs),
            sample_posterior: false,
            scale: None,
            guide,
        };
        config.validate().map_err(TrainError::Config)?;
        Ok(Some(json!(config)))
    }

    fn check_config(&self, config: &RunConfig) -> Result<(), TrainError> {
        ldm_config(config).map(|_| ())
    }

    fn check_resume(&self, options: &ModelOptions, config: &RunConfig) -> Result<(), TrainError> {
        if options.get::<PathBuf>("autoencoder")?.is_some() {
            return Err(TrainError::Config(
                "a resumed ldm keeps its first stage; resume it without --autoencoder".into(),
            ));
        }
        check_resume_conditional(options, ldm_config(config)?.classes)
    }

    fn check(&self, _gpu: &Gpu, config: &RunConfig) -> Result<(), TrainError> {
        self.check_config(config)
    }

    /// The first stage (unless given), then the guide on it (an unguided ldm of the guide's size); none once the
    /// run is configured (its scale measured).
    fn prerequisites(&self, config: &RunConfig, run: &Path) -> Vec<Prerequisite> {
        let Some(ldm) = ldm_config(config).ok().filter(|ldm| ldm.scale.is_none()) else {
            return Vec::new();
        };
        let first_stage = autoencoder_dir(&ldm, run);
        let mut list = Vec::new();
        if ldm.autoencoder.is_relative() {
            list.push(Prerequisite {
                model: FIRST_STAGE_NAME,
                role: "first stage",
                dir: first_stage.clone(),
                epochs: ldm.autoencoder_epochs,
                options: ModelOptions::default(),
            });
        }
        if let Some(guide) = &ldm.guide {
            let mut options = ModelOptions::default();
            options.set("autoencoder", &first_stage.to_string_lossy());
            options.set("width", &guide.width.to_string());
            options.set("blocks", &guide.blocks.to_string());
            options.set("groups", &ldm.groups.min(guide.width).to_string());
            options.set("guide-epochs", "0");
            if ldm.schedule == ScheduleKind::Cosine {
                options.set("schedule", "cosine");
            }
            list.push(Prerequisite {
                model: "ldm",
                role: "autoguidance guide",
                dir: guide_dir(guide, run),
                epochs: guide.epochs,
                options,
            });
        }
        list
    }

    /// Checks the first stage (an ae-kl run of the same image shape) and measures the latent scale.
    fn prepare(&self, gpu: &Gpu, run: &Path, config: &mut RunConfig, splits: &Splits) -> Result<(), TrainError> {
        let mut ldm = ldm_config(config)?;
        if ldm.scale.is_some() {
            return Ok(());
        }
        let dir = autoencoder_dir(&ldm, run);
        let first =
            LoadedRun::open(&dir).map_err(|e| TrainError::Config(format!("--autoencoder {}: {e}", dir.display())))?;
        if first.config.model != FIRST_STAGE_NAME {
            return Err(TrainError::Config(format!(
                "--autoencoder {}: that is a {} run, not an {FIRST_STAGE_NAME} run; train one with `latent train \
                 {FIRST_STAGE_NAME}` (or leave out --autoencoder and `latent train ldm` trains it)",
                dir.display(),
                first.config.model
            )));
        }
        let first_data = data::load_run_data(first.config.data.as_ref(), first.config.image)?;
        if first_data.train.shape() != splits.train.shape() {
            return Err(TrainError::Config(format!(
                "--autoencoder {}: its images are {:?}, these are {:?}; train a first stage on images of this shape",
                dir.display(),
                first_data.train.shape(),
                splits.train.shape()
            )));
        }
        let scale = measure_scale(gpu, &first, &splits.train, ldm.sample_posterior)?;
        eprintln!(
            "Latent scale 1/std = {scale:.5} (measured on the {} training images)",
            splits.train.len()
        );
        ldm.autoencoder = std::fs::canonicalize(&dir).unwrap_or(dir);
        ldm.scale = Some(scale);
        if let Some(guide) = &mut ldm.guide {
            let dir = guide_dir(guide, run);
            guide.dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        }
        if let Some(guide) = &ldm.guide {
            open_guide(&guide.dir, &ldm)?;
        }
        config.sections.insert(self.name().into(), json!(ldm));
        Ok(())
    }

    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, crate::graph::GraphError> {
        let (o, x) = super::whole_step(&LdmConfig::default(), batch, image)?;
        Ok(TrainGraph::new(o.graph, x, vec![("mse", o.loss)]))
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, options: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let ldm = ldm_config(config)?;
        let (seed, batch, image) = (config.seed, config.batch, config.image);
        let scale = ldm.scale.unwrap_or(1.0);
        let mut store = ParamStore::new(seed);
        let objective = objective(&ldm, batch, image)?;
        let update = [DENOISER];
        let mut train = plan::compile(
            gpu,
            &objective.graph,
            &mut store,
            &train_options("ldm train", Optimizer::adam(config.lr), &update, seed),
        )?;
        attach_ema_with_prefix(gpu, &mut store, &mut train, EMA_DECAY, DENOISER)?;
        let eval = plan::compile(gpu, &objective.graph, &mut store, &forward_options("ldm test", seed))?;
        let sample = ldm.sample_posterior;
        let (encode_plan, encode) = encoding_plan(
            gpu,
            &mut store,
            batch,
            &train,
            objective.z0,
            scale,
            sample,
            image,
            "ldm encode",
            seed,
        )?;
        let eval_encode = encoding_plan(
            gpu,
            &mut store,
            batch,
            &eval,
            objective.z0,
            scale,
            sample,
            image,
            "ldm test encode",
            seed,
        )?;
        let (graph, z, images) = decoding(FIRST_STAGE, PREVIEW_COUNT, image)?;
        let decode = plan::compile(gpu, &graph, &mut store, &forward_options("ldm preview decode", seed))?;
        // The first stage's weights, from its run (a resumed run then loads its own checkpoint over them).
        let first_checkpoint = ldm.autoencoder.join(run::CHECKPOINT);
        if first_checkpoint.exists() {
            load_first_stage(gpu, &store, &crate::checkpoint::Checkpoint::load(&first_checkpoint)?)?;
        }
        let preview_options = DiffusionOptions {
            sampler: "ddim".into(),
            steps: Some(options.get("preview-steps")?.unwrap_or(PREVIEW_STEPS)),
            eta: None,
            ema: true,
            // The model alone: the preview copies the training store's weights, which hold no guide.
            guide_weight: Some(0.0),
            ..DiffusionOptions::default()
        };
        let preview_classes = ldm.classes.map(|k| Conditioning {
            labels: (0..PREVIEW_COUNT).map(|i| (i % k) as u32).collect(),
            guidance: 0.0,
        });
        let preview = reverse_plan(
            gpu,
            &ldm,
            image,
            PREVIEW_COUNT,
            &preview_options,
            seed,
            None,
            preview_classes.as_ref(),
        )?;
        let preview_copy = preview.copy_weights_from(gpu, &store, true)?;
        Ok(Box::new(LdmTraining {
            store,
            plans: vec![
                StepPlan {
                    plan: encode_plan,
                    losses: vec![],
                },
                StepPlan {
                    plan: train,
                    losses: vec!["mse"],
                },
            ],
            encode,
            latents: None,
            test_latents: Default::default(),
            objective,
            eval_encode,
            eval,
            config: ldm,
            image,
            seed,
            preview,
            preview_copy,
            decode: (decode, z, images),
        }))
    }

    /// The test latent epsilon-MSE (EMA weights), and the first stage's test reconstruction BCE and MSE.
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, options: &EvalOptions) -> Result<Value, TrainError> {
        let config = ldm_config(&run.config)?;
        let test = run.test_set()?;
        let mut report = run.report(gpu, test.len());
        report["fid_sampler"] = json!(describe_sampling(&options.sampling, &config)?);
        report["latent_scale"] = json!(config.scale);
        report["first_stage"] = json!(config.autoencoder);
        let originals = crate::generate::test_images(&test, test.len());
        let reconstructions = reconstruct_images(gpu, run, &originals)?;
        let (mut bce, mut mse) = (0.0f64, 0.0f64);
        for (&x, &r) in originals.iter().zip(&reconstructions) {
            let (x, r) = (x as f64, (r as f64).clamp(1e-7, 1.0 - 1e-7));
            bce -= x * r.ln() + (1.0 - x) * (1.0 - r).ln();
            mse += (x - r).powi(2);
        }
        report["first_stage_reconstruction_bce_nats"] = json!(bce / test.len() as f64);
        report["first_stage_reconstruction_mse"] = json!(mse / originals.len() as f64);
        Ok(report)
    }

    fn generate(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        n: usize,
        sampling: &DiffusionOptions,
    ) -> Option<Result<Vec<f32>, TrainError>> {
        let conditioning = match ldm_config(&run.config) {
            Ok(config) => uniform_classes(config.classes, n),
            Err(e) => return Some(Err(e)),
        };
        Some(generate_images(gpu, run, n, sampling, 0, false, conditioning.as_ref()))
    }

    /// The first stage's reconstructions of the floor's real images (how much of the samples' FID the
    /// autoencoder alone costs), and a conditional model's samples at each guidance weight.
    fn measured_sets(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        n: usize,
        sampling: &DiffusionOptions,
    ) -> Result<Vec<MeasuredSet>, TrainError> {
        let config = ldm_config(&run.config)?;
        let train = data::load_run_data(run.config.data.as_ref(), run.config.image)?.train;
        // The floor's images: the same subset as `fid::real_subset` (the first n of epoch 0's shuffle).
        let indices: Vec<usize> = data::shuffled_order(train.len(), run.config.seed, 0)
            .into_iter()
            .take(n)
            .collect();
        let mut images = vec![0.0f32; indices.len() * train.shape().numel()];
        train.fill_images(&indices, PixelRange::ZeroToOne, &mut images);
        let mut sets = vec![MeasuredSet {
            name: "first_stage_reconstructions".into(),
            description: format!(
                "the first stage's reconstructions (posterior mean) of the floor's {} training images",
                indices.len()
            ),
            images: reconstruct_images(gpu, run, &images)?,
            labels: None,
            guidance: None,
        }];
        let generate = |c: &Conditioning| generate_images(gpu, run, n, sampling, 0, false, Some(c));
        sets.extend(guidance_sets(config.classes, n, &generate)?);
        Ok(sets)
    }

    fn supports(&self, command: Command) -> bool {
        matches!(command, Command::Sample | Command::Inpaint | Command::Reconstruct)
    }

    fn sample(&self, gpu: &Gpu, run: &LoadedRun, request: &SampleRequest) -> Result<Value, TrainError> {
        let options = &request.diffusion;
        let config = ldm_config(&run.config)?;
        let classes = config.classes;
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
        let dir = run.out_dir(request.out.as_deref())?;
        let (grid, samples) =
            write_samples_in_columns(&dir, &images, run.image(), Some(request.grid_columns(n, classes)))?;
        Ok(json!({
            "grid": grid,
            "grid_images": n.min(GRID_LIMIT),
            "samples": samples,
            "n": n,
            "classes": conditioning.as_ref().map(|c| c.labels.clone()),
            "guidance": conditioning.as_ref().map(|c| c.guidance),
            "sampler": describe_sampling(options, &config)?,
            "weights": if options.ema { "ema" } else { "trained" },
            "seconds": seconds,
        }))
    }

    /// Test images above their first-stage reconstructions: reconstruct.png.
    fn reconstruct(&self, gpu: &Gpu, run: &LoadedRun, n: usize, out: Option<PathBuf>) -> Result<Value, TrainError> {
        let test = run.test_set()?;
        let images = crate::generate::test_images(&test, n.max(1));
        let reconstructions = reconstruct_images(gpu, run, &images)?;
        let file = run.out_dir(out.as_deref())?.join("reconstruct.png");
        let count = images.len() / run.image().numel();
        run::save_png(
            &file,
            &crate::generate::pairs_grid(&images, &reconstructions, count, run.image()),
        )?;
        Ok(json!({ "image": file, "n": count }))
    }

    fn complete(&self, gpu: &Gpu, run: &LoadedRun, completion: &Completion) -> Result<Vec<f32>, TrainError> {
        complete(gpu, run, completion)
    }
}

/// The first stage's reconstructions (posterior mean, decoded) of images (N, C·H·W) in [0, 1].
fn reconstruct_images(gpu: &Gpu, run: &LoadedRun, images: &[f32]) -> Result<Vec<f32>, TrainError> {
    let latents = encode_means(gpu, run, images)?;
    let (graph, z, out) = decoding(FIRST_STAGE, SAMPLE_CHUNK, run.image())?;
    let (decoder, _store) = run.forward_plan(gpu, &graph, "ldm decode")?;
    decode_latents(gpu, &decoder, z, out, &latents, 1.0, SAMPLE_CHUNK, run.image())
}

/// The posterior means (N, C'·H/4·W/4), unscaled, of images (N, C·H·W) in [0, 1].
fn encode_means(gpu: &Gpu, run: &LoadedRun, images: &[f32]) -> Result<Vec<f32>, TrainError> {
    let enc = encoding(FIRST_STAGE, SAMPLE_CHUNK, run.image())?;
    let (plan, _store) = run.forward_plan(gpu, &enc.graph, "ldm encode")?;
    crate::generate::run_batched(gpu, &plan, enc.x, enc.mu, images, run.image().numel(), SAMPLE_CHUNK)
}

/// Inpainting in latent space: the mask taken down to the latent grid (a latent cell is known when all 16 of its
/// pixels are, in every channel), the known image encoded (posterior mean, scaled) and mixed back after every step (RePaint's jumps
/// back when `resample` > 1), the result decoded, and the known pixels pasted back exactly.
fn complete(gpu: &Gpu, run: &LoadedRun, completion: &Completion) -> Result<Vec<f32>, TrainError> {
    let config = ldm_config(&run.config)?;
    let scale = config.scale.unwrap_or(1.0);
    let image = run.image();
    let total = completion.images.len() / image.numel();
    let known_latents: Vec<f32> = encode_means(gpu, run, completion.images)?
        .iter()
        .map(|v| v * scale)
        .collect();
    let latent_masks: Vec<f32> = completion
        .masks
        .chunks(image.numel())
        .flat_map(|mask| latent_mask(mask, image))
        .collect();
    let options = completion.diffusion;
    let resampling = Some((completion.jump, completion.resample));
    let reverse = reverse_plan(gpu, &config, image, total, options, completion.seed, resampling, None)?;
    reverse.load_weights(gpu, &run.checkpoint, options.ema)?;
    let bar = progress_bar(0, completion.progress, "network evaluations");
    bar.set_prefix("inpainting");
    let latents = reverse.inpaint(gpu, &known_latents, &latent_masks, &bar)?;
    bar.finish_and_clear();
    let (graph, z, out) = decoding(FIRST_STAGE, SAMPLE_CHUNK, image)?;
    let (decoder, _store) = run.forward_plan(gpu, &graph, "ldm decode")?;
    let decoded = decode_latents(gpu, &decoder, z, out, &latents, scale, SAMPLE_CHUNK, image)?;
    Ok(paste_known(&decoded, completion.images, completion.masks))
}

/// A pixel mask (C·H·W values of an image of `image`, 1 keeps) on the latent grid (C' x H/4 x W/4): a cell is
/// known when its 4x4 pixels all are, in every channel.
pub fn latent_mask(pixels: &[f32], image: ImageShape) -> Vec<f32> {
    let [channels, rows, columns] = latent_shape(image);
    let plane = image.height * image.width;
    let known = |r: usize, c: usize| {
        (0..image.channels).all(|channel| {
            (0..DOWNSAMPLING * DOWNSAMPLING).all(|k| {
                let (y, x) = (DOWNSAMPLING * r + k / DOWNSAMPLING, DOWNSAMPLING * c + k % DOWNSAMPLING);
                pixels[channel * plane + y * image.width + x] == 1.0
            })
        })
    };
    let cells: Vec<f32> = (0..rows * columns)
        .map(|cell| {
            if known(cell / columns, cell % columns) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    cells.repeat(channels)
}
