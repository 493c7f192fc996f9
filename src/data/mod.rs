//! Datasets: IDX files, image folders, the embedded default, batching.
//!
//! Dimension glossary: N images in a dataset, B images in a batch, C channels, H x W pixels.
//!
//! - [`load_dir`] reads a user's `--data DIR`: the four IDX files of the MNIST layout (MNIST, Fashion-MNIST,
//!   KMNIST, ...; gzip or raw), or else a folder of PNG/JPEG images ([`folder`] documents the layouts).
//! - [`embedded::mnist_10k`] gives the dataset compiled into the binary (9,003 train + 997 test digits, 1x28x28).
//! - A [`Dataset`] keeps images as bytes, (N, C, H, W); a [`Batcher`] writes shuffled f32 batches, (B, C, H, W),
//!   into a buffer the training loop owns, reproducibly from (seed, epoch, step).
//! - Every failure is a [`DataError`] naming the file, what was expected and what was found.

pub mod batch;
pub mod dataset;
pub mod embedded;
pub mod error;
pub mod folder;
pub mod idx;

use std::path::Path;

pub use batch::{shuffled_order, Batcher};
pub use dataset::{Dataset, ImageShape, PixelRange, Splits};
pub use error::DataError;
pub use folder::{load_image_folder, survey_folder, Fit, FolderSurvey};
pub use idx::load_idx_dir;

/// Reads the dataset in `dir` for a model taking images of `shape` (C, H, W).
///
/// A directory holding any of the MNIST-layout IDX files is read as IDX ([`load_idx_dir`]); its images must
/// already be `shape` (IDX images are never resized). Anything else is read as an image folder
/// ([`load_image_folder`]), where every image is converted to `shape.channels` and fitted to H x W by `fit`.
pub fn load_dir(dir: &Path, shape: ImageShape, fit: Fit) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(idx::missing_dir(dir));
    }
    if !idx::has_idx_files(dir) {
        return load_image_folder(dir, shape, fit);
    }
    let splits = load_idx_dir(dir)?;
    for split in [&splits.train, &splits.test] {
        check_shape(split, shape)?;
    }
    Ok(splits)
}

/// The dataset a run trains on, at the run's image `shape` (config.json's `image`): a directory (IDX files, which
/// must already be `shape`, or a folder of images, fitted to it), or the embedded mnist-10k (1x28x28).
pub fn load_run_data(dir: Option<&std::path::PathBuf>, shape: ImageShape) -> Result<Splits, DataError> {
    match dir {
        Some(dir) => load_dir(dir, shape, Fit::default()),
        None => {
            let splits = embedded::mnist_10k()?;
            check_shape(&splits.train, shape)?;
            Ok(splits)
        }
    }
}

/// The (C, H, W) a new run trains at, from its data and the flags of `latent train`:
/// - the embedded mnist-10k and IDX directories: the files' own shape (`--image-size` or `--grayscale` that would
///   change it is an error: IDX images are never resized);
/// - an image folder: `--image-size N` gives N x N, else the folder's size when all its images agree (else an
///   error asking for `--image-size`); 3 channels when any file stores colour (its colour type) unless
///   `--grayscale`, else 1.
pub fn resolve_shape(dir: Option<&Path>, image_size: Option<usize>, grayscale: bool) -> Result<ImageShape, DataError> {
    let fixed = |path: &Path, found: ImageShape| -> Result<ImageShape, DataError> {
        let flag = match image_size {
            Some(size) if size != found.height || size != found.width => Some(format!("--image-size {size}")),
            _ => None,
        };
        match flag {
            Some(flag) => Err(DataError::IdxNotResizable {
                path: path.to_path_buf(),
                found,
                flag,
            }),
            // A grayscale IDX dataset is already grayscale.
            None => Ok(found),
        }
    };
    let Some(dir) = dir else {
        return fixed(Path::new("mnist-10k (embedded)"), ImageShape::MNIST);
    };
    if !dir.is_dir() {
        return Err(idx::missing_dir(dir));
    }
    if idx::has_idx_files(dir) {
        let splits = load_idx_dir(dir)?;
        return fixed(dir, splits.train.shape());
    }
    let survey = survey_folder(dir)?;
    let channels = if survey.colour_example.is_some() && !grayscale {
        3
    } else {
        1
    };
    let (height, width) = match image_size {
        Some(size) => (size, size),
        None => match survey.sizes.as_slice() {
            [((width, height), _)] => (*height as usize, *width as usize),
            sizes => {
                // The shorter side of the largest image, at most 64, rounded down to a multiple of 4.
                let side = sizes.iter().map(|((w, h), _)| (*w).min(*h)).max().unwrap_or(28);
                return Err(DataError::MixedSizes {
                    path: dir.to_path_buf(),
                    examples: sizes
                        .iter()
                        .take(3)
                        .map(|((w, h), file)| format!("{w}x{h} ({})", file.display()))
                        .collect(),
                    suggested: ((side as usize).min(64) / 4 * 4).max(4),
                });
            }
        },
    };
    Ok(ImageShape::new(channels, height, width))
}

/// Checks that the images of `dataset` are `expected` (C, H, W), with a hint on what to change when not.
pub fn check_shape(dataset: &Dataset, expected: ImageShape) -> Result<(), DataError> {
    let found = dataset.shape();
    if found == expected {
        return Ok(());
    }
    let hint = if found.channels != expected.channels {
        format!(
            "the data has {} channel(s): configure the model for that, or use a folder of PNG/JPEG images, \
             which is converted to the model's channels",
            found.channels
        )
    } else {
        format!(
            "use a model configured for {}x{} images, or resize the data (an image folder is resized automatically)",
            found.height, found.width
        )
    };
    Err(DataError::ShapeMismatch {
        path: dataset.name().into(),
        expected,
        found,
        hint,
    })
}
