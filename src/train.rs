//! `latent train`: the training loop, per-epoch evaluation, and the run directory.
//!
//! A step writes the batch into the plan's input buffer, rewrites the per-step values and submits the plan once.
//! Nothing waits on the GPU inside an epoch except the progress display every `log_every` steps; the epoch's
//! training losses come from sums kept on the GPU.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::{self, Batcher, DataError, Dataset, ImageShape, Splits};
use crate::gpu::{BufferRole, Gpu, GpuError};
use crate::graph::{Graph, GraphError, TensorId};
use crate::models::{self, ModelKind};
use crate::optim::Optimizer;
use crate::plan::{self, LoadError, ParamStore, Plan, PlanOptions, TrainOptions};
use crate::run::{self, Curve, RunConfig, RunDir, RunError};

/// Everything that can stop training, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(
        "training stopped at step {step}: loss {loss} became {value} (not finite){}; lower --lr, or check the data",
        last_checkpoint_note(last_checkpoint)
    )]
    NonFinite {
        step: u64,
        loss: String,
        value: f32,
        last_checkpoint: Option<PathBuf>,
    },
    #[error("interrupted at step {step}; checkpoint written to {}; continue with `latent train {model} --resume {}`", checkpoint.display(), run.display())]
    Interrupted {
        step: u64,
        model: String,
        checkpoint: PathBuf,
        run: PathBuf,
    },
    #[error("{error}\nThe last checkpoint is {}; continue with `latent train {model} --resume {}`", checkpoint.display(), run.display())]
    AfterCheckpoint {
        error: Box<TrainError>,
        model: String,
        checkpoint: PathBuf,
        run: PathBuf,
    },
}

fn last_checkpoint_note(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => format!("; the last good checkpoint is kept at {}", path.display()),
        None => "; no checkpoint had been written yet".to_string(),
    }
}

impl TrainError {
    /// The process exit status for this error: 130 for an interrupt (as shells report SIGINT), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TrainError::Interrupted { .. } => 130,
            _ => 1,
        }
    }
}

impl From<crate::checkpoint::CheckpointError> for TrainError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        Self::Load(LoadError::Checkpoint(e))
    }
}

/// A model's training graph, as the trainer needs it.
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

/// The training graph of `model` at batch size `batch`.
pub fn train_graph(model: ModelKind, batch: usize) -> Result<TrainGraph, GraphError> {
    Ok(match model {
        ModelKind::Vae => {
            let o = models::vae::objective(batch)?;
            TrainGraph {
                graph: o.graph,
                x: o.x,
                labels: None,
                losses: vec![("bce", o.reconstruction), ("kl", o.kl)],
                class_logits: None,
            }
        }
        ModelKind::Ae => {
            let o = models::ae::objective(batch)?;
            TrainGraph {
                graph: o.graph,
                x: o.x,
                labels: None,
                losses: vec![("bce", o.loss)],
                class_logits: None,
            }
        }
        ModelKind::Ddpm => {
            // The graph only: `latent train ddpm` writes the timesteps t too (see `crate::ddpm`).
            let o = models::ddpm::objective(&Default::default(), batch, crate::ddpm::IMAGE)?;
            TrainGraph {
                graph: o.graph,
                x: o.x,
                labels: None,
                losses: vec![("mse", o.loss)],
                class_logits: None,
            }
        }
        ModelKind::Classifier => {
            let o = models::classifier::objective(batch)?;
            TrainGraph {
                graph: o.graph,
                x: o.x,
                labels: Some(o.labels),
                losses: vec![("cross_entropy", o.loss)],
                class_logits: Some(o.logits),
            }
        }
        ModelKind::Wae => wae_train_graph(batch, models::wae::Regularizer::Mmd)?,
        // The discriminator step (it holds both nets; `latent train gan` compiles the generator step beside it).
        ModelKind::Gan => {
            let o = models::gan::discriminator_step(batch)?;
            TrainGraph {
                graph: o.graph,
                x: o.x,
                labels: None,
                losses: vec![("d_real", o.real_loss), ("d_fake", o.fake_loss)],
                class_logits: None,
            }
        }
    })
}

/// The wae's autoencoder step with `regularizer`: the reconstruction cost and the regulariser's term (λ MMD, or
/// the encoder's adversarial loss; the adversarial discriminator step is compiled beside it by `crate::wae`).
pub fn wae_train_graph(batch: usize, regularizer: models::wae::Regularizer) -> Result<TrainGraph, GraphError> {
    let o = models::wae::objective(batch, regularizer)?;
    let term = match regularizer {
        models::wae::Regularizer::Mmd => "mmd",
        models::wae::Regularizer::Adversarial => "adversarial",
    };
    Ok(TrainGraph {
        graph: o.graph,
        x: o.x,
        labels: None,
        losses: vec![("reconstruction", o.reconstruction), (term, o.regularizer)],
        class_logits: None,
    })
}

/// What `latent train` was asked to do.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    pub model: ModelKind,
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    pub data: Option<PathBuf>,
    /// Where to write a new run.
    pub run: Option<PathBuf>,
    /// A run to continue.
    pub resume: Option<PathBuf>,
    /// Read the loss for the progress display every this many steps.
    pub log_every: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Check the loss for NaN or infinity every this many steps (a readback; 0: only at the end of an epoch).
    pub nan_check_every: u64,
    /// Also write a checkpoint every this many steps (0: only at the end of each epoch).
    pub save_every: u64,
    /// Periodic checkpoints to keep in `checkpoints/` (the newest ones).
    pub keep: usize,
    /// Raised by the first Ctrl-C: finish the step, write a checkpoint, stop.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Time every dispatch of every step with GPU timestamps and print the per-kernel table at the end
    /// (each step then waits for the GPU).
    pub profile: bool,
    /// With `profile`, also write a Chrome trace (Perfetto) to this file.
    pub trace: Option<PathBuf>,
    /// wae: the latent regulariser of a new run (default mmd).
    pub regularizer: Option<models::wae::Regularizer>,
}

impl TrainRequest {
    /// Defaults for everything but the model.
    pub fn new(model: ModelKind) -> Self {
        Self {
            model,
            epochs: None,
            steps: None,
            batch: None,
            lr: None,
            seed: None,
            data: None,
            run: None,
            resume: None,
            log_every: 10,
            progress: false,
            nan_check_every: 50,
            save_every: 0,
            keep: 3,
            interrupt: None,
            profile: false,
            trace: None,
            regularizer: None,
        }
    }
}

/// The default number of epochs per model (models.md's recipes).
pub fn default_epochs(model: ModelKind) -> u64 {
    match model {
        ModelKind::Ae | ModelKind::Vae | ModelKind::Wae => 20,
        ModelKind::Classifier => 10,
        ModelKind::Gan => 30,
        ModelKind::Ddpm => 60,
    }
}

/// The dataset a run trains on: a directory, or the embedded mnist-10k.
pub fn load_data(path: Option<&PathBuf>) -> Result<Splits, DataError> {
    match path {
        Some(dir) => data::load_dir(dir, ImageShape::MNIST, data::Fit::default()),
        None => data::embedded::mnist_10k(),
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

/// Per-image means of each loss over a whole dataset, using an evaluation plan of batch `batch`: the last partial
/// batch is padded with repeated images and only the real ones are counted (losses are read per sample).
pub fn evaluate(
    gpu: &Gpu,
    plan: &Plan,
    tg: &TrainGraph,
    dataset: &Dataset,
    batch: usize,
    range: data::PixelRange,
) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
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
    let mut metrics = serde_json::Map::new();
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

pub(crate) fn progress_bar(total: u64, enabled: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {msg}  (elapsed {elapsed}, left {eta})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
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

/// Opens the run `--resume` names (it must be a run of `model`) or, for a new run, takes the `--run` path (or
/// the default), refuses one that already holds a run, and asks `new_config` for the defaults. Then applies the
/// command line: `--epochs` and `--steps` always, `--batch`, `--lr` and `--seed` only to a new run (a resumed
/// run keeps its own), and checks the batch and the learning rate. Makes nothing on disk, so that a refused
/// command leaves nothing behind: the caller creates a new run's directory once everything else checks out.
pub fn setup_run(
    request: &TrainRequest,
    model: ModelKind,
    new_config: impl FnOnce() -> Result<RunConfig, TrainError>,
) -> Result<RunSetup, TrainError> {
    let (place, mut config, resume_from) = match &request.resume {
        Some(dir) => {
            let run = RunDir::open(dir)?;
            let config = run.config()?;
            if config.model != model.name() {
                return Err(TrainError::Config(format!(
                    "{} is a run of model {:?}, not {:?}; use `latent train {} --resume {}`",
                    dir.display(),
                    config.model,
                    model.name(),
                    config.model,
                    dir.display()
                )));
            }
            let checkpoint = Checkpoint::load(&run.checkpoint())?;
            checkpoint.expect_model(model.name())?;
            (RunPlace::Resumed(run), config, Some(checkpoint))
        }
        None => {
            let path = request
                .run
                .clone()
                .unwrap_or_else(|| RunDir::default_path(model.name()));
            if path.join(run::CHECKPOINT).exists() {
                return Err(TrainError::Config(format!(
                    "{} already holds a run; continue it with --resume {}, or choose another --run directory",
                    path.display(),
                    path.display()
                )));
            }
            (RunPlace::New(path), new_config()?, None)
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

/// Trains `request.model` and writes its run directory.
pub fn train(gpu: &Gpu, request: &TrainRequest) -> Result<TrainSummary, TrainError> {
    let model = request.model;
    if model == ModelKind::Ddpm {
        return crate::ddpm::train(gpu, request, &Default::default());
    }
    if request.regularizer.is_some() && model != ModelKind::Wae {
        return Err(TrainError::Config(format!(
            "--regularizer is for the wae; {model} has no latent regulariser"
        )));
    }
    let RunSetup {
        place,
        config,
        resume_from,
    } = setup_run(request, model, || {
        Ok(RunConfig {
            model: model.name().into(),
            epochs: default_epochs(model),
            steps: None,
            batch: 128,
            lr: model.learning_rate(),
            seed: 0,
            data: request.data.clone(),
            adapter: gpu.describe(),
            latent_version: env!("CARGO_PKG_VERSION").into(),
            ddpm: None,
            wae: (model == ModelKind::Wae).then(|| models::wae::WaeConfig {
                regularizer: request.regularizer.unwrap_or_default(),
            }),
        })
    })?;
    let regularizer = config.wae.map(|w| w.regularizer);
    if let (Some(asked), Some(saved)) = (request.regularizer, regularizer) {
        if asked != saved {
            return Err(TrainError::Config(format!(
                "{} was trained with --regularizer {saved}; resume it without --regularizer, or start a new run",
                place.path().display()
            )));
        }
    }
    if model == ModelKind::Wae && config.batch < 2 {
        return Err(TrainError::Config(
            "the wae's regulariser compares codes within a batch: --batch must be at least 2".into(),
        ));
    }
    // Refuse a batch the adapter cannot hold before loading data or allocating anything.
    let tg = match regularizer {
        Some(regularizer) => wae_train_graph(config.batch, regularizer)?,
        None => train_graph(model, config.batch)?,
    };
    plan::check_batch_fits(gpu, &tg.graph, config.batch)?;

    let splits = load_data(config.data.as_ref())?;
    data::check_shape(&splits.train, ImageShape::MNIST)?;
    let batcher = Batcher::new(&splits.train, config.batch, config.seed)?.with_range(model.range());
    let steps_per_epoch = batcher.steps_per_epoch() as u64;
    let total_steps = config.steps.unwrap_or(config.epochs * steps_per_epoch);
    let total_epochs = total_steps.div_ceil(steps_per_epoch);
    let run = place.into_dir()?;
    let _lock = run.lock_for_writing()?; // held until training returns; refuses a second writer
    run.write_config(&config)?;
    if model == ModelKind::Gan {
        return crate::gan::train(gpu, request, run, config, resume_from, &splits, batcher);
    }
    if regularizer == Some(models::wae::Regularizer::Adversarial) {
        return crate::wae::train(gpu, request, run, config, resume_from, &splits, batcher);
    }

    let mut store = ParamStore::new(config.seed);
    let optimizer = match model {
        ModelKind::Wae => models::wae::optimizer(config.lr),
        _ => Optimizer::adam(config.lr),
    };
    let train_options = TrainOptions {
        optimizer,
        update_prefixes: vec![],
    };
    let options = PlanOptions {
        name: format!("{model} train"),
        train: Some(train_options),
        seed: config.seed,
    };
    let plan = plan::compile(gpu, &tg.graph, &mut store, &options)?;
    let options = PlanOptions {
        name: format!("{model} eval"),
        train: None,
        seed: config.seed,
    };
    let eval_plan = plan::compile(gpu, &tg.graph, &mut store, &options)?;
    let mut first_step = 0;
    if let Some(checkpoint) = &resume_from {
        store.load_from(gpu, checkpoint)?;
        first_step = checkpoint.meta("step")?;
        eprintln!("Resuming {} at step {first_step} of {total_steps}", run.path.display());
    }
    report_plan(model, &plan, &store, gpu);
    let preview = Preview::new(gpu, model, &mut store, &splits, config.seed)?;

    let checkpoint_path = run.checkpoint();
    let last_good =
        |step: u64| -> Option<PathBuf> { (step > 0 && checkpoint_path.exists()).then(|| checkpoint_path.clone()) };
    // Stops on a NaN or infinite loss; the checkpoint on disk (written before the loss went bad) is kept.
    let check_finite = |step: u64, values: &[f32]| -> Result<(), TrainError> {
        match tg.losses.iter().zip(values).find(|(_, v)| !v.is_finite()) {
            Some(((name, _), value)) => Err(TrainError::NonFinite {
                step,
                loss: name.to_string(),
                value: *value,
                last_checkpoint: last_good(step),
            }),
            None => Ok(()),
        }
    };
    let save = |store: &ParamStore, step: u64| -> Result<(), TrainError> {
        check_finite(step, &plan.read_losses(gpu)?)?;
        save_checkpoint(gpu, &run, store, model, &config, step)
    };

    let mut images = vec![0.0f32; batcher.images_len()];
    let mut labels = vec![0u32; config.batch];
    let mut batcher = batcher;
    let bar = progress_bar(total_steps, request.progress);
    bar.set_position(first_step);
    let mut step = first_step;
    let mut last_metrics = json!({});
    let mut profiler = request.profile.then(|| crate::profile::Profiler::new(gpu));
    let mut body = || -> Result<(), TrainError> {
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
                batcher.fill(epoch, index, &mut images, tg.labels.map(|_| &mut labels[..]));
                plan.write_input(gpu, tg.x, &images)?;
                if let Some(label_input) = tg.labels {
                    plan.write_input(gpu, label_input, &labels)?;
                }
                match profiler.as_mut() {
                    Some(profiler) => profiler.run(gpu, &plan, step)?,
                    None => plan.run(gpu, step),
                }
                step += 1;
                bar.set_position(step);
                let log = step % request.log_every.max(1) == 0;
                let nan_check = request.nan_check_every > 0 && step % request.nan_check_every == 0;
                if log || nan_check {
                    let losses = plan.read_losses(gpu)?;
                    check_finite(step, &losses)?;
                    let rate =
                        (step - first_of_epoch) as f64 * config.batch as f64 / epoch_start.elapsed().as_secs_f64();
                    bar.set_message(format!("loss {:.4}  {rate:.0} img/s", losses.iter().sum::<f32>()));
                }
                if request
                    .interrupt
                    .as_ref()
                    .is_some_and(|flag| flag.load(Ordering::SeqCst))
                {
                    save(&store, step)?;
                    bar.finish_and_clear();
                    return Err(TrainError::Interrupted {
                        step,
                        model: model.name().into(),
                        checkpoint: checkpoint_path.clone(),
                        run: run.path.clone(),
                    });
                }
                if request.save_every > 0 && step % request.save_every == 0 && step < total_steps {
                    save(&store, step)?;
                    keep_periodic_copy(&run, step, request.keep)?;
                }
            }
            let steps_done = (step - first_of_epoch).max(1);
            let sums = plan.read_loss_sums(gpu)?;
            check_finite(step, &sums)?;
            let seconds = epoch_start.elapsed().as_secs_f64();
            let mut train_metrics = serde_json::Map::new();
            for ((name, _), sum) in tg.losses.iter().zip(&sums) {
                train_metrics.insert(name.to_string(), json!(*sum as f64 / steps_done as f64));
            }
            let total: f64 = sums.iter().map(|&s| s as f64).sum();
            train_metrics.insert("loss".into(), json!(total / steps_done as f64));
            let test_metrics = evaluate(gpu, &eval_plan, &tg, &splits.test, config.batch, model.range())?;
            let epoch_number = epoch + 1;
            let images = steps_done as f64 * config.batch as f64;
            let record = epoch_record(epoch_number, step, train_metrics, test_metrics, seconds, images);
            save(&store, step)?;
            if let Some(grid) = preview.render(gpu, &eval_plan, &tg, &splits)? {
                run::save_png(&run.sample_path(epoch_number), &grid)?;
            }
            run.append_metrics(&record)?;
            plot_run(&run, model)?;
            let line = format!(
                "epoch {epoch_number}/{total_epochs}: train loss {:.4}, test loss {:.4}{}, {:.0} img/s, {seconds:.1} s",
                record["train"]["loss"].as_f64().unwrap_or(f64::NAN),
                record["test"]["loss"].as_f64().unwrap_or(f64::NAN),
                record["test"]["accuracy"]
                    .as_f64()
                    .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
                    .unwrap_or_default(),
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
        let profile = profiler.finish()?;
        eprintln!("{}", profile.table(false));
        if let Some(path) = &request.trace {
            profile.write_trace(path)?;
            eprintln!(
                "Chrome trace written to {} (open it in ui.perfetto.dev)",
                path.display()
            );
        }
    }
    match outcome {
        Ok(()) => Ok(TrainSummary {
            run: run.path.clone(),
            steps: step,
            epochs: total_epochs,
            final_metrics: last_metrics,
        }),
        // A failure after a checkpoint exists (a lost device, a full disk) says where to resume from.
        Err(error @ (TrainError::Gpu(_) | TrainError::Run(_) | TrainError::Load(_))) if checkpoint_path.exists() => {
            Err(TrainError::AfterCheckpoint {
                error: Box::new(error),
                model: model.name().into(),
                checkpoint: checkpoint_path.clone(),
                run: run.path.clone(),
            })
        }
        Err(error) => Err(error),
    }
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

/// Prints the plan's dispatches per step and its GPU memory by role, before the first step.
fn report_plan(model: ModelKind, plan: &Plan, store: &ParamStore, gpu: &Gpu) {
    let counts = plan.dispatch_counts();
    let total: usize = counts.values().sum();
    let phases: Vec<String> = counts
        .iter()
        .map(|(phase, n)| format!("{phase:?} {n}").to_lowercase())
        .collect();
    let mut memory = plan::store_memory(store);
    for (role, bytes) in plan.own_memory() {
        *memory.entry(role).or_insert(0) += bytes;
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let roles: Vec<String> = memory
        .iter()
        .map(|(role, bytes)| format!("{} {:.2} MiB", role_name(*role), mib(*bytes)))
        .collect();
    eprintln!("{model}: {} parameters on {}", store.parameter_count(), gpu.describe());
    eprintln!("training plan: {total} dispatches per step ({})", phases.join(", "));
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
    model: ModelKind,
    config: &RunConfig,
    step: u64,
) -> Result<(), TrainError> {
    let mut checkpoint = Checkpoint::new(model.name());
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
pub fn plot_run(run: &RunDir, model: ModelKind) -> Result<(), TrainError> {
    let metrics = run.metrics()?;
    let series = |split: &str| -> Vec<(f64, f64)> {
        metrics
            .iter()
            .filter_map(|m| Some((m["epoch"].as_f64()?, m[split]["loss"].as_f64()?)))
            .collect()
    };
    let curves = [
        Curve {
            label: "train",
            points: series("train"),
        },
        Curve {
            label: "test",
            points: series("test"),
        },
    ];
    run::plot_losses(&run.path.join("loss.png"), &format!("{model}: loss per image"), &curves)?;
    Ok(())
}

/// What each epoch's picture shows: samples from the prior (vae, wae), reconstructions of test images (ae).
pub(crate) enum Preview {
    /// The decoder on fixed latent codes.
    Samples {
        plan: Plan,
        output: TensorId,
        count: usize,
    },
    /// Test images beside their reconstructions.
    Reconstructions,
    None,
}

/// Normal numbers from the GPU's generator (seed, stream), read back: fixed latent codes for previews.
pub fn gpu_normals(gpu: &Gpu, n: usize, seed: u64, stream: u32) -> Result<Vec<f32>, GpuError> {
    use crate::kernels::rng;
    let out = gpu.buffer("normals", BufferRole::Scratch, (n * 4) as u64)?;
    let params = rng::DrawParams::new(gpu, &rng::Draw::new(seed, 0, stream), n)?;
    gpu.run(&[&rng::normal(gpu, &out, &params)?])?;
    let mut values: Vec<f32> = gpu.read(&out)?;
    values.truncate(n);
    Ok(values)
}

/// The random stream of preview latent codes (separate from the training noise streams).
const PREVIEW_STREAM: u32 = 1000;

impl Preview {
    pub(crate) fn new(
        gpu: &Gpu,
        model: ModelKind,
        store: &mut ParamStore,
        _splits: &Splits,
        seed: u64,
    ) -> Result<Self, TrainError> {
        Ok(match model {
            ModelKind::Vae => {
                let count = 64;
                let (graph, z, output) = models::vae::sampler(count)?;
                let plan = plan::compile(
                    gpu,
                    &graph,
                    store,
                    &PlanOptions {
                        name: "vae preview".into(),
                        train: None,
                        seed,
                    },
                )?;
                plan.write_input(
                    gpu,
                    z,
                    &gpu_normals(gpu, count * models::vae::LATENT, seed, PREVIEW_STREAM)?,
                )?;
                Preview::Samples { plan, output, count }
            }
            ModelKind::Wae => {
                let count = 64;
                let (graph, z, output) = models::wae::sampler(count)?;
                let options = PlanOptions {
                    name: "wae preview".into(),
                    train: None,
                    seed,
                };
                let plan = plan::compile(gpu, &graph, store, &options)?;
                let codes = gpu_normals(gpu, count * models::wae::LATENT, seed, PREVIEW_STREAM)?;
                plan.write_input(gpu, z, &codes)?;
                Preview::Samples { plan, output, count }
            }
            ModelKind::Ae => Preview::Reconstructions,
            ModelKind::Classifier | ModelKind::Gan | ModelKind::Ddpm => Preview::None,
        })
    }

    pub(crate) fn render(
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
                Ok(Some(run::image_grid(&images, [*count, 1, 28, 28], 8)))
            }
            Preview::Reconstructions => {
                let logits = tg.graph.ops.iter().find_map(|op| match op {
                    crate::graph::Op::BceWithLogits { logits, .. } => Some(*logits),
                    _ => None,
                });
                let Some(logits) = logits else { return Ok(None) };
                let batch = tg.graph.shape(tg.x)[0];
                let shown = batch.min(32);
                let indices: Vec<usize> = (0..batch).map(|i| i % splits.test.len()).collect();
                let mut images = vec![0.0f32; batch * 784];
                splits
                    .test
                    .fill_images(&indices, data::PixelRange::ZeroToOne, &mut images);
                eval.write_input(gpu, tg.x, &images)?;
                eval.run(gpu, 0);
                let reconstructions: Vec<f32> = eval
                    .read(gpu, logits)?
                    .iter()
                    .map(|&l| 1.0 / (1.0 + (-l).exp()))
                    .collect();
                Ok(Some(pairs_grid(&images, &reconstructions, shown)))
            }
            Preview::None => Ok(None),
        }
    }
}

/// Rows of 8 originals above rows of their 8 reconstructions (28x28 images).
pub fn pairs_grid(originals: &[f32], reconstructions: &[f32], count: usize) -> image::RgbImage {
    let mut interleaved = Vec::with_capacity(count * 2 * 784);
    for row in 0..count.div_ceil(8) {
        let range = row * 8..((row + 1) * 8).min(count);
        for source in [originals, reconstructions] {
            for i in range.clone() {
                interleaved.extend_from_slice(&source[i * 784..(i + 1) * 784]);
            }
            for _ in range.len()..8 {
                interleaved.extend(std::iter::repeat_n(0.0, 784));
            }
        }
    }
    let n = interleaved.len() / 784;
    run::image_grid(&interleaved, [n, 1, 28, 28], 8)
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
