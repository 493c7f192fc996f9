//! What a trained run produces: samples, reconstructions, latent interpolations, and its evaluation.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::cpu;
use crate::data::{Dataset, PixelRange};
use crate::gpu::Gpu;
use crate::graph::{Graph, TensorId};
use crate::kernels::rng::Draw;
use crate::models::{self, ModelKind};
use crate::plan::{self, ParamStore, Plan, PlanOptions};
use crate::run::{self, RunConfig, RunDir};
use crate::train::{self, TrainError};

/// A run directory opened for use: its configuration, model and checkpoint.
pub struct LoadedRun {
    pub dir: RunDir,
    pub config: RunConfig,
    pub model: ModelKind,
    pub checkpoint: Checkpoint,
}

impl LoadedRun {
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let dir = RunDir::open(path)?;
        let config = dir.config()?;
        let model: ModelKind = config.model.parse().map_err(TrainError::Config)?;
        let checkpoint = Checkpoint::load(&dir.checkpoint())?;
        checkpoint.expect_model(model.name())?;
        Ok(Self {
            dir,
            config,
            model,
            checkpoint,
        })
    }

    /// Compiles a forward-only plan of `graph` over a fresh store filled from the checkpoint.
    pub fn forward_plan(&self, gpu: &Gpu, graph: &Graph, name: &str) -> Result<(Plan, ParamStore), TrainError> {
        let mut store = ParamStore::new(self.config.seed);
        let options = PlanOptions {
            name: name.to_string(),
            train: None,
            seed: self.config.seed,
        };
        let plan = plan::compile(gpu, graph, &mut store, &options)?;
        store.load_from(gpu, &self.checkpoint)?;
        Ok((plan, store))
    }

    fn require(&self, allowed: &[ModelKind], command: &str) -> Result<(), TrainError> {
        if allowed.contains(&self.model) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|m| m.name()).collect();
        Err(TrainError::Config(format!(
            "`latent {command}` works on runs of {}; {} is a {} run",
            names.join(", "),
            self.dir.path.display(),
            self.model
        )))
    }

    fn test_set(&self) -> Result<Dataset, TrainError> {
        Ok(train::load_data(self.config.data.as_ref())?.test)
    }
}

/// Runs a forward plan over `rows` inputs of `input_len` values in batches of the plan's size (the last one
/// padded), returning `output_len` values per input row.
pub(crate) fn run_batched(
    gpu: &Gpu,
    plan: &Plan,
    input: TensorId,
    output: TensorId,
    rows: &[f32],
    input_len: usize,
    batch: usize,
) -> Result<Vec<f32>, TrainError> {
    let count = rows.len() / input_len;
    let mut outputs = Vec::new();
    let mut staging = vec![0.0f32; batch * input_len];
    for start in (0..count).step_by(batch) {
        let valid = batch.min(count - start);
        for i in 0..batch {
            let source = (start + i.min(valid - 1)) * input_len;
            staging[i * input_len..(i + 1) * input_len].copy_from_slice(&rows[source..source + input_len]);
        }
        plan.write_input(gpu, input, &staging)?;
        plan.run(gpu, 0);
        let values = plan.read(gpu, output)?;
        let output_len = values.len() / batch;
        outputs.extend_from_slice(&values[..valid * output_len]);
    }
    Ok(outputs)
}

/// The encoder of a run's model: x (N, 784 or 1x28x28) -> the latent code (the mean, for the vae).
fn encoder_graph(model: ModelKind, batch: usize) -> Result<(Graph, TensorId, TensorId, Option<TensorId>), TrainError> {
    let mut g = Graph::new();
    Ok(match model {
        ModelKind::Vae => {
            let x = g.input("x", &[batch, models::vae::PIXELS]);
            let (mu, logvar) = models::vae::encode(&mut g, x)?;
            (g, x, mu, Some(logvar))
        }
        ModelKind::Ae => {
            let x = g.input("x", &[batch, 1, 28, 28]);
            let z = models::ae::encode(&mut g, x)?;
            (g, x, z, None)
        }
        ModelKind::Wae => {
            let x = g.input("x", &[batch, 1, 28, 28]);
            let z = models::ae::encode_to(&mut g, x, models::wae::LATENT)?;
            (g, x, z, None)
        }
        ModelKind::Classifier | ModelKind::Gan | ModelKind::Ddpm => unreachable!("callers check the model first"),
    })
}

fn latent_dim(model: ModelKind) -> usize {
    match model {
        ModelKind::Vae => models::vae::LATENT,
        ModelKind::Gan => models::gan::LATENT,
        ModelKind::Wae => models::wae::LATENT,
        _ => models::ae::LATENT,
    }
}

fn decoder_graph(model: ModelKind, batch: usize) -> Result<(Graph, TensorId, TensorId), TrainError> {
    Ok(match model {
        ModelKind::Vae => models::vae::sampler(batch)?,
        ModelKind::Gan => models::gan::sampler(batch)?,
        ModelKind::Wae => models::wae::sampler(batch)?,
        _ => models::ae::sampler(batch)?,
    })
}

/// The first `count` test images, (count, 784) in [0, 1].
pub(crate) fn test_images(dataset: &Dataset, count: usize) -> Vec<f32> {
    let indices: Vec<usize> = (0..count.min(dataset.len())).collect();
    let mut images = vec![0.0f32; indices.len() * dataset.shape().numel()];
    dataset.fill_images(&indices, PixelRange::ZeroToOne, &mut images);
    images
}

/// Latent codes of `images` (the posterior means for the vae).
pub(crate) fn encode(gpu: &Gpu, run: &LoadedRun, images: &[f32]) -> Result<Vec<f32>, TrainError> {
    let batch = 64;
    let (graph, x, code, _) = encoder_graph(run.model, batch)?;
    let (plan, _store) = run.forward_plan(gpu, &graph, "encode")?;
    run_batched(gpu, &plan, x, code, images, 784, batch)
}

/// Images (N, 784) in [0, 1] from latent codes.
fn decode(gpu: &Gpu, run: &LoadedRun, codes: &[f32]) -> Result<Vec<f32>, TrainError> {
    let batch = 64;
    let (graph, z, probabilities) = decoder_graph(run.model, batch)?;
    let (plan, _store) = run.forward_plan(gpu, &graph, "decode")?;
    let images = run_batched(gpu, &plan, z, probabilities, codes, latent_dim(run.model), batch)?;
    // The GAN's generator ends in tanh: [-1, 1] -> [0, 1].
    Ok(match run.model {
        ModelKind::Gan => crate::gan::to_unit(&images),
        _ => images,
    })
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

/// The random stream of sampling (kept apart from training's streams).
const SAMPLE_STREAM: u32 = 2000;

/// `latent sample`: n images from the model. The vae and the wae decode z ~ N(0, I), their prior; a plain autoencoder has no prior, so
/// its codes are drawn from a diagonal Gaussian fitted to the test set's codes. Writes grid.png and samples.npy
/// (float32, [N, 1, 28, 28], values in [0, 1]).
pub fn sample(
    gpu: &Gpu,
    path: &Path,
    n: usize,
    seed: u64,
    out: Option<&Path>,
) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    run.require(
        &[ModelKind::Vae, ModelKind::Ae, ModelKind::Gan, ModelKind::Wae],
        "sample",
    )?;
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    let dim = latent_dim(run.model);
    let normals = train::gpu_normals(gpu, n * dim, seed, SAMPLE_STREAM)?;
    let codes: Vec<f32> = match run.model {
        ModelKind::Ae => {
            let test = run.test_set()?;
            let fitted = encode(gpu, &run, &test_images(&test, test.len()))?;
            let (mean, std) = diagonal_gaussian(&fitted, dim);
            normals
                .iter()
                .enumerate()
                .map(|(i, e)| mean[i % dim] + std[i % dim] * e)
                .collect()
        }
        _ => normals,
    };
    let images = decode(gpu, &run, &codes)?;
    let dir = out_dir(&run, out)?;
    run::save_png(
        &dir.join("grid.png"),
        &run::image_grid(&images, [n, 1, 28, 28], 8.max((n as f64).sqrt().ceil() as usize)),
    )?;
    run::save_npy(&dir.join("samples.npy"), &images, &[n, 1, 28, 28])?;
    Ok(json!({ "grid": dir.join("grid.png"), "samples": dir.join("samples.npy"), "n": n }))
}

fn diagonal_gaussian(codes: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (codes.len() / dim).max(1) as f64;
    let mut mean = vec![0.0f64; dim];
    let mut square = vec![0.0f64; dim];
    for row in codes.chunks(dim) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64 / count;
            square[j] += (v as f64).powi(2) / count;
        }
    }
    let std = mean
        .iter()
        .zip(&square)
        .map(|(m, s)| (s - m * m).max(0.0).sqrt() as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// `latent reconstruct`: test images (odd rows) above their reconstructions (even rows): reconstruct.png.
pub fn reconstruct(gpu: &Gpu, path: &Path, n: usize, out: Option<&Path>) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    run.require(&[ModelKind::Vae, ModelKind::Ae, ModelKind::Wae], "reconstruct")?;
    let test = run.test_set()?;
    let images = test_images(&test, n.max(1));
    let reconstructions = decode(gpu, &run, &encode(gpu, &run, &images)?)?;
    let dir = out_dir(&run, out)?;
    let file = dir.join("reconstruct.png");
    run::save_png(&file, &train::pairs_grid(&images, &reconstructions, images.len() / 784))?;
    Ok(json!({ "image": file, "n": images.len() / 784 }))
}

/// `latent interpolate`: for `pairs` pairs of test images, `steps` decoded points on the straight line between
/// their latent codes, one row per pair with the two originals at its ends: interpolate.png.
pub fn interpolate(
    gpu: &Gpu,
    path: &Path,
    pairs: usize,
    steps: usize,
    out: Option<&Path>,
) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    run.require(
        &[ModelKind::Vae, ModelKind::Ae, ModelKind::Gan, ModelKind::Wae],
        "interpolate",
    )?;
    let steps = steps.max(2);
    if run.model == ModelKind::Gan {
        return interpolate_prior(gpu, &run, pairs.max(1), steps, out);
    }
    let test = run.test_set()?;
    let images = test_images(&test, 2 * pairs.max(1));
    let pairs = images.len() / 784 / 2;
    let codes = encode(gpu, &run, &images)?;
    let dim = latent_dim(run.model);
    let mut walk = Vec::new();
    for p in 0..pairs {
        let (a, b) = (
            &codes[2 * p * dim..(2 * p + 1) * dim],
            &codes[(2 * p + 1) * dim..(2 * p + 2) * dim],
        );
        for s in 0..steps {
            let t = s as f32 / (steps - 1) as f32;
            walk.extend(a.iter().zip(b).map(|(x, y)| (1.0 - t) * x + t * y));
        }
    }
    let decoded = decode(gpu, &run, &walk)?;
    let mut rows = Vec::new();
    for p in 0..pairs {
        rows.extend_from_slice(&images[2 * p * 784..(2 * p + 1) * 784]);
        rows.extend_from_slice(&decoded[p * steps * 784..(p + 1) * steps * 784]);
        rows.extend_from_slice(&images[(2 * p + 1) * 784..(2 * p + 2) * 784]);
    }
    let dir = out_dir(&run, out)?;
    let file = dir.join("interpolate.png");
    run::save_png(
        &file,
        &run::image_grid(&rows, [pairs * (steps + 2), 1, 28, 28], steps + 2),
    )?;
    Ok(json!({ "image": file, "pairs": pairs, "steps": steps }))
}

/// A model without an encoder (the GAN): `pairs` rows, each `steps` images decoded on the straight line between
/// two random codes z ~ N(0, I): interpolate.png.
fn interpolate_prior(
    gpu: &Gpu,
    run: &LoadedRun,
    pairs: usize,
    steps: usize,
    out: Option<&Path>,
) -> Result<serde_json::Value, TrainError> {
    let dim = latent_dim(run.model);
    let ends = train::gpu_normals(gpu, 2 * pairs * dim, run.config.seed, SAMPLE_STREAM + 2)?;
    let mut walk = Vec::with_capacity(pairs * steps * dim);
    for pair in ends.chunks(2 * dim) {
        let (a, b) = pair.split_at(dim);
        for s in 0..steps {
            let t = s as f32 / (steps - 1) as f32;
            walk.extend(a.iter().zip(b).map(|(x, y)| (1.0 - t) * x + t * y));
        }
    }
    let decoded = decode(gpu, run, &walk)?;
    let dir = out_dir(run, out)?;
    let file = dir.join("interpolate.png");
    run::save_png(&file, &run::image_grid(&decoded, [pairs * steps, 1, 28, 28], steps))?;
    Ok(json!({ "image": file, "pairs": pairs, "steps": steps }))
}

/// `n` generated images (N, 784) in [0, 1] from a run of a model that generates (vae, gan, wae: the decoder on
/// prior codes; ddpm: its DDIM sampler): what FID and the sliced Wasserstein distance measure.
pub fn generated_images(gpu: &Gpu, run: &LoadedRun, n: usize, seed: u64) -> Result<Vec<f32>, TrainError> {
    match run.model {
        ModelKind::Vae | ModelKind::Gan | ModelKind::Wae => {
            let codes = train::gpu_normals(gpu, n * latent_dim(run.model), seed, SAMPLE_STREAM + 3)?;
            decode(gpu, run, &codes)
        }
        ModelKind::Ddpm => crate::ddpm::generate_images(gpu, run, n, crate::ddpm::Sampler::Ddim, 50),
        other => Err(TrainError::Config(format!(
            "{other} runs do not generate images for FID"
        ))),
    }
}

/// `latent eval`: the model's metrics on the whole test set (without FID).
pub fn evaluate(gpu: &Gpu, path: &Path, iwae_k: usize) -> Result<serde_json::Value, TrainError> {
    evaluate_with(gpu, path, iwae_k, &crate::gan::FidOptions::default())
}

/// `latent eval`: the model's metrics on the whole test set, and for models that generate, FID of `fid.n`
/// samples with its floor.
pub fn evaluate_with(
    gpu: &Gpu,
    path: &Path,
    iwae_k: usize,
    fid: &crate::gan::FidOptions,
) -> Result<serde_json::Value, TrainError> {
    let run = LoadedRun::open(path)?;
    if run.model == ModelKind::Gan {
        return crate::gan::evaluate(gpu, &run, fid);
    }
    if run.model == ModelKind::Ddpm {
        let mut report = crate::ddpm::evaluate(gpu, &run)?;
        if fid.n > 0 {
            // DDIM with 50 steps from the EMA weights, as the per-epoch grids.
            let samples = generated_images(gpu, &run, fid.n, run.config.seed)?;
            let splits = train::load_data(run.config.data.as_ref())?;
            crate::gan::add_fid(gpu, &mut report, &samples, &splits, &run, fid)?;
        }
        return Ok(report);
    }
    if run.model == ModelKind::Wae {
        return crate::wae::evaluate(gpu, &run, fid);
    }
    let test = run.test_set()?;
    let batch = run.config.batch;
    let tg = train::train_graph(run.model, batch)?;
    let (plan, _store) = run.forward_plan(gpu, &tg.graph, "eval")?;
    let metrics = train::evaluate(gpu, &plan, &tg, &test, batch, run.model.range())?;
    let mut report = json!({
        "run": run.dir.path,
        "model": run.model.name(),
        "step": run.checkpoint.meta::<u64>("step").ok(),
        "adapter": gpu.describe(),
        "test_images": test.len(),
    });
    let dims = (test.shape().numel()) as f64;
    match run.model {
        ModelKind::Vae => {
            let nelbo = metrics["loss"].as_f64().unwrap_or(f64::NAN);
            report["negative_elbo_nats"] = json!(nelbo);
            report["negative_elbo_bits_per_dim"] = json!(nelbo / (dims * std::f64::consts::LN_2));
            report["reconstruction_nats"] = metrics["bce"].clone();
            report["kl_nats"] = metrics["kl"].clone();
            if iwae_k > 0 {
                let nll = iwae(gpu, &run, &test, iwae_k)?;
                report["iwae_k"] = json!(iwae_k);
                report["iwae_nll_nats"] = json!(nll);
                report["iwae_nll_bits_per_dim"] = json!(nll / (dims * std::f64::consts::LN_2));
            }
            if fid.n > 0 {
                let samples = generated_images(gpu, &run, fid.n, run.config.seed)?;
                let splits = train::load_data(run.config.data.as_ref())?;
                crate::gan::add_fid(gpu, &mut report, &samples, &splits, &run, fid)?;
            }
        }
        ModelKind::Ae => {
            report["bce_nats"] = metrics["bce"].clone();
        }
        ModelKind::Gan | ModelKind::Ddpm | ModelKind::Wae => unreachable!("evaluated above"),
        ModelKind::Classifier => {
            report["cross_entropy"] = metrics["cross_entropy"].clone();
            report["accuracy"] = metrics["accuracy"].clone();
        }
    }
    Ok(report)
}

/// The importance-weighted bound (Burda et al. 2016) on the test negative log-likelihood, nats per image:
/// -log p(x) ≈ -log (1/k) Σ_j p(x | z_j) p(z_j) / q(z_j | x), z_j ~ q(z | x) = N(mu, exp(logvar)).
/// The encoder and decoder run on the GPU; z and the Gaussian log-densities are computed on the host in f64.
fn iwae(gpu: &Gpu, run: &LoadedRun, test: &Dataset, k: usize) -> Result<f64, TrainError> {
    let dim = models::vae::LATENT;
    let images = test_images(test, test.len());
    // Posterior parameters of every test image.
    let batch = 64;
    let (graph, x, mu, logvar) = encoder_graph(ModelKind::Vae, batch)?;
    let logvar = logvar.expect("the vae encoder has a logvar head");
    let (plan, _store) = run.forward_plan(gpu, &graph, "iwae encode")?;
    let mus = run_batched(gpu, &plan, x, mu, &images, 784, batch)?;
    let logvars = run_batched(gpu, &plan, x, logvar, &images, 784, batch)?;

    // The decoder and BCE on k codes of one image at a time: per-sample BCE = -log p(x | z_j).
    let mut g = Graph::new();
    let z = g.input("z", &[k, dim]);
    let target = g.input("x", &[k, 784]);
    let logits = models::vae::decode(&mut g, z)?;
    let bce = g.bce_with_logits(logits, target)?;
    let (decoder, _store) = run.forward_plan(gpu, &g, "iwae decode")?;

    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let mut total = 0.0;
    let mut repeated = vec![0.0f32; k * 784];
    for i in 0..test.len() {
        let eps = cpu::rng::normal(Draw::new(run.config.seed, i as u64, SAMPLE_STREAM + 1), k * dim);
        let (m, lv) = (&mus[i * dim..(i + 1) * dim], &logvars[i * dim..(i + 1) * dim]);
        let mut codes = vec![0.0f32; k * dim];
        let mut log_weights = vec![0.0f64; k];
        for j in 0..k {
            let mut log_prior = 0.0;
            let mut log_posterior = 0.0;
            for d in 0..dim {
                let (mean, log_variance, e) = (m[d] as f64, lv[d] as f64, eps[j * dim + d]);
                let zj = mean + (0.5 * log_variance).exp() * e;
                codes[j * dim + d] = zj as f32;
                log_prior += -0.5 * (ln_2pi + zj * zj);
                log_posterior += -0.5 * (ln_2pi + log_variance + e * e);
            }
            log_weights[j] = log_prior - log_posterior;
        }
        for j in 0..k {
            repeated[j * 784..(j + 1) * 784].copy_from_slice(&images[i * 784..(i + 1) * 784]);
        }
        decoder.write_input(gpu, z, &codes)?;
        decoder.write_input(gpu, target, &repeated)?;
        decoder.run(gpu, 0);
        let reconstruction = decoder.read_per_sample(gpu, bce)?;
        for j in 0..k {
            log_weights[j] -= reconstruction[j] as f64;
        }
        let max = log_weights.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_mean = max + (log_weights.iter().map(|w| (w - max).exp()).sum::<f64>() / k as f64).ln();
        total -= log_mean;
    }
    Ok(total / test.len() as f64)
}
