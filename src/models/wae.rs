//! `wae`: the Wasserstein autoencoder (Tolstikhin et al. 2018) on the ae's encoder and decoder, data in [0, 1].
//!
//! ```text
//! enc.0 ... enc.5   the ae's encoder with an 8-dimensional code z = Q(x)
//! dec.0 ... dec.5   the ae's decoder, x̂ = sigmoid(logits)
//! cost = |x - x̂|² summed over the 784 pixels (C·H·W on other images, as the ae adapts), mean over the batch
//! prior N(0, I_8); the latent regulariser (--regularizer) pulls the codes' distribution Q_Z towards it:
//!   mmd          loss = cost + λ MMD(Q_Z, P_Z), λ = 10, the inverse multiquadratic kernel with C = 2 · 8 · 1,
//!                summed over the scales sC, s in {0.1, ..., 10}, as the authors' code does (WAE-MMD,
//!                Algorithm 2 of the paper); prior samples drawn on the GPU every step
//!   adversarial  a latent discriminator D, an MLP 8 -> 512 -> 512 -> 1 with ReLU (the adversarial
//!                autoencoder of Makhzani et al. 2016, whose MNIST nets are two layers of 1000 units; 512 keeps a
//!                step cheap), two plans per step as the GAN's:
//!                D step:  BCE(D(p), 1) + BCE(D(z), 0), p ~ N(0, I), z = Q(x) held fixed; updates disc.*
//!                AE step: cost + λ BCE(D(z), 1) (non-saturating); λ = 1, the adversarial autoencoder's plain sum;
//!                         updates enc.* and dec.*
//! Adam lr 1e-3, betas (0.5, 0.999), for every net.
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cpu;
use crate::data::{ImageShape, PixelRange};
use crate::error::TrainError;
use crate::generate::{self, gpu_normals, Codec, LoadedRun, Prior};
use crate::gpu::Gpu;
use crate::graph::{Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::kernels::mmd::imq_scale;
use crate::models::ae;
use crate::optim::Optimizer;
use crate::plan::{self};
use crate::recipe::{
    evaluate_run, train_options, Defaults, EvalOptions, Flag, LossTraining, ModelOptions, Recipe, TrainGraph, Training,
};
use crate::run::RunConfig;

/// z (8)
pub const LATENT: usize = 8;
/// λ of the MMD term.
pub const MMD_WEIGHT: f32 = 10.0;
/// Width of the latent discriminator's two hidden layers.
pub const DISCRIMINATOR_WIDTH: usize = 512;
/// Adam's learning rate and betas.
pub const LEARNING_RATE: f64 = 1e-3;
pub const BETAS: (f64, f64) = (0.5, 0.999);
/// The random stream of the training prior samples (shared by both plans of an adversarial step).
pub const PRIOR_STREAM: u32 = 0;
/// Parameter name prefixes: the autoencoder and the latent discriminator.
pub const AUTOENCODER: [&str; 2] = ["enc.", "dec."];
pub const DISCRIMINATOR: &str = "disc.";

/// How the codes are pulled towards the prior.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regularizer {
    /// Maximum mean discrepancy (WAE-MMD).
    #[default]
    Mmd,
    /// A latent discriminator (WAE-GAN, the adversarial autoencoder).
    Adversarial,
}

impl Regularizer {
    pub const ALL: [Regularizer; 2] = [Self::Mmd, Self::Adversarial];

    pub fn name(self) -> &'static str {
        match self {
            Self::Mmd => "mmd",
            Self::Adversarial => "adversarial",
        }
    }
}

impl fmt::Display for Regularizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Regularizer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown regularizer {s:?}: choose mmd or adversarial"))
    }
}

/// The wae's part of a run's config.json.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaeConfig {
    pub regularizer: Regularizer,
}

/// Adam with the wae's betas.
pub fn optimizer(lr: f64) -> Optimizer {
    Optimizer::adam_betas(lr, BETAS.0, BETAS.1)
}

/// D: codes (N, 8) -> logits (N, 1) of "drawn from the prior".
pub fn discriminator(g: &mut Graph, z: TensorId) -> Result<TensorId, GraphError> {
    let h = g.linear("disc.0", z, DISCRIMINATOR_WIDTH)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.linear("disc.2", h, DISCRIMINATOR_WIDTH)?;
    let h = g.activation(Activation::Relu, h);
    g.linear("disc.4", h, 1)
}

/// The autoencoder's objective: the reconstruction cost and the regulariser's term.
pub struct Objective {
    pub graph: Graph,
    /// (N, C, H, W) in [0, 1]
    pub x: TensorId,
    /// Q(x) (N, 8)
    pub z: TensorId,
    /// x̂ = sigmoid(decoder(z)) (N, C, H, W)
    pub reconstruction_images: TensorId,
    /// |x - x̂|² per image, mean over the batch.
    pub reconstruction: TensorId,
    /// λ MMD (mmd) or BCE(D(z), 1) (adversarial).
    pub regularizer: TensorId,
}

/// The autoencoder's step: cost + the regulariser's term for the encoder.
pub fn objective(batch: usize, image: ImageShape, regularizer: Regularizer) -> Result<Objective, GraphError> {
    crate::models::check_multiple(image, 4, "wae")?;
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let z = ae::encode_to(&mut g, x, LATENT)?;
    let logits = ae::decode(&mut g, z, image)?;
    let reconstruction_images = g.activation(Activation::Sigmoid, logits);
    let reconstruction = g.squared_error(reconstruction_images, x)?;
    let term = match regularizer {
        Regularizer::Mmd => {
            let prior = g.normal_noise("prior", &[batch, LATENT], PRIOR_STREAM);
            g.mmd(z, prior, MMD_WEIGHT)?
        }
        Regularizer::Adversarial => {
            let logits = discriminator(&mut g, z)?;
            g.bce_with_logits_constant("adversarial", logits, 1.0)
        }
    };
    Ok(Objective {
        graph: g,
        x,
        z,
        reconstruction_images,
        reconstruction,
        regularizer: term,
    })
}

/// The latent discriminator's step (adversarial only; train it with `update_prefixes = [DISCRIMINATOR]`).
pub struct DiscriminatorStep {
    pub graph: Graph,
    pub x: TensorId,
    /// BCE(D(p), 1) and BCE(D(Q(x)), 0), batch means; the D loss is their sum.
    pub prior_loss: TensorId,
    pub code_loss: TensorId,
}

/// D loss = BCE-with-logits(D(p), 1) + BCE-with-logits(D(Q(x)), 0), p ~ N(0, I_8).
pub fn discriminator_step(batch: usize, image: ImageShape) -> Result<DiscriminatorStep, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let z = ae::encode_to(&mut g, x, LATENT)?;
    let prior = g.normal_noise("prior", &[batch, LATENT], PRIOR_STREAM);
    let prior_logits = discriminator(&mut g, prior)?;
    let code_logits = discriminator(&mut g, z)?;
    let prior_loss = g.bce_with_logits_constant("d_prior", prior_logits, 1.0);
    let code_loss = g.bce_with_logits_constant("d_codes", code_logits, 0.0);
    Ok(DiscriminatorStep {
        graph: g,
        x,
        prior_loss,
        code_loss,
    })
}

/// Decoding alone: z (N, 8) -> images (N, C, H, W) in [0, 1].
pub fn sampler(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let logits = ae::decode(&mut g, z, image)?;
    let images = g.activation(Activation::Sigmoid, logits);
    Ok((g, z, images))
}

/// The autoencoder step's graph with `regularizer`: the reconstruction cost and the regulariser's term (λ MMD, or
/// the encoder's adversarial loss).
pub fn train_graph(batch: usize, image: ImageShape, regularizer: Regularizer) -> Result<TrainGraph, GraphError> {
    let o = objective(batch, image, regularizer)?;
    Ok(TrainGraph::new(
        o.graph,
        o.x,
        vec![
            ("reconstruction", o.reconstruction),
            (regularizer.name(), o.regularizer),
        ],
    ))
}

/// The random stream of the prior samples the test MMD compares the codes with.
const EVAL_STREAM: u32 = 2101;
/// The test MMD is the mean of the unbiased estimate over blocks of this many codes (and as many prior samples).
pub const MMD_BLOCK: usize = 1000;

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

/// The adversarial wae's epoch metrics: D plan [d_prior, d_codes], AE plan [reconstruction, adversarial].
fn adversarial_metrics(sums: &[Vec<f32>], steps: u64) -> Map<String, Value> {
    let mean = |sum: f32| sum as f64 / steps as f64;
    let (d, ae) = (&sums[0], &sums[1]);
    let metrics = json!({
        "reconstruction": mean(ae[0]),
        "adversarial": mean(ae[1]),
        "loss": mean(ae[0]) + mean(ae[1]),
        "d_loss": mean(d[0]) + mean(d[1]),
        "d_prior": mean(d[0]),
        "d_codes": mean(d[1]),
    });
    metrics.as_object().cloned().unwrap_or_default()
}

fn adversarial_summary(record: &Value) -> String {
    format!(
        "cost {:.4}, adversarial {:.4}, D loss {:.4}, test cost {:.4}",
        record["train"]["reconstruction"].as_f64().unwrap_or(f64::NAN),
        record["train"]["adversarial"].as_f64().unwrap_or(f64::NAN),
        record["train"]["d_loss"].as_f64().unwrap_or(f64::NAN),
        record["test"]["reconstruction"].as_f64().unwrap_or(f64::NAN),
    )
}

/// The wae of models.md's section: 20 epochs, batch 128, Adam 1e-3 with betas (0.5, 0.999).
pub struct Wae;

const FLAGS: [Flag; 1] = [Flag {
    name: "regularizer",
    value: "mmd|adversarial",
    help: "the latent regulariser, `mmd` (maximum mean discrepancy, the default) or `adversarial` (a latent \
           discriminator)",
}];

/// The regulariser a wae run was trained with (mmd for a config.json without one).
pub fn regularizer(config: &RunConfig) -> Result<Regularizer, TrainError> {
    Ok(config.model_config::<WaeConfig>()?.regularizer)
}

impl Recipe for Wae {
    fn name(&self) -> &'static str {
        "wae"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 20,
            batch: 128,
            lr: LEARNING_RATE,
            range: PixelRange::ZeroToOne,
        }
    }

    fn flags(&self) -> &'static [Flag] {
        &FLAGS
    }

    fn configure(&self, options: &ModelOptions) -> Result<Option<Value>, TrainError> {
        let regularizer = options.get("regularizer")?.unwrap_or_default();
        Ok(Some(json!(WaeConfig { regularizer })))
    }

    fn check_resume(&self, options: &ModelOptions, config: &RunConfig) -> Result<(), TrainError> {
        let saved = regularizer(config)?;
        match options.get::<Regularizer>("regularizer")? {
            Some(asked) if asked != saved => Err(TrainError::Config(format!(
                "this run was trained with --regularizer {saved}; resume it without --regularizer, or start a new run"
            ))),
            _ => Ok(()),
        }
    }

    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError> {
        train_graph(batch, image, Regularizer::Mmd)
    }

    fn check(&self, gpu: &Gpu, config: &RunConfig) -> Result<(), TrainError> {
        if config.batch < 2 {
            return Err(TrainError::Config(
                "the wae's regulariser compares codes within a batch: --batch must be at least 2".into(),
            ));
        }
        let tg = train_graph(config.batch, config.image, regularizer(config)?)?;
        plan::check_batch_fits(gpu, &tg.graph, config.batch)?;
        Ok(())
    }

    fn codec(&self) -> Option<Codec> {
        Some(Codec {
            encoder: Some(|batch, image| ae::encoder_graph(batch, image, LATENT)),
            decoder: sampler,
            output_range: PixelRange::ZeroToOne,
            prior: Prior::Normal,
        })
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, _: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let (batch, seed) = (config.batch, config.seed);
        let regularizer = regularizer(config)?;
        let tg = train_graph(batch, config.image, regularizer)?;
        if regularizer == Regularizer::Mmd {
            let training = LossTraining::compile(gpu, "wae", tg, optimizer(config.lr), &[], config)?;
            let training = training.with_samples(gpu, sampler(64, config.image)?, "wae preview", seed)?;
            return Ok(Box::new(training.with_description("regularizer mmd")));
        }
        // The latent discriminator's step (updates `disc.*`), then the autoencoder's (cost + BCE(D(z), 1) through
        // the updated D; updates `enc.*` and `dec.*`), on the same batch and the same prior samples.
        let d_step = discriminator_step(batch, config.image)?;
        let d_options = train_options("wae D step", optimizer(config.lr), &[DISCRIMINATOR], seed);
        let training = LossTraining::compile(gpu, "wae AE step", tg, optimizer(config.lr), &AUTOENCODER, config)?
            .after_critic(gpu, &d_step.graph, d_step.x, vec!["d_prior", "d_codes"], &d_options)?
            .with_samples(gpu, sampler(64, config.image)?, "wae preview", seed)?
            .with_description("regularizer adversarial")
            .with_reports(adversarial_metrics, adversarial_summary);
        Ok(Box::new(training))
    }

    /// The test reconstruction cost and regulariser term (as in training), and the MMD between the test set's
    /// codes and as many prior samples.
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, _: &EvalOptions) -> Result<Value, TrainError> {
        let regularizer = regularizer(&run.config)?;
        let tg = train_graph(run.config.batch.max(2), run.config.image, regularizer)?;
        let (mut report, metrics, test) = evaluate_run(gpu, run, &tg, PixelRange::ZeroToOne)?;
        let images = generate::test_images(&test, test.len());
        let codes = generate::encode(gpu, run, &self.codec().expect("a codec"), &images)?;
        let prior = gpu_normals(gpu, codes.len(), run.config.seed, EVAL_STREAM)?;
        report["regularizer"] = json!(regularizer.name());
        report["reconstruction_l2"] = metrics["reconstruction"].clone();
        report["test_mmd"] = json!(block_mmd(&codes, &prior, LATENT));
        report["mmd_block"] = json!(MMD_BLOCK.min(test.len()));
        match regularizer {
            Regularizer::Mmd => report["lambda_mmd_batch"] = metrics["mmd"].clone(),
            Regularizer::Adversarial => report["adversarial"] = metrics["adversarial"].clone(),
        }
        Ok(report)
    }
}
