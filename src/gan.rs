//! The GAN's training loop and evaluation: two plans over one parameter store, the discriminator step then the
//! generator step, replayed every step (see `models::gan`).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::{Batcher, Dataset, PixelRange, Splits};
use crate::fid::{self, FeatureNet};
use crate::generate::{run_batched, LoadedRun};
use crate::gpu::Gpu;
use crate::graph::TensorId;
use crate::models::gan::{self, DISCRIMINATOR, GENERATOR, LATENT};
use crate::models::ModelKind;
use crate::optim::Optimizer;
use crate::plan::{self, ParamStore, Plan, PlanOptions, TrainOptions};
use crate::run::{self, Curve, RunConfig, RunDir};
use crate::train::{self, TrainError, TrainRequest, TrainSummary};

/// Adam's betas for both nets (models.md: DCGAN's beta1 = 0.5).
pub const BETAS: (f64, f64) = (0.5, 0.999);

/// The random stream of the fixed preview z (apart from the training noise).
const PREVIEW_STREAM: u32 = 1000;
/// The random stream of evaluation samples.
const EVAL_STREAM: u32 = 2001;

/// The two training plans of a GAN, compiled over one store.
pub struct GanPlans {
    pub store: ParamStore,
    pub discriminator: Plan,
    pub generator: Plan,
    /// The real batch, input of the discriminator plan.
    pub x: TensorId,
}

/// The optimizer of each net.
pub fn optimizer(lr: f64) -> Optimizer {
    Optimizer::adam_betas(lr, BETAS.0, BETAS.1)
}

/// Compiles the discriminator step (updates `discriminator.*` only) and the generator step (updates
/// `generator.*` only) at batch size `batch`.
pub fn compile(gpu: &Gpu, batch: usize, lr: f64, seed: u64) -> Result<GanPlans, TrainError> {
    let d_step = gan::discriminator_step(batch)?;
    let g_step = gan::generator_step(batch)?;
    let mut store = ParamStore::new(seed);
    let options = |name: &str, prefix: &str| PlanOptions {
        name: name.into(),
        train: Some(TrainOptions {
            optimizer: optimizer(lr),
            update_prefixes: vec![prefix.into()],
        }),
        seed,
    };
    let discriminator = plan::compile(gpu, &d_step.graph, &mut store, &options("gan D step", DISCRIMINATOR))?;
    let generator = plan::compile(gpu, &g_step.graph, &mut store, &options("gan G step", GENERATOR))?;
    Ok(GanPlans {
        store,
        discriminator,
        generator,
        x: d_step.x,
    })
}

impl GanPlans {
    /// One training step on the real batch already written into `x`: the D step, then the G step, same z.
    pub fn run(&self, gpu: &Gpu, step: u64) {
        self.discriminator.run(gpu, step);
        self.generator.run(gpu, step);
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The Jensen-Shannon estimate (nats) from the critic's logits on real and generated images:
/// JSD ≈ log 2 + ½ (E log D(x) + E log(1 - D(G(z)))), with log D = -softplus(-l), log(1 - D) = -softplus(l).
/// It is exact for the optimal discriminator and a lower bound otherwise; 0 for D = 1/2 everywhere.
pub fn jsd_estimate(real_logits: &[f32], fake_logits: &[f32]) -> f64 {
    let mean = |values: &[f32], f: &dyn Fn(f64) -> f64| {
        values.iter().map(|&l| f(l as f64)).sum::<f64>() / values.len().max(1) as f64
    };
    let log_d_real = mean(real_logits, &|l| -softplus(-l));
    let log_one_minus_d_fake = mean(fake_logits, &|l| -softplus(l));
    std::f64::consts::LN_2 + 0.5 * (log_d_real + log_one_minus_d_fake)
}

/// Mean of sigmoid(logits): the average probability D gives to "real".
pub fn mean_probability(logits: &[f32]) -> f64 {
    logits.iter().map(|&l| 1.0 / (1.0 + (-l as f64).exp())).sum::<f64>() / logits.len().max(1) as f64
}

/// Evaluation-mode forward plans (running statistics) over a store: G's sampler and D alone.
pub struct GanEval {
    sampler: Plan,
    z: TensorId,
    images: TensorId,
    critic: Plan,
    x: TensorId,
    logits: TensorId,
    batch: usize,
}

impl GanEval {
    pub fn compile(gpu: &Gpu, store: &mut ParamStore, batch: usize, seed: u64) -> Result<Self, TrainError> {
        let options = |name: &str| PlanOptions {
            name: name.into(),
            train: None,
            seed,
        };
        let (graph, z, images) = gan::sampler(batch)?;
        let sampler = plan::compile(gpu, &graph, store, &options("gan sampler"))?;
        let (graph, x, logits) = gan::critic(batch)?;
        let critic = plan::compile(gpu, &graph, store, &options("gan critic"))?;
        Ok(Self {
            sampler,
            z,
            images,
            critic,
            x,
            logits,
            batch,
        })
    }

    /// G(z) for codes (N, 64): images (N, 1, 28, 28) in [-1, 1].
    pub fn generate(&self, gpu: &Gpu, codes: &[f32]) -> Result<Vec<f32>, TrainError> {
        run_batched(gpu, &self.sampler, self.z, self.images, codes, LATENT, self.batch)
    }

    /// D's logits (N) for images (N, 784) in [-1, 1].
    pub fn critic(&self, gpu: &Gpu, images: &[f32]) -> Result<Vec<f32>, TrainError> {
        run_batched(gpu, &self.critic, self.x, self.logits, images, 784, self.batch)
    }

    /// Over the test set and as many samples from z ~ N(0, I): mean D(x), mean D(G(z)) and the JSD estimate.
    /// Returns the samples too, in [-1, 1].
    pub fn critic_metrics(
        &self,
        gpu: &Gpu,
        test: &Dataset,
        seed: u64,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<f32>), TrainError> {
        let n = test.len();
        let indices: Vec<usize> = (0..n).collect();
        let mut real = vec![0.0f32; n * 784];
        test.fill_images(&indices, PixelRange::MinusOneToOne, &mut real);
        let codes = train::gpu_normals(gpu, n * LATENT, seed, EVAL_STREAM)?;
        let fake = self.generate(gpu, &codes)?;
        let real_logits = self.critic(gpu, &real)?;
        let fake_logits = self.critic(gpu, &fake)?;
        let mut metrics = serde_json::Map::new();
        metrics.insert("d_x".into(), json!(mean_probability(&real_logits)));
        metrics.insert("d_g_z".into(), json!(mean_probability(&fake_logits)));
        metrics.insert("jsd_nats".into(), json!(jsd_estimate(&real_logits, &fake_logits)));
        Ok((metrics, fake))
    }
}

/// Maps tanh outputs in [-1, 1] to pixel intensities in [0, 1]: (x + 1) / 2.
pub fn to_unit(images: &[f32]) -> Vec<f32> {
    images.iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect()
}

/// `latent train gan`: called by `train::train` once the run directory, its configuration and the data are
/// ready.
pub(crate) fn train(
    gpu: &Gpu,
    request: &TrainRequest,
    run: RunDir,
    config: RunConfig,
    resume_from: Option<Checkpoint>,
    splits: &Splits,
    batcher: Batcher<&Dataset>,
) -> Result<TrainSummary, TrainError> {
    let model = ModelKind::Gan;
    let steps_per_epoch = batcher.steps_per_epoch() as u64;
    let total_steps = config.steps.unwrap_or(config.epochs * steps_per_epoch);
    let total_epochs = total_steps.div_ceil(steps_per_epoch);
    let mut plans = compile(gpu, config.batch, config.lr, config.seed)?;
    let eval = GanEval::compile(gpu, &mut plans.store, config.batch, config.seed)?;
    let mut first_step = 0;
    if let Some(checkpoint) = &resume_from {
        plans.store.load_from(gpu, checkpoint)?;
        first_step = checkpoint.meta("step")?;
        eprintln!("Resuming {} at step {first_step} of {total_steps}", run.path.display());
    }
    let dispatches = |p: &Plan| p.dispatch_counts().values().sum::<usize>();
    eprintln!(
        "{model}: {} parameters on {}",
        plans.store.parameter_count(),
        gpu.describe()
    );
    eprintln!(
        "training plans: D step {} + G step {} dispatches per step",
        dispatches(&plans.discriminator),
        dispatches(&plans.generator)
    );
    // The preview: G in evaluation mode on the same 64 codes every epoch.
    let preview_codes = train::gpu_normals(gpu, 64 * LATENT, config.seed, PREVIEW_STREAM)?;

    let mut images = vec![0.0f32; batcher.images_len()];
    let mut batcher = batcher;
    let bar = train::progress_bar(total_steps, request.progress);
    bar.set_position(first_step);
    let mut step = first_step;
    let mut last_metrics = json!({});
    while step < total_steps {
        let (epoch, within) = batcher.position(step);
        let epoch_start = Instant::now();
        let first_of_epoch = step;
        plans.discriminator.reset_loss_sums(gpu)?;
        plans.generator.reset_loss_sums(gpu)?;
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, total_epochs));
        for index in within..steps_per_epoch as usize {
            if step >= total_steps {
                break;
            }
            batcher.fill(epoch, index, &mut images, None);
            plans.discriminator.write_input(gpu, plans.x, &images)?;
            plans.run(gpu, step);
            step += 1;
            bar.set_position(step);
            if step % request.log_every.max(1) == 0 {
                let d: f32 = plans.discriminator.read_losses(gpu)?.iter().sum();
                let g: f32 = plans.generator.read_losses(gpu)?.iter().sum();
                let rate = (step - first_of_epoch) as f64 * config.batch as f64 / epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!("D {d:.4}  G {g:.4}  {rate:.0} img/s"));
            }
        }
        let steps_done = (step - first_of_epoch) as f64;
        // D plan: [d_real, d_fake]; G plan: [g].
        let d_sums = plans.discriminator.read_loss_sums(gpu)?;
        let g_sums = plans.generator.read_loss_sums(gpu)?;
        let seconds = epoch_start.elapsed().as_secs_f64();
        let (d_real, d_fake) = (d_sums[0] as f64 / steps_done, d_sums[1] as f64 / steps_done);
        let train_metrics = json!({
            "d_loss": d_real + d_fake,
            "d_real": d_real,
            "d_fake": d_fake,
            "g_loss": g_sums[0] as f64 / steps_done,
        });
        let (test_metrics, _) = eval.critic_metrics(gpu, &splits.test, config.seed)?;
        let epoch_number = epoch + 1;
        let images = steps_done * config.batch as f64;
        let record = train::epoch_record(epoch_number, step, train_metrics, test_metrics, seconds, images);
        train::save_checkpoint(gpu, &run, &plans.store, model, &config, step)?;
        let grid = to_unit(&eval.generate(gpu, &preview_codes)?);
        run::save_png(
            &run.sample_path(epoch_number),
            &run::image_grid(&grid, [64, 1, 28, 28], 8),
        )?;
        run.append_metrics(&record)?;
        plot(&run)?;
        let line = format!(
            "epoch {epoch_number}/{total_epochs}: D loss {:.4}, G loss {:.4}, test D(x) {:.3}, D(G(z)) {:.3}, JSD \
             {:.4} nats, {:.0} img/s, {seconds:.1} s",
            record["train"]["d_loss"].as_f64().unwrap_or(f64::NAN),
            record["train"]["g_loss"].as_f64().unwrap_or(f64::NAN),
            record["test"]["d_x"].as_f64().unwrap_or(f64::NAN),
            record["test"]["d_g_z"].as_f64().unwrap_or(f64::NAN),
            record["test"]["jsd_nats"].as_f64().unwrap_or(f64::NAN),
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

/// loss.png: the D and G training losses per epoch.
fn plot(run: &RunDir) -> Result<(), TrainError> {
    let metrics = run.metrics()?;
    let series = |key: &str| -> Vec<(f64, f64)> {
        metrics
            .iter()
            .filter_map(|m| Some((m["epoch"].as_f64()?, m["train"][key].as_f64()?)))
            .collect()
    };
    let curves = [
        Curve {
            label: "D loss",
            points: series("d_loss"),
        },
        Curve {
            label: "G loss",
            points: series("g_loss"),
        },
    ];
    run::plot_losses(&run.path.join("loss.png"), "gan: training losses", &curves)?;
    Ok(())
}

/// What `latent eval` computes beyond the losses: FID against the test set.
#[derive(Clone, Debug, Default)]
pub struct FidOptions {
    /// Generated images (and real ones for the floor); 0 skips FID.
    pub n: usize,
    /// The classifier run giving the features; None: the cached one, trained on first use.
    pub classifier: Option<PathBuf>,
    /// Random directions of the sliced Wasserstein distance reported beside FID; 0 skips it.
    pub projections: usize,
}

/// Loads a GAN run's evaluation plans.
pub fn load_eval(gpu: &Gpu, run: &LoadedRun) -> Result<(GanEval, ParamStore), TrainError> {
    let mut store = ParamStore::new(run.config.seed);
    let eval = GanEval::compile(gpu, &mut store, 100, run.config.seed)?;
    store.load_from(gpu, &run.checkpoint)?;
    Ok((eval, store))
}

/// `latent eval` of a GAN run: mean D(x) and D(G(z)) and the JSD estimate over the test set and as many samples,
/// then FID (with its floor) and the class histogram of `fid.n` samples.
pub fn evaluate(gpu: &Gpu, run: &LoadedRun, options: &FidOptions) -> Result<serde_json::Value, TrainError> {
    let splits = train::load_data(run.config.data.as_ref())?;
    let (eval, _store) = load_eval(gpu, run)?;
    let (critic, _) = eval.critic_metrics(gpu, &splits.test, run.config.seed)?;
    let mut report = json!({
        "run": run.dir.path,
        "model": run.model.name(),
        "step": run.checkpoint.meta::<u64>("step").ok(),
        "adapter": gpu.describe(),
        "test_images": splits.test.len(),
    });
    for (key, value) in critic {
        report[key] = value;
    }
    if options.n > 0 {
        let codes = train::gpu_normals(gpu, options.n * LATENT, run.config.seed, EVAL_STREAM + 1)?;
        let samples = to_unit(&eval.generate(gpu, &codes)?);
        add_fid(gpu, &mut report, &samples, &splits, run, options)?;
    }
    Ok(report)
}

/// Adds FID, its floor and the samples' class histogram to `report`, for `samples` (N, 784) in [0, 1], and the
/// sliced Wasserstein distance (`crate::swd`) between the samples and N test images, with its floor (N real
/// training images against the same test images).
pub fn add_fid(
    gpu: &Gpu,
    report: &mut serde_json::Value,
    samples: &[f32],
    splits: &Splits,
    run: &LoadedRun,
    options: &FidOptions,
) -> Result<(), TrainError> {
    let n = samples.len() / 784;
    if n < 2 || splits.train.len() < n {
        return Err(TrainError::Config(format!(
            "--fid-n {n}: FID needs at least 2 samples and no more than the {} training images of the floor",
            splits.train.len()
        )));
    }
    let classifier = fid::classifier_run(gpu, options.classifier.as_deref(), run.config.data.as_ref())?;
    let net = FeatureNet::load(gpu, &classifier)?;
    let fid = fid::fid_report(gpu, &net, samples, splits, run.config.seed)?;
    if let Some(map) = fid.as_object() {
        for (key, value) in map {
            report[key] = value.clone();
        }
    }
    if options.projections > 0 {
        // As many test images as samples (all of them when there are fewer).
        let count = n.min(splits.test.len());
        let test = fid::real_subset(&splits.test, count, run.config.seed);
        let real = fid::real_subset(&splits.train, count, run.config.seed);
        let seed = run.config.seed;
        let samples = &samples[..count * 784];
        report["swd"] = json!(crate::swd::sliced_wasserstein(
            samples,
            &test,
            784,
            options.projections,
            seed
        ));
        report["swd_floor"] = json!(crate::swd::sliced_wasserstein(
            &real,
            &test,
            784,
            options.projections,
            seed
        ));
        report["swd_n"] = json!(count);
        report["swd_projections"] = json!(options.projections);
    }
    Ok(())
}
