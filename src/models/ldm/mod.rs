//! `ldm`: latent diffusion (Rombach et al. 2022). A first-stage autoencoder (`ae-kl`, trained once) maps a
//! C x H x W image (H and W multiples of 4; 1x28x28 in models.md) to a small spatial latent C' x H/4 x W/4; the
//! diffusion (the ddpm's schedule, q_sample, EMA and samplers) runs on that latent, scaled to unit variance;
//! sampling decodes to pixels.
//!
//! ```text
//! first stage (ae-kl), data in [0, 1]:
//!   enc.0  Conv2d(1, 32, k4, s2, p1) 28 -> 14, ReLU;  enc.2 Conv2d(32, 64, k4, s2, p1) 14 -> 7, ReLU
//!   enc.mu, enc.logvar  Conv2d(64, C, k3, p1)           -> mu, logvar (C, 7, 7)
//!   z = mu + eps exp(logvar / 2)
//!   dec.0  Conv2d(C, 64, k3, p1), ReLU;  dec.2 ConvTranspose2d(64, 32, k4, s2, p1) 7 -> 14, ReLU
//!   dec.4  ConvTranspose2d(32, 1, k4, s2, p1) 14 -> 28   -> logits
//!   (on colour images enc.0 takes 3 channels and dec.4 gives 3; other sizes scale the maps: 32x32 -> 8x8)
//!   loss = BCE-with-logits summed over pixels + beta KL(q(z|x) || N(0, I)), beta = 0.1 (lightly regularised)
//! denoiser on z0 = scale z (N, C, 7, 7), flattened to D_in = 49 C:
//!   net.te.0 Linear(64, E), SiLU; net.te.2 Linear(E, E) -> e;  conditional: e += net.ce Linear(K + 1, E)(onehot)
//!   net.in   Linear(D_in, W)
//!   block b:  h = h + b.l2(SiLU(b.l1(SiLU(b.n1(h))) + b.t(e)))   b.n1: GroupNorm(G, W), G = 1 (a LayerNorm)
//!   net.out_n GroupNorm(G, W), SiLU;  net.out Linear(W, D_in) -> eps_theta (N, C, 7, 7)
//! ```
//!
//! The latent map is 7x7 (8x8 for 32x32 images), too small for convolutions to pay on a CPU driver: the denoiser is a residual MLP
//! over the whole map (the choice and its cost are in models.md's ldm section).

pub mod first_stage;
mod recipe;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use first_stage::AeKl;
pub use recipe::{latent_mask, Ldm};

use super::ddpm::{class_input, time_embedding, ScheduleKind};
use crate::data::ImageShape;
use crate::diffusion::Denoiser;
use crate::graph::{ConvGeometry, Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;

/// Latent channels C of the first stage.
pub const LATENT_CHANNELS: usize = 4;
/// How many pixels a side of a latent cell spans: the first stage halves the image twice.
pub const DOWNSAMPLING: usize = 4;

/// The first stage's latent map of an image of shape `image`: C x H/4 x W/4 (4 x 7 x 7 for MNIST).
pub fn latent_shape(image: ImageShape) -> [usize; 3] {
    [LATENT_CHANNELS, image.height / DOWNSAMPLING, image.width / DOWNSAMPLING]
}

/// Values of one latent map, C x H/4 x W/4 (196 for MNIST).
pub fn latent_values(image: ImageShape) -> usize {
    latent_shape(image).iter().product()
}

/// The latent map of images of `image` as "C x h x w" (4x7x7 for MNIST).
pub fn latent_description(image: ImageShape) -> String {
    let [c, h, w] = latent_shape(image);
    format!("{c}x{h}x{w}")
}

/// A batch of `batch` latent maps of images of `image`: [N, C, H/4, W/4].
pub fn latent_batch(batch: usize, image: ImageShape) -> [usize; 4] {
    let [c, h, w] = latent_shape(image);
    [batch, c, h, w]
}
/// The KL weight beta of the first stage.
pub const KL_WEIGHT: f32 = 0.1;
/// Parameter names of the first stage inside an ldm run.
pub const FIRST_STAGE: &str = "first_stage.";

const DOWN4: ConvGeometry = ConvGeometry {
    kernel: 4,
    stride: 2,
    padding: 1,
};
const SAME: ConvGeometry = ConvGeometry {
    kernel: 3,
    stride: 1,
    padding: 1,
};

/// The first stage's encoder: x (N, C, H, W) in [0, 1] -> (mu, logvar), each (N, C', H/4, W/4).
pub fn encoder(g: &mut Graph, prefix: &str, x: TensorId) -> Result<(TensorId, TensorId), GraphError> {
    let h = g.conv2d(&format!("{prefix}enc.0"), x, 32, DOWN4)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv2d(&format!("{prefix}enc.2"), h, 64, DOWN4)?;
    let h = g.activation(Activation::Relu, h);
    let mu = g.conv2d(&format!("{prefix}enc.mu"), h, LATENT_CHANNELS, SAME)?;
    let logvar = g.conv2d(&format!("{prefix}enc.logvar"), h, LATENT_CHANNELS, SAME)?;
    Ok((mu, logvar))
}

/// The first stage's decoder: z (N, C', H/4, W/4) -> logits (N, `channels`, H, W).
pub fn decoder(g: &mut Graph, prefix: &str, z: TensorId, channels: usize) -> Result<TensorId, GraphError> {
    let h = g.conv2d(&format!("{prefix}dec.0"), z, 64, SAME)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv_transpose2d(&format!("{prefix}dec.2"), h, 32, DOWN4)?;
    let h = g.activation(Activation::Relu, h);
    g.conv_transpose2d(&format!("{prefix}dec.4"), h, channels, DOWN4)
}

/// The denoiser's size, the schedule and the first stage: what an ldm run saves in config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LdmConfig {
    /// Width W of the residual MLP.
    pub width: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// GroupNorm groups G (must divide W); 1 makes it a LayerNorm over the features.
    pub groups: usize,
    pub schedule: ScheduleKind,
    /// Class conditioning: the number of classes K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// The first stage's run directory; relative paths are inside the ldm's run directory.
    pub autoencoder: std::path::PathBuf,
    /// Epochs of the first stage when `latent train ldm` trains it.
    pub autoencoder_epochs: u64,
    /// Diffuse samples of the posterior z = mu + sigma eps (a fresh eps each step) instead of its mean mu.
    #[serde(default)]
    pub sample_posterior: bool,
    /// 1 / std of the first stage's latents over the training set, measured before the diffusion trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    /// Autoguidance's guide, trained before the diffusion and used when sampling unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guide: Option<GuideConfig>,
}

/// Where `latent train ldm` puts the first stage it trains.
pub const AUTOENCODER_DIR: &str = "autoencoder";
/// Where `latent train ldm` puts the guide it trains.
pub const GUIDE_DIR: &str = "guide";

/// Autoguidance's guide (Karras et al. 2024) as the unconditional ldm's recipe trains it: a smaller ldm trained
/// for fewer epochs on the same first stage, whose errors the guided estimate eps = (1 + W) eps - W eps_guide
/// pushes the samples away from (MODELS.md, ldm).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuideConfig {
    /// The guide's run directory; relative paths are inside the ldm's run directory.
    pub dir: std::path::PathBuf,
    pub width: usize,
    pub blocks: usize,
    pub epochs: u64,
    /// The guidance weight W when sampling (`--guide-weight` overrides it; 0 samples the model alone).
    pub weight: f32,
}

impl Default for GuideConfig {
    fn default() -> Self {
        Self {
            dir: GUIDE_DIR.into(),
            width: 256,
            blocks: 3,
            epochs: 60,
            weight: 0.5,
        }
    }
}

impl Default for LdmConfig {
    fn default() -> Self {
        Self {
            width: 512,
            blocks: 4,
            groups: 1,
            schedule: ScheduleKind::Linear,
            classes: None,
            autoencoder: AUTOENCODER_DIR.into(),
            autoencoder_epochs: 10,
            sample_posterior: false,
            scale: None,
            guide: None,
        }
    }
}

impl LdmConfig {
    /// Width E of the time embedding.
    pub fn time_width(&self) -> usize {
        256
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.groups == 0 || self.width % self.groups != 0 || self.width > 1 << 16 {
            return Err(format!(
                "the ldm denoiser's width {} must be a positive multiple of its GroupNorm groups {} (at most 65536)",
                self.width, self.groups
            ));
        }
        if self.blocks == 0 || self.blocks > 64 {
            return Err(format!("--blocks {}: choose 1 to 64 residual blocks", self.blocks));
        }
        if let Some(guide) = &self.guide {
            if guide.width == 0 || guide.width > 1 << 16 || guide.blocks == 0 || guide.blocks > 64 {
                return Err(format!(
                    "the guide's width {} and blocks {}: choose a width of 1 to 65536 and 1 to 64 blocks",
                    guide.width, guide.blocks
                ));
            }
            if !(guide.weight.is_finite() && guide.weight >= 0.0) {
                return Err(format!("the guide's weight {} must be 0 or more", guide.weight));
            }
        }
        if let Some(scale) = self.scale {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(format!("the latent scale {scale} must be a positive number"));
            }
        }
        Ok(())
    }
}

/// GroupNorm over the features of (N, W) rows (seen as (N, W, 1, 1)).
fn row_norm(g: &mut Graph, name: &str, h: TensorId, groups: usize) -> Result<TensorId, GraphError> {
    let [n, w] = [g.shape(h)[0], g.shape(h)[1]];
    let h4 = g.reshape(h, &[n, w, 1, 1])?;
    let y = g.group_norm(name, h4, groups)?;
    g.reshape(y, &[n, w])
}

/// eps_theta(z_t, t[, c]): z_t (N, C, h, w), t (N), the one-hot class rows -> (N, C, h, w).
pub fn denoiser_net(
    g: &mut Graph,
    config: &LdmConfig,
    z: TensorId,
    t: TensorId,
    class: Option<TensorId>,
) -> Result<TensorId, GraphError> {
    let shape = g.shape(z).to_vec();
    let n = shape[0];
    let values: usize = shape[1..].iter().product();
    let e = time_embedding(g, config.time_width(), t, class)?;
    let flat = g.reshape(z, &[n, values])?;
    let mut h = g.linear("net.in", flat, config.width)?;
    for b in 0..config.blocks {
        let name = format!("net.b{b}");
        let r = row_norm(g, &format!("{name}.n1"), h, config.groups)?;
        let r = g.activation(Activation::Silu, r);
        let r = g.linear(&format!("{name}.l1"), r, config.width)?;
        let te = g.linear(&format!("{name}.t"), e, config.width)?;
        let r = g.add(r, te)?;
        let r = g.activation(Activation::Silu, r);
        let r = g.linear(&format!("{name}.l2"), r, config.width)?;
        h = g.add(h, r)?;
    }
    let h = row_norm(g, "net.out_n", h, config.groups)?;
    let h = g.activation(Activation::Silu, h);
    let out = g.linear("net.out", h, values)?;
    g.reshape(out, &shape)
}

/// The diffusion objective on latents: z0 (N, C, h, w) already scaled, as the ddpm's Algorithm 1.
pub struct Objective {
    pub graph: Graph,
    /// z0 (N, C, h, w), the scaled posterior means of the batch's images
    pub z0: TensorId,
    pub t: TensorId,
    pub class: Option<TensorId>,
    /// mean over all elements of (prediction - eps)²
    pub loss: TensorId,
}

/// The objective for images of `image` (the latent map follows from it).
pub fn objective(config: &LdmConfig, batch: usize, image: ImageShape) -> Result<Objective, GraphError> {
    let mut g = Graph::new();
    let z0 = g.input("z0", &latent_batch(batch, image));
    objective_on(g, config, z0)
}

/// The objective on latents `z0` of graph `g`.
fn objective_on(mut g: Graph, config: &LdmConfig, z0: TensorId) -> Result<Objective, GraphError> {
    let shape = g.shape(z0).to_vec();
    let batch = shape[0];
    let t = g.integer_input("t", &[batch]);
    let class = class_input(&mut g, config.classes, batch);
    let eps = g.normal_noise("eps", &shape, 0);
    let z_t = g.q_sample(z0, eps, t, Arc::new(config.schedule.schedule()))?;
    let prediction = denoiser_net(&mut g, config, z_t, t, class)?;
    let loss = g.mean_squared_error(prediction, eps)?;
    Ok(Objective {
        graph: g,
        z0,
        t,
        class,
        loss,
    })
}

/// What an ldm run holds, as one graph for sizes, counts and benchmarks: the images x (N, C, H, W) through the
/// frozen encoder (no gradient reaches it: its output is not the objective's input, as the two plans of a step
/// copy z0 = scale z between them), the frozen decoder (for previews), and the objective on z0. Returns it with x.
pub fn whole_step(config: &LdmConfig, batch: usize, image: ImageShape) -> Result<(Objective, TensorId), GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    encoder(&mut g, FIRST_STAGE, x)?;
    let latent_shape = latent_batch(batch, image);
    let z = g.input("z", &latent_shape);
    decoder(&mut g, FIRST_STAGE, z, image.channels)?;
    let z0 = g.input("z0", &latent_shape);
    Ok((objective_on(g, config, z0)?, x))
}

/// The denoiser alone at batch `batch` on the latents of images of `image`, for sampling.
pub fn denoiser(config: &LdmConfig, batch: usize, image: ImageShape) -> Result<Denoiser, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &latent_batch(batch, image));
    let t = g.integer_input("t", &[batch]);
    let class = class_input(&mut g, config.classes, batch);
    let eps_theta = denoiser_net(&mut g, config, x, t, class)?;
    Ok(Denoiser {
        graph: g,
        x,
        t,
        eps_theta,
        class,
    })
}

/// Autoguidance's denoiser: this model and its guide (a weaker ldm, parameters `guide.*`) on the same z_t, t and
/// classes, their estimates stacked [model; guide] (2N, C, h, w) for `ReverseOptions::autoguidance`.
pub fn guided_denoiser(
    config: &LdmConfig,
    guide: &LdmConfig,
    batch: usize,
    image: ImageShape,
) -> Result<Denoiser, GraphError> {
    let mut g = Graph::new();
    let shape = latent_batch(batch, image);
    let x = g.input("x", &shape);
    let t = g.integer_input("t", &[batch]);
    let class = class_input(&mut g, config.classes, batch);
    let own = denoiser_net(&mut g, config, x, t, class)?;
    let guided = g.within(crate::diffusion::GUIDE, |g| denoiser_net(g, guide, x, t, class))?;
    // [own; guided] along the batch: the two maps side by side as one row, seen again as 2N maps.
    let values = batch * latent_values(image);
    let own = g.reshape(own, &[1, values, 1, 1])?;
    let guided = g.reshape(guided, &[1, values, 1, 1])?;
    let both = g.concat(own, guided)?;
    let eps_theta = g.reshape(both, &[2 * batch, shape[1], shape[2], shape[3]])?;
    Ok(Denoiser {
        graph: g,
        x,
        t,
        eps_theta,
        class,
    })
}

/// The encoding of a batch: x (N, C, H, W) in [0, 1] -> z = mu + eps exp(logvar / 2) (eps from stream 1), and mu.
pub struct Encoding {
    pub graph: Graph,
    pub x: TensorId,
    pub mu: TensorId,
    pub z: TensorId,
}

pub fn encoding(prefix: &str, batch: usize, image: ImageShape) -> Result<Encoding, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let (mu, logvar) = encoder(&mut g, prefix, x)?;
    let latent_shape = g.shape(mu).to_vec();
    let eps = g.normal_noise("eps_z", &latent_shape, 1);
    let z = g.reparameterize(mu, logvar, eps)?;
    Ok(Encoding { graph: g, x, mu, z })
}

/// The decoding of latents: z (N, C', H/4, W/4) unscaled -> images (N, C, H, W) in [0, 1].
pub fn decoding(prefix: &str, batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &latent_batch(batch, image));
    let logits = decoder(&mut g, prefix, z, image.channels)?;
    let images = g.activation(Activation::Sigmoid, logits);
    Ok((g, z, images))
}
