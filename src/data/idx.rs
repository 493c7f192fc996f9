//! IDX files in the MNIST layout, gzip-compressed or raw.
//!
//! The IDX format (LeCun et al.) is a big-endian header followed by the values, row-major:
//! ```text
//! images: magic 0x00000803 (u8 data, 3 dims) | N: u32 | H: u32 | W: u32 | N*H*W bytes, (N, H, W)
//! labels: magic 0x00000801 (u8 data, 1 dim)  | N: u32 |                    N bytes,     (N,)
//! ```
//! A directory in the MNIST layout holds four such files, each optionally gzip-compressed (`.gz`):
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`.
//! MNIST, Fashion-MNIST, KMNIST and EMNIST are distributed this way. Whether a file is compressed is decided by
//! its first two bytes (gzip's 0x1f 0x8b), not by its name.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, ImageShape, Splits};
use super::error::{thousands, DataError, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC};

/// File names of the MNIST layout, without the optional `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

const IMAGES_HEADER_BYTES: usize = 16;
const LABELS_HEADER_BYTES: usize = 8;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// True when `dir` holds any file of the MNIST layout (compressed or not).
pub fn has_idx_files(dir: &Path) -> bool {
    [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
        .iter()
        .any(|stem| dir.join(stem).is_file() || dir.join(format!("{stem}.gz")).is_file())
}

/// Reads the four files of the MNIST layout from `dir`: the training split from `train-*`, the test split from
/// `t10k-*`. Each file may be raw or gzip-compressed (`name` or `name.gz`). Images are (N, 1, H, W).
pub fn load_idx_dir(dir: &Path) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(missing_dir(dir));
    }
    let train = read_idx_pair(&find_idx_file(dir, TRAIN_IMAGES)?, &find_idx_file(dir, TRAIN_LABELS)?)?;
    let test = read_idx_pair(&find_idx_file(dir, TEST_IMAGES)?, &find_idx_file(dir, TEST_LABELS)?)?;
    Ok(Splits { train, test })
}

/// Reads one image file and its label file into a labelled dataset, (N, 1, H, W).
pub fn read_idx_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images_bytes = read_maybe_gzip(images_path)?;
    let labels_bytes = read_maybe_gzip(labels_path)?;
    let name = images_path.display().to_string();
    parse_idx_pair(&images_bytes, images_path, &labels_bytes, labels_path, name)
}

/// Parses an image file and its label file, both already decompressed, into a labelled dataset
/// (N, 1, H, W). The paths are used only in error messages.
pub fn parse_idx_pair(
    images_bytes: &[u8],
    images_path: &Path,
    labels_bytes: &[u8],
    labels_path: &Path,
    name: String,
) -> Result<Dataset, DataError> {
    let (shape, pixels) = parse_idx_images(images_bytes, images_path)?;
    let labels = parse_idx_labels(labels_bytes, labels_path)?;
    let images = pixels.len() / shape.numel();
    if labels.len() != images {
        return Err(DataError::CountMismatch {
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
            images_path: images_path.to_path_buf(),
            images,
        });
    }
    Ok(Dataset::new(name, shape, pixels, Some(labels), Vec::new()))
}

/// Finds `dir/stem` or `dir/stem.gz`.
pub fn find_idx_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    let compressed = dir.join(format!("{stem}.gz"));
    if compressed.is_file() {
        return Ok(compressed);
    }
    Err(DataError::MissingFile {
        path: compressed,
        hint: format!(
            "a directory in the MNIST layout holds {TRAIN_IMAGES}, {TRAIN_LABELS}, {TEST_IMAGES} and {TEST_LABELS}, \
             each raw or gzipped (.gz)"
        ),
    })
}

/// Reads a whole file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            path: path.to_path_buf(),
            hint: "check the path".to_string(),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    decompress_if_gzip(bytes, path)
}

/// Returns `bytes` decompressed when they start with the gzip magic bytes, unchanged otherwise.
/// `path` is used only in error messages.
pub fn decompress_if_gzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    // Reserve the decompressed size from the gzip trailer (ISIZE: the size mod 2^32, little-endian) to avoid
    // regrowing; it is only a hint, so it is bounded by deflate's largest possible ratio (about 1032:1).
    let trailer_size = bytes
        .last_chunk::<4>()
        .map_or(0, |isize_bytes| u32::from_le_bytes(*isize_bytes) as usize);
    let mut decompressed = Vec::with_capacity(trailer_size.min(bytes.len().saturating_mul(1032)));
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut decompressed)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(decompressed)
}

/// Parses an IDX image file (already decompressed): returns the shape (1, H, W) and the (N, 1, H, W) bytes.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<(ImageShape, Vec<u8>), DataError> {
    check_magic(bytes, path, IDX_IMAGES_MAGIC)?;
    if bytes.len() < IMAGES_HEADER_BYTES {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "an IDX image header (magic, N, H, W)".to_string(),
            expected_bytes: IMAGES_HEADER_BYTES,
            found_bytes: bytes.len(),
        });
    }
    let images = read_u32_be(bytes, 4) as usize;
    let height = read_u32_be(bytes, 8) as usize;
    let width = read_u32_be(bytes, 12) as usize;
    if height == 0 || width == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("images of {height} x {width} pixels; height and width must be at least 1"),
        });
    }
    let what = format!(
        "{} images of {height} x {width} after the {IMAGES_HEADER_BYTES}-byte header",
        thousands(images)
    );
    let expected_bytes = images
        .checked_mul(height)
        .and_then(|n| n.checked_mul(width))
        .and_then(|n| n.checked_add(IMAGES_HEADER_BYTES))
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("{what} is too large to address"),
        })?;
    check_length(bytes, path, what, expected_bytes)?;
    let shape = ImageShape::new(1, height, width);
    Ok((shape, bytes[IMAGES_HEADER_BYTES..].to_vec()))
}

/// Parses an IDX label file (already decompressed) into (N,) labels.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u32>, DataError> {
    check_magic(bytes, path, IDX_LABELS_MAGIC)?;
    if bytes.len() < LABELS_HEADER_BYTES {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "an IDX label header (magic, N)".to_string(),
            expected_bytes: LABELS_HEADER_BYTES,
            found_bytes: bytes.len(),
        });
    }
    let labels = read_u32_be(bytes, 4) as usize;
    let what = format!(
        "{} labels after the {LABELS_HEADER_BYTES}-byte header",
        thousands(labels)
    );
    let expected_bytes = labels
        .checked_add(LABELS_HEADER_BYTES)
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("{what} is too large to address"),
        })?;
    check_length(bytes, path, what, expected_bytes)?;
    Ok(bytes[LABELS_HEADER_BYTES..].iter().map(|&label| label as u32).collect())
}

fn check_magic(bytes: &[u8], path: &Path, expected: u32) -> Result<(), DataError> {
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "the 4-byte IDX magic number".to_string(),
            expected_bytes: 4,
            found_bytes: bytes.len(),
        });
    }
    let found = read_u32_be(bytes, 0);
    if found != expected {
        return Err(DataError::WrongMagic {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    Ok(())
}

fn check_length(bytes: &[u8], path: &Path, what: String, expected_bytes: usize) -> Result<(), DataError> {
    let found_bytes = bytes.len();
    if found_bytes < expected_bytes {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what,
            expected_bytes,
            found_bytes,
        });
    }
    if found_bytes > expected_bytes {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            what,
            expected_bytes,
            found_bytes,
        });
    }
    Ok(())
}

/// The caller has checked that `bytes` holds `offset + 4` bytes.
fn read_u32_be(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

pub(crate) fn missing_dir(dir: &Path) -> DataError {
    DataError::MissingFile {
        path: dir.to_path_buf(),
        hint: "give a directory holding the four IDX files of the MNIST layout, or a folder of PNG/JPEG images"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_file(images: u32, height: u32, width: u32, data_bytes: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for value in [IDX_IMAGES_MAGIC, images, height, width] {
            bytes.extend_from_slice(&value.to_be_bytes());
        }
        bytes.extend((0..data_bytes).map(|i| i as u8));
        bytes
    }

    #[test]
    fn parses_a_small_image_file() {
        let bytes = images_file(2, 3, 4, 24);
        let (shape, pixels) = parse_idx_images(&bytes, Path::new("x")).unwrap();
        assert_eq!(shape, ImageShape::new(1, 3, 4));
        assert_eq!(pixels, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn zero_height_is_a_bad_header() {
        let bytes = images_file(2, 0, 4, 0);
        let error = parse_idx_images(&bytes, Path::new("x")).unwrap_err();
        assert!(matches!(error, DataError::BadHeader { .. }), "{error}");
    }

    #[test]
    fn huge_dimensions_do_not_overflow() {
        let bytes = images_file(u32::MAX, u32::MAX, u32::MAX, 10);
        let error = parse_idx_images(&bytes, Path::new("x")).unwrap_err();
        assert!(
            matches!(error, DataError::BadHeader { .. } | DataError::Truncated { .. }),
            "{error}"
        );
    }

    #[test]
    fn short_file_is_truncated_not_a_panic() {
        let error = parse_idx_labels(&[0, 0], Path::new("x")).unwrap_err();
        assert!(matches!(error, DataError::Truncated { .. }), "{error}");
        let error = parse_idx_images(&[0, 0, 8, 3, 0, 0], Path::new("x")).unwrap_err();
        assert!(matches!(error, DataError::Truncated { .. }), "{error}");
    }
}
