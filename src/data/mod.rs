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
pub use folder::{load_image_folder, Fit};
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

/// Checks that the images of `dataset` are `expected` (C, H, W), with a hint on what to change when not.
/// The dataset a run trains on: a directory (IDX files or images, at 1x28x28), or the embedded mnist-10k.
pub fn load_run_data(dir: Option<&std::path::PathBuf>) -> Result<Splits, DataError> {
    match dir {
        Some(dir) => load_dir(dir, ImageShape::MNIST, Fit::default()),
        None => embedded::mnist_10k(),
    }
}

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
