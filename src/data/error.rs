//! `DataError`: everything that can go wrong while reading a dataset.
//!
//! Every message names the file (or folder) involved, states what was expected against what was found, and where
//! there is an obvious fix, suggests it. Nothing in this module panics on user data.

use std::path::PathBuf;

use super::dataset::ImageShape;

/// An error while reading or batching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder the layout requires is not there.
    #[error("{}: not found; {hint}", path.display())]
    MissingFile { path: PathBuf, hint: String },

    /// The file exists but could not be read (permissions, I/O failure, not a directory, ...).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file starts like gzip but does not decompress: usually a truncated or damaged download.
    #[error(
        "{}: the gzip stream is damaged ({source}); the file is probably truncated or corrupted, download it again",
        path.display()
    )]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes of an IDX file are not the magic number for the expected kind of file.
    #[error(
        "{}: wrong magic number: expected {expected} ({expected:#010x}, {}), found {found} ({found:#010x}){}",
        path.display(),
        idx_kind(*.expected),
        magic_hint(*.expected, *.found)
    )]
    WrongMagic { path: PathBuf, expected: u32, found: u32 },

    /// The IDX header is readable but describes something impossible (a zero dimension, an absurd size).
    #[error("{}: invalid IDX header: {detail}", path.display())]
    BadHeader { path: PathBuf, detail: String },

    /// The file ends before the data its header announces.
    #[error(
        "{}: truncated: expected {what}, {} bytes in all, but the data has only {} bytes; \
         the file is incomplete, download it again",
        path.display(),
        thousands(*.expected_bytes),
        thousands(*.found_bytes)
    )]
    Truncated {
        path: PathBuf,
        what: String,
        expected_bytes: usize,
        found_bytes: usize,
    },

    /// More data follows the header than it announces: the header's dimensions do not describe the data.
    #[error(
        "{}: expected {what}, {} bytes in all, but the data has {} bytes; \
         the dimensions in the header do not describe the data",
        path.display(),
        thousands(*.expected_bytes),
        thousands(*.found_bytes)
    )]
    TrailingData {
        path: PathBuf,
        what: String,
        expected_bytes: usize,
        found_bytes: usize,
    },

    /// An image file and its label file disagree on the number of records.
    #[error(
        "{}: {} labels but {} has {} images; the two files must come from the same split of the same dataset",
        labels_path.display(),
        thousands(*.labels),
        images_path.display(),
        thousands(*.images)
    )]
    CountMismatch {
        labels_path: PathBuf,
        labels: usize,
        images_path: PathBuf,
        images: usize,
    },

    /// The images are not the size or number of channels the model takes.
    #[error("{}: images are {found} (C x H x W) but the model expects {expected}; {hint}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        expected: ImageShape,
        found: ImageShape,
        hint: String,
    },

    /// The model asks for an image shape this loader cannot produce.
    #[error("unsupported image shape {shape} (C x H x W): {reason}")]
    UnsupportedShape { shape: ImageShape, reason: String },

    /// An image file in a folder could not be decoded.
    #[error(
        "{}: cannot decode the image ({source}); the file is damaged or is not the format its extension says, \
         remove it or convert it to PNG",
        path.display()
    )]
    ImageDecode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// An image whose header claims more pixels than its file could hold compressed.
    #[error(
        "{}: the header says {width} x {height} pixels ({} bytes decoded), more than a {}-byte file can hold; \
         the file is truncated or damaged, remove it or re-export it",
        path.display(),
        thousands(*decoded_bytes as usize),
        thousands(*file_bytes)
    )]
    ImageHeaderTooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        decoded_bytes: u64,
        file_bytes: usize,
    },

    /// A folder's images are not all one size and no training size was given.
    #[error(
        "{}: the images are not all one size ({}); pass --image-size N to train at N x N (each image is scaled \
         to cover N x N and its centre cut), e.g. --image-size {suggested}",
        path.display(),
        examples.join(", ")
    )]
    MixedSizes {
        path: PathBuf,
        /// "32x32 (a.png)" for a few of the sizes found.
        examples: Vec<String>,
        suggested: usize,
    },

    /// A flag asks an IDX dataset for a size or colour its files do not have (IDX images are never resized).
    #[error("{}: the IDX images are {found} (C x H x W); {flag} cannot change that (IDX images are never \
             resized); drop {flag}, or convert the data to a folder of PNG images", path.display())]
    IdxNotResizable {
        path: PathBuf,
        found: ImageShape,
        flag: String,
    },

    /// A folder holds no images where some were expected.
    #[error("{}: no images found; {hint}", path.display())]
    EmptyFolder { path: PathBuf, hint: String },

    /// A folder mixes loose images with class subfolders, so labels are ambiguous.
    #[error(
        "{}: holds both loose images (e.g. {}) and class subfolders (e.g. {}); \
         move the loose images into a class subfolder or remove the subfolders",
        path.display(),
        loose_example.display(),
        subfolder_example.display()
    )]
    MixedLayout {
        path: PathBuf,
        loose_example: PathBuf,
        subfolder_example: PathBuf,
    },

    /// The test split has a class subfolder that the training split does not have.
    #[error(
        "{}: class \"{class}\" is not among the training classes ({}); \
         the test split's subfolders must use the training split's class names",
        path.display(),
        train_classes.join(", ")
    )]
    UnknownClass {
        path: PathBuf,
        class: String,
        train_classes: Vec<String>,
    },

    /// The batch size is zero or larger than the dataset.
    #[error(
        "batch size {batch_size} does not fit the dataset \"{dataset}\" of {} images; \
         use a batch size between 1 and {}",
        thousands(*.images),
        thousands(*.images)
    )]
    BadBatchSize {
        dataset: String,
        batch_size: usize,
        images: usize,
    },
}

/// IDX magic number for unsigned-byte images of rank 3: (N, H, W).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic number for unsigned-byte labels of rank 1: (N,).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

fn idx_kind(magic: u32) -> &'static str {
    match magic {
        IDX_IMAGES_MAGIC => "IDX images",
        IDX_LABELS_MAGIC => "IDX labels",
        _ => "IDX",
    }
}

fn magic_hint(expected: u32, found: u32) -> &'static str {
    match (expected, found) {
        (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC) => " — is this a label file?",
        (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC) => " — is this an image file?",
        (_, 0x1f8b_0000..=0x1f8b_ffff) => " — the file is gzip-compressed but could not be recognised as gzip",
        _ => " — this is not an IDX file of the MNIST layout",
    }
}

/// `60000` -> `"60,000"`: counts in messages are easier to compare with separators.
pub fn thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(59_999), "59,999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn magic_message_suggests_label_file() {
        let error = DataError::WrongMagic {
            path: PathBuf::from("train-images-idx3-ubyte.gz"),
            expected: IDX_IMAGES_MAGIC,
            found: IDX_LABELS_MAGIC,
        };
        assert_eq!(
            error.to_string(),
            "train-images-idx3-ubyte.gz: wrong magic number: expected 2051 (0x00000803, IDX images), \
             found 2049 (0x00000801) — is this a label file?"
        );
    }
}
