//! `ae-kl`: the ldm's first stage, a convolutional autoencoder with a spatial latent (C x H/4 x W/4), lightly
//! KL-regularised (beta = 0.1) so that the latent stays smooth and near unit scale for the diffusion. Trained by
//! `latent train ldm` into the run's `autoencoder/`, or on its own with `latent train ae-kl` and given to
//! `latent train ldm --autoencoder RUN`. It reconstructs and interpolates like the ae.

use serde_json::{json, Map, Value};

use super::{decoder, encoder, latent_batch, latent_description, latent_values, KL_WEIGHT};
use crate::data::{ImageShape, PixelRange};
use crate::error::TrainError;
use crate::generate::{Codec, LoadedRun, Prior};
use crate::gpu::Gpu;
use crate::graph::{Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::optim::Optimizer;
use crate::recipe::{evaluate_run, Defaults, EvalOptions, LossTraining, ModelOptions, Recipe, TrainGraph, Training};
use crate::run::RunConfig;

/// The model name of a first stage.
pub const NAME: &str = "ae-kl";

/// The training graph: BCE summed over pixels plus beta KL, both per image.
pub fn train_graph(batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let (mu, logvar) = encoder(&mut g, "", x)?;
    let eps = g.normal_noise("eps", &latent_batch(batch, image), 0);
    let z = g.reparameterize(mu, logvar, eps)?;
    let logits = decoder(&mut g, "", z, image.channels)?;
    let bce = g.bce_with_logits(logits, x)?;
    let kl = g.weighted_gaussian_kl(mu, logvar, KL_WEIGHT)?;
    Ok(TrainGraph::new(g, x, vec![("bce", bce), ("kl", kl)]))
}

/// x (N, C·H·W) in [0, 1] -> the posterior mean, flattened (N, C'·H/4·W/4): (N, 196) for MNIST.
fn encoder_graph(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, image.numel()]);
    let images = g.reshape(x, &crate::models::batch_shape(batch, image))?;
    let (mu, _) = encoder(&mut g, "", images)?;
    let code = g.reshape(mu, &[batch, latent_values(image)])?;
    Ok((g, x, code))
}

/// z (N, C'·H/4·W/4) -> images (N, C·H·W) in [0, 1].
fn decoder_graph(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, latent_values(image)]);
    let map = g.reshape(z, &latent_batch(batch, image))?;
    let logits = decoder(&mut g, "", map, image.channels)?;
    let images = g.activation(Activation::Sigmoid, logits);
    let flat = g.reshape(images, &[batch, image.numel()])?;
    Ok((g, z, flat))
}

/// The epoch's training metrics: the BCE, the KL in nats (the plan's loss is beta KL) and the objective.
fn train_metrics(sums: &[Vec<f32>], steps: u64) -> Map<String, Value> {
    let mut metrics = Map::new();
    let (bce, weighted_kl) = (sums[0][0] as f64 / steps as f64, sums[0][1] as f64 / steps as f64);
    metrics.insert("bce".into(), json!(bce));
    metrics.insert("kl".into(), json!(weighted_kl / KL_WEIGHT as f64));
    metrics.insert("loss".into(), json!(bce + weighted_kl));
    metrics
}

fn summary(record: &Value) -> String {
    format!(
        "train bce {:.2}, kl {:.1} nats; test bce {:.2}, kl {:.1} nats",
        record["train"]["bce"].as_f64().unwrap_or(f64::NAN),
        record["train"]["kl"].as_f64().unwrap_or(f64::NAN),
        record["test"]["bce"].as_f64().unwrap_or(f64::NAN),
        record["test"]["kl"].as_f64().unwrap_or(f64::NAN),
    )
}

/// 10 epochs at batch 128, Adam 1e-3 (the ae's recipe, half its epochs).
pub struct AeKl;

impl Recipe for AeKl {
    fn name(&self) -> &'static str {
        NAME
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 10,
            batch: 128,
            lr: 1e-3,
            range: PixelRange::ZeroToOne,
        }
    }

    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError> {
        train_graph(batch, image)
    }

    fn codec(&self) -> Option<Codec> {
        Some(Codec {
            encoder: Some(encoder_graph),
            decoder: decoder_graph,
            output_range: PixelRange::ZeroToOne,
            prior: Prior::FittedToTestCodes,
        })
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, _: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let tg = train_graph(config.batch, config.image)?;
        let training = LossTraining::compile(gpu, NAME, tg, Optimizer::adam(config.lr), &[], config)?;
        Ok(Box::new(
            training
                .with_reconstructions()
                .with_description(&format!(
                    "latent {}, KL weight {KL_WEIGHT}",
                    latent_description(config.image)
                ))
                .with_reports(train_metrics, summary),
        ))
    }

    /// The test reconstruction BCE and the KL in nats (their sum bounds the negative log-likelihood as a VAE's
    /// ELBO does, though beta < 1 trains it for reconstructions).
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, _: &EvalOptions) -> Result<Value, TrainError> {
        let tg = train_graph(run.config.batch.clamp(1, 128), run.config.image)?;
        let (mut report, metrics, _) = evaluate_run(gpu, run, &tg, PixelRange::ZeroToOne)?;
        report["reconstruction_bce_nats"] = metrics["bce"].clone();
        report["kl_nats"] = metrics["kl"].clone();
        report["kl_weight"] = json!(KL_WEIGHT);
        Ok(report)
    }
}
