//! Benchmarks: kernel throughput at the shapes the default models use, and training-step time per model.
//!
//! Speed is measured here and printed, never asserted in tests. Kernel times are GPU timestamps around a pass
//! holding the one dispatch where the device has them (the median of several repeats after warm-up); training
//! steps are wall clock from the first write to the end of the wait.

use std::time::Instant;

use serde::Serialize;

use crate::check::TestRng;
use crate::data::Dataset;
use crate::error::TrainError;
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer};
use crate::kernels::conv2d::{self, Conv2dShape};
use crate::kernels::matmul::{self, Epilogue, Layout, MatmulShape};
use crate::models::ModelKind;
use crate::peak::Peak;
use crate::plan::Plan;
use crate::profile::{median, time_dispatch, ProfileError};
use crate::recipe::{Batch, ModelOptions, Training};
use crate::run::RunConfig;

/// Whether the adapter is a CPU driver (lavapipe, WARP): benchmarks then default to smaller sizes.
pub fn is_cpu_adapter(gpu: &Gpu) -> bool {
    gpu.info.device_type == wgpu::DeviceType::Cpu
}

// ---------------------------------------------------------------------------------------------------------
// Training workloads: a model's training plans with random inputs of the right shapes.
// ---------------------------------------------------------------------------------------------------------

/// A model's training step compiled through its recipe with the defaults of models.md, and a random batch of
/// the right shape in the model's range: what `latent profile` and `latent bench train` run.
pub struct Workload {
    pub model: ModelKind,
    pub batch: usize,
    pub training: Box<dyn Training>,
    images: Vec<f32>,
    labels: Vec<u32>,
}

impl Workload {
    pub fn new(gpu: &Gpu, model: ModelKind, batch: usize, seed: u64) -> Result<Self, ProfileError> {
        let recipe = model.recipe();
        let defaults = recipe.defaults();
        let options = ModelOptions::default();
        let model_error = |e: TrainError| ProfileError::Model(e.to_string());
        let own = recipe.configure(&options).map_err(model_error)?;
        let config = RunConfig {
            epochs: 1,
            batch,
            seed,
            ..RunConfig::new(model.name(), &defaults, own, gpu.describe())
        };
        let mut training = recipe.training(gpu, &config, &options).map_err(model_error)?;
        let tg = recipe.train_graph(batch, config.image)?;
        // A training set of `batch` random images, the step's batch, given to the model as training starts.
        let mut rng = TestRng::new(seed ^ 0x5eed);
        let pixels: Vec<u8> = (0..tg.graph.tensor(tg.x).len()).map(|_| rng.next_u64() as u8).collect();
        let labels: Vec<u32> = (0..batch).map(|_| (rng.next_u64() % 10) as u32).collect();
        let train = Dataset::new("random", config.image, pixels, Some(labels.clone()), Vec::new());
        let mut images = vec![0.0f32; tg.graph.tensor(tg.x).len()];
        train.fill_images(&(0..batch).collect::<Vec<_>>(), defaults.range, &mut images);
        training.attach_training_set(gpu, &train).map_err(model_error)?;
        Ok(Self {
            model,
            batch,
            training,
            images,
            labels,
        })
    }

    /// Uploads the batch and submits every plan for global step `step`. Does not wait.
    pub fn step(&self, gpu: &Gpu, step: u64) -> Result<(), ProfileError> {
        let labels = self.training.uses_labels().then_some(&self.labels[..]);
        let indices: Vec<usize> = (0..self.batch).collect();
        let batch = Batch::whole(&self.images, labels, &indices, self.batch);
        self.training
            .write_batch(gpu, &batch, step)
            .map_err(|e| ProfileError::Model(e.to_string()))?;
        for step_plan in self.training.plans() {
            step_plan.plan.run(gpu, step);
        }
        Ok(())
    }

    /// The plans of one step, in order.
    pub fn plan_refs(&self) -> Vec<&Plan> {
        self.training.plans().iter().map(|p| &p.plan).collect()
    }

    /// Dispatches of one training step, all plans together.
    pub fn dispatches_per_step(&self) -> usize {
        self.plan_refs().iter().map(|p| p.steps.len()).sum()
    }
}

/// `name` as a model, or an error listing the known ones.
pub fn model_kind(name: &str) -> Result<ModelKind, ProfileError> {
    name.parse().map_err(|_| ProfileError::UnknownModel {
        name: name.to_string(),
        known: ModelKind::ALL.iter().map(|m| m.name()).collect(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Kernel throughput
// ---------------------------------------------------------------------------------------------------------

/// Square matmul sizes, filtered by `max_size`.
pub const MATMUL_SIZES: [usize; 5] = [256, 512, 1024, 2048, 4096];

/// The default models' linear layers: (model, layer, in, out), from models.md.
pub const LINEAR_SHAPES: [(&str, &str, usize, usize); 12] = [
    ("vae", "fc1", 784, 400),
    ("vae", "fc21/fc22", 400, 20),
    ("vae", "fc3", 20, 400),
    ("vae", "fc4", 400, 784),
    ("ae", "enc.5", 3136, 16),
    ("ae", "dec.0", 16, 3136),
    ("classifier", "f1", 3136, 128),
    ("classifier", "f2", 128, 10),
    ("gan", "generator.fc", 64, 6272),
    ("gan", "discriminator.net.6", 6272, 1),
    ("ddpm", "net.te.0", 64, 256),
    ("ddpm", "net.te.2", 256, 256),
];

/// The U-Net's conv shapes (models.md, ddpm): (name, in, out, size, kernel, stride, padding).
pub const CONV_SHAPES: [(&str, usize, usize, usize, usize, usize, usize); 5] = [
    ("64->64 k3 28x28", 64, 64, 28, 3, 1, 1),
    ("64->64 k3 s2 28x28", 64, 64, 28, 3, 2, 1),
    ("128->128 k3 14x14", 128, 128, 14, 3, 1, 1),
    ("128->128 k3 7x7", 128, 128, 7, 3, 1, 1),
    ("64->128 k1 skip 14x14", 64, 128, 14, 1, 1, 0),
];

#[derive(Clone, Debug, Serialize)]
pub struct KernelBenchOptions {
    /// Largest square matmul (sizes above are skipped).
    pub max_size: usize,
    /// Batch of the linear and conv shapes.
    pub batch: usize,
    pub warmup: usize,
    pub repeats: usize,
}

impl KernelBenchOptions {
    /// Full sizes on a GPU; at most 1024 and fewer repeats on a CPU driver.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        if is_cpu_adapter(gpu) {
            Self {
                max_size: 1024,
                batch: 128,
                warmup: 1,
                repeats: 3,
            }
        } else {
            Self {
                max_size: 4096,
                batch: 128,
                warmup: 3,
                repeats: 10,
            }
        }
    }
}

/// One benchmarked dispatch.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    /// `matmul`, `linear` or `conv2d`
    pub group: &'static str,
    /// e.g. `vae fc1 forward`
    pub name: String,
    /// The registry entry point, e.g. `matmul::matmul_nt`
    pub kernel: String,
    pub shape: String,
    pub flops: u64,
    pub median_us: f64,
    pub gflops: f64,
    /// Bytes of the buffers bound over the median time (an estimate of achieved bandwidth).
    pub gb_per_s: f64,
    /// Percent of the roofline limit reached (the adapter's measured ceilings, `latent bench peak`).
    pub roofline_percent: Option<f64>,
    /// `compute` or `memory`: which ceiling bounds this shape.
    pub bound: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelBench {
    pub adapter: String,
    pub ceilings: Peak,
    /// `gpu timestamps` or `cpu wall clock`
    pub timing: &'static str,
    pub options: KernelBenchOptions,
    pub seconds: f64,
    pub results: Vec<KernelResult>,
}

fn random_buffer(gpu: &Gpu, label: &str, len: usize, rng: &mut TestRng) -> Result<GpuBuffer, ProfileError> {
    Ok(gpu.buffer_from(label, BufferRole::Scratch, &rng.uniform_vec(len, -1.0, 1.0))?)
}

/// Runs every kernel benchmark; `progress` sees each result as it is measured.
pub fn kernels(
    gpu: &Gpu,
    options: &KernelBenchOptions,
    peak: &Peak,
    progress: &mut dyn FnMut(&KernelResult),
) -> Result<KernelBench, ProfileError> {
    let started = Instant::now();
    let mut rng = TestRng::new(1);
    let mut results = Vec::new();
    let mut measure = |group: &'static str,
                       name: String,
                       shape: String,
                       flops: u64,
                       dispatch: Dispatch|
     -> Result<(), ProfileError> {
        let ns = median(&time_dispatch(gpu, &dispatch, options.warmup, options.repeats)?);
        let result = KernelResult {
            group,
            name,
            kernel: dispatch.name(),
            shape,
            flops,
            median_us: ns / 1e3,
            gflops: flops as f64 / ns,
            gb_per_s: dispatch.bytes as f64 / ns,
            roofline_percent: peak.share_percent(flops, dispatch.bytes, ns),
            bound: peak.bound(flops, dispatch.bytes),
        };
        progress(&result);
        results.push(result);
        Ok(())
    };

    for n in MATMUL_SIZES.into_iter().filter(|&n| n <= options.max_size) {
        let a = random_buffer(gpu, "a", n * n, &mut rng)?;
        let b = random_buffer(gpu, "b", n * n, &mut rng)?;
        let c = gpu.buffer("c", BufferRole::Scratch, (n * n * 4) as u64)?;
        let shape = MatmulShape::new(n, n, n);
        let d = matmul::matmul(gpu, &c, &a, &b, Layout::NN, shape, &Epilogue::NONE)?;
        measure("matmul", format!("square {n}"), shape.to_string(), shape.flops(), d)?;
    }

    let batch = options.batch;
    for (model, layer, input, output) in LINEAR_SHAPES {
        let x = random_buffer(gpu, "x", batch * input, &mut rng)?;
        let w = random_buffer(gpu, "weight", output * input, &mut rng)?;
        let bias = random_buffer(gpu, "bias", output, &mut rng)?;
        let y = gpu.buffer("y", BufferRole::Scratch, (batch * output * 4) as u64)?;
        let dy = random_buffer(gpu, "dy", batch * output, &mut rng)?;
        let dx = gpu.buffer("dx", BufferRole::Scratch, (batch * input * 4) as u64)?;
        let dw = gpu.buffer("dweight", BufferRole::Scratch, (output * input * 4) as u64)?;
        let shape = format!("B={batch} in={input} out={output}");
        let flops = matmul::flops(batch, output, input);
        let name = |pass: &str| format!("{model} {layer} {pass}");
        let d = matmul::linear_forward(gpu, &y, &x, &w, Some(&bias), None, batch, input, output)?;
        measure("linear", name("forward"), shape.clone(), flops, d)?;
        let d = matmul::linear_input_backward(gpu, &dx, &dy, &w, false, batch, input, output)?;
        measure("linear", name("dx"), shape.clone(), flops, d)?;
        let d = matmul::linear_weight_backward(gpu, &dw, &dy, &x, false, batch, input, output)?;
        measure("linear", name("dweight"), shape, flops, d)?;
    }

    for (label, ci, co, size, k, s, p) in CONV_SHAPES {
        let shape = Conv2dShape::square(batch, ci, co, (size, size), k, s, p);
        let x = random_buffer(gpu, "x", shape.input_len(), &mut rng)?;
        let w = random_buffer(gpu, "weight", shape.weight_len(), &mut rng)?;
        let bias = random_buffer(gpu, "bias", co, &mut rng)?;
        let y = gpu.buffer("y", BufferRole::Scratch, (shape.output_len() * 4) as u64)?;
        let dy = random_buffer(gpu, "dy", shape.output_len(), &mut rng)?;
        let dx = gpu.buffer("dx", BufferRole::Scratch, (shape.input_len() * 4) as u64)?;
        let dw = gpu.buffer("dweight", BufferRole::Scratch, (shape.weight_len() * 4) as u64)?;
        let text = format!("B={batch} {label}");
        let flops = shape.flops();
        let d = conv2d::forward(gpu, &y, &x, &w, Some(&bias), &shape)?;
        measure("conv2d", format!("{label} forward"), text.clone(), flops, d)?;
        let d = conv2d::input_backward(gpu, &dx, &w, &dy, &shape)?;
        measure("conv2d", format!("{label} dx"), text.clone(), flops, d)?;
        let d = conv2d::weight_backward(gpu, &dw, &x, &dy, &shape)?;
        measure("conv2d", format!("{label} dweight"), text, flops, d)?;
    }

    Ok(KernelBench {
        adapter: gpu.describe(),
        ceilings: peak.clone(),
        timing: if gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            "gpu timestamps"
        } else {
            "cpu wall clock"
        },
        options: options.clone(),
        seconds: started.elapsed().as_secs_f64(),
        results,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Training steps
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchOptions {
    pub batch: usize,
    pub warmup: u64,
    pub steps: u64,
    pub seed: u64,
}

impl TrainBenchOptions {
    /// Batch 128; 3 warm-up and 10 timed steps on a CPU driver (as tests/torch_twins/steps.py times PyTorch: with
    /// one warm-up step and three timed, the vae's median on lavapipe read 33-35 ms against 23 ms over 20 steps),
    /// 5 and 50 on a GPU.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        let cpu = is_cpu_adapter(gpu);
        Self {
            batch: 128,
            warmup: if cpu { 3 } else { 5 },
            steps: if cpu { 10 } else { 50 },
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainResult {
    pub model: String,
    pub batch: usize,
    pub steps: u64,
    pub dispatches_per_step: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub images_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    pub adapter: String,
    pub options: TrainBenchOptions,
    pub seconds: f64,
    pub results: Vec<TrainResult>,
}

/// Median training-step time of each model (inputs uploaded, plans submitted, waited for).
pub fn train(
    gpu: &Gpu,
    models: &[ModelKind],
    options: &TrainBenchOptions,
    progress: &mut dyn FnMut(&TrainResult),
) -> Result<TrainBench, ProfileError> {
    if options.steps == 0 {
        return Err(ProfileError::NoSteps);
    }
    let started = Instant::now();
    let mut results = Vec::new();
    for &model in models {
        let workload = Workload::new(gpu, model, options.batch, options.seed)?;
        for step in 0..options.warmup {
            workload.step(gpu, step)?;
            gpu.wait()?;
        }
        let mut times = Vec::new();
        for step in options.warmup..options.warmup + options.steps {
            let start = Instant::now();
            workload.step(gpu, step)?;
            gpu.wait()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let median_ms = median(&times);
        let result = TrainResult {
            model: model.name().to_string(),
            batch: options.batch,
            steps: options.steps,
            dispatches_per_step: workload.dispatches_per_step(),
            median_ms,
            min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
            images_per_s: options.batch as f64 / (median_ms / 1e3),
        };
        progress(&result);
        results.push(result);
    }
    Ok(TrainBench {
        adapter: gpu.describe(),
        options: options.clone(),
        seconds: started.elapsed().as_secs_f64(),
        results,
    })
}

// ---------------------------------------------------------------------------------------------------------
// The data-parallel gradient exchange.
// ---------------------------------------------------------------------------------------------------------

/// The exchange of one model's step: what a split step all-reduces (every plan's gradients and the state its
/// forward updates) and how fast.
#[derive(Clone, Debug, Serialize)]
pub struct AllReduceResult {
    pub model: String,
    pub bytes: u64,
    pub ranks: usize,
    pub median_ms: f64,
    /// Bytes exchanged per second (each rank's bytes over the median time), in 10^6.
    pub mb_per_s: f64,
}

/// Times `crate::parallel::mean_over_ranks` (the all-gather, the sum in rank order and the scale) over `group`
/// at each default model's exchange size: the median of `repeats` after one warm-up. Every rank must call it.
pub fn bench_allreduce(
    gpu: &Gpu,
    group: &dyn crate::parallel::Group,
    repeats: usize,
) -> Result<Vec<AllReduceResult>, ProfileError> {
    let mut results = Vec::new();
    for model in ModelKind::ALL {
        let workload = Workload::new(gpu, model, 16, 0)?;
        let words: usize = workload
            .training
            .plans()
            .iter()
            .flat_map(|p| p.plan.gradients.iter().chain(&p.plan.states))
            .map(|b| b.len_words())
            .sum();
        drop(workload);
        let values: Vec<f32> = (0..words).map(|i| (i % 97) as f32 * 0.01).collect();
        let mut times = Vec::with_capacity(repeats);
        for repeat in 0..=repeats.max(1) {
            // Every rank starts together, so the time is the exchange's, not a wait for a slower rank.
            group.barrier();
            let start = Instant::now();
            let mean = crate::parallel::mean_over_ranks(group, &values, group.size());
            std::hint::black_box(&mean);
            if repeat > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        let seconds = median(&times);
        let bytes = (words * 4) as u64;
        results.push(AllReduceResult {
            model: model.name().to_string(),
            bytes,
            ranks: group.size(),
            median_ms: seconds * 1e3,
            mb_per_s: bytes as f64 / seconds / 1e6,
        });
    }
    Ok(results)
}
