//! The wae's adversarial training loop and the wae's evaluation.
//!
//! `--regularizer mmd` trains in the common loop of `crate::train` (one plan: cost + λ MMD). `--regularizer
//! adversarial` needs two plans over one parameter store, replayed every step as the GAN's are: the latent
//! discriminator's step (updates `disc.*`), then the autoencoder's step (cost + BCE(D(z), 1) through the updated
//! D; updates `enc.*` and `dec.*`). Both see the same batch and the same prior samples (same seed, step, stream).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::cpu;
use crate::data::{Batcher, Dataset, Splits};
use crate::generate::{self, LoadedRun};
use crate::gpu::Gpu;
use crate::graph::TensorId;
use crate::kernels::mmd::imq_scale;
use crate::models::wae::{self, Regularizer, AUTOENCODER, DISCRIMINATOR, LATENT};
use crate::models::ModelKind;
use crate::plan::{self, ParamStore, Plan, PlanOptions, TrainOptions};
use crate::run::{self, RunConfig, RunDir};
use crate::train::{self, TrainError, TrainGraph, TrainRequest, TrainSummary};

/// The random stream of the prior samples the test MMD compares the codes with.
const EVAL_STREAM: u32 = 2101;
/// The test MMD is the mean of the unbiased estimate over blocks of this many codes (and as many prior samples).
pub const MMD_BLOCK: usize = 1000;

/// The two training plans of an adversarial wae, over one store.
pub struct AdversarialPlans {
    pub store: ParamStore,
    pub discriminator: Plan,
    pub autoencoder: Plan,
    /// The batch, an input of each plan.
    pub discriminator_x: TensorId,
    pub autoencoder_x: TensorId,
}

/// Compiles the discriminator's step and the autoencoder's step at batch size `batch`.
pub fn compile(gpu: &Gpu, batch: usize, lr: f64, seed: u64) -> Result<(AdversarialPlans, TrainGraph), TrainError> {
    let d_step = wae::discriminator_step(batch)?;
    let tg = train::wae_train_graph(batch, Regularizer::Adversarial)?;
    let mut store = ParamStore::new(seed);
    let options = |name: &str, prefixes: &[&str]| PlanOptions {
        name: name.into(),
        train: Some(TrainOptions {
            optimizer: wae::optimizer(lr),
            update_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }),
        seed,
    };
    let discriminator = plan::compile(gpu, &d_step.graph, &mut store, &options("wae D step", &[DISCRIMINATOR]))?;
    let autoencoder = plan::compile(gpu, &tg.graph, &mut store, &options("wae AE step", &AUTOENCODER))?;
    let plans = AdversarialPlans {
        store,
        discriminator,
        autoencoder,
        discriminator_x: d_step.x,
        autoencoder_x: tg.x,
    };
    Ok((plans, tg))
}

impl AdversarialPlans {
    /// One step on `images`: the D step, then the AE step.
    pub fn run(&self, gpu: &Gpu, images: &[f32], step: u64) -> Result<(), TrainError> {
        self.discriminator.write_input(gpu, self.discriminator_x, images)?;
        self.autoencoder.write_input(gpu, self.autoencoder_x, images)?;
        self.discriminator.run(gpu, step);
        self.autoencoder.run(gpu, step);
        Ok(())
    }
}

/// `latent train wae --regularizer adversarial`: called by `train::train` once the run directory, its
/// configuration and the data are ready.
pub(crate) fn train(
    gpu: &Gpu,
    request: &TrainRequest,
    run: RunDir,
    config: RunConfig,
    resume_from: Option<Checkpoint>,
    splits: &Splits,
    batcher: Batcher<&Dataset>,
) -> Result<TrainSummary, TrainError> {
    let model = ModelKind::Wae;
    let steps_per_epoch = batcher.steps_per_epoch() as u64;
    let total_steps = config.steps.unwrap_or(config.epochs * steps_per_epoch);
    let total_epochs = total_steps.div_ceil(steps_per_epoch);
    let (mut plans, tg) = compile(gpu, config.batch, config.lr, config.seed)?;
    let eval_options = PlanOptions {
        name: "wae eval".into(),
        train: None,
        seed: config.seed,
    };
    let eval_plan = plan::compile(gpu, &tg.graph, &mut plans.store, &eval_options)?;
    let preview = train::Preview::new(gpu, model, &mut plans.store, splits, config.seed)?;
    let mut first_step = 0;
    if let Some(checkpoint) = &resume_from {
        plans.store.load_from(gpu, checkpoint)?;
        first_step = checkpoint.meta("step")?;
        eprintln!("Resuming {} at step {first_step} of {total_steps}", run.path.display());
    }
    let dispatches = |p: &Plan| p.dispatch_counts().values().sum::<usize>();
    eprintln!(
        "wae (adversarial): {} parameters on {}; D step {} + AE step {} dispatches per step",
        plans.store.parameter_count(),
        gpu.describe(),
        dispatches(&plans.discriminator),
        dispatches(&plans.autoencoder)
    );

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
        plans.autoencoder.reset_loss_sums(gpu)?;
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, total_epochs));
        for index in within..steps_per_epoch as usize {
            if step >= total_steps {
                break;
            }
            batcher.fill(epoch, index, &mut images, None);
            plans.run(gpu, &images, step)?;
            step += 1;
            bar.set_position(step);
            if step % request.log_every.max(1) == 0 {
                let d: f32 = plans.discriminator.read_losses(gpu)?.iter().sum();
                let ae = plans.autoencoder.read_losses(gpu)?;
                bar.set_message(format!("D {d:.4}  cost {:.4}  adversarial {:.4}", ae[0], ae[1]));
            }
            if request
                .interrupt
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::SeqCst))
            {
                train::save_checkpoint(gpu, &run, &plans.store, model, &config, step)?;
                bar.finish_and_clear();
                return Err(TrainError::Interrupted {
                    step,
                    model: model.name().into(),
                    checkpoint: run.checkpoint(),
                    run: run.path.clone(),
                });
            }
        }
        let steps_done = (step - first_of_epoch).max(1) as f64;
        // D plan: [d_prior, d_codes]; AE plan: [reconstruction, adversarial].
        let d_sums = plans.discriminator.read_loss_sums(gpu)?;
        let ae_sums = plans.autoencoder.read_loss_sums(gpu)?;
        if let Some(value) = d_sums.iter().chain(&ae_sums).find(|v| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                step,
                loss: "wae".into(),
                value: *value,
                last_checkpoint: run.checkpoint().exists().then(|| run.checkpoint()),
            });
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        let mean = |sum: f32| sum as f64 / steps_done;
        let train_metrics = json!({
            "reconstruction": mean(ae_sums[0]),
            "adversarial": mean(ae_sums[1]),
            "loss": mean(ae_sums[0]) + mean(ae_sums[1]),
            "d_loss": mean(d_sums[0]) + mean(d_sums[1]),
            "d_prior": mean(d_sums[0]),
            "d_codes": mean(d_sums[1]),
        });
        let test_metrics = train::evaluate(gpu, &eval_plan, &tg, &splits.test, config.batch, model.range())?;
        let epoch_number = epoch + 1;
        let images = steps_done * config.batch as f64;
        let record = train::epoch_record(epoch_number, step, train_metrics, test_metrics, seconds, images);
        train::save_checkpoint(gpu, &run, &plans.store, model, &config, step)?;
        if let Some(grid) = preview.render(gpu, &eval_plan, &tg, splits)? {
            run::save_png(&run.sample_path(epoch_number), &grid)?;
        }
        run.append_metrics(&record)?;
        train::plot_run(&run, model)?;
        let line = format!(
            "epoch {epoch_number}/{total_epochs}: cost {:.4}, adversarial {:.4}, D loss {:.4}, test cost {:.4}, {:.0} \
             img/s, {seconds:.1} s",
            record["train"]["reconstruction"].as_f64().unwrap_or(f64::NAN),
            record["train"]["adversarial"].as_f64().unwrap_or(f64::NAN),
            record["train"]["d_loss"].as_f64().unwrap_or(f64::NAN),
            record["test"]["reconstruction"].as_f64().unwrap_or(f64::NAN),
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

/// The regulariser a wae run was trained with (mmd for a config.json without one).
pub fn regularizer(run: &LoadedRun) -> Regularizer {
    run.config.wae.map(|w| w.regularizer).unwrap_or_default()
}

/// The mean over blocks of `MMD_BLOCK` codes of the unbiased MMD (λ = 1) between codes (N, D) and as many prior
/// samples, on the host with the CPU twin of the training kernel.
pub fn block_mmd(codes: &[f32], prior: &[f32], dim: usize) -> f64 {
    let (codes, prior) = (crate::check::to_f64(codes), crate::check::to_f64(prior));
    let count = codes.len() / dim;
    let mut values = Vec::new();
    for start in (0..count).step_by(MMD_BLOCK) {
        let n = MMD_BLOCK.min(count - start);
        if n < 2 {
            break;
        }
        let range = start * dim..(start + n) * dim;
        values.push(cpu::mmd::mmd(
            &codes[range.clone()],
            &prior[range],
            n,
            dim,
            imq_scale(dim),
            1.0,
        ));
    }
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// `latent eval` of a wae run: the test reconstruction cost and regulariser term (as in training), the MMD
/// between the test set's codes and as many prior samples, then FID and the sliced Wasserstein distance of
/// `fid.n` samples from the prior.
pub fn evaluate(gpu: &Gpu, run: &LoadedRun, fid: &crate::gan::FidOptions) -> Result<serde_json::Value, TrainError> {
    let regularizer = regularizer(run);
    let splits = train::load_data(run.config.data.as_ref())?;
    let batch = run.config.batch.max(2);
    let tg = train::wae_train_graph(batch, regularizer)?;
    let (plan, _store) = run.forward_plan(gpu, &tg.graph, "wae eval")?;
    let metrics = train::evaluate(gpu, &plan, &tg, &splits.test, batch, run.model.range())?;
    let images = generate::test_images(&splits.test, splits.test.len());
    let codes = generate::encode(gpu, run, &images)?;
    let prior = train::gpu_normals(gpu, codes.len(), run.config.seed, EVAL_STREAM)?;
    let mut report = json!({
        "run": run.dir.path,
        "model": "wae",
        "regularizer": regularizer.name(),
        "step": run.checkpoint.meta::<u64>("step").ok(),
        "adapter": gpu.describe(),
        "test_images": splits.test.len(),
        "reconstruction_l2": metrics["reconstruction"],
        "test_mmd": block_mmd(&codes, &prior, LATENT),
        "mmd_block": MMD_BLOCK.min(splits.test.len()),
    });
    match regularizer {
        Regularizer::Mmd => report["lambda_mmd_batch"] = metrics["mmd"].clone(),
        Regularizer::Adversarial => report["adversarial"] = metrics["adversarial"].clone(),
    }
    if fid.n > 0 {
        let samples = generate::generated_images(gpu, run, fid.n, run.config.seed)?;
        crate::gan::add_fid(gpu, &mut report, &samples, &splits, run, fid)?;
    }
    Ok(report)
}
