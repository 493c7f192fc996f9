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
//! On (C, H, W) images (H, W multiples of 4) G's first map is 128 x H/4 x W/4 (generator.fc gives 128 H W / 16
//! values), G's last layer and D's first take C channels, and D flattens 128 H W / 16; on 1x28x28 this is the
//! table above.
//! One step is two plans over one parameter store, run in this order:
//! - the discriminator step: z ~ N(0, I), fake = G(z) (no gradient reaches G: its parameters are not trained by
//!   this plan, so nothing upstream of `fake` needs one), D loss = BCE(D(x), 1) + BCE(D(fake), 0), update D;
//! - the generator step: the same z (same seed, step and stream), fake = G(z) again with batch statistics but
//!   without a second update of G's running statistics, G loss = BCE(D(fake), 1) through the updated D, update G.

use serde_json::{json, Map, Value};

use crate::data::{Dataset, ImageShape, PixelRange, Splits};
use crate::error::TrainError;
use crate::generate::{gpu_normals, run_batched, to_unit, Codec, LoadedRun, Prior};
use crate::gpu::Gpu;
use crate::graph::{ConvGeometry, Graph, GraphError, NormMode, TensorId};
use crate::kernels::activation::Activation;
use crate::optim::Optimizer;
use crate::plan::{self, ParamStore, Plan};
use crate::recipe::{
    forward_options, train_options, Batch, Curves, Defaults, DiffusionOptions, EvalOptions, ModelOptions, Recipe,
    StepPlan, TrainGraph, Training, PREVIEW_STREAM,
};
use crate::run::{self, RunConfig};

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

/// G: z (N, 64) -> image (N, C, H, W) in [-1, 1] (tanh).
pub fn generator(g: &mut Graph, z: TensorId, mode: NormMode, image: ImageShape) -> Result<TensorId, GraphError> {
    let batch = g.shape(z)[0];
    let (height, width) = (image.height / 4, image.width / 4);
    let h = g.linear("generator.fc", z, 128 * height * width)?;
    let h = g.reshape(h, &[batch, 128, height, width])?;
    let h = g.batch_norm2d("generator.net.0", h, mode)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv_transpose2d("generator.net.2", h, 64, UP_DOWN)?;
    let h = g.batch_norm2d("generator.net.3", h, mode)?;
    let h = g.activation(Activation::Relu, h);
    let h = g.conv_transpose2d("generator.net.5", h, image.channels, UP_DOWN)?;
    Ok(g.activation(Activation::Tanh, h))
}

/// D: image (N, C, H, W) in [-1, 1] -> logit (N, 1) of "real".
pub fn discriminator(g: &mut Graph, x: TensorId, mode: NormMode) -> Result<TensorId, GraphError> {
    let [batch, _, height, width] = g.shape(x)[..] else {
        return Err(crate::models::not_an_image_batch("discriminator", g.shape(x)));
    };
    let h = g.conv2d("discriminator.net.0", x, 64, UP_DOWN)?;
    let h = g.activation(Activation::LeakyRelu { slope: SLOPE }, h);
    let h = g.conv2d("discriminator.net.2", h, 128, UP_DOWN)?;
    let h = g.batch_norm2d("discriminator.net.3", h, mode)?;
    let h = g.activation(Activation::LeakyRelu { slope: SLOPE }, h);
    let h = g.reshape(h, &[batch, 128 * (height / 4) * (width / 4)])?;
    g.linear("discriminator.net.6", h, 1)
}

/// The discriminator step's graph (train it with `update_prefixes = [DISCRIMINATOR]`).
pub struct DiscriminatorStep {
    pub graph: Graph,
    /// Real images (N, C, H, W) in [-1, 1].
    pub x: TensorId,
    /// z (N, 64), drawn on the GPU from `NOISE_STREAM`.
    pub z: TensorId,
    /// G(z) (N, C, H, W)
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
pub fn discriminator_step(batch: usize, image: ImageShape) -> Result<DiscriminatorStep, GraphError> {
    crate::models::check_multiple(image, 4, "gan")?;
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let z = g.normal_noise("z", &[batch, LATENT], NOISE_STREAM);
    let fake = generator(&mut g, z, NormMode::Train, image)?;
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
pub fn generator_step(batch: usize, image: ImageShape) -> Result<GeneratorStep, GraphError> {
    let mut g = Graph::new();
    let z = g.normal_noise("z", &[batch, LATENT], NOISE_STREAM);
    let fake = generator(&mut g, z, NormMode::TrainNoUpdate, image)?;
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

/// Sampling: z (N, 64) given by the host -> images (N, C, H, W) in [-1, 1], G in evaluation mode.
pub fn sampler(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let images = generator(&mut g, z, NormMode::Eval, image)?;
    Ok((g, z, images))
}

/// The critic alone in evaluation mode: images (N, C, H, W) in [-1, 1] -> logits (N, 1).
pub fn critic(batch: usize, image: ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &crate::models::batch_shape(batch, image));
    let logits = discriminator(&mut g, x, NormMode::Eval)?;
    Ok((g, x, logits))
}

/// Adam's betas for both nets (models.md: DCGAN's beta1 = 0.5).
pub const BETAS: (f64, f64) = (0.5, 0.999);
/// The random stream of evaluation samples.
const EVAL_STREAM: u32 = 2001;

/// The optimizer of each net.
pub fn optimizer(lr: f64) -> Optimizer {
    Optimizer::adam_betas(lr, BETAS.0, BETAS.1)
}

/// The two training plans of a GAN, compiled over one store.
pub struct GanPlans {
    pub store: ParamStore,
    pub discriminator: Plan,
    pub generator: Plan,
    /// The real batch, input of the discriminator plan.
    pub x: TensorId,
}

/// Compiles the discriminator step (updates `discriminator.*` only) and the generator step (updates
/// `generator.*` only) at batch size `batch` on images of `image`.
pub fn compile(gpu: &Gpu, batch: usize, image: ImageShape, lr: f64, seed: u64) -> Result<GanPlans, TrainError> {
    let d_step = discriminator_step(batch, image)?;
    let g_step = generator_step(batch, image)?;
    let mut store = ParamStore::new(seed);
    let d_options = train_options("gan D step", optimizer(lr), &[DISCRIMINATOR], seed);
    let discriminator = plan::compile(gpu, &d_step.graph, &mut store, &d_options)?;
    let g_options = train_options("gan G step", optimizer(lr), &[GENERATOR], seed);
    let generator = plan::compile(gpu, &g_step.graph, &mut store, &g_options)?;
    Ok(GanPlans {
        store,
        discriminator,
        generator,
        x: d_step.x,
    })
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The Jensen-Shannon estimate (nats) from the critic's logits on real and generated images:
/// JSD ≈ log 2 + ½ (E log D(x) + E log(1 - D(G(z)))), with log D = -softplus(-l), log(1 - D) = -softplus(l).
/// It is exact for the optimal discriminator and a lower bound otherwise; 0 for D = 1/2 everywhere.
pub fn jsd_estimate(real_logits: &[f32], fake_logits: &[f32]) -> f64 {
    let mean = |values: &[f32], f: &dyn Fn(f64) -> f64| {
        values.iter().map(|&l| f(l as f64)).sum::<f64>() / values.len().max(1) as f64
    };
    let log_d_real = mean(real_logits, &|l| -softplus(-l));
    let log_one_minus_d_fake = mean(fake_logits, &|l| -softplus(l));
    std::f64::consts::LN_2 + 0.5 * (log_d_real + log_one_minus_d_fake)
}

/// Mean of sigmoid(logits): the average probability D gives to "real".
pub fn mean_probability(logits: &[f32]) -> f64 {
    logits.iter().map(|&l| 1.0 / (1.0 + (-l as f64).exp())).sum::<f64>() / logits.len().max(1) as f64
}

/// Evaluation-mode forward plans (running statistics) over a store: G's sampler and D alone.
pub struct GanEval {
    sampler: Plan,
    z: TensorId,
    images: TensorId,
    critic: Plan,
    x: TensorId,
    logits: TensorId,
    batch: usize,
    image: ImageShape,
}

impl GanEval {
    pub fn compile(
        gpu: &Gpu,
        store: &mut ParamStore,
        batch: usize,
        image: ImageShape,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let (graph, z, images) = sampler(batch, image)?;
        let sampler = plan::compile(gpu, &graph, store, &forward_options("gan sampler", seed))?;
        let (graph, x, logits) = critic(batch, image)?;
        let critic = plan::compile(gpu, &graph, store, &forward_options("gan critic", seed))?;
        Ok(Self {
            sampler,
            z,
            images,
            critic,
            x,
            logits,
            batch,
            image,
        })
    }

    /// G(z) for codes (N, 64): images (N, C, H, W) in [-1, 1].
    pub fn generate(&self, gpu: &Gpu, codes: &[f32]) -> Result<Vec<f32>, TrainError> {
        run_batched(gpu, &self.sampler, self.z, self.images, codes, LATENT, self.batch)
    }

    /// D's logits (N) for images (N, C·H·W) in [-1, 1].
    pub fn critic(&self, gpu: &Gpu, images: &[f32]) -> Result<Vec<f32>, TrainError> {
        let pixels = self.image.numel();
        run_batched(gpu, &self.critic, self.x, self.logits, images, pixels, self.batch)
    }

    /// Over the test set and as many samples from z ~ N(0, I): mean D(x), mean D(G(z)) and the JSD estimate.
    pub fn critic_metrics(&self, gpu: &Gpu, test: &Dataset, seed: u64) -> Result<Map<String, Value>, TrainError> {
        let n = test.len();
        let indices: Vec<usize> = (0..n).collect();
        let mut real = vec![0.0f32; n * self.image.numel()];
        test.fill_images(&indices, PixelRange::MinusOneToOne, &mut real);
        let codes = gpu_normals(gpu, n * LATENT, seed, EVAL_STREAM)?;
        let fake = self.generate(gpu, &codes)?;
        let real_logits = self.critic(gpu, &real)?;
        let fake_logits = self.critic(gpu, &fake)?;
        let mut metrics = Map::new();
        metrics.insert("d_x".into(), json!(mean_probability(&real_logits)));
        metrics.insert("d_g_z".into(), json!(mean_probability(&fake_logits)));
        metrics.insert("jsd_nats".into(), json!(jsd_estimate(&real_logits, &fake_logits)));
        Ok(metrics)
    }

    /// A run's evaluation plans with its trained weights (batch 100).
    pub fn load(gpu: &Gpu, run: &LoadedRun) -> Result<(Self, ParamStore), TrainError> {
        let mut store = ParamStore::new(run.config.seed);
        let eval = Self::compile(gpu, &mut store, 100, run.config.image, run.config.seed)?;
        store.load_from(gpu, &run.checkpoint)?;
        Ok((eval, store))
    }
}

/// A GAN's training step: the D step, then the G step, on the same z; the evaluation plans over the same store.
struct GanTraining {
    store: ParamStore,
    plans: Vec<StepPlan>,
    x: TensorId,
    eval: GanEval,
    /// The preview: G in evaluation mode on the same 64 codes every epoch.
    preview_codes: Vec<f32>,
    seed: u64,
}

impl Training for GanTraining {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn plans(&self) -> &[StepPlan] {
        &self.plans
    }

    fn write_batch(&self, gpu: &Gpu, batch: &Batch, _step: u64) -> Result<(), TrainError> {
        Ok(self.plans[0].plan.write_input(gpu, self.x, batch.images)?)
    }

    fn train_metrics(&self, sums: &[Vec<f32>], steps: u64) -> Map<String, Value> {
        let steps = steps as f64;
        // D plan: [d_real, d_fake]; G plan: [g].
        let (d_real, d_fake) = (sums[0][0] as f64 / steps, sums[0][1] as f64 / steps);
        let metrics = json!({
            "d_loss": d_real + d_fake,
            "d_real": d_real,
            "d_fake": d_fake,
            "g_loss": sums[1][0] as f64 / steps,
        });
        metrics.as_object().cloned().unwrap_or_default()
    }

    fn test_metrics(&self, gpu: &Gpu, splits: &Splits) -> Result<Map<String, Value>, TrainError> {
        self.eval.critic_metrics(gpu, &splits.test, self.seed)
    }

    fn preview(&self, gpu: &Gpu, _splits: &Splits) -> Result<Option<image::RgbImage>, TrainError> {
        let grid = to_unit(&self.eval.generate(gpu, &self.preview_codes)?);
        let shape = crate::generate::grid_shape(64, self.eval.image);
        Ok(Some(run::image_grid(&grid, shape, 8)))
    }

    fn summary(&self, record: &Value) -> String {
        format!(
            "D loss {:.4}, G loss {:.4}, test D(x) {:.3}, D(G(z)) {:.3}, JSD {:.4} nats",
            record["train"]["d_loss"].as_f64().unwrap_or(f64::NAN),
            record["train"]["g_loss"].as_f64().unwrap_or(f64::NAN),
            record["test"]["d_x"].as_f64().unwrap_or(f64::NAN),
            record["test"]["d_g_z"].as_f64().unwrap_or(f64::NAN),
            record["test"]["jsd_nats"].as_f64().unwrap_or(f64::NAN),
        )
    }

    fn curves(&self) -> Curves {
        Curves {
            title: "training losses",
            series: vec![("D loss", "train", "d_loss"), ("G loss", "train", "g_loss")],
        }
    }
}

/// The DCGAN of models.md: 30 epochs, batch 128, Adam 2e-4 with betas (0.5, 0.999), data in [-1, 1].
pub struct Gan;

impl Recipe for Gan {
    fn name(&self) -> &'static str {
        "gan"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            epochs: 30,
            batch: 128,
            lr: 2e-4,
            range: PixelRange::MinusOneToOne,
        }
    }

    /// The discriminator step (it holds both nets).
    fn train_graph(&self, batch: usize, image: ImageShape) -> Result<TrainGraph, GraphError> {
        let o = discriminator_step(batch, image)?;
        Ok(TrainGraph::new(
            o.graph,
            o.x,
            vec![("d_real", o.real_loss), ("d_fake", o.fake_loss)],
        ))
    }

    fn codec(&self) -> Option<Codec> {
        Some(Codec {
            encoder: None,
            decoder: sampler,
            output_range: PixelRange::MinusOneToOne,
            prior: Prior::Normal,
        })
    }

    fn training(&self, gpu: &Gpu, config: &RunConfig, _: &ModelOptions) -> Result<Box<dyn Training>, TrainError> {
        let GanPlans {
            mut store,
            discriminator,
            generator,
            x,
        } = compile(gpu, config.batch, config.image, config.lr, config.seed)?;
        let eval = GanEval::compile(gpu, &mut store, config.batch, config.image, config.seed)?;
        let preview_codes = gpu_normals(gpu, 64 * LATENT, config.seed, PREVIEW_STREAM)?;
        Ok(Box::new(GanTraining {
            store,
            plans: vec![
                StepPlan {
                    plan: discriminator,
                    losses: vec!["d_real", "d_fake"],
                },
                StepPlan {
                    plan: generator,
                    losses: vec!["g"],
                },
            ],
            x,
            eval,
            preview_codes,
            seed: config.seed,
        }))
    }

    /// Mean D(x) and D(G(z)) and the JSD estimate over the test set and as many samples.
    fn evaluate(&self, gpu: &Gpu, run: &LoadedRun, _: &EvalOptions) -> Result<Value, TrainError> {
        let test = run.test_set()?;
        let (eval, _store) = GanEval::load(gpu, run)?;
        let mut report = run.report(gpu, test.len());
        for (key, value) in eval.critic_metrics(gpu, &test, run.config.seed)? {
            report[key] = value;
        }
        Ok(report)
    }

    fn generate(
        &self,
        gpu: &Gpu,
        run: &LoadedRun,
        n: usize,
        _sampling: &DiffusionOptions,
    ) -> Option<Result<Vec<f32>, TrainError>> {
        let samples = || -> Result<Vec<f32>, TrainError> {
            let (eval, _store) = GanEval::load(gpu, run)?;
            let codes = gpu_normals(gpu, n * LATENT, run.config.seed, EVAL_STREAM + 1)?;
            Ok(to_unit(&eval.generate(gpu, &codes)?))
        };
        Some(samples())
    }
}
