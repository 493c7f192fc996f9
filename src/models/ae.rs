//! `ae`: the convolutional autoencoder, data in [0, 1].
//!
//! ```text
//! enc.0  Conv2d(1, 32, k4, s2, p1)     28 -> 14, ReLU
//! enc.2  Conv2d(32, 64, k4, s2, p1)    14 -> 7,  ReLU, Flatten (3136)
//! enc.5  Linear(3136, 16)              latent z (16)
//! dec.0  Linear(16, 3136), ReLU, Unflatten (64, 7, 7)
//! dec.3  ConvTranspose2d(64, 32, k4, s2, p1)   7 -> 14, ReLU
//! dec.5  ConvTranspose2d(32, 1, k4, s2, p1)    14 -> 28, logits
//! loss = BCE-with-logits(logits, x) summed over the 784 pixels, mean over the batch
//! ```
//! On (C, H, W) images (H, W multiples of 4) the same layers take C channels in and give C out, and the flattened
//! map is 64 x H/4 x W/4; on 1x28x28 this is the table above.

use serde_json::Value;

use crate::data::{ImageShape, PixelRange};
use crate::error::TrainError;
use crate::generate::{Codec, LoadedRun, Prior};
use crate::gpu::Gpu;
use crate::graph::{ConvGeometry, Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::optim::Optimizer;
use crate::recipe::{evaluate_run, Defaults, EvalOptions, LossTraining, ModelOptions, Recipe, TrainGraph, Training};
use crate::run::RunConfig;

pub const LATENT: usize = 16;
const DOWN: ConvGeometry = ConvGeometry {
    kernel: 4,
    stride: 2,
    padding: 1,
};

/// x (N, C, H, W) -> z (N, 16).
pub fn encode(g: &mut Graph, x: TensorId) -> Result<TensorId, GraphError> {
    encode_to(g, x, LATENT)
}

/// The encoder with a `latent`-dimensional code (the wae uses 8): x (N, C, H, W) -> z (N, latent).
pub fn encode_to(g: &mut Graph, x: TensorId, latent: usize) -> Result<TensorId, GraphError> {
    let [batch, _, height, width] = g.shape(x)[..] else {
        return Err(crate::models::not_an_image_batch("enc", g.shape(x)));
    };
    let h = g.conv2d("enc.0", x, 32, DOWN)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv2d("enc.2", h, 64, DOWN)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.reshape(h, &[batch, 64 * (height / 4) * (width / 4)])?;
    g.linear("enc.5", h, latent)
}

/// z (N, latent) -> logits (N, C, H, W) (the latent size is z's width: 16 for the ae, 8 for the wae).
pub fn decode(g: &mut Graph, z: TensorId, image: ImageShape) -> Result<TensorId, GraphError> {
    let batch = g.shape(z)[0];
    let (height, width) = (image.height / 4, image.width / 4);
    let h = g.linear("dec.0", z, 64 * height * width)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.reshape(h, &[batch, 64, height, width])?;
    let h = g.conv_transpose2d("dec.3", h, 32, DOWN)?;
    let h = g.activation(Activation::Relu, h);
    g.conv_transpose2d("dec.5", h, image.channels, DOWN)
}

pub struct Objective {
    pub graph: Graph,
    /// (N, C, H, W) in [0, 1]
    pub x: TensorId,
    pub z: TensorId,
    pub logits: TensorId,
    pub loss: TensorId,
}

pub fn objective(batch: usize, image: ImageShape) -> Result<Objective, GraphError> {
    crate::models::check_multiple(image, 4, "ae")?;
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let z = encode(&mut g, x)?;
    let logits = decode(&mut g, z, image)?;
    let loss = g.bce_with_logits(logits, x)?;
    Ok(Objective {
        graph: g,
        x,
        z,
        logits,
        loss,
    })
}

/// Decoding alone: z (N, 16) -> probabilities (N, C, H, W).
pub fn sampler(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let logits = decode(&mut g, z, image)?;
    let probabilities = g.activation(Activation::Sigmoid, logits);
    Ok((g, z, probabilities))
}

/// The recipe of models.md: 20 epochs, batch 128, Adam 1e-3.
pub struct Ae;

/// The encoder alone with a `latent`-dimensional code: x (N, C, H, W) -> z.
pub fn encoder_graph(
    batch: usize,
    image: ImageShape,
    latent: usize,
) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let z = encode_to(&mut g, x, latent)?;
    Ok((g, x, z))
}

impl Recipe for Ae {
    fn name(&self) -> &'static str {
        "ae"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 20,
            batch: 128,
            lr: 1e-3,
            range: PixelRange::ZeroToOne,
        }
    }

    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError> {
        let o = objective(batch, image)?;
        Ok(TrainGraph::new(o.graph, o.x, vec![("bce", o.loss)]))
    }

    fn codec(&self) -> Option<Codec> {
        Some(Codec {
            encoder: Some(|batch, image| encoder_graph(batch, image, LATENT)),
            decoder: sampler,
            output_range: PixelRange::ZeroToOne,
            prior: Prior::FittedToTestCodes,
        })
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, _: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let tg = self.train_graph(config.batch, config.image)?;
        let training = LossTraining::compile(gpu, "ae", tg, Optimizer::adam(config.lr), &[], config)?;
        Ok(Box::new(training.with_reconstructions()))
    }

    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, _: &EvalOptions) -> Result<Value, TrainError> {
        let tg = self.train_graph(run.config.batch, run.config.image)?;
        let (mut report, metrics, _) = evaluate_run(gpu, run, &tg, PixelRange::ZeroToOne)?;
        report["bce_nats"] = metrics["bce"].clone();
        Ok(report)
    }
}
