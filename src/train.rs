//! `latent train`: the one training loop of every model, and the run directory it writes.
//!
//! The loop owns epochs, batching, checkpoints, the NaN guard, Ctrl-C, progress, metrics.jsonl, loss.png and
//! resume; the model's [`Training`] gives the plans of one step and what an epoch reports. A step writes the batch
//! into the plans' inputs, rewrites the per-step values and submits each plan once. Nothing waits on the GPU
//! inside an epoch except the progress display every `log_every` steps; the epoch's training losses come from
//! sums kept on the GPU.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::{self, Batcher, ImageShape};
use crate::generate::progress_bar;
use crate::gpu::{BufferRole, Gpu};
use crate::models::ModelKind;
use crate::parallel::{self, DataParallel, Group, Solo};
use crate::plan::{self, ParamStore};
use crate::recipe::{at_least_one, Batch, ModelOptions, Recipe, Training};
use crate::run::{self, Curve, RunConfig, RunDir, RunError};

pub use crate::error::TrainError;

/// What `latent train` was asked to do: its command line.
#[derive(Clone, Debug, clap::Args)]
pub struct TrainRequest {
    /// The model: ae, vae, classifier, gan, ddpm or wae.
    pub model: ModelKind,
    /// Total epochs of the run (default: models.md's recipe).
    #[arg(long, value_parser = at_least_one_u64, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Total steps of the run, instead of epochs.
    #[arg(long, value_parser = at_least_one_u64)]
    pub steps: Option<u64>,
    /// Images per step (default 128): the global batch, over every rank and micro-batch.
    #[arg(long, value_parser = at_least_one)]
    pub batch: Option<usize>,
    /// Run each step's batch as this many micro-batches on the adapter, their gradients summed before the
    /// update (for a batch that does not fit): the same arithmetic as as many ranks under `mpirun`.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub micro_batches: usize,
    /// Adam's learning rate (default: the model's, from models.md).
    #[arg(long, value_parser = positive_rate, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Seed of the initial weights, the shuffles and the noise (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A dataset directory (IDX files in the MNIST layout, or a folder of images); default: embedded mnist-10k.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train at N x N pixels: each image of a folder is scaled to cover N x N and its centre cut (default: the
    /// folder's own size when its images agree; IDX data and the embedded mnist-10k keep theirs).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub image_size: Option<usize>,
    /// Train on grayscale (luma) images even when the folder's images have colour (default: RGB when any has).
    #[arg(long)]
    pub grayscale: bool,
    /// The exact (C, H, W) to train at, set by a caller training a run for another (the ldm's first stage, FID's
    /// classifier) instead of `--image-size` and `--grayscale`.
    #[arg(skip)]
    pub image: Option<ImageShape>,
    /// Where to write the run (default: runs/<model>-<date>-<time>).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Continue the run in this directory up to --epochs or --steps.
    #[arg(long, conflicts_with_all = ["run", "data", "batch", "lr", "seed", "image_size", "grayscale"])]
    pub resume: Option<PathBuf>,
    /// The model's own flags (`--regularizer`, `--width`, ...), parsed by its recipe.
    #[command(flatten)]
    pub options: ModelOptions,
    /// Update the progress display every this many steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Show a progress bar on stderr.
    #[arg(skip)]
    pub progress: bool,
    /// Check the loss for NaN or infinity every this many steps (a readback; 0: only at the end of an epoch).
    #[arg(long, default_value_t = 50)]
    pub nan_check_every: u64,
    /// Also write a checkpoint every this many steps, keeping the newest --keep in checkpoints/ (0: only at the
    /// end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Periodic checkpoints to keep in `checkpoints/` (the newest ones).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub keep: usize,
    /// Raised by the first Ctrl-C: finish the step, write a checkpoint, stop.
    #[arg(skip)]
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Time every kernel of every step with GPU timestamps and print the per-kernel table at the end (each step
    /// then waits for the GPU).
    #[arg(long)]
    pub profile: bool,
    /// With --profile, write a Chrome trace-event file (open it in ui.perfetto.dev).
    #[arg(long, requires = "profile")]
    pub trace: Option<PathBuf>,
}

/// A step or epoch total that must be at least 1.
fn at_least_one_u64(text: &str) -> Result<u64, String> {
    at_least_one(text).map(|n| n as u64)
}

/// A learning rate: a positive, finite number.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(v) => Err(format!("must be a positive number, got {v}")),
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

/// The model flags of `latent train`, collected from the registry: each model declares its own
/// (`Recipe::flags`) and parses their values.
impl clap::FromArgMatches for ModelOptions {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut options = ModelOptions::default();
        for (flag, _) in ModelKind::all_flags() {
            if flag.is_switch() {
                if matches.get_flag(flag.name) {
                    options.set(flag.name, "true");
                }
            } else if let Some(value) = matches.get_one::<String>(flag.name) {
                options.set(flag.name, value);
            }
        }
        Ok(options)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for ModelOptions {
    fn augment_args(mut command: clap::Command) -> clap::Command {
        for (flag, owners) in ModelKind::all_flags() {
            let help = format!("{}: {}", owners.join(", "), flag.help);
            let arg = clap::Arg::new(flag.name).long(flag.name).help(help);
            command = command.arg(if flag.is_switch() {
                arg.action(clap::ArgAction::SetTrue)
            } else {
                arg.value_name(flag.value).allow_negative_numbers(true)
            });
        }
        command
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl TrainRequest {
    /// Defaults for everything but the model.
    pub fn new(model: ModelKind) -> Self {
        Self {
            model,
            epochs: None,
            steps: None,
            batch: None,
            micro_batches: 1,
            lr: None,
            seed: None,
            data: None,
            image_size: None,
            grayscale: false,
            image: None,
            run: None,
            resume: None,
            options: ModelOptions::default(),
            log_every: 10,
            progress: false,
            nan_check_every: 50,
            save_every: 0,
            keep: 3,
            interrupt: None,
            profile: false,
            trace: None,
        }
    }
}

/// A summary of a finished run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub run: PathBuf,
    pub steps: u64,
    pub epochs: u64,
    pub final_metrics: serde_json::Value,
}

/// The training graph of `model` at batch size `batch` on MNIST-shaped images (its default configuration).
pub fn train_graph(model: ModelKind, batch: usize) -> Result<crate::recipe::TrainGraph, crate::graph::GraphError> {
    model.recipe().train_graph(batch, ImageShape::MNIST)
}

/// Where a `latent train` command writes: the run being resumed, or a new run's directory, not made yet.
pub enum RunPlace {
    Resumed(RunDir),
    New(PathBuf),
}

impl RunPlace {
    pub fn path(&self) -> &Path {
        match self {
            RunPlace::Resumed(run) => &run.path,
            RunPlace::New(path) => path,
        }
    }

    /// The run directory, made now for a new run: call it once everything else has checked out.
    pub fn into_dir(self) -> Result<RunDir, TrainError> {
        Ok(match self {
            RunPlace::Resumed(run) => run,
            RunPlace::New(path) => RunDir::create(&path)?,
        })
    }
}

/// The run a `latent train` command trains, with the configuration the saved run and the command line give.
pub struct RunSetup {
    pub place: RunPlace,
    pub config: RunConfig,
    /// The checkpoint to continue from when resuming.
    pub resume_from: Option<Checkpoint>,
}

/// Opens the run `--resume` names (it must be a run of the model) or, for a new run, takes the `--run` path (or
/// the default), refuses one that already holds a run, and makes the configuration from the recipe's defaults
/// and its own flags. Then applies the command line: `--epochs` and `--steps` always, `--batch`, `--lr` and
/// `--seed` only to a new run (a resumed run keeps its own), and checks the batch and the learning rate. Makes
/// nothing on disk, so that a refused command leaves nothing behind: the caller creates a new run's directory once
/// everything else checks out.
pub fn setup_run(gpu: &Gpu, request: &TrainRequest, recipe: &dyn Recipe) -> Result<RunSetup, TrainError> {
    let model = recipe.name();
    let (place, mut config, resume_from) = match &request.resume {
        Some(dir) => {
            let run = RunDir::open(dir)?;
            let config = run.config()?;
            if config.model != model {
                return Err(TrainError::Config(format!(
                    "{} is a run of model {:?}, not {:?}; use `latent train {} --resume {}`",
                    dir.display(),
                    config.model,
                    model,
                    config.model,
                    dir.display()
                )));
            }
            recipe.check_config(&config)?;
            recipe.check_resume(&request.options, &config).map_err(|e| match e {
                TrainError::Config(message) => TrainError::Config(format!("{}: {message}", dir.display())),
                other => other,
            })?;
            let checkpoint = Checkpoint::load(&run.checkpoint())?;
            checkpoint.expect_model(model)?;
            (RunPlace::Resumed(run), config, Some(checkpoint))
        }
        None => {
            let path = request.run.clone().unwrap_or_else(|| RunDir::default_path(model));
            if path.join(run::CHECKPOINT).exists() {
                return Err(TrainError::Config(format!(
                    "{} already holds a run; continue it with --resume {}, or choose another --run directory",
                    path.display(),
                    path.display()
                )));
            }
            let own = recipe.configure(&request.options)?;
            let image = match request.image {
                Some(image) => image,
                None => data::resolve_shape(request.data.as_deref(), request.image_size, request.grayscale)?,
            };
            let config = RunConfig {
                data: request.data.clone(),
                image,
                ..RunConfig::new(model, &recipe.defaults(), own, gpu.describe())
            };
            (RunPlace::New(path), config, None)
        }
    };
    if let Some(epochs) = request.epochs {
        config.epochs = epochs;
        config.steps = None;
    }
    if request.steps.is_some() {
        config.steps = request.steps;
    }
    if resume_from.is_none() {
        if let Some(batch) = request.batch {
            config.batch = batch;
        }
        if let Some(lr) = request.lr {
            config.lr = lr;
        }
        if let Some(seed) = request.seed {
            config.seed = seed;
        }
    }
    if config.batch == 0 {
        return Err(TrainError::Config("--batch must be at least 1".into()));
    }
    config.check_sizes().map_err(TrainError::Config)?;
    if !(config.lr > 0.0 && config.lr.is_finite()) {
        return Err(TrainError::Config(format!(
            "--lr must be a positive number, got {}",
            config.lr
        )));
    }
    Ok(RunSetup {
        place,
        config,
        resume_from,
    })
}

/// Refuses a model flag the model does not take, naming the models that do.
fn check_flags(recipe: &dyn Recipe, options: &ModelOptions) -> Result<(), TrainError> {
    for name in options.names() {
        if !recipe.flags().iter().any(|flag| flag.name == name) {
            return Err(TrainError::Config(format!(
                "--{name} is for the {}; {} does not take it",
                ModelKind::owners_of(name).join(" and the "),
                recipe.name()
            )));
        }
    }
    Ok(())
}

/// Refuses a global batch that does not split evenly into `ranks` × `micro_batches` parts.
fn check_parts(config: &RunConfig, resumed: bool, ranks: usize, micro_batches: usize) -> Result<(), TrainError> {
    let parts = ranks * micro_batches;
    if config.batch % parts == 0 {
        return Ok(());
    }
    let batch = if resumed {
        format!("the run's batch {}", config.batch)
    } else {
        format!("--batch {}", config.batch)
    };
    let below = config.batch / parts * parts;
    let nearest = if below == 0 {
        format!("--batch {parts}")
    } else {
        format!("--batch {below} or --batch {}", below + parts)
    };
    Err(TrainError::Config(format!(
        "{batch} does not split into {ranks} rank(s) × {micro_batches} micro-batch(es): it must be a multiple of \
         {parts} (for instance {nearest}), or change --micro-batches or the number of ranks"
    )))
}

/// What every rank of a distributed run must agree on before it starts: the configuration (without the adapter,
/// which may differ between machines), the model flags and the split.
fn start_fingerprint(config: &RunConfig, request: &TrainRequest, ranks: usize) -> String {
    let mut value = serde_json::to_value(config).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("adapter");
        for name in request.options.names() {
            object.insert(
                format!("--{name}"),
                json!(request.options.get::<String>(name).ok().flatten()),
            );
        }
        object.insert("micro_batches".into(), json!(request.micro_batches));
        object.insert("ranks".into(), json!(ranks));
        object.insert("resume".into(), json!(request.resume));
    }
    value.to_string()
}

/// The configuration the plans are compiled with: one of `parts` parts of each global batch.
fn part_config(config: &RunConfig, parts: usize) -> RunConfig {
    RunConfig {
        batch: config.batch / parts,
        ..config.clone()
    }
}

/// Trains `request.model` and writes its run directory.
pub fn train(gpu: &Gpu, request: &TrainRequest) -> Result<TrainSummary, TrainError> {
    train_in(gpu, request, &Solo)
}

/// Trains `request.model` as one rank of `group`: every rank trains its share of each global batch on its own
/// adapter (`crate::parallel`); rank 0 writes the run directory and prints progress.
pub fn train_in(gpu: &Gpu, request: &TrainRequest, group: &dyn Group) -> Result<TrainSummary, TrainError> {
    let recipe = request.model.recipe();
    let model = recipe.name();
    let ranks = group.size();
    let leader = group.rank() == 0;
    let setup = check_flags(recipe, &request.options)
        .and_then(|()| setup_run(gpu, request, recipe))
        .and_then(|setup| {
            check_parts(&setup.config, setup.resume_from.is_some(), ranks, request.micro_batches)?;
            crate::recipe::check_image(recipe, setup.config.image)?;
            // Refuse a configuration the adapter cannot hold before loading data or allocating anything.
            recipe.check(gpu, &part_config(&setup.config, ranks * request.micro_batches))?;
            Ok(setup)
        });
    if ranks > 1 {
        let outcome = match &setup {
            Ok(setup) => Ok(start_fingerprint(&setup.config, request, ranks)),
            Err(error) => Err(error.to_string()),
        };
        parallel::agree_on_start(group, outcome)?;
    }
    let RunSetup {
        place,
        mut config,
        resume_from,
    } = setup?;
    let parts = ranks * request.micro_batches;
    let splits = data::load_run_data(config.data.as_ref(), config.image)?;
    let range = recipe.defaults().range;
    let mut batcher = Batcher::new(&splits.train, config.batch, config.seed)?.with_range(range);
    let steps_per_epoch = batcher.steps_per_epoch() as u64;
    let total_steps = config.steps.unwrap_or(config.epochs * steps_per_epoch);
    let total_epochs = total_steps.div_ceil(steps_per_epoch);
    let run_path = place.path().to_path_buf();
    // Only rank 0 writes the run directory.
    let run = if leader { Some(place.into_dir()?) } else { None };
    let _lock = run.as_ref().map(RunDir::lock_for_writing).transpose()?; // held until training returns
    for first in recipe.prerequisites(&config, &run_path) {
        train_prerequisite(gpu, request, &config, &first)?;
    }
    recipe.prepare(gpu, &run_path, &mut config, &splits)?;
    if let Some(run) = &run {
        run.write_config(&config)?;
    }

    // After `prepare`, which completes the configuration the training is built from (the ldm's scale).
    let part_config = part_config(&config, parts);
    let mut training = recipe.training(gpu, &part_config, &request.options)?;
    let mut first_step = 0;
    if let Some(checkpoint) = &resume_from {
        training.store().load_from(gpu, checkpoint)?;
        first_step = checkpoint.meta("step")?;
        if leader {
            eprintln!("Resuming {} at step {first_step} of {total_steps}", run_path.display());
        }
    }
    parallel::broadcast_store(gpu, training.store(), group)?;
    training.attach_training_set(gpu, &splits.train)?;
    if (parts > 1 || group.launched()) && training.plans().iter().any(|p| p.plan.gradients.is_empty()) {
        // The ldm's step is an encoding plan feeding the objective's: the split step would run every part's
        // encoding before any part's objective.
        return Err(TrainError::Config(format!(
            "{model} cannot train split into micro-batches or ranks yet (its step is an encoding plan feeding the \
             objective's); train it in one process without --micro-batches"
        )));
    }
    let split = (parts > 1 || group.launched())
        .then(|| DataParallel::new(gpu, training.as_ref(), group, request.micro_batches, config.batch))
        .transpose()?;
    if leader {
        report_plans(model, training.as_ref(), gpu);
        if let Some(split) = &split {
            eprintln!(
                "data parallel: {ranks} rank(s) × {} micro-batch(es) of {} images each step",
                split.micro_batches(),
                split.part_batch()
            );
        }
    }

    let checkpoint_path = run_path.join(run::CHECKPOINT);
    let last_good =
        |step: u64| -> Option<PathBuf> { (step > 0 && checkpoint_path.exists()).then(|| checkpoint_path.clone()) };
    // Stops on a NaN or infinite loss; the checkpoint on disk (written before the loss went bad) is kept.
    let check_finite = |step: u64, values: &[Vec<f32>]| -> Result<(), TrainError> {
        let names = training.plans().iter().flat_map(|p| p.losses.iter());
        match names.zip(values.iter().flatten()).find(|(_, v)| !v.is_finite()) {
            Some((name, value)) => Err(TrainError::NonFinite {
                step,
                loss: name.to_string(),
                value: *value,
                last_checkpoint: last_good(step),
            }),
            None => Ok(()),
        }
    };
    let read_losses = || -> Result<Vec<Vec<f32>>, TrainError> {
        if let Some(split) = &split {
            return Ok(split.losses(gpu, training.as_ref())?);
        }
        let plans = training.plans().iter();
        Ok(plans.map(|p| p.plan.read_losses(gpu)).collect::<Result<_, _>>()?)
    };
    let agreed_hash = std::cell::Cell::new(None);
    let save = |step: u64| -> Result<(), TrainError> {
        check_finite(step, &read_losses()?)?;
        if ranks > 1 {
            agreed_hash.set(Some(parallel::keep_ranks_agreed(gpu, training.store(), group, step)?));
        }
        match &run {
            Some(run) => save_checkpoint(gpu, run, training.store(), model, &config, step),
            None => Ok(()),
        }
    };

    let mut images = vec![0.0f32; batcher.images_len()];
    let mut labels = vec![0u32; config.batch];
    let mut indices: Vec<usize> = Vec::with_capacity(config.batch);
    let bar = progress_bar(total_steps, request.progress && leader, "steps");
    bar.set_position(first_step);
    let mut step = first_step;
    let mut last_metrics = json!({});
    let mut profiler = (request.profile && split.is_none()).then(|| crate::profile::Profiler::new(gpu));
    let mut body = || -> Result<(), TrainError> {
        while step < total_steps {
            let (epoch, within) = batcher.position(step);
            let epoch_start = Instant::now();
            let first_of_epoch = step;
            for step_plan in training.plans() {
                step_plan.plan.reset_loss_sums(gpu)?;
            }
            bar.set_prefix(format!("epoch {}/{}", epoch + 1, total_epochs));
            for index in within..steps_per_epoch as usize {
                if step >= total_steps {
                    break;
                }
                batcher.fill(
                    epoch,
                    index,
                    &mut images,
                    training.uses_labels().then_some(&mut labels[..]),
                );
                let step_labels = training.uses_labels().then_some(&labels[..]);
                indices.clear();
                indices.extend_from_slice(batcher.indices(epoch, index));
                match &split {
                    Some(split) => split.step(gpu, training.as_ref(), &images, step_labels, &indices, step)?,
                    None => {
                        let batch = Batch::whole(&images, step_labels, &indices, config.batch);
                        training.write_batch(gpu, &batch, step)?;
                        for step_plan in training.plans() {
                            match profiler.as_mut() {
                                Some(profiler) => profiler.run(gpu, &step_plan.plan, step)?,
                                None => step_plan.plan.run(gpu, step),
                            }
                        }
                    }
                }
                step += 1;
                bar.set_position(step);
                let log = step % request.log_every.max(1) == 0;
                let nan_check = request.nan_check_every > 0 && step % request.nan_check_every == 0;
                if log || nan_check {
                    let losses = read_losses()?;
                    check_finite(step, &losses)?;
                    let rate =
                        (step - first_of_epoch) as f64 * config.batch as f64 / epoch_start.elapsed().as_secs_f64();
                    bar.set_message(format!(
                        "{}  {rate:.1} img/s",
                        progress_losses(training.as_ref(), &losses)
                    ));
                }
                let interrupted = request
                    .interrupt
                    .as_ref()
                    .is_some_and(|flag| flag.load(Ordering::SeqCst));
                // Every rank stops at the same step, whichever saw the Ctrl-C.
                let interrupted = match &split {
                    Some(split) if ranks > 1 => split.any(interrupted),
                    _ => interrupted,
                };
                if interrupted {
                    save(step)?;
                    bar.finish_and_clear();
                    return Err(TrainError::Interrupted {
                        step,
                        model: model.into(),
                        checkpoint: checkpoint_path.clone(),
                        run: run_path.clone(),
                    });
                }
                if request.save_every > 0 && step % request.save_every == 0 && step < total_steps {
                    save(step)?;
                    if let Some(run) = &run {
                        keep_periodic_copy(run, step, request.keep)?;
                    }
                }
            }
            let steps_done = (step - first_of_epoch).max(1);
            let sums = match &split {
                Some(split) => split.loss_sums(gpu, training.as_ref())?,
                None => training
                    .plans()
                    .iter()
                    .map(|p| p.plan.read_loss_sums(gpu))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            check_finite(step, &sums)?;
            let seconds = epoch_start.elapsed().as_secs_f64();
            let Some(run) = &run else {
                // Rank 0 evaluates and writes; the others only take part in the checkpoint's agreement check.
                save(step)?;
                continue;
            };
            let train_metrics = training.train_metrics(&sums, steps_done);
            let test_metrics = training.test_metrics(gpu, &splits)?;
            let epoch_number = epoch + 1;
            let images = steps_done as f64 * config.batch as f64;
            let record = epoch_record(epoch_number, step, train_metrics, test_metrics, seconds, images);
            save(step)?;
            if let Some(grid) = training.preview(gpu, &splits)? {
                run::save_png(&run.sample_path(epoch_number), &grid)?;
            }
            run.append_metrics(&record)?;
            plot_run(run, model, training.as_ref())?;
            let line = format!(
                "epoch {epoch_number}/{total_epochs}: {}, {:.1} img/s, {seconds:.1} s",
                training.summary(&record),
                record["images_per_second"].as_f64().unwrap_or(0.0),
            );
            print_epoch_line(&bar, line);
            last_metrics = record;
        }
        Ok(())
    };
    let outcome = body();
    bar.finish_and_clear();
    if let Some(profiler) = profiler {
        let profile = profiler
            .finish()?
            .with_ceilings(crate::peak::Peak::load_or_measure(gpu)?);
        eprintln!("{}", profile.table(false));
        if let Some(path) = &request.trace {
            profile.write_trace(path)?;
            eprintln!(
                "Chrome trace written to {} (open it in ui.perfetto.dev)",
                path.display()
            );
        }
    }
    if let (Some(split), true, true) = (&split, request.profile, leader) {
        let title = format!(
            "{model}, {ranks} rank(s) × {} micro-batch(es) of {} on {}",
            split.micro_batches(),
            split.part_batch(),
            gpu.describe()
        );
        eprintln!("{}", split.breakdown().table(&title));
    }
    if let (Some(hash), true, Ok(())) = (agreed_hash.get(), leader, &outcome) {
        eprintln!("{ranks} ranks: every rank ended with the same weights (hash {hash:#018x})");
    }
    match outcome {
        Ok(()) => Ok(TrainSummary {
            run: run_path.clone(),
            steps: step,
            epochs: total_epochs,
            final_metrics: last_metrics,
        }),
        // A failure after a checkpoint exists (a lost device, a full disk) says where to resume from.
        Err(error @ (TrainError::Gpu(_) | TrainError::Run(_) | TrainError::Load(_))) if checkpoint_path.exists() => {
            Err(TrainError::AfterCheckpoint {
                error: Box::new(error),
                model: model.into(),
                checkpoint: checkpoint_path.clone(),
                run: run_path.clone(),
            })
        }
        Err(error) => Err(error),
    }
}

/// Trains (or finishes training) the run a model needs first, with the seed, data and batch of the run that
/// needs it.
fn train_prerequisite(
    gpu: &Gpu,
    request: &TrainRequest,
    config: &RunConfig,
    first: &crate::recipe::Prerequisite,
) -> Result<(), TrainError> {
    let model: ModelKind = first.model.parse().map_err(TrainError::Config)?;
    let resume = first.dir.join(run::CHECKPOINT).exists();
    eprintln!(
        "{} the {} {} in {} ({} epochs)",
        if resume { "Finishing" } else { "Training" },
        first.model,
        first.role,
        first.dir.display(),
        first.epochs
    );
    let first_request = TrainRequest {
        epochs: Some(first.epochs),
        batch: (!resume).then_some(config.batch),
        seed: (!resume).then_some(config.seed),
        data: if resume { None } else { config.data.clone() },
        image: (!resume).then_some(config.image),
        run: (!resume).then(|| first.dir.clone()),
        resume: resume.then(|| first.dir.clone()),
        progress: request.progress,
        interrupt: request.interrupt.clone(),
        log_every: request.log_every,
        options: if resume {
            ModelOptions::default()
        } else {
            first.options.clone()
        },
        ..TrainRequest::new(model)
    };
    train(gpu, &first_request)?;
    Ok(())
}

/// The progress display's losses: each term by name.
fn progress_losses(training: &dyn Training, losses: &[Vec<f32>]) -> String {
    let names = training.plans().iter().flat_map(|p| p.losses.iter());
    let terms: Vec<String> = names
        .zip(losses.iter().flatten())
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect();
    terms.join("  ")
}

/// Copies the checkpoint just written to `checkpoints/step-NNNNNNNN.safetensors` and keeps the newest `keep`.
fn keep_periodic_copy(run: &RunDir, step: u64, keep: usize) -> Result<(), TrainError> {
    let directory = run.path.join("checkpoints");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Run(RunError::Io { path, source })
    };
    std::fs::create_dir_all(&directory).map_err(io(&directory))?;
    let bytes = std::fs::read(run.checkpoint()).map_err(io(&run.checkpoint()))?;
    crate::checkpoint::write_atomically(&directory.join(format!("step-{step:08}.safetensors")), &bytes)?;
    let mut copies: Vec<PathBuf> = std::fs::read_dir(&directory)
        .map_err(io(&directory))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(keep.max(1));
    for old in &copies[..excess] {
        std::fs::remove_file(old).map_err(io(old))?;
    }
    Ok(())
}

/// Prints the plans' dispatches per step and the GPU memory by role, before the first step.
fn report_plans(model: &str, training: &dyn Training, gpu: &Gpu) {
    let store = training.store();
    let mut memory = plan::store_memory(store);
    let mut plans = Vec::new();
    for step_plan in training.plans() {
        let plan = &step_plan.plan;
        let counts = plan.dispatch_counts();
        let phases: Vec<String> = counts
            .iter()
            .map(|(phase, n)| format!("{phase:?} {n}").to_lowercase())
            .collect();
        plans.push(format!(
            "{}: {} dispatches ({})",
            plan.name,
            counts.values().sum::<usize>(),
            phases.join(", ")
        ));
        for (role, bytes) in plan.own_memory() {
            *memory.entry(role).or_insert(0) += bytes;
        }
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let roles: Vec<String> = memory
        .iter()
        .map(|(role, bytes)| format!("{} {:.2} MiB", role_name(*role), mib(*bytes)))
        .collect();
    let details = training.describe();
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    };
    eprintln!(
        "{model}{details}: {} parameters on {}",
        store.parameter_count(),
        gpu.describe()
    );
    eprintln!("training step: {}", plans.join("; "));
    eprintln!(
        "GPU memory: {:.2} MiB ({})",
        mib(memory.values().sum()),
        roles.join(", ")
    );
}

fn role_name(role: BufferRole) -> &'static str {
    match role {
        BufferRole::Weights => "weights",
        BufferRole::Gradients => "gradients",
        BufferRole::OptimizerState => "optimizer state",
        BufferRole::Activations => "activations",
        BufferRole::Inputs => "inputs",
        BufferRole::Params => "kernel params",
        BufferRole::Scratch => "scratch",
    }
}

/// Writes the checkpoint atomically with the run's metadata.
pub fn save_checkpoint(
    gpu: &Gpu,
    run: &RunDir,
    store: &ParamStore,
    model: &str,
    config: &RunConfig,
    step: u64,
) -> Result<(), TrainError> {
    let mut checkpoint = Checkpoint::new(model);
    store.save_into(gpu, &mut checkpoint)?;
    checkpoint.metadata.insert(
        "config".into(),
        serde_json::to_string(config).expect("the config serializes"),
    );
    checkpoint.metadata.insert("seed".into(), config.seed.to_string());
    checkpoint.metadata.insert("step".into(), step.to_string());
    checkpoint.save(&run.checkpoint())?;
    Ok(())
}

/// Redraws loss.png from metrics.jsonl.
fn plot_run(run: &RunDir, model: &str, training: &dyn Training) -> Result<(), TrainError> {
    let metrics = run.metrics()?;
    let spec = training.curves();
    let curves: Vec<Curve> = spec
        .series
        .iter()
        .map(|(label, split, key)| Curve {
            label,
            points: metrics
                .iter()
                .filter_map(|m| Some((m["epoch"].as_f64()?, m[*split][*key].as_f64()?)))
                .collect(),
        })
        .collect();
    run::plot_losses(&run.path.join("loss.png"), &format!("{model}: {}", spec.title), &curves)?;
    Ok(())
}

/// One epoch's line of metrics.jsonl: its number, the step reached, train and test metrics, time and throughput.
pub fn epoch_record(
    epoch: u64,
    step: u64,
    train: impl Into<serde_json::Value>,
    test: impl Into<serde_json::Value>,
    seconds: f64,
    images: f64,
) -> serde_json::Value {
    json!({
        "epoch": epoch,
        "step": step,
        "train": train.into(),
        "test": test.into(),
        "seconds": seconds,
        "images_per_second": images / seconds,
    })
}

/// An epoch's summary line: above the progress bar, or on stderr when the bar is hidden (not a terminal).
pub fn print_epoch_line(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
