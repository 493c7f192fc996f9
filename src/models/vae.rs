//! `vae`: the classic 784-400-20 MLP variational autoencoder (Kingma & Welling 2014), data in [0, 1].
//!
//! ```text
//! fc1  Linear(784, 400), ReLU -> h
//! fc21 Linear(400, 20) -> mu          fc22 Linear(400, 20) -> logvar
//! z = mu + eps * exp(0.5 * logvar),   eps ~ N(0, I)
//! fc3  Linear(20, 400), ReLU
//! fc4  Linear(400, 784) -> logits
//! loss = BCE-with-logits(logits, x) summed over pixels + KL(q(z|x) || N(0, I)), mean over the batch
//! ```
//! On (C, H, W) images of any size the input and output are the C·H·W flattened values (784 on 1x28x28);
//! the hidden (400) and latent (20) widths stay.

use serde_json::{json, Value};

use crate::cpu;
use crate::data::{Dataset, ImageShape, PixelRange};
use crate::error::TrainError;
use crate::generate::{self, run_batched_outputs, Codec, LoadedRun, Prior, SAMPLE_STREAM};
use crate::gpu::Gpu;
use crate::graph::{Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::kernels::rng::Draw;
use crate::optim::Optimizer;
use crate::recipe::{evaluate_run, Defaults, EvalOptions, LossTraining, ModelOptions, Recipe, TrainGraph, Training};
use crate::run::RunConfig;

pub const HIDDEN: usize = 400;
pub const LATENT: usize = 20;

/// x (N, C·H·W) -> (mu, logvar), each (N, 20).
pub fn encode(g: &mut Graph, x: TensorId) -> Result<(TensorId, TensorId), GraphError> {
    let h = g.linear("fc1", x, HIDDEN)?;
    let h = g.activation(Activation::Relu, h);
    Ok((g.linear("fc21", h, LATENT)?, g.linear("fc22", h, LATENT)?))
}

/// z (N, 20) -> logits (N, `pixels`), `pixels` = C·H·W.
pub fn decode(g: &mut Graph, z: TensorId, pixels: usize) -> Result<TensorId, GraphError> {
    let h = g.linear("fc3", z, HIDDEN)?;
    let h = g.activation(Activation::Relu, h);
    g.linear("fc4", h, pixels)
}

/// The tensors of the training (and evaluation) graph.
pub struct Objective {
    pub graph: Graph,
    /// (N, C·H·W) in [0, 1]
    pub x: TensorId,
    pub mu: TensorId,
    pub logvar: TensorId,
    pub logits: TensorId,
    /// Reconstruction term: BCE summed over pixels, mean over the batch.
    pub reconstruction: TensorId,
    /// KL term, mean over the batch.
    pub kl: TensorId,
}

/// The negative ELBO of a batch: reconstruction + KL, with eps drawn on the GPU from random stream 0.
pub fn objective(batch: usize, image: ImageShape) -> Result<Objective, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, image.numel()]);
    let (mu, logvar) = encode(&mut g, x)?;
    let eps = g.normal_noise("eps", &[batch, LATENT], 0);
    let z = g.reparameterize(mu, logvar, eps)?;
    let logits = decode(&mut g, z, image.numel())?;
    let reconstruction = g.bce_with_logits(logits, x)?;
    let kl = g.gaussian_kl(mu, logvar)?;
    Ok(Objective {
        graph: g,
        x,
        mu,
        logvar,
        logits,
        reconstruction,
        kl,
    })
}

/// Decoding alone: z (N, 20) -> probabilities (N, C·H·W).
pub fn sampler(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let logits = decode(&mut g, z, image.numel())?;
    let probabilities = g.activation(Activation::Sigmoid, logits);
    Ok((g, z, probabilities))
}

/// The encoder alone: x (N, C·H·W) -> (mu, logvar).
fn encoder_graph(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, image.numel()]);
    let (mu, logvar) = encode(&mut g, x)?;
    Ok((g, x, mu, logvar))
}

/// The recipe of models.md: 20 epochs, batch 128, Adam 1e-3.
pub struct Vae;

impl Recipe for Vae {
    fn name(&self) -> &'static str {
        "vae"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 20,
            batch: 128,
            lr: 1e-3,
            range: PixelRange::ZeroToOne,
        }
    }

    /// A fully connected model takes any size.
    fn image_multiple(&self) -> usize {
        1
    }

    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError> {
        let o = objective(batch, image)?;
        Ok(TrainGraph::new(
            o.graph,
            o.x,
            vec![("bce", o.reconstruction), ("kl", o.kl)],
        ))
    }

    fn codec(&self) -> Option<Codec> {
        Some(Codec {
            encoder: Some(|batch, image| encoder_graph(batch, image).map(|(g, x, mu, _)| (g, x, mu))),
            decoder: sampler,
            output_range: PixelRange::ZeroToOne,
            prior: Prior::Normal,
        })
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, _: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let tg = self.train_graph(config.batch, config.image)?;
        let training = LossTraining::compile(gpu, "vae", tg, Optimizer::adam(config.lr), &[], config)?;
        Ok(Box::new(training.with_samples(
            gpu,
            sampler(64, config.image)?,
            "vae preview",
            config.seed,
        )?))
    }

    /// The test negative ELBO and its terms, and the IWAE bound with `iwae_k` samples per image.
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, options: &EvalOptions) -> Result<Value, TrainError> {
        let tg = self.train_graph(run.config.batch, run.config.image)?;
        let (mut report, metrics, test) = evaluate_run(gpu, run, &tg, PixelRange::ZeroToOne)?;
        let dims = test.shape().numel() as f64;
        let nelbo = metrics["loss"].as_f64().unwrap_or(f64::NAN);
        report["negative_elbo_nats"] = json!(nelbo);
        report["negative_elbo_bits_per_dim"] = json!(nelbo / (dims * std::f64::consts::LN_2));
        report["reconstruction_nats"] = metrics["bce"].clone();
        report["kl_nats"] = metrics["kl"].clone();
        if options.iwae_k > 0 {
            let nll = iwae(gpu, run, &test, options.iwae_k)?;
            report["iwae_k"] = json!(options.iwae_k);
            report["iwae_nll_nats"] = json!(nll);
            report["iwae_nll_bits_per_dim"] = json!(nll / (dims * std::f64::consts::LN_2));
        }
        Ok(report)
    }
}

/// The importance-weighted bound (Burda et al. 2016) on the test negative log-likelihood, nats per image:
/// -log p(x) ≈ -log (1/k) Σ_j p(x | z_j) p(z_j) / q(z_j | x), z_j ~ q(z | x) = N(mu, exp(logvar)).
/// The encoder and decoder run on the GPU; z and the Gaussian log-densities are computed on the host in f64.
fn iwae(gpu: &Gpu, run: &LoadedRun, test: &Dataset, k: usize) -> Result<f64, TrainError> {
    let dim = LATENT;
    let pixels = run.image().numel();
    let images = generate::test_images(test, test.len());
    // Posterior parameters of every test image.
    let batch = 64;
    let (graph, x, mu, logvar) = encoder_graph(batch, run.image())?;
    let (plan, _store) = run.forward_plan(gpu, &graph, "iwae encode")?;
    let posterior = run_batched_outputs(gpu, &plan, x, &[mu, logvar], &images, pixels, batch)?;
    let (mus, logvars) = (&posterior[0], &posterior[1]);

    // The decoder and BCE on k codes of one image at a time: per-sample BCE = -log p(x | z_j).
    let mut g = Graph::new();
    let z = g.input("z", &[k, dim]);
    let target = g.input("x", &[k, pixels]);
    let logits = decode(&mut g, z, pixels)?;
    let bce = g.bce_with_logits(logits, target)?;
    let (decoder, _store) = run.forward_plan(gpu, &g, "iwae decode")?;

    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let mut total = 0.0;
    let mut repeated = vec![0.0f32; k * pixels];
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
            repeated[j * pixels..(j + 1) * pixels].copy_from_slice(&images[i * pixels..(i + 1) * pixels]);
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
