//! One model family, one module, one interface: what the training loop (`crate::train`) and the commands
//! (`crate::commands`) ask of a model. Each model in `src/models/` implements [`Recipe`]; `models::ModelKind`
//! maps names to recipes.
//!
//! A recipe gives its defaults, its own configuration (kept under its name in config.json), and a [`Training`]:
//! the plans of one training step over one `ParamStore`, run in order each step (one plan for most models; the
//! GAN's discriminator and generator steps, the adversarial wae's two steps), with its per-epoch test metrics and
//! preview image. The loop owns everything else: epochs, batching, checkpoints, the NaN guard, Ctrl-C, progress,
//! metrics.jsonl, loss.png and resume.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::data::{Dataset, ImageShape, PixelRange, Splits};
use crate::error::TrainError;
use crate::generate::{self, gpu_normals, pairs_grid, Codec, LoadedRun, Prior};
use crate::gpu::Gpu;
use crate::graph::{Graph, GraphError, Op, TensorId};
use crate::optim::Optimizer;
use crate::plan::{self, ParamStore, Plan, PlanOptions, TrainOptions};
pub use crate::run::Defaults;
use crate::run::{self, RunConfig};

/// A flag of `latent train` that belongs to some models (`--regularizer`, `--width`, ...).
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub name: &'static str,
    /// The value's placeholder in `--help`; empty for a switch (`--conditional`), which takes no value.
    pub value: &'static str,
    pub help: &'static str,
}

impl Flag {
    pub fn is_switch(&self) -> bool {
        self.value.is_empty()
    }
}

/// The model flags given to `latent train`, by name, as text: each recipe parses its own.
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    values: BTreeMap<String, String>,
}

impl ModelOptions {
    pub fn set(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_string(), value.to_string());
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Whether the switch `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The value of `--name`, parsed; an error names the flag and the value.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>, TrainError>
    where
        T::Err: std::fmt::Display,
    {
        self.values
            .get(name)
            .map(|text| {
                text.parse()
                    .map_err(|e| TrainError::Config(format!("--{name} {text}: {e}")))
            })
            .transpose()
    }
}

/// The commands beyond `train` and `eval` that a model may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Sample,
    Reconstruct,
    Interpolate,
    Diffuse,
    Inpaint,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Reconstruct => "reconstruct",
            Self::Interpolate => "interpolate",
            Self::Diffuse => "diffuse",
            Self::Inpaint => "inpaint",
        }
    }
}

/// What `latent eval` was asked for beyond the model's own metrics (its flags on the command line).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EvalOptions {
    /// Samples per image of the importance-weighted likelihood bound (vae); 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub iwae_k: usize,
    /// Generated images for FID and the sliced Wasserstein distance (gan, vae, wae; ddpm: 50 DDIM steps each; ldm: 100, eta 1),
    /// against the test set, with the floor of as many real training images beside each; 0 skips both.
    #[arg(long, default_value_t = 1000)]
    pub fid_n: usize,
    /// The classifier run whose features FID uses (default: one trained once per dataset and cached under
    /// $LATENT_CACHE, $XDG_CACHE_HOME/latent or ~/.cache/latent).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Random directions of the sliced Wasserstein distance (SW_2 in pixel space); 0 skips it.
    #[arg(long, default_value_t = 512)]
    pub projections: usize,
    /// The completion benchmark instead (ddpm, ldm): mask test images with `box`, `left`, `bottom`, `strokes` or
    /// a PNG of the run's size (white keeps), complete them, and report the classifier's accuracy on the completions against
    /// the original labels, their FID, the seam score and the largest change of a known pixel.
    #[arg(long, value_name = "MASK")]
    pub inpaint: Option<crate::diffusion::completion::MaskKind>,
    /// Test images the completion benchmark completes (the first ones).
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    pub inpaint_n: usize,
    /// The completion benchmark's RePaint resamplings r (1: plain inpainting).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub resample: usize,
    /// The completion benchmark's RePaint jump length j, in DDIM steps.
    #[arg(long, default_value_t = 5)]
    pub jump: usize,
    /// The completion benchmark's DDIM steps.
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    pub inpaint_steps: usize,
    /// How diffusion models sample FID's images (default: each model's own sampler).
    #[command(flatten)]
    pub sampling: DiffusionOptions,
}

/// How a diffusion model samples (its flags on the command line).
#[derive(Clone, Debug, clap::Args)]
pub struct DiffusionOptions {
    /// ddpm: `ancestral` (all 1000 timesteps) or `ddim` (eta = 0, --steps timesteps).
    #[arg(long, default_value = "ddim")]
    pub sampler: String,
    /// DDIM's number of steps (default: ddpm 50, ldm 100).
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM's eta: 0 deterministic, 1 the ancestral step's noise at each of its steps (default: ddpm 0, ldm 1).
    #[arg(long)]
    pub eta: Option<f32>,
    /// Sample the EMA weights (true) or the trained ones (`--no-ema`).
    #[arg(long = "no-ema", action = clap::ArgAction::SetFalse)]
    pub ema: bool,
    /// ldm: autoguidance (Karras et al. 2024): a weaker ldm run on the same first stage (smaller, or trained
    /// less) guides this one, eps = (1 + W) eps(x) - W eps_guide(x) with W = --guide-weight.
    #[arg(long, value_name = "RUN")]
    pub guide: Option<PathBuf>,
    /// The autoguidance weight W >= 0 (default: the run's own guide's, 0.5; 0: the model alone, also for a run
    /// trained with a guide).
    #[arg(long = "guide-weight", value_name = "W", allow_negative_numbers = true)]
    pub guide_weight: Option<f32>,
}

impl Default for DiffusionOptions {
    fn default() -> Self {
        Self {
            sampler: "ddim".into(),
            steps: None,
            eta: None,
            ema: true,
            guide: None,
            guide_weight: None,
        }
    }
}

impl DiffusionOptions {
    /// The sampler asked for, DDIM with the model's own steps and eta where none were given.
    pub fn sampler(&self, steps: usize, eta: f32) -> Result<Box<dyn crate::diffusion::Sampler>, TrainError> {
        crate::diffusion::sampler_with_eta(&self.sampler, self.steps.unwrap_or(steps), self.eta.unwrap_or(eta))
    }

    /// The sampler asked for in words, for reports: `ancestral, 1000 timesteps` or `ddim, 100 steps, eta 1`.
    pub fn describe(&self, steps: usize, eta: f32) -> String {
        match self.sampler.as_str() {
            "ancestral" | "ddpm" => format!("ancestral, {} timesteps", crate::models::ddpm::TIMESTEPS),
            name => format!(
                "{name}, {} steps, eta {}",
                self.steps.unwrap_or(steps),
                self.eta.unwrap_or(eta)
            ),
        }
    }
}

/// `latent sample` (its flags on the command line).
#[derive(Clone, Debug, clap::Args)]
pub struct SampleRequest {
    /// Number of samples.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default: the run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub diffusion: DiffusionOptions,
    /// Class-conditional models: the class of every sample (0..K-1), or `all` for a grid with one row per class
    /// (--n rounded up to a multiple of K). Default: the classes in turn.
    #[arg(long)]
    pub class: Option<ClassChoice>,
    /// Class-conditional models: the classifier-free guidance weight w >= 0, eps = (1 + w) eps(x, c) - w eps(x,
    /// null); 0 samples the conditional model alone. Default 2.
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f32>,
    /// Show progress on stderr.
    #[arg(skip)]
    pub progress: bool,
}

/// `--class`: one class for every sample, or every class in turn as the rows of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassChoice {
    One(u32),
    All,
}

impl FromStr for ClassChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            _ => s
                .parse()
                .map(Self::One)
                .map_err(|_| format!("{s:?} is neither a class number nor `all`")),
        }
    }
}

/// The guidance weight of `latent sample` and of FID's samples of a conditional model.
pub const DEFAULT_GUIDANCE: f32 = 2.0;

impl SampleRequest {
    /// What a model with `classes` (None: unconditional) is asked to sample: the class of each of the `n` images
    /// and the guidance, with the number of images (a multiple of K for `--class all`). One clear error for a
    /// class out of range, a negative guidance, or either flag on an unconditional model.
    pub fn conditioning(
        &self,
        classes: Option<usize>,
    ) -> Result<(usize, Option<crate::diffusion::Conditioning>), TrainError> {
        if let Some(w) = self.guidance {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(TrainError::Config(format!(
                    "--guidance {w}: the guidance weight must be a finite number >= 0 (0 samples the conditional \
                     model alone; 1 to 4 is usual)"
                )));
            }
        }
        let Some(k) = classes else {
            if self.class.is_some() || self.guidance.is_some() {
                return Err(TrainError::Config(format!(
                    "--{}: this run is not class-conditional; train one with --conditional to sample by class",
                    if self.class.is_some() { "class" } else { "guidance" }
                )));
            }
            return Ok((self.n, None));
        };
        let (n, labels): (usize, Vec<u32>) = match self.class {
            Some(ClassChoice::One(c)) if c as usize >= k => {
                return Err(TrainError::Config(format!(
                    "--class {c}: this model has {k} classes, 0 to {}",
                    k - 1
                )))
            }
            Some(ClassChoice::One(c)) => (self.n, vec![c; self.n]),
            Some(ClassChoice::All) => {
                let per_class = self.n.div_ceil(k);
                (
                    per_class * k,
                    (0..per_class * k).map(|i| (i / per_class) as u32).collect(),
                )
            }
            None => (self.n, (0..self.n).map(|i| (i % k) as u32).collect()),
        };
        let guidance = self.guidance.unwrap_or(DEFAULT_GUIDANCE);
        Ok((n, Some(crate::diffusion::Conditioning { labels, guidance })))
    }

    /// Columns of the sample grid: one row per class for `--class all`.
    pub fn grid_columns(&self, n: usize, classes: Option<usize>) -> usize {
        match (self.class, classes) {
            (Some(ClassChoice::All), Some(k)) => n / k,
            _ => 8,
        }
    }
}

/// A count that must be at least 1 (batch sizes, sample counts), as a command-line value.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// What `latent inpaint` works on.
pub enum InpaintSource {
    /// One image and its mask (PNG files; the mask's white pixels are kept, black ones regenerated).
    Files { image: PathBuf, mask: PathBuf },
    /// The first test images with each built-in mask.
    Demo { images: usize },
}

/// `latent inpaint`.
pub struct InpaintRequest {
    pub source: InpaintSource,
    /// Completions per image.
    pub n: usize,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub diffusion: DiffusionOptions,
    /// RePaint's resamplings r (1: plain inpainting) and jump length j, in the sampler's steps.
    pub resample: usize,
    pub jump: usize,
    pub progress: bool,
}

/// Images that `latent eval` measures beside the model's samples (FID, classes, and the accuracy of the asked
/// classes when `labels` is given), reported under `name`.
pub struct MeasuredSet {
    pub name: String,
    pub description: String,
    /// (N, C·H·W) in [0, 1]
    pub images: Vec<f32>,
    /// The class each image was asked to be.
    pub labels: Option<Vec<u32>>,
    pub guidance: Option<f32>,
}

/// The guidance weights of `latent eval`'s trade-off curve for conditional models (Ho & Salimans's Figure 2).
pub const EVAL_GUIDANCE: [f32; 4] = [0.0, 1.0, 2.0, 4.0];

/// A run that must exist before a model trains: `model` trained for `epochs` into `dir` with its flags `options`
/// (and the seed, data, image shape and batch of the run that needs it).
pub struct Prerequisite {
    pub model: &'static str,
    /// What it is to the model, in words: "first stage", "guide".
    pub role: &'static str,
    pub dir: PathBuf,
    pub epochs: u64,
    pub options: ModelOptions,
}

/// What a completion is asked: known images (N, C·H·W) in [0, 1] and their masks (N, C·H·W; 1 keeps the pixel), the
/// sampler, RePaint's resamplings and jump length, the seed.
pub struct Completion<'a> {
    pub images: &'a [f32],
    pub masks: &'a [f32],
    pub diffusion: &'a DiffusionOptions,
    pub resample: usize,
    pub jump: usize,
    pub seed: u64,
    pub progress: bool,
}

/// `latent inpaint`, for a model that [completes](Recipe::complete): for each (image, mask) pair, `n` completions;
/// inpaint.png has one row per pair (original | masked input, regenerated pixels mid-grey | completions), and
/// inpainted.npy ([pairs * n, C, H, W] in [0, 1]). Reports the largest change of a known pixel (0: they are put
/// back exactly).
pub fn inpaint_with(
    recipe: &dyn Recipe,
    gpu: &Gpu,
    run: &LoadedRun,
    request: &InpaintRequest,
) -> Result<Value, TrainError> {
    use crate::diffusion::completion;
    let shape = run.config.image;
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let pixels = shape.numel();
    let n = request.n.max(1);
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = match &request.source {
        InpaintSource::Files { image, mask } => {
            vec![(
                completion::load_known_image(image, shape)?,
                completion::load_mask(mask, shape)?,
            )]
        }
        InpaintSource::Demo { images } => {
            let test = run.test_set()?;
            let images_of_test = generate::test_images(&test, (*images).clamp(1, test.len()));
            let masks = [completion::MaskKind::Box, completion::MaskKind::BottomHalf];
            let mut pairs = Vec::new();
            for kind in masks {
                for image in images_of_test.chunks(pixels) {
                    pairs.push((image.to_vec(), kind.mask_for(0, 0, shape)?));
                }
            }
            pairs
        }
    };
    let total = pairs.len() * n;
    let mut images = Vec::with_capacity(total * pixels);
    let mut masks = Vec::with_capacity(total * pixels);
    for (image, mask) in &pairs {
        for _ in 0..n {
            images.extend_from_slice(image);
            masks.extend_from_slice(mask);
        }
    }
    let completion = Completion {
        images: &images,
        masks: &masks,
        diffusion: &request.diffusion,
        resample: request.resample,
        jump: request.jump,
        seed: request.seed,
        progress: request.progress,
    };
    let completed = recipe.complete(gpu, run, &completion)?;
    let mut grid = Vec::with_capacity(pairs.len() * (n + 2) * pixels);
    for (p, (image, mask)) in pairs.iter().enumerate() {
        grid.extend_from_slice(image);
        grid.extend(image.iter().zip(mask).map(|(&v, &m)| if m == 1.0 { v } else { 0.5 }));
        grid.extend_from_slice(&completed[p * n * pixels..(p + 1) * n * pixels]);
    }
    let dir = run.out_dir(request.out.as_deref())?;
    let file = dir.join("inpaint.png");
    run::save_png(&file, &run::image_grid(&grid, [pairs.len() * (n + 2), c, h, w], n + 2))?;
    let npy = dir.join("inpainted.npy");
    run::save_npy(&npy, &completed, &[total, c, h, w])?;
    Ok(json!({
        "image": file,
        "samples": npy,
        "pairs": pairs.len(),
        "completions_per_pair": n,
        "resample": request.resample,
        "jump": request.jump,
        "weights": if request.diffusion.ema { "ema" } else { "trained" },
        "max_known_pixel_change": completion::max_known_change(&completed, &images, &masks),
    }))
}

/// A model family: its defaults and configuration, its training step, and what each command means for it.
pub trait Recipe: Sync {
    /// The name `latent train` takes and config.json records.
    fn name(&self) -> &'static str;

    fn defaults(&self) -> Defaults;

    /// The flags of `latent train` this model takes.
    fn flags(&self) -> &'static [Flag] {
        &[]
    }

    /// The model's own configuration of a new run, from its flags (saved under its name in config.json).
    fn configure(&self, _options: &ModelOptions) -> Result<Option<Value>, TrainError> {
        Ok(None)
    }

    /// Refuses a saved configuration the model cannot build (a hand-edited config.json), before anything loads.
    fn check_config(&self, _config: &RunConfig) -> Result<(), TrainError> {
        Ok(())
    }

    /// Refuses flags given on `--resume` that disagree with the run's configuration.
    fn check_resume(&self, _options: &ModelOptions, _config: &RunConfig) -> Result<(), TrainError> {
        Ok(())
    }

    /// Models this one needs trained first, in order (the ldm's first stage, then its guide), which `latent train`
    /// trains into their directories before this model's own training starts, or resumes if interrupted.
    fn prerequisites(&self, _config: &RunConfig, _run: &std::path::Path) -> Vec<Prerequisite> {
        Vec::new()
    }

    /// Completes the configuration once the prerequisite exists, before config.json is written and training
    /// starts (the ldm measures its latent scale on the training set).
    fn prepare(
        &self,
        _gpu: &Gpu,
        _run: &std::path::Path,
        _config: &mut RunConfig,
        _splits: &Splits,
    ) -> Result<(), TrainError> {
        Ok(())
    }

    /// The graph of the training step (its first plan) at batch `batch` on images of `image` (C, H, W) with the
    /// default configuration.
    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError>;

    /// The model takes images whose height and width are multiples of this (2 to the number of its halvings).
    fn image_multiple(&self) -> usize {
        4
    }

    /// Refuses a configuration that cannot train (a batch the adapter cannot hold) before any data is loaded.
    fn check(&self, gpu: &Gpu, config: &RunConfig) -> Result<(), TrainError> {
        let tg = self.train_graph(config.batch, config.image)?;
        plan::check_batch_fits(gpu, &tg.graph, config.batch)?;
        Ok(())
    }

    /// The compiled training step of a run with `config` (parameters freshly initialised from its seed).
    fn training(&self, gpu: &Gpu, config: &RunConfig, options: &ModelOptions) -> Result<Box<dyn Training>, TrainError>;

    /// `latent eval`: the model's own metrics on the test set (FID and SWD are added for models that
    /// [`generate`](Self::generate)).
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, options: &EvalOptions) -> Result<Value, TrainError>;

    /// Image sets `latent eval` measures with FID beside [`generate`](Self::generate)'s samples: the ldm's
    /// first-stage reconstructions, a conditional model's samples at each of [`EVAL_GUIDANCE`].
    /// Diffusion models sample them with `sampling`.
    fn measured_sets(
        &self,
        _gpu: &Gpu,
        _run: &LoadedRun,
        _n: usize,
        _sampling: &DiffusionOptions,
    ) -> Result<Vec<MeasuredSet>, TrainError> {
        Ok(Vec::new())
    }

    /// The model as a decoder of latent codes (and an encoder of images), if it is one: `sample`, `reconstruct`,
    /// `interpolate` and FID's samples then come from `crate::generate` unless the model says otherwise.
    fn codec(&self) -> Option<Codec> {
        None
    }

    /// `n` generated images (N, C·H·W) in [0, 1], what FID and the sliced Wasserstein distance measure; None for
    /// models that do not generate; diffusion models sample with `sampling` (`latent eval --sampler ...`). By
    /// default, a codec with a N(0, I) prior decodes prior samples.
    fn generate(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        n: usize,
        _sampling: &DiffusionOptions,
    ) -> Option<Result<Vec<f32>, TrainError>> {
        let codec = self.codec().filter(|c| c.prior == Prior::Normal)?;
        Some(generate::prior_samples(gpu, run, &codec, n, run.config.seed))
    }

    /// Whether the model offers `command`; the other command methods are only called when it does. By default, a
    /// codec samples and interpolates, and reconstructs when it has an encoder.
    fn supports(&self, command: Command) -> bool {
        let Some(codec) = self.codec() else { return false };
        match command {
            Command::Sample | Command::Interpolate => true,
            Command::Reconstruct => codec.encoder.is_some(),
            Command::Diffuse | Command::Inpaint => false,
        }
    }

    fn sample(&self, gpu: &Gpu, run: &LoadedRun, request: &SampleRequest) -> Result<Value, TrainError> {
        let codec = self.codec().ok_or_else(|| unsupported(run, Command::Sample))?;
        generate::sample(gpu, run, &codec, request.n, request.seed, request.out.as_deref())
    }

    fn reconstruct(&self, gpu: &Gpu, run: &LoadedRun, n: usize, out: Option<PathBuf>) -> Result<Value, TrainError> {
        let codec = self.codec().ok_or_else(|| unsupported(run, Command::Reconstruct))?;
        generate::reconstruct(gpu, run, &codec, n, out.as_deref())
    }

    fn interpolate(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        pairs: usize,
        steps: usize,
        out: Option<PathBuf>,
    ) -> Result<Value, TrainError> {
        let codec = self.codec().ok_or_else(|| unsupported(run, Command::Interpolate))?;
        generate::interpolate(gpu, run, &codec, pairs, steps, out.as_deref())
    }

    fn diffuse(&self, _gpu: &Gpu, run: &LoadedRun, _n: usize, _out: Option<PathBuf>) -> Result<Value, TrainError> {
        Err(unsupported(run, Command::Diffuse))
    }

    /// Completions (N, C·H·W) in [0, 1] of the known images outside their masks, the known pixels exactly as given.
    fn complete(&self, _gpu: &Gpu, run: &LoadedRun, _completion: &Completion) -> Result<Vec<f32>, TrainError> {
        Err(unsupported(run, Command::Inpaint))
    }
}

/// Refuses images of `image` (C, H, W) that `recipe` cannot take, in one line naming the sizes that work and the
/// flag that changes the size.
pub fn check_image(recipe: &dyn Recipe, image: ImageShape) -> Result<(), TrainError> {
    let multiple = recipe.image_multiple();
    let fits = |side: usize| side > 0 && side.is_multiple_of(multiple);
    if fits(image.height) && fits(image.width) {
        return Ok(());
    }
    let side = image.height.min(image.width).max(multiple);
    let below = side / multiple * multiple;
    Err(TrainError::Config(format!(
        "{} takes images whose height and width are multiples of {multiple} (e.g. {}), but the data is {image} \
         (C x H x W); pass --image-size {below} or --image-size {} to train at that size",
        recipe.name(),
        crate::models::sizes_that_work(multiple),
        below + multiple
    )))
}

fn unsupported(run: &LoadedRun, command: Command) -> TrainError {
    TrainError::Config(format!(
        "`latent {}` does not work on {} runs ({})",
        command.name(),
        run.config.model,
        run.dir.path.display()
    ))
}

/// A plan of the training step and its loss terms' names, in the order the plan reads them.
pub struct StepPlan {
    pub plan: Plan,
    pub losses: Vec<&'static str>,
}

/// One step's data, already scaled to the model's range: the step's whole batch, or one part of it when the step
/// is split into micro-batches or across ranks.
pub struct Batch<'a> {
    /// (N, C, H, W)
    pub images: &'a [f32],
    /// (N), when the model uses labels.
    pub labels: Option<&'a [u32]>,
    /// (N): each image's index in the training set given to [`Training::attach_training_set`], for models that
    /// keep per-image values computed once (the ldm's latents).
    pub indices: &'a [usize],
    /// The global index of the first sample within the step's whole batch (0 for a whole batch): what keys the
    /// noise a model draws per sample on the host (the ddpm's timesteps).
    pub first: usize,
    /// Samples in the step's whole batch (N for a whole batch).
    pub global: usize,
}

impl<'a> Batch<'a> {
    /// A whole batch of `count` samples.
    pub fn whole(images: &'a [f32], labels: Option<&'a [u32]>, indices: &'a [usize], count: usize) -> Self {
        Self {
            images,
            labels,
            indices,
            first: 0,
            global: count,
        }
    }
}

/// What loss.png draws: a title and (label, split, metric) per curve.
pub struct Curves {
    pub title: &'static str,
    pub series: Vec<(&'static str, &'static str, &'static str)>,
}

impl Default for Curves {
    fn default() -> Self {
        Self {
            title: "loss per image",
            series: vec![("train", "train", "loss"), ("test", "test", "loss")],
        }
    }
}

/// A model's compiled training step, as the training loop drives it.
pub trait Training {
    /// Every parameter of every plan: what checkpoints save and resume loads.
    fn store(&self) -> &ParamStore;

    /// The plans of one step, run in this order.
    fn plans(&self) -> &[StepPlan];

    /// Whether batches carry labels.
    fn uses_labels(&self) -> bool {
        false
    }

    /// Writes the step's inputs (the batch, and whatever the model draws per step) into its plans.
    fn write_batch(&self, gpu: &Gpu, batch: &Batch, step: u64) -> Result<(), TrainError>;

    /// Called once before the first step (after a resumed run's weights are loaded) with the training set
    /// that [`Batch::indices`] index: a model whose step begins with a frozen, deterministic function of each
    /// image (the ldm's encoder) computes it here once instead of every step. By default nothing.
    fn attach_training_set(&mut self, _gpu: &Gpu, _train: &Dataset) -> Result<(), TrainError> {
        Ok(())
    }

    /// Details for the first line of the run (sizes, regulariser, schedule).
    fn describe(&self) -> String {
        String::new()
    }

    /// The epoch's training metrics from its loss sums per plan over `steps` steps: by default each loss's mean
    /// and their total as `loss`.
    fn train_metrics(&self, sums: &[Vec<f32>], steps: u64) -> Map<String, Value> {
        mean_losses(self.plans(), sums, steps)
    }

    /// The epoch's test metrics.
    fn test_metrics(&self, gpu: &Gpu, splits: &Splits) -> Result<Map<String, Value>, TrainError>;

    /// The epoch's picture (samples/epoch-NNN.png), if the model makes one.
    fn preview(&self, _gpu: &Gpu, _splits: &Splits) -> Result<Option<image::RgbImage>, TrainError> {
        Ok(None)
    }

    /// The epoch line's metrics (the loop adds the epoch, the throughput and the time).
    fn summary(&self, record: &Value) -> String {
        loss_summary(record)
    }

    fn curves(&self) -> Curves {
        Curves::default()
    }
}

/// Each loss's mean over `steps` steps and their total as `loss`.
pub fn mean_losses(plans: &[StepPlan], sums: &[Vec<f32>], steps: u64) -> Map<String, Value> {
    let mut metrics = Map::new();
    let mut total = 0.0;
    for (step_plan, sums) in plans.iter().zip(sums) {
        for (name, sum) in step_plan.losses.iter().zip(sums) {
            metrics.insert(name.to_string(), json!(*sum as f64 / steps as f64));
            total += *sum as f64;
        }
    }
    metrics.insert("loss".into(), json!(total / steps as f64));
    metrics
}

/// The train and test losses (and the test accuracy, for a classifier).
pub fn loss_summary(record: &Value) -> String {
    format!(
        "train loss {:.4}, test loss {:.4}{}",
        record["train"]["loss"].as_f64().unwrap_or(f64::NAN),
        record["test"]["loss"].as_f64().unwrap_or(f64::NAN),
        record["test"]["accuracy"]
            .as_f64()
            .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default(),
    )
}

/// A model's training graph: its batch input, labels, loss terms and class logits.
pub struct TrainGraph {
    pub graph: Graph,
    /// The image batch, (N, C, H, W) or (N, C·H·W).
    pub x: TensorId,
    /// Class labels (N), for models that use them.
    pub labels: Option<TensorId>,
    /// Each loss term with its display name; the objective is their sum.
    pub losses: Vec<(&'static str, TensorId)>,
    /// Logits whose argmax is a class (the classifier), for accuracy.
    pub class_logits: Option<TensorId>,
}

impl TrainGraph {
    /// A graph with image input `x` and the loss terms `losses`.
    pub fn new(graph: Graph, x: TensorId, losses: Vec<(&'static str, TensorId)>) -> Self {
        Self {
            graph,
            x,
            labels: None,
            losses,
            class_logits: None,
        }
    }

    pub fn loss_names(&self) -> Vec<&'static str> {
        self.losses.iter().map(|(name, _)| *name).collect()
    }
}

/// Options of a plan that trains the parameters whose names start with one of `prefixes` (all when empty).
pub fn train_options(name: &str, optimizer: Optimizer, prefixes: &[&str], seed: u64) -> PlanOptions {
    PlanOptions {
        name: name.into(),
        train: Some(TrainOptions {
            optimizer,
            update_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }),
        seed,
    }
}

/// Options of a forward-only plan.
pub fn forward_options(name: &str, seed: u64) -> PlanOptions {
    PlanOptions {
        name: name.into(),
        train: None,
        seed,
    }
}

/// Per-image means of each loss over a whole dataset, using an evaluation plan of batch `batch`: the last partial
/// batch is padded with repeated images and only the real ones are counted (losses are read per sample).
pub fn evaluate_losses(
    gpu: &Gpu,
    plan: &Plan,
    tg: &TrainGraph,
    dataset: &Dataset,
    batch: usize,
    range: PixelRange,
) -> Result<Map<String, Value>, TrainError> {
    let shape = dataset.shape();
    let mut images = vec![0.0f32; batch * shape.numel()];
    let mut labels = vec![0u32; batch];
    let mut sums = vec![0.0f64; tg.losses.len()];
    let mut correct = 0usize;
    let mut start = 0;
    while start < dataset.len() {
        let indices: Vec<usize> = (0..batch).map(|i| (start + i) % dataset.len()).collect();
        let valid = batch.min(dataset.len() - start);
        dataset.fill_images(&indices, range, &mut images);
        plan.write_input(gpu, tg.x, &images)?;
        if let Some(label_input) = tg.labels {
            dataset.fill_labels(&indices, &mut labels);
            plan.write_input(gpu, label_input, &labels)?;
        }
        plan.run(gpu, 0);
        for (i, (_, loss)) in tg.losses.iter().enumerate() {
            let per_sample = plan.read_per_sample(gpu, *loss)?;
            sums[i] += per_sample[..valid].iter().map(|&v| v as f64).sum::<f64>();
        }
        if let Some(logits) = tg.class_logits {
            let values = plan.read(gpu, logits)?;
            let classes = values.len() / batch;
            for (row, label) in values.chunks(classes).zip(&labels).take(valid) {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
                correct += (best as u32 == *label) as usize;
            }
        }
        start += batch;
    }
    let mut metrics = Map::new();
    let mut total = 0.0;
    for ((name, _), sum) in tg.losses.iter().zip(&sums) {
        // Per-sample values are sums over the sample; MSE's batch loss is a mean over elements too.
        let mean = sum / dataset.len() as f64;
        total += mean;
        metrics.insert(name.to_string(), json!(mean));
    }
    metrics.insert("loss".into(), json!(total));
    if tg.class_logits.is_some() {
        metrics.insert("accuracy".into(), json!(correct as f64 / dataset.len() as f64));
    }
    Ok(metrics)
}

/// The random stream of preview latent codes (separate from the training noise streams).
pub const PREVIEW_STREAM: u32 = 1000;

/// What each epoch's picture of a one-plan model shows.
pub enum Preview {
    /// A decoder on 64 fixed prior codes: (graph, z, output) compiled over the training store.
    Samples {
        plan: Box<Plan>,
        output: TensorId,
        count: usize,
    },
    /// Test images beside their reconstructions (the graph's BCE logits).
    Reconstructions,
    None,
}

impl Preview {
    /// Samples of `decoder` (graph, z (64, latent), images) on codes drawn once from the run's seed.
    pub fn samples(
        gpu: &Gpu,
        store: &mut ParamStore,
        decoder: (Graph, TensorId, TensorId),
        name: &str,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let (graph, z, output) = decoder;
        let count = graph.shape(z)[0];
        let latent = graph.shape(z)[1];
        let plan = plan::compile(gpu, &graph, store, &forward_options(name, seed))?;
        plan.write_input(gpu, z, &gpu_normals(gpu, count * latent, seed, PREVIEW_STREAM)?)?;
        Ok(Preview::Samples {
            plan: Box::new(plan),
            output,
            count,
        })
    }

    pub fn render(
        &self,
        gpu: &Gpu,
        eval: &Plan,
        tg: &TrainGraph,
        splits: &Splits,
    ) -> Result<Option<image::RgbImage>, TrainError> {
        match self {
            Preview::Samples { plan, output, count } => {
                plan.run(gpu, 0);
                let images = plan.read(gpu, *output)?;
                let image = splits.test.shape();
                Ok(Some(run::image_grid(
                    &images,
                    [*count, image.channels, image.height, image.width],
                    8,
                )))
            }
            Preview::Reconstructions => {
                let logits = tg.graph.ops.iter().find_map(|op| match op {
                    Op::BceWithLogits { logits, .. } => Some(*logits),
                    _ => None,
                });
                let Some(logits) = logits else { return Ok(None) };
                let batch = tg.graph.shape(tg.x)[0];
                let shown = batch.min(32);
                let indices: Vec<usize> = (0..batch).map(|i| i % splits.test.len()).collect();
                let image = splits.test.shape();
                let mut images = vec![0.0f32; batch * image.numel()];
                splits.test.fill_images(&indices, PixelRange::ZeroToOne, &mut images);
                eval.write_input(gpu, tg.x, &images)?;
                eval.run(gpu, 0);
                let reconstructions: Vec<f32> = eval
                    .read(gpu, logits)?
                    .iter()
                    .map(|&l| 1.0 / (1.0 + (-l).exp()))
                    .collect();
                Ok(Some(pairs_grid(&images, &reconstructions, shown, image)))
            }
            Preview::None => Ok(None),
        }
    }
}

/// The epoch's training metrics from the loss sums per plan and the steps (`Training::train_metrics`).
pub type MetricsFn = fn(&[Vec<f32>], u64) -> Map<String, Value>;
/// The epoch line's metrics from its record (`Training::summary`).
pub type SummaryFn = fn(&Value) -> String;

/// The training step of a model whose test metrics are its objective's losses over the test set (ae, vae,
/// classifier, both wae): the objective's plan (after a critic's plan, for the adversarial wae), an evaluation
/// plan of the objective over the same store, and the preview.
pub struct LossTraining {
    store: ParamStore,
    plans: Vec<StepPlan>,
    /// The batch input of each plan.
    inputs: Vec<TensorId>,
    eval: Plan,
    tg: TrainGraph,
    batch: usize,
    range: PixelRange,
    preview: Preview,
    description: String,
    reports: Option<(MetricsFn, SummaryFn)>,
}

impl LossTraining {
    /// Compiles `tg` as `model`'s training plan (the parameters under `prefixes`, all when empty, updated by
    /// `optimizer`) and its evaluation plan.
    pub fn compile(
        gpu: &Gpu,
        model: &str,
        tg: TrainGraph,
        optimizer: Optimizer,
        prefixes: &[&str],
        config: &RunConfig,
    ) -> Result<Self, TrainError> {
        let mut store = ParamStore::new(config.seed);
        let options = train_options(model, optimizer, prefixes, config.seed);
        let plan = plan::compile(gpu, &tg.graph, &mut store, &options)?;
        let eval_options = forward_options(&format!("{model} eval"), config.seed);
        let eval = plan::compile(gpu, &tg.graph, &mut store, &eval_options)?;
        Ok(Self {
            store,
            plans: vec![StepPlan {
                plan,
                losses: tg.loss_names(),
            }],
            inputs: vec![tg.x],
            eval,
            tg,
            batch: config.batch,
            range: PixelRange::ZeroToOne,
            preview: Preview::None,
            description: String::new(),
            reports: None,
        })
    }

    /// A critic's plan run before the objective's every step on the same batch: `graph` with batch input `x` and
    /// loss terms `losses`, updating the parameters under `prefixes`.
    pub fn after_critic(
        mut self,
        gpu: &Gpu,
        graph: &Graph,
        x: TensorId,
        losses: Vec<&'static str>,
        options: &PlanOptions,
    ) -> Result<Self, TrainError> {
        let plan = plan::compile(gpu, graph, &mut self.store, options)?;
        self.plans.insert(0, StepPlan { plan, losses });
        self.inputs.insert(0, x);
        Ok(self)
    }

    /// Shows reconstructions of test images each epoch.
    pub fn with_reconstructions(mut self) -> Self {
        self.preview = Preview::Reconstructions;
        self
    }

    /// Shows samples of `decoder` (see [`Preview::samples`]) each epoch.
    pub fn with_samples(
        mut self,
        gpu: &Gpu,
        decoder: (Graph, TensorId, TensorId),
        name: &str,
        seed: u64,
    ) -> Result<Self, TrainError> {
        self.preview = Preview::samples(gpu, &mut self.store, decoder, name, seed)?;
        Ok(self)
    }

    pub fn with_description(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }

    /// Reports the epoch's training metrics and line the model's own way.
    pub fn with_reports(mut self, metrics: MetricsFn, summary: SummaryFn) -> Self {
        self.reports = Some((metrics, summary));
        self
    }
}

impl Training for LossTraining {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn plans(&self) -> &[StepPlan] {
        &self.plans
    }

    fn uses_labels(&self) -> bool {
        self.tg.labels.is_some()
    }

    fn write_batch(&self, gpu: &Gpu, batch: &Batch, _step: u64) -> Result<(), TrainError> {
        for (step_plan, x) in self.plans.iter().zip(&self.inputs) {
            step_plan.plan.write_input(gpu, *x, batch.images)?;
        }
        if let (Some(input), Some(labels)) = (self.tg.labels, batch.labels) {
            self.plans
                .last()
                .expect("the objective's plan")
                .plan
                .write_input(gpu, input, labels)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn train_metrics(&self, sums: &[Vec<f32>], steps: u64) -> Map<String, Value> {
        match self.reports {
            Some((metrics, _)) => metrics(sums, steps),
            None => mean_losses(&self.plans, sums, steps),
        }
    }

    fn test_metrics(&self, gpu: &Gpu, splits: &Splits) -> Result<Map<String, Value>, TrainError> {
        evaluate_losses(gpu, &self.eval, &self.tg, &splits.test, self.batch, self.range)
    }

    fn preview(&self, gpu: &Gpu, splits: &Splits) -> Result<Option<image::RgbImage>, TrainError> {
        self.preview.render(gpu, &self.eval, &self.tg, splits)
    }

    fn summary(&self, record: &Value) -> String {
        match self.reports {
            Some((_, summary)) => summary(record),
            None => loss_summary(record),
        }
    }
}

/// A run's losses over its test set with its trained weights (an evaluation plan of `tg`), and the start of its
/// `latent eval` report.
pub fn evaluate_run(
    gpu: &Gpu,
    run: &LoadedRun,
    tg: &TrainGraph,
    range: PixelRange,
) -> Result<(Value, Map<String, Value>, Dataset), TrainError> {
    let test = run.test_set()?;
    let batch = tg.graph.shape(tg.x)[0];
    let (plan, _store) = run.forward_plan(gpu, &tg.graph, "eval")?;
    let metrics = evaluate_losses(gpu, &plan, tg, &test, batch, range)?;
    Ok((run.report(gpu, test.len()), metrics, test))
}
