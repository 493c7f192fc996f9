//! `classifier`: the feature network for FID, data in [0, 1].
//!
//! ```text
//! c1 Conv2d(1, 32, k3, s1, p1), ReLU, MaxPool 2     28 -> 14
//! c2 Conv2d(32, 64, k3, s1, p1), ReLU, MaxPool 2    14 -> 7, Flatten (3136)
//! f1 Linear(3136, 128), ReLU                        features for FID (128)
//! f2 Linear(128, 10)                                logits; loss cross-entropy
//! ```
//! On (C, H, W) images (H, W multiples of 4) c1 takes C channels and f1 takes 64 H W / 16 inputs.

use serde_json::Value;

use crate::data::{ImageShape, PixelRange};
use crate::error::TrainError;
use crate::generate::LoadedRun;
use crate::gpu::Gpu;
use crate::graph::{ConvGeometry, Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::optim::Optimizer;
use crate::recipe::{evaluate_run, Defaults, EvalOptions, LossTraining, ModelOptions, Recipe, TrainGraph, Training};
use crate::run::RunConfig;

pub const FEATURES: usize = 128;
pub const CLASSES: usize = 10;
const SAME: ConvGeometry = ConvGeometry {
    kernel: 3,
    stride: 1,
    padding: 1,
};

/// x (N, C, H, W) -> (features (N, 128), logits (N, 10)).
pub fn forward(g: &mut Graph, x: TensorId) -> Result<(TensorId, TensorId), GraphError> {
    let [batch, _, height, width] = g.shape(x)[..] else {
        return Err(crate::models::not_an_image_batch("c1", g.shape(x)));
    };
    let h = g.conv2d("c1", x, 32, SAME)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.max_pool2(h)?;
    let h = g.conv2d("c2", h, 64, SAME)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.max_pool2(h)?;
    let h = g.reshape(h, &[batch, 64 * (height / 4) * (width / 4)])?;
    let h = g.linear("f1", h, FEATURES)?;
    let features = g.activation(Activation::Relu, h);
    let logits = g.linear("f2", features, CLASSES)?;
    Ok((features, logits))
}

pub struct Objective {
    pub graph: Graph,
    pub x: TensorId,
    pub labels: TensorId,
    pub features: TensorId,
    pub logits: TensorId,
    pub loss: TensorId,
}

pub fn objective(batch: usize, image: ImageShape) -> Result<Objective, GraphError> {
    crate::models::check_multiple(image, 4, "classifier")?;
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let labels = g.integer_input("labels", &[batch]);
    let (features, logits) = forward(&mut g, x)?;
    let loss = g.cross_entropy(logits, labels)?;
    Ok(Objective {
        graph: g,
        x,
        labels,
        features,
        logits,
        loss,
    })
}

/// The recipe of models.md: 10 epochs, batch 128, Adam 1e-3.
pub struct Classifier;

impl Recipe for Classifier {
    fn name(&self) -> &'static str {
        "classifier"
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
        let o = objective(batch, image)?;
        Ok(TrainGraph {
            labels: Some(o.labels),
            class_logits: Some(o.logits),
            ..TrainGraph::new(o.graph, o.x, vec![("cross_entropy", o.loss)])
        })
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, _: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let tg = self.train_graph(config.batch, config.image)?;
        let optimizer = Optimizer::adam(config.lr);
        Ok(Box::new(LossTraining::compile(
            gpu,
            "classifier",
            tg,
            optimizer,
            &[],
            config,
        )?))
    }

    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, _: &EvalOptions) -> Result<Value, TrainError> {
        let tg = self.train_graph(run.config.batch, run.config.image)?;
        let (mut report, metrics, _) = evaluate_run(gpu, run, &tg, PixelRange::ZeroToOne)?;
        report["cross_entropy"] = metrics["cross_entropy"].clone();
        report["accuracy"] = metrics["accuracy"].clone();
        Ok(report)
    }
}
