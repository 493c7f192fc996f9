//! `ddpm`: denoising diffusion (Ho et al. 2020) with a small U-Net, data in [-1, 1].
//!
//! ```text
//! emb(t) = cat(sin(t f), cos(t f)), f_i = exp(-ln(10000) i / 32), i = 0..31           (64)
//! net.te.0  Linear(64, 256), SiLU;  net.te.2  Linear(256, 256)                          -> e (256)
//! ResBlock(ci, co) B:  h = B.c1(SiLU(B.n1(x))) + B.t(e)[:, :, None, None]
//!                      h = B.c2(SiLU(B.n2(h)));  out = h + B.skip(x)   (B.skip only when ci != co)
//! net.inc  Conv2d(1, 64, k3, p1)                 h0: 64 x 28 x 28
//! net.d1   ResBlock(64, 64)                      h1: 64 x 28 x 28
//! net.ds1  Conv2d(64, 64, k3, s2, p1)            64 x 14 x 14
//! net.d2   ResBlock(64, 128)                     h2: 128 x 14 x 14
//! net.ds2  Conv2d(128, 128, k3, s2, p1)          128 x 7 x 7
//! net.m1, net.m2  ResBlock(128, 128)
//! up x2, cat [u, h2] (256)  net.u2 ResBlock(256, 128)     128 x 14 x 14
//! up x2, cat [u, h1] (192)  net.u1 ResBlock(192, 64)      64 x 28 x 28
//! net.out_n GroupNorm(8, 64), SiLU;  net.out Conv2d(64, 1, k3, p1)   -> predicted eps
//! (on C x H x W images, H and W multiples of 4: net.inc takes C channels, net.out gives C, the maps are
//! H x W, H/2 x W/2 and H/4 x W/4)
//! training: t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, loss = mean (net(x_t, t) - eps)²
//! ```
//!
//! The default is exactly models.md (1,965,121 parameters). Tests use narrower nets: the base width (64) and the
//! GroupNorm group count (8) are configurable; every other width follows from the base (128 = 2 base,
//! 256 = 4 base), and the sinusoidal embedding stays 64 wide.

mod recipe;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::ImageShape;
use crate::diffusion::Denoiser;
use crate::graph::{ConvGeometry, Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;
use crate::kernels::diffusion::Schedule;

pub use recipe::{
    attach_ema, attach_ema_with_prefix, check_resume_conditional, conditional_description, demo_masks, draw_timesteps,
    guidance_sets, paste_known, test_mse, uniform_classes, write_training_classes, Ddpm, TimestepPurpose, CLASSES,
    CONDITIONAL, DIFFUSE_TIMESTEPS, SAMPLE_CHUNK,
};

/// Width of the sinusoidal timestep embedding (32 frequencies).
pub const EMBEDDING: usize = 64;
/// T, the number of diffusion timesteps.
pub const TIMESTEPS: usize = 1000;
/// EMA decay of the weights.
pub const EMA_DECAY: f64 = 0.999;
/// Adam's learning rate.
pub const LEARNING_RATE: f64 = 2e-4;

const SAME: ConvGeometry = ConvGeometry {
    kernel: 3,
    stride: 1,
    padding: 1,
};
const DOWN: ConvGeometry = ConvGeometry {
    kernel: 3,
    stride: 2,
    padding: 1,
};
const POINTWISE: ConvGeometry = ConvGeometry {
    kernel: 1,
    stride: 1,
    padding: 0,
};

/// Which noise schedule (T = 1000 either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// beta linear from 1e-4 to 0.02 (models.md).
    #[default]
    Linear,
    /// Nichol & Dhariwal's cosine schedule.
    Cosine,
}

impl ScheduleKind {
    pub fn schedule(self) -> Schedule {
        match self {
            Self::Linear => Schedule::ddpm(),
            Self::Cosine => Schedule::cosine(TIMESTEPS),
        }
    }
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("unknown schedule {s:?}: choose linear or cosine")),
        }
    }
}

/// The widest U-Net `validate` accepts: far beyond any GPU's memory, but every shape product stays in range.
pub const MAX_WIDTH: usize = 1 << 16;

/// The U-Net's size and the schedule: what a ddpm run saves in config.json beside the common settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdpmConfig {
    /// Channels of the first level (64); the second level has twice as many, the time MLP four times.
    pub width: usize,
    /// GroupNorm groups (8).
    pub groups: usize,
    pub schedule: ScheduleKind,
    /// Class conditioning (`--conditional`): the number of classes K; a learned embedding of the class (K + 1
    /// rows, the last the null class of classifier-free guidance) is added to the time embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
}

impl Default for DdpmConfig {
    /// models.md's ddpm.
    fn default() -> Self {
        Self {
            width: 64,
            groups: 8,
            schedule: ScheduleKind::Linear,
            classes: None,
        }
    }
}

impl DdpmConfig {
    /// Width of the time embedding e (256).
    pub fn time_width(&self) -> usize {
        4 * self.width
    }

    /// Checks the sizes before a graph is built, with what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.groups == 0 || self.width % self.groups != 0 {
            return Err(format!(
                "the U-Net's width {} must be a positive multiple of its GroupNorm groups {}",
                self.width, self.groups
            ));
        }
        if self.width > MAX_WIDTH {
            return Err(format!(
                "the U-Net's width {} is over the largest latent builds, {MAX_WIDTH}",
                self.width
            ));
        }
        Ok(())
    }
}

/// The time MLP: t (N) u32 -> e (N, width), plus the class embedding `net.ce` of one-hot rows `class` (N, K + 1)
/// for a conditional model (a Linear over one-hot rows is an embedding table with a bias).
pub fn time_embedding(
    g: &mut Graph,
    width: usize,
    t: TensorId,
    class: Option<TensorId>,
) -> Result<TensorId, GraphError> {
    let emb = g.timestep_embedding(t, EMBEDDING)?;
    let h = g.linear("net.te.0", emb, width)?;
    let h = g.activation(Activation::Silu, h);
    let e = g.linear("net.te.2", h, width)?;
    match class {
        Some(class) => {
            let c = g.linear("net.ce", class, width)?;
            g.add(e, c)
        }
        None => Ok(e),
    }
}

/// The class input of a conditional model: one-hot rows (batch, K + 1), the last column the null class.
pub fn class_input(g: &mut Graph, classes: Option<usize>, batch: usize) -> Option<TensorId> {
    classes.map(|k| g.input("class", &[batch, k + 1]))
}

/// ResBlock(ci, co) named `name`: x (N, ci, H, W), e (N, 4 width) -> (N, co, H, W).
fn res_block(
    g: &mut Graph,
    config: &DdpmConfig,
    name: &str,
    x: TensorId,
    e: TensorId,
    out_channels: usize,
) -> Result<TensorId, GraphError> {
    let in_channels = g.shape(x)[1];
    // h = c1(SiLU(n1(x))) + t(e)[:, :, None, None]
    let h = g.group_norm(&format!("{name}.n1"), x, config.groups)?;
    let h = g.activation(Activation::Silu, h);
    let h = g.conv2d(&format!("{name}.c1"), h, out_channels, SAME)?;
    let te = g.linear(&format!("{name}.t"), e, out_channels)?;
    let h = g.add_per_channel(h, te)?;
    // h = c2(SiLU(n2(h)))
    let h = g.group_norm(&format!("{name}.n2"), h, config.groups)?;
    let h = g.activation(Activation::Silu, h);
    let h = g.conv2d(&format!("{name}.c2"), h, out_channels, SAME)?;
    // out = h + skip(x)
    let skip = if in_channels != out_channels {
        g.conv2d(&format!("{name}.skip"), x, out_channels, POINTWISE)?
    } else {
        x
    };
    g.add(h, skip)
}

/// The noise predictor eps_theta(x_t, t[, c]): x_t (N, C, H, W) with H, W divisible by 4, t (N) u32, the one-hot
/// class rows of a conditional model -> (N, C, H, W).
pub fn unet(
    g: &mut Graph,
    config: &DdpmConfig,
    x: TensorId,
    t: TensorId,
    class: Option<TensorId>,
) -> Result<TensorId, GraphError> {
    let (c1, c2) = (config.width, 2 * config.width);
    let shape = g.shape(x).to_vec();
    if shape.len() != 4 || shape[2] % 4 != 0 || shape[3] % 4 != 0 {
        return Err(GraphError {
            op: "unet",
            layer: "net".into(),
            message: format!("images must be (N, C, H, W) with H and W divisible by 4, got {shape:?}"),
        });
    }
    let e = time_embedding(g, config.time_width(), t, class)?;
    let h0 = g.conv2d("net.inc", x, c1, SAME)?;
    let h1 = res_block(g, config, "net.d1", h0, e, c1)?;
    let h = g.conv2d("net.ds1", h1, c1, DOWN)?;
    let h2 = res_block(g, config, "net.d2", h, e, c2)?;
    let h = g.conv2d("net.ds2", h2, c2, DOWN)?;
    let h = res_block(g, config, "net.m1", h, e, c2)?;
    let h = res_block(g, config, "net.m2", h, e, c2)?;
    let u = g.upsample2(h)?;
    let h = g.concat(u, h2)?;
    let h = res_block(g, config, "net.u2", h, e, c2)?;
    let u = g.upsample2(h)?;
    let h = g.concat(u, h1)?;
    let h = res_block(g, config, "net.u1", h, e, c1)?;
    let h = g.group_norm("net.out_n", h, config.groups)?;
    let h = g.activation(Activation::Silu, h);
    g.conv2d("net.out", h, shape[1], SAME)
}

/// The training (and test) graph: Algorithm 1 of Ho et al.
pub struct Objective {
    pub graph: Graph,
    /// x0 (N, C, H, W) in [-1, 1]
    pub x: TensorId,
    /// t (N) u32 in 0..T, written by the host every step
    pub t: TensorId,
    /// The one-hot class rows (N, K + 1) of a conditional model, written by the host every step.
    pub class: Option<TensorId>,
    /// eps ~ N(0, I), drawn on the GPU from random stream 0
    pub eps: TensorId,
    pub x_t: TensorId,
    pub prediction: TensorId,
    /// mean over all elements of (prediction - eps)²
    pub loss: TensorId,
}

/// The epsilon-prediction objective at batch `batch` for images of `image` (C, H, W), H and W divisible by 4.
pub fn objective(config: &DdpmConfig, batch: usize, image: ImageShape) -> Result<Objective, GraphError> {
    let mut g = Graph::new();
    let shape = crate::models::batch_shape(batch, image);
    let x = g.input("x", &shape);
    let t = g.integer_input("t", &[batch]);
    let class = class_input(&mut g, config.classes, batch);
    let eps = g.normal_noise("eps", &shape, 0);
    let x_t = g.q_sample(x, eps, t, Arc::new(config.schedule.schedule()))?;
    let prediction = unet(&mut g, config, x_t, t, class)?;
    let loss = g.mean_squared_error(prediction, eps)?;
    Ok(Objective {
        graph: g,
        x,
        t,
        class,
        eps,
        x_t,
        prediction,
        loss,
    })
}

/// The denoiser alone, for sampling: x_t (N, C, H, W) and t (N) [and the class rows] -> eps_theta (N, C, H, W).
pub fn denoiser(config: &DdpmConfig, batch: usize, image: ImageShape) -> Result<Denoiser, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let t = g.integer_input("t", &[batch]);
    let class = class_input(&mut g, config.classes, batch);
    let eps_theta = unet(&mut g, config, x, t, class)?;
    Ok(Denoiser {
        graph: g,
        x,
        t,
        eps_theta,
        class,
    })
}
