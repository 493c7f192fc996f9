//! The embedded default dataset: mnist-10k, compiled into the binary so that `latent train vae` needs no files.
//!
//! 10,000 MNIST digits, 28 x 28 grayscale, split 9,003 train / 997 test (stratified by digit, fixed seed), kept as
//! the four gzip IDX files in `assets/mnist-10k/` (see its README.md for provenance and checksums). About 1.6 MB
//! of the binary; decoding takes a few milliseconds.

use std::path::Path;

use super::dataset::Splits;
use super::error::DataError;
use super::idx::{decompress_if_gzip, parse_idx_pair, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};

/// Name used in messages and in run configurations for the embedded dataset.
pub const MNIST_10K_NAME: &str = "mnist-10k";
/// Images in the embedded training split.
pub const MNIST_10K_TRAIN_LEN: usize = 9_003;
/// Images in the embedded test split.
pub const MNIST_10K_TEST_LEN: usize = 997;

/// The gzip IDX files, byte for byte as in `assets/mnist-10k/`.
pub const MNIST_10K_TRAIN_IMAGES_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist-10k/train-images-idx3-ubyte.gz"
));
pub const MNIST_10K_TRAIN_LABELS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist-10k/train-labels-idx1-ubyte.gz"
));
pub const MNIST_10K_TEST_IMAGES_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist-10k/t10k-images-idx3-ubyte.gz"
));
pub const MNIST_10K_TEST_LABELS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist-10k/t10k-labels-idx1-ubyte.gz"
));

/// The embedded mnist-10k: train (9,003, 1, 28, 28) and test (997, 1, 28, 28), labels 0..9.
///
/// Returns a `Result` like every other loader so callers can treat it the same way; it fails only if the
/// binary was built from damaged assets (a test checks that it does not).
pub fn mnist_10k() -> Result<Splits, DataError> {
    let train = decode_pair(
        MNIST_10K_TRAIN_IMAGES_GZ,
        TRAIN_IMAGES,
        MNIST_10K_TRAIN_LABELS_GZ,
        TRAIN_LABELS,
    )?;
    let test = decode_pair(
        MNIST_10K_TEST_IMAGES_GZ,
        TEST_IMAGES,
        MNIST_10K_TEST_LABELS_GZ,
        TEST_LABELS,
    )?;
    Ok(Splits { train, test })
}

fn decode_pair(
    images_gz: &[u8],
    images_stem: &str,
    labels_gz: &[u8],
    labels_stem: &str,
) -> Result<super::dataset::Dataset, DataError> {
    // Paths as they appear in messages: "<embedded mnist-10k>/train-images-idx3-ubyte.gz".
    let images_path = Path::new("<embedded mnist-10k>").join(format!("{images_stem}.gz"));
    let labels_path = Path::new("<embedded mnist-10k>").join(format!("{labels_stem}.gz"));
    let images = decompress_if_gzip(images_gz.to_vec(), &images_path)?;
    let labels = decompress_if_gzip(labels_gz.to_vec(), &labels_path)?;
    let split = if images_stem == TRAIN_IMAGES { "train" } else { "test" };
    let name = format!("{MNIST_10K_NAME}/{split}");
    parse_idx_pair(&images, &images_path, &labels, &labels_path, name)
}
