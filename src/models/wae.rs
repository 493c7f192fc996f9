//! `wae`: the Wasserstein autoencoder (Tolstikhin et al. 2018) on the ae's encoder and decoder, data in [0, 1].
//!
//! ```text
//! enc.0 ... enc.5   the ae's encoder with an 8-dimensional code z = Q(x)
//! dec.0 ... dec.5   the ae's decoder, x̂ = sigmoid(logits)
//! cost = |x - x̂|² summed over the 784 pixels, mean over the batch
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

use crate::graph::{Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::models::ae;
use crate::optim::Optimizer;

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
    /// (N, 1, 28, 28) in [0, 1]
    pub x: TensorId,
    /// Q(x) (N, 8)
    pub z: TensorId,
    /// x̂ = sigmoid(decoder(z)) (N, 1, 28, 28)
    pub reconstruction_images: TensorId,
    /// |x - x̂|² per image, mean over the batch.
    pub reconstruction: TensorId,
    /// λ MMD (mmd) or BCE(D(z), 1) (adversarial).
    pub regularizer: TensorId,
}

/// The autoencoder's step: cost + the regulariser's term for the encoder.
pub fn objective(batch: usize, regularizer: Regularizer) -> Result<Objective, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 1, 28, 28]);
    let z = ae::encode_to(&mut g, x, LATENT)?;
    let logits = ae::decode(&mut g, z)?;
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
pub fn discriminator_step(batch: usize) -> Result<DiscriminatorStep, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 1, 28, 28]);
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

/// Decoding alone: z (N, 8) -> images (N, 1, 28, 28) in [0, 1].
pub fn sampler(batch: usize) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let logits = ae::decode(&mut g, z)?;
    let images = g.activation(Activation::Sigmoid, logits);
    Ok((g, z, images))
}
