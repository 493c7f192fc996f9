//! `gan`: DCGAN for 28x28 (Radford et al. 2016), data scaled to [-1, 1].
//!
//! ```text
//! generator.fc      Linear(64, 6272), reshape (128, 7, 7)
//! generator.net.0   BatchNorm2d(128), ReLU
//! generator.net.2   ConvTranspose2d(128, 64, k4, s2, p1)   7 -> 14
//! generator.net.3   BatchNorm2d(64), ReLU
//! generator.net.5   ConvTranspose2d(64, 1, k4, s2, p1)     14 -> 28, tanh
//! discriminator.net.0  Conv2d(1, 64, k4, s2, p1), LeakyReLU(0.2)      28 -> 14
//! discriminator.net.2  Conv2d(64, 128, k4, s2, p1)                    14 -> 7
//! discriminator.net.3  BatchNorm2d(128), LeakyReLU(0.2), Flatten (6272)
//! discriminator.net.6  Linear(6272, 1) -> logit
//! ```
//! One step is two plans over one parameter store, run in this order:
//! - the discriminator step: z ~ N(0, I), fake = G(z) (no gradient reaches G: its parameters are not trained by
//!   this plan, so nothing upstream of `fake` needs one), D loss = BCE(D(x), 1) + BCE(D(fake), 0), update D;
//! - the generator step: the same z (same seed, step and stream), fake = G(z) again with batch statistics but
//!   without a second update of G's running statistics, G loss = BCE(D(fake), 1) through the updated D, update G.

use crate::graph::{ConvGeometry, Graph, GraphError, NormMode, TensorId};
use crate::kernels::activation::Activation;

/// z (64)
pub const LATENT: usize = 64;
/// The random stream of the training noise z (shared by both plans of a step).
pub const NOISE_STREAM: u32 = 0;
/// Parameter name prefixes of the two networks (`TrainOptions::update_prefixes`).
pub const GENERATOR: &str = "generator.";
pub const DISCRIMINATOR: &str = "discriminator.";
/// LeakyReLU slope of the discriminator.
const SLOPE: f32 = 0.2;
const UP_DOWN: ConvGeometry = ConvGeometry {
    kernel: 4,
    stride: 2,
    padding: 1,
};

/// G: z (N, 64) -> image (N, 1, 28, 28) in [-1, 1] (tanh).
pub fn generator(g: &mut Graph, z: TensorId, mode: NormMode) -> Result<TensorId, GraphError> {
    let batch = g.shape(z)[0];
    let h = g.linear("generator.fc", z, 128 * 7 * 7)?;
    let h = g.reshape(h, &[batch, 128, 7, 7])?;
    let h = g.batch_norm2d("generator.net.0", h, mode)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv_transpose2d("generator.net.2", h, 64, UP_DOWN)?;
    let h = g.batch_norm2d("generator.net.3", h, mode)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv_transpose2d("generator.net.5", h, 1, UP_DOWN)?;
    Ok(g.activation(Activation::Tanh, h))
}

/// D: image (N, 1, 28, 28) in [-1, 1] -> logit (N, 1) of "real".
pub fn discriminator(g: &mut Graph, x: TensorId, mode: NormMode) -> Result<TensorId, GraphError> {
    let batch = g.shape(x)[0];
    let h = g.conv2d("discriminator.net.0", x, 64, UP_DOWN)?;
    let h = g.activation(Activation::LeakyRelu { slope: SLOPE }, h);
    let h = g.conv2d("discriminator.net.2", h, 128, UP_DOWN)?;
    let h = g.batch_norm2d("discriminator.net.3", h, mode)?;
    let h = g.activation(Activation::LeakyRelu { slope: SLOPE }, h);
    let h = g.reshape(h, &[batch, 128 * 7 * 7])?;
    g.linear("discriminator.net.6", h, 1)
}

/// The discriminator step's graph (train it with `update_prefixes = [DISCRIMINATOR]`).
pub struct DiscriminatorStep {
    pub graph: Graph,
    /// Real images (N, 1, 28, 28) in [-1, 1].
    pub x: TensorId,
    /// z (N, 64), drawn on the GPU from `NOISE_STREAM`.
    pub z: TensorId,
    /// G(z) (N, 1, 28, 28)
    pub fake: TensorId,
    /// D(x), D(G(z)): logits (N, 1)
    pub real_logits: TensorId,
    pub fake_logits: TensorId,
    /// BCE(D(x), 1) and BCE(D(G(z)), 0), batch means; the D loss is their sum.
    pub real_loss: TensorId,
    pub fake_loss: TensorId,
}

/// D loss = BCE-with-logits(D(x), 1) + BCE-with-logits(D(G(z)), 0). Both nets use batch statistics and update
/// their running statistics (D's twice: once per call, as PyTorch's two calls do).
pub fn discriminator_step(batch: usize) -> Result<DiscriminatorStep, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 1, 28, 28]);
    let z = g.normal_noise("z", &[batch, LATENT], NOISE_STREAM);
    let fake = generator(&mut g, z, NormMode::Train)?;
    let real_logits = discriminator(&mut g, x, NormMode::Train)?;
    let fake_logits = discriminator(&mut g, fake, NormMode::Train)?;
    let real_loss = g.bce_with_logits_constant("d_real", real_logits, 1.0);
    let fake_loss = g.bce_with_logits_constant("d_fake", fake_logits, 0.0);
    Ok(DiscriminatorStep {
        graph: g,
        x,
        z,
        fake,
        real_logits,
        fake_logits,
        real_loss,
        fake_loss,
    })
}

/// The generator step's graph (train it with `update_prefixes = [GENERATOR]`).
pub struct GeneratorStep {
    pub graph: Graph,
    pub z: TensorId,
    pub fake: TensorId,
    pub fake_logits: TensorId,
    /// BCE(D(G(z)), 1), the non-saturating G loss.
    pub loss: TensorId,
}

/// G loss = BCE-with-logits(D(G(z)), 1) with the same z as the discriminator step. G recomputes its forward with
/// batch statistics but leaves its running statistics alone (PyTorch computed G(z) once per step); D's call
/// updates D's running statistics, as PyTorch's third D call in training mode does.
pub fn generator_step(batch: usize) -> Result<GeneratorStep, GraphError> {
    let mut g = Graph::new();
    let z = g.normal_noise("z", &[batch, LATENT], NOISE_STREAM);
    let fake = generator(&mut g, z, NormMode::TrainNoUpdate)?;
    let fake_logits = discriminator(&mut g, fake, NormMode::Train)?;
    let loss = g.bce_with_logits_constant("g", fake_logits, 1.0);
    Ok(GeneratorStep {
        graph: g,
        z,
        fake,
        fake_logits,
        loss,
    })
}

/// Sampling: z (N, 64) given by the host -> images (N, 1, 28, 28) in [-1, 1], G in evaluation mode.
pub fn sampler(batch: usize) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let images = generator(&mut g, z, NormMode::Eval)?;
    Ok((g, z, images))
}

/// The critic alone in evaluation mode: images (N, 1, 28, 28) in [-1, 1] -> logits (N, 1).
pub fn critic(batch: usize) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 1, 28, 28]);
    let logits = discriminator(&mut g, x, NormMode::Eval)?;
    Ok((g, x, logits))
}
