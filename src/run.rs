//! A run directory (shared/spec/cli.md): checkpoint, configuration, metrics, pictures. Every file is replaced
//! atomically, so a run directory is never half-written.
//!
//! ```text
//! runs/<model>-<YYYYmmdd-HHMMSS>/
//!   checkpoint.safetensors   weights, optimizer state, metadata
//!   config.json              the full configuration
//!   metrics.jsonl            one JSON object per epoch
//!   samples/epoch-NNN.png    what the model makes after each epoch
//!   loss.png                 the loss curves
//!   .lock                    held by the command writing the run (its pid and command line)
//! ```

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{write_atomically, CheckpointError};
use crate::data::ImageShape;

fn mnist_shape() -> ImageShape {
    ImageShape::MNIST
}

fn is_mnist_shape(image: &ImageShape) -> bool {
    *image == ImageShape::MNIST
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.jsonl";
pub const LOCK: &str = ".lock";
/// The largest batch latent builds a graph for: far beyond any GPU's memory (`plan::check_batch_fits` refuses
/// what does not fit long before), but small enough that no shape's element count overflows.
pub const MAX_BATCH: usize = 1 << 24;
/// The largest image side a run takes (`--image-size`): with MAX_BATCH, no shape's element count overflows.
pub const MAX_IMAGE_SIDE: usize = 1024;

/// Errors about run directories, each naming the path.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a latent run directory (no {CONFIG}); pass the directory `latent train` wrote, e.g. runs/vae-20261125-120000")]
    NotARun { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("{} is being written by another latent process ({holder}); wait for it to finish, or read the run meanwhile with `latent sample --run {} --out OTHER_DIR` or `latent eval --run {}`", path.display(), path.display(), path.display())]
    Locked { path: PathBuf, holder: String },
}

/// The configuration of a training run, saved as config.json so that it can be repeated or resumed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    pub model: String,
    /// Total epochs of the run (with `steps` unset).
    pub epochs: u64,
    /// Total steps of the run, when given instead of epochs.
    pub steps: Option<u64>,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    /// The dataset directory, or None for the embedded mnist-10k.
    pub data: Option<PathBuf>,
    /// (C, H, W) of the images the run trains on and generates: the data's own, or `--image-size` / `--grayscale`.
    /// Written only when it is not 1x28x28, so that MNIST-shaped runs keep the config.json they always had (and
    /// files written before runs had it load as 1x28x28).
    #[serde(default = "mnist_shape", skip_serializing_if = "is_mnist_shape")]
    pub image: ImageShape,
    pub adapter: String,
    pub latent_version: String,
    /// Each model's own configuration under its name (`"ddpm": {width, groups, schedule}`, `"wae":
    /// {regularizer}`), absent for models without one.
    #[serde(flatten)]
    pub sections: serde_json::Map<String, serde_json::Value>,
}

impl RunConfig {
    /// A new run of `model` with the recipe's `defaults` and the model's own configuration `own` (under its name).
    pub fn new(model: &str, defaults: &Defaults, own: Option<serde_json::Value>, adapter: String) -> Self {
        Self {
            model: model.into(),
            epochs: defaults.epochs,
            steps: None,
            batch: defaults.batch,
            lr: defaults.lr,
            seed: 0,
            data: None,
            image: ImageShape::MNIST,
            adapter,
            latent_version: env!("CARGO_PKG_VERSION").into(),
            sections: own
                .map(|own| [(model.to_string(), own)].into_iter().collect())
                .unwrap_or_default(),
        }
    }

    /// The run's model's own configuration (its defaults when config.json has none, as before the model had one).
    pub fn model_config<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, RunError> {
        match self.sections.get(&self.model) {
            None => Ok(T::default()),
            Some(value) => serde_json::from_value(value.clone()).map_err(|e| RunError::Invalid {
                path: PathBuf::from(CONFIG),
                message: format!("the {:?} section: {e}", self.model),
            }),
        }
    }
}

/// A model's recipe in models.md: what `latent train MODEL` does without flags.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub epochs: u64,
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// The pixel range the model's data is scaled to.
    pub range: crate::data::PixelRange,
}

impl RunConfig {
    /// Parses config.json's text and checks what a hand edit could break ([`check_sizes`](Self::check_sizes));
    /// `path` is used only in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, RunError> {
        let invalid = |message: String| RunError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let config: Self = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.check_sizes().map_err(invalid)?;
        Ok(config)
    }

    /// The size every model's graph is built from: a batch of 1 to [`MAX_BATCH`] (beyond it a shape's element
    /// count would overflow while the graph is built). Each model checks its own section
    /// (`Recipe::check_config`).
    pub fn check_sizes(&self) -> Result<(), String> {
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!("batch {} is outside 1 ..= {MAX_BATCH}", self.batch));
        }
        let image = self.image;
        let side_fits = |side: usize| (1..=MAX_IMAGE_SIDE).contains(&side);
        if !matches!(image.channels, 1 | 3) || !side_fits(image.height) || !side_fits(image.width) {
            return Err(format!(
                "image {image} (C x H x W): latent takes 1 or 3 channels and sides of 1 to {MAX_IMAGE_SIDE} pixels"
            ));
        }
        Ok(())
    }
}

/// An existing or new run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

/// The advisory lock on `<run>/.lock` that a command writing the run holds until it is dropped. The operating
/// system releases it when the holder exits, however it exits (kill -9 included), so a stale `.lock` file
/// blocks nothing; the file itself stays and names the last holder.
#[derive(Debug)]
pub struct RunLock {
    file: fs::File,
    pub path: PathBuf,
}

impl RunLock {
    fn acquire(run: &Path) -> Result<Self, RunError> {
        let path = run.join(LOCK);
        // Neither truncated nor removed while another process may hold it: the lock belongs to the open file.
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(RunError::Locked {
                    path: run.to_path_buf(),
                    holder: describe_holder(&mut file),
                })
            }
            Err(fs::TryLockError::Error(source)) => return Err(RunError::Io { path, source }),
        }
        let command: Vec<String> = std::env::args().collect();
        let record = format!("pid {}\ncommand {}\n", std::process::id(), command.join(" "));
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(record.as_bytes())?;
            file.flush()
        })()
        .map_err(io(&path))?;
        Ok(Self { file, path })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the order explicit.
        let _ = self.file.unlock();
    }
}

/// "pid N: COMMAND" from a held lock file, as far as it can be read.
fn describe_holder(file: &mut fs::File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key).map(str::trim).map(str::to_string))
            .filter(|value| !value.is_empty())
    };
    match (field("pid "), field("command ")) {
        (Some(pid), Some(command)) => format!("pid {pid}: {command}"),
        (Some(pid), None) => format!("pid {pid}"),
        // The holder has locked the file but not yet written itself into it (or the system forbids reading it).
        _ => "pid not yet recorded".to_string(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RunDir {
    /// `runs/<model>-<YYYYmmdd-HHMMSS>` under the current directory.
    pub fn default_path(model: &str) -> PathBuf {
        PathBuf::from("runs").join(format!("{model}-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")))
    }

    /// Creates the directory (and `samples/`).
    pub fn create(path: &Path) -> Result<Self, RunError> {
        fs::create_dir_all(path.join("samples")).map_err(io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Opens a directory that `latent train` wrote.
    pub fn open(path: &Path) -> Result<Self, RunError> {
        if !path.join(CONFIG).is_file() {
            return Err(RunError::NotARun {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.path.join(CHECKPOINT)
    }

    /// Takes the run's write lock, or refuses with the holder's pid and command line when another process
    /// writes the run. Hold it for as long as the command writes; readers (eval, sample --out) take no lock.
    pub fn lock_for_writing(&self) -> Result<RunLock, RunError> {
        RunLock::acquire(&self.path)
    }

    pub fn sample_path(&self, epoch: u64) -> PathBuf {
        self.path.join("samples").join(format!("epoch-{epoch:03}.png"))
    }

    pub fn config(&self) -> Result<RunConfig, RunError> {
        let path = self.path.join(CONFIG);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        RunConfig::from_json(&text, &path)
    }

    pub fn write_config(&self, config: &RunConfig) -> Result<(), RunError> {
        let text = serde_json::to_string_pretty(config).expect("the config serializes");
        Ok(write_atomically(&self.path.join(CONFIG), text.as_bytes())?)
    }

    /// Every line of metrics.jsonl.
    pub fn metrics(&self) -> Result<Vec<serde_json::Value>, RunError> {
        let path = self.path.join(METRICS);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| RunError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Appends one record to metrics.jsonl (rewriting the file atomically).
    pub fn append_metrics(&self, record: &serde_json::Value) -> Result<(), RunError> {
        let mut lines: Vec<String> = self.metrics()?.iter().map(|v| v.to_string()).collect();
        lines.push(record.to_string());
        let text = lines.join("\n") + "\n";
        Ok(write_atomically(&self.path.join(METRICS), text.as_bytes())?)
    }
}

/// Images (N, C, H, W) with values in [0, 1] tiled into a grid of `columns` columns, 2-pixel gutters.
pub fn image_grid(images: &[f32], shape: [usize; 4], columns: usize) -> image::RgbImage {
    let [n, c, h, w] = shape;
    let columns = columns.clamp(1, n.max(1));
    let rows = n.div_ceil(columns);
    let gutter = 2;
    let mut grid = image::RgbImage::from_pixel(
        (columns * (w + gutter) + gutter) as u32,
        (rows * (h + gutter) + gutter) as u32,
        image::Rgb([40, 40, 40]),
    );
    for i in 0..n {
        let (x0, y0) = (
            gutter + (i % columns) * (w + gutter),
            gutter + (i / columns) * (h + gutter),
        );
        for y in 0..h {
            for x in 0..w {
                let channel = |ch: usize| {
                    let v = images[((i * c + ch) * h + y) * w + x];
                    (v.clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let pixel = if c >= 3 {
                    [channel(0), channel(1), channel(2)]
                } else {
                    [channel(0); 3]
                };
                grid.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(pixel));
            }
        }
    }
    grid
}

/// Saves an image as PNG, atomically.
pub fn save_png(path: &Path, image: &image::RgbImage) -> Result<(), RunError> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| RunError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(write_atomically(path, &bytes)?)
}

/// Writes `values` as a float32 .npy array of `shape` (NumPy format version 1.0), atomically.
pub fn save_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<(), RunError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n', padded to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(bytemuck::cast_slice(values));
    Ok(write_atomically(path, &bytes)?)
}

/// One curve of a loss plot.
pub struct Curve<'a> {
    pub label: &'a str,
    /// (epoch, value)
    pub points: Vec<(f64, f64)>,
}

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in, so registration cannot fail on a valid build.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws the loss curves against the epoch and saves them as a PNG, atomically.
pub fn plot_losses(path: &Path, title: &str, curves: &[Curve]) -> Result<(), RunError> {
    register_font();
    let (width, height) = (800u32, 500u32);
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    let plot_error = |message: String| RunError::Plot {
        path: path.to_path_buf(),
        message,
    };
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
        let points = curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|(_, y)| y.is_finite());
        let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in points {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        if !y_min.is_finite() {
            (y_min, y_max) = (0.0, 1.0);
        }
        let margin = ((y_max - y_min) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, (y_min - margin)..(y_max + margin))
            .map_err(|e| plot_error(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| plot_error(e.to_string()))?;
        let palette = [
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(44, 160, 44),
            RGBColor(214, 39, 40),
        ];
        for (i, curve) in curves.iter().enumerate() {
            let color = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(curve.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| plot_error(e.to_string()))?
                .label(curve.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(curve.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot_error(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| plot_error(e.to_string()))?;
        root.present().map_err(|e| plot_error(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels).expect("the buffer has width * height * 3 bytes");
    save_png(path, &image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddpm_config_json(groups: usize) -> String {
        format!(
            r#"{{"model": "ddpm", "epochs": 1, "steps": null, "batch": 8, "lr": 0.0002, "seed": 0, "data": null,
                "adapter": "a", "latent_version": "0.1.0",
                "ddpm": {{"width": 64, "groups": {groups}, "schedule": "linear"}}}}"#
        )
    }

    /// A config.json written before runs had an image shape loads as 1x28x28; one with a shape keeps it, and an
    /// impossible one is refused at load.
    #[test]
    fn the_image_shape_defaults_to_mnist_and_round_trips() {
        let path = Path::new("runs/x/config.json");
        let old = RunConfig::from_json(&ddpm_config_json(8), path).unwrap();
        assert_eq!(old.image, ImageShape::MNIST);
        assert!(old.sections.contains_key("ddpm") && !old.sections.contains_key("image"));
        let text = serde_json::to_string(&old).unwrap();
        assert!(
            !text.contains("image"),
            "an MNIST-shaped run's config.json is as before: {text}"
        );
        let colour = RunConfig {
            image: ImageShape::new(3, 32, 32),
            ..old
        };
        let text = serde_json::to_string_pretty(&colour).unwrap();
        assert!(text.contains(r#""channels": 3"#), "{text}");
        assert_eq!(RunConfig::from_json(&text, path).unwrap(), colour);
        let four_channels = text.replace(r#""channels": 3"#, r#""channels": 4"#);
        let message = RunConfig::from_json(&four_channels, path).unwrap_err().to_string();
        assert!(
            message.contains("image 4x32x32 (C x H x W): latent takes 1 or 3 channels"),
            "{message}"
        );
    }

    /// The batch is checked at load (the ddpm's own section is checked by its recipe: tests/fuzz_regressions.rs).
    #[test]
    fn a_batch_whose_shapes_would_overflow_is_refused_at_load() {
        let path = Path::new("runs/x/config.json");
        RunConfig::from_json(&ddpm_config_json(8), path).expect("the default shape loads");
        let big_batch = ddpm_config_json(8).replace("\"batch\": 8", "\"batch\": 4611686018427387904");
        let message = RunConfig::from_json(&big_batch, path).unwrap_err().to_string();
        assert_eq!(
            message,
            "runs/x/config.json: batch 4611686018427387904 is outside 1 ..= 16777216"
        );
    }
}
