//! What a trained run produces, for any model: a run opened for use, forward plans in batches, and the
//! latent-code commands (sample, reconstruct, interpolate) of every model with a decoder, written once over the
//! [`Codec`] a model describes itself with.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, ImageShape, PixelRange};
use crate::error::TrainError;
use crate::gpu::{BufferRole, Gpu, GpuError};
use crate::graph::{Graph, GraphError, TensorId};
use crate::plan::{self, ParamStore, Plan, PlanOptions};
use crate::run::{self, RunConfig, RunDir};

/// A run directory opened for use: its configuration and checkpoint.
pub struct LoadedRun {
    pub dir: RunDir,
    pub config: RunConfig,
    pub checkpoint: Checkpoint,
}

impl LoadedRun {
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let dir = RunDir::open(path)?;
        let config = dir.config()?;
        let checkpoint = Checkpoint::load(&dir.checkpoint())?;
        checkpoint.expect_model(&config.model)?;
        Ok(Self {
            dir,
            config,
            checkpoint,
        })
    }

    /// Compiles a forward-only plan of `graph` over a fresh store filled from the checkpoint.
    pub fn forward_plan(&self, gpu: &Gpu, graph: &Graph, name: &str) -> Result<(Plan, ParamStore), TrainError> {
        let mut store = ParamStore::new(self.config.seed);
        let options = PlanOptions {
            name: name.to_string(),
            train: None,
            seed: self.config.seed,
        };
        let plan = plan::compile(gpu, graph, &mut store, &options)?;
        store.load_from(gpu, &self.checkpoint)?;
        Ok((plan, store))
    }

    /// The run's test set.
    pub fn test_set(&self) -> Result<Dataset, TrainError> {
        Ok(crate::data::load_run_data(self.config.data.as_ref(), self.config.image)?.test)
    }

    /// (C, H, W) of the run's images.
    pub fn image(&self) -> ImageShape {
        self.config.image
    }

    /// The metadata every report starts with.
    pub fn report(&self, gpu: &Gpu, test_images: usize) -> Value {
        json!({
            "run": self.dir.path,
            "model": self.config.model,
            "step": self.checkpoint.meta::<u64>("step").ok(),
            "adapter": gpu.describe(),
            "test_images": test_images,
        })
    }

    /// Output directory: `out`, or the run directory.
    pub fn out_dir(&self, out: Option<&Path>) -> Result<PathBuf, TrainError> {
        let dir = out.map(Path::to_path_buf).unwrap_or_else(|| self.dir.path.clone());
        std::fs::create_dir_all(&dir).map_err(|source| run::RunError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }
}

/// Runs a forward plan over `rows` inputs of `input_len` values in batches of the plan's size (the last one
/// padded by repeating its last row), returning `output`'s values for each input row.
pub fn run_batched(
    gpu: &Gpu,
    plan: &Plan,
    input: TensorId,
    output: TensorId,
    rows: &[f32],
    input_len: usize,
    batch: usize,
) -> Result<Vec<f32>, TrainError> {
    let mut outputs = run_batched_outputs(gpu, plan, input, &[output], rows, input_len, batch)?;
    Ok(outputs.remove(0))
}

/// [`run_batched`] reading several outputs of each batch.
pub fn run_batched_outputs(
    gpu: &Gpu,
    plan: &Plan,
    input: TensorId,
    outputs: &[TensorId],
    rows: &[f32],
    input_len: usize,
    batch: usize,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let count = rows.len() / input_len;
    let mut values = vec![Vec::new(); outputs.len()];
    let mut staging = vec![0.0f32; batch * input_len];
    for start in (0..count).step_by(batch) {
        let valid = batch.min(count - start);
        for i in 0..batch {
            let source = (start + i.min(valid - 1)) * input_len;
            staging[i * input_len..(i + 1) * input_len].copy_from_slice(&rows[source..source + input_len]);
        }
        plan.write_input(gpu, input, &staging)?;
        plan.run(gpu, 0);
        for (output, values) in outputs.iter().zip(&mut values) {
            let read = plan.read(gpu, *output)?;
            let output_len = read.len() / batch;
            values.extend_from_slice(&read[..valid * output_len]);
        }
    }
    Ok(values)
}

/// Normal numbers from the GPU's generator (seed, stream), read back: fixed latent codes for previews.
pub fn gpu_normals(gpu: &Gpu, n: usize, seed: u64, stream: u32) -> Result<Vec<f32>, GpuError> {
    use crate::kernels::rng;
    let out = gpu.buffer("normals", BufferRole::Scratch, (n * 4) as u64)?;
    let params = rng::DrawParams::new(gpu, &rng::Draw::new(seed, 0, stream), n)?;
    gpu.run(&[&rng::normal(gpu, &out, &params)?])?;
    let mut values: Vec<f32> = gpu.read(&out)?;
    values.truncate(n);
    Ok(values)
}

/// The first `count` test images, (count, C·H·W) in [0, 1].
pub fn test_images(dataset: &Dataset, count: usize) -> Vec<f32> {
    let indices: Vec<usize> = (0..count.min(dataset.len())).collect();
    let mut images = vec![0.0f32; indices.len() * dataset.shape().numel()];
    dataset.fill_images(&indices, PixelRange::ZeroToOne, &mut images);
    images
}

/// Maps outputs in [-1, 1] (tanh, diffusion) to pixel intensities in [0, 1]: (x + 1) / 2.
pub fn to_unit(images: &[f32]) -> Vec<f32> {
    images.iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect()
}

/// Rows of 8 originals above rows of their 8 reconstructions, images of `image` (C, H, W).
pub fn pairs_grid(originals: &[f32], reconstructions: &[f32], count: usize, image: ImageShape) -> image::RgbImage {
    let pixels = image.numel();
    let mut interleaved = Vec::with_capacity(count * 2 * pixels);
    for row in 0..count.div_ceil(8) {
        let range = row * 8..((row + 1) * 8).min(count);
        for source in [originals, reconstructions] {
            for i in range.clone() {
                interleaved.extend_from_slice(&source[i * pixels..(i + 1) * pixels]);
            }
            for _ in range.len()..8 {
                interleaved.extend(std::iter::repeat_n(0.0, pixels));
            }
        }
    }
    let n = interleaved.len() / pixels;
    run::image_grid(&interleaved, grid_shape(n, image), 8)
}

/// [N, C, H, W] of `n` images of `image`: the shape `run::image_grid` and `run::save_npy` take.
pub fn grid_shape(n: usize, image: ImageShape) -> [usize; 4] {
    [n, image.channels, image.height, image.width]
}

/// grid.png shows at most this many samples (16 x 16); samples.npy holds them all.
pub const GRID_LIMIT: usize = 256;

/// grid.png (the first [`GRID_LIMIT`] in a square-ish grid, at least 8 wide; RGB for 3-channel images) and
/// samples.npy (all of them, [N, C, H, W]) of `images` of `image` in [0, 1].
pub fn write_samples(dir: &Path, images: &[f32], image: ImageShape) -> Result<(PathBuf, PathBuf), TrainError> {
    write_samples_in_columns(dir, images, image, None)
}

/// [`write_samples`] with the grid's number of columns given (one row per class), else about square.
pub fn write_samples_in_columns(
    dir: &Path,
    images: &[f32],
    image: ImageShape,
    columns: Option<usize>,
) -> Result<(PathBuf, PathBuf), TrainError> {
    let pixels = image.numel();
    let n = images.len() / pixels;
    let shown = n.min(GRID_LIMIT);
    let (grid, npy) = (dir.join("grid.png"), dir.join("samples.npy"));
    let columns = columns.unwrap_or_else(|| 8.max((shown as f64).sqrt().ceil() as usize));
    run::save_png(
        &grid,
        &run::image_grid(&images[..shown * pixels], grid_shape(shown, image), columns),
    )?;
    run::save_npy(&npy, images, &grid_shape(n, image))?;
    Ok((grid, npy))
}

/// A progress bar on stderr counting `unit`, or a hidden one.
pub fn progress_bar(total: u64, enabled: bool, unit: &str) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let template =
        format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}  (elapsed {{elapsed}}, left {{eta}})");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// The random stream of sampling (kept apart from training's streams).
pub const SAMPLE_STREAM: u32 = 2000;

/// Where a latent-code model's codes come from when sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prior {
    /// z ~ N(0, I) (the vae, the wae, the gan).
    Normal,
    /// A diagonal Gaussian fitted to the test set's codes (a plain autoencoder has no prior).
    FittedToTestCodes,
}

/// A graph builder at a batch size for images of a shape (C, H, W): (graph, input, output).
pub type GraphFn = fn(usize, ImageShape) -> Result<(Graph, TensorId, TensorId), GraphError>;

/// A model that decodes latent codes to images (and may encode images to codes): what sample, reconstruct and
/// interpolate need to know of it.
#[derive(Clone, Copy)]
pub struct Codec {
    /// x (batch, C·H·W or C x H x W) in [0, 1] -> the code (the posterior mean for the vae); None without an encoder.
    pub encoder: Option<GraphFn>,
    /// z (batch, latent) -> images in `output_range`.
    pub decoder: GraphFn,
    /// The decoder's output range, mapped to [0, 1] for pictures and FID.
    pub output_range: PixelRange,
    pub prior: Prior,
}

impl Codec {
    /// Width of a code for images of `image`: the decoder's input row.
    pub fn width(&self, image: ImageShape) -> Result<usize, GraphError> {
        let (graph, z, _) = (self.decoder)(1, image)?;
        Ok(graph.shape(z)[1..].iter().product())
    }
}

/// Latent codes of `images` (N, C·H·W) in [0, 1].
pub fn encode(gpu: &Gpu, run: &LoadedRun, codec: &Codec, images: &[f32]) -> Result<Vec<f32>, TrainError> {
    let batch = 64;
    let Some(encoder) = codec.encoder else {
        return Err(TrainError::Config(format!("{} runs have no encoder", run.config.model)));
    };
    let (graph, x, code) = encoder(batch, run.image())?;
    let (plan, _store) = run.forward_plan(gpu, &graph, "encode")?;
    run_batched(gpu, &plan, x, code, images, run.image().numel(), batch)
}

/// Images (N, C·H·W) in [0, 1] from latent codes.
pub fn decode(gpu: &Gpu, run: &LoadedRun, codec: &Codec, codes: &[f32]) -> Result<Vec<f32>, TrainError> {
    let batch = 64;
    let (graph, z, images) = (codec.decoder)(batch, run.image())?;
    let (plan, _store) = run.forward_plan(gpu, &graph, "decode")?;
    let images = run_batched(gpu, &plan, z, images, codes, codec.width(run.image())?, batch)?;
    Ok(match codec.output_range {
        PixelRange::MinusOneToOne => to_unit(&images),
        PixelRange::ZeroToOne => images,
    })
}

fn diagonal_gaussian(codes: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (codes.len() / dim).max(1) as f64;
    let mut mean = vec![0.0f64; dim];
    let mut square = vec![0.0f64; dim];
    for row in codes.chunks(dim) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64 / count;
            square[j] += (v as f64).powi(2) / count;
        }
    }
    let std = mean
        .iter()
        .zip(&square)
        .map(|(m, s)| (s - m * m).max(0.0).sqrt() as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// `latent sample` of a latent-code model: `n` codes from its prior, decoded. grid.png and samples.npy (float32,
/// [N, C, H, W], values in [0, 1]).
pub fn sample(
    gpu: &Gpu,
    run: &LoadedRun,
    codec: &Codec,
    n: usize,
    seed: u64,
    out: Option<&Path>,
) -> Result<Value, TrainError> {
    if n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    let dim = codec.width(run.image())?;
    let normals = gpu_normals(gpu, n * dim, seed, SAMPLE_STREAM)?;
    let codes: Vec<f32> = match codec.prior {
        Prior::FittedToTestCodes => {
            let test = run.test_set()?;
            let fitted = encode(gpu, run, codec, &test_images(&test, test.len()))?;
            let (mean, std) = diagonal_gaussian(&fitted, dim);
            normals
                .iter()
                .enumerate()
                .map(|(i, e)| mean[i % dim] + std[i % dim] * e)
                .collect()
        }
        Prior::Normal => normals,
    };
    let images = decode(gpu, run, codec, &codes)?;
    let (grid, samples) = write_samples(&run.out_dir(out)?, &images, run.image())?;
    Ok(json!({ "grid": grid, "grid_images": n.min(GRID_LIMIT), "samples": samples, "n": n }))
}

/// `n` images (N, C·H·W) in [0, 1] decoded from prior codes z ~ N(0, I) drawn from `seed`: what FID measures.
pub fn prior_samples(gpu: &Gpu, run: &LoadedRun, codec: &Codec, n: usize, seed: u64) -> Result<Vec<f32>, TrainError> {
    let codes = gpu_normals(gpu, n * codec.width(run.image())?, seed, SAMPLE_STREAM + 3)?;
    decode(gpu, run, codec, &codes)
}

/// `latent reconstruct`: test images (odd rows) above their reconstructions (even rows): reconstruct.png.
pub fn reconstruct(
    gpu: &Gpu,
    run: &LoadedRun,
    codec: &Codec,
    n: usize,
    out: Option<&Path>,
) -> Result<Value, TrainError> {
    let test = run.test_set()?;
    let images = test_images(&test, n.max(1));
    let reconstructions = decode(gpu, run, codec, &encode(gpu, run, codec, &images)?)?;
    let file = run.out_dir(out)?.join("reconstruct.png");
    let n = images.len() / run.image().numel();
    run::save_png(&file, &pairs_grid(&images, &reconstructions, n, run.image()))?;
    Ok(json!({ "image": file, "n": n }))
}

/// `latent interpolate`: for `pairs` pairs of test images, `steps` decoded points on the straight line between
/// their latent codes, one row per pair with the two originals at its ends; for a model without an encoder (the
/// GAN), rows of `steps` images between two random codes z ~ N(0, I). interpolate.png.
pub fn interpolate(
    gpu: &Gpu,
    run: &LoadedRun,
    codec: &Codec,
    pairs: usize,
    steps: usize,
    out: Option<&Path>,
) -> Result<Value, TrainError> {
    let steps = steps.max(2);
    let image = run.image();
    let dim = codec.width(image)?;
    let pixels = image.numel();
    let walk_between = |ends: &[f32]| {
        let mut walk = Vec::with_capacity(ends.len() / 2 * steps);
        for pair in ends.chunks(2 * dim) {
            let (a, b) = pair.split_at(dim);
            for s in 0..steps {
                let t = s as f32 / (steps - 1) as f32;
                walk.extend(a.iter().zip(b).map(|(x, y)| (1.0 - t) * x + t * y));
            }
        }
        walk
    };
    let file = run.out_dir(out)?.join("interpolate.png");
    if codec.encoder.is_none() {
        let pairs = pairs.max(1);
        let ends = gpu_normals(gpu, 2 * pairs * dim, run.config.seed, SAMPLE_STREAM + 2)?;
        let decoded = decode(gpu, run, codec, &walk_between(&ends))?;
        run::save_png(
            &file,
            &run::image_grid(&decoded, grid_shape(pairs * steps, image), steps),
        )?;
        return Ok(json!({ "image": file, "pairs": pairs, "steps": steps }));
    }
    let test = run.test_set()?;
    let images = test_images(&test, 2 * pairs.max(1));
    let pairs = images.len() / pixels / 2;
    let codes = encode(gpu, run, codec, &images)?;
    let decoded = decode(gpu, run, codec, &walk_between(&codes[..2 * pairs * dim]))?;
    let mut rows = Vec::new();
    for p in 0..pairs {
        rows.extend_from_slice(&images[2 * p * pixels..(2 * p + 1) * pixels]);
        rows.extend_from_slice(&decoded[p * steps * pixels..(p + 1) * steps * pixels]);
        rows.extend_from_slice(&images[(2 * p + 1) * pixels..(2 * p + 2) * pixels]);
    }
    run::save_png(
        &file,
        &run::image_grid(&rows, grid_shape(pairs * (steps + 2), image), steps + 2),
    )?;
    Ok(json!({ "image": file, "pairs": pairs, "steps": steps }))
}
