//! `Dataset`: images kept as bytes, shape (N, C, H, W), with optional labels; and the conversion to f32.
//!
//! Dimension glossary used throughout `data`:
//! - N: number of images in a dataset; B: images in a batch
//! - C: channels (1 grayscale, 3 RGB); H, W: height and width in pixels
//!
//! Images stay as `u8` in memory (60,000 x 784 MNIST-size images are 47 MB) and become `f32` only when a batch is
//! written, into a buffer the caller owns.

use std::fmt;

/// The shape of one image: channels, height, width. Displays as `CxHxW`, e.g. `1x28x28`; config.json keeps it as
/// `{"channels": 1, "height": 28, "width": 28}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// The shape of MNIST and its relatives: 1 channel, 28 x 28.
    pub const MNIST: ImageShape = ImageShape::new(1, 28, 28);

    /// Values per image: C * H * W.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// The range a model expects its input pixels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PixelRange {
    /// byte / 255, in [0, 1] (ae, vae, classifier).
    #[default]
    ZeroToOne,
    /// 2 * (byte / 255) - 1, in [-1, 1] (gan, ddpm).
    MinusOneToOne,
}

impl PixelRange {
    /// Maps an intensity in [0, 1] to this range.
    #[inline]
    pub fn from_unit(self, intensity: f32) -> f32 {
        match self {
            PixelRange::ZeroToOne => intensity,
            PixelRange::MinusOneToOne => 2.0 * intensity - 1.0,
        }
    }
}

/// A set of images, shape (N, C, H, W), stored as bytes, with an optional label per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where the images came from (a file, a folder, `mnist-10k/train`); used in messages.
    name: String,
    shape: ImageShape,
    /// (N, C, H, W) row-major, 0 = black, 255 = full intensity.
    pixels: Vec<u8>,
    /// (N,), each in 0..num_classes.
    labels: Option<Vec<u32>>,
    /// Class index -> name, when the source names its classes (image folders); empty otherwise.
    class_names: Vec<String>,
}

impl Dataset {
    /// Builds a dataset from bytes in (N, C, H, W) order.
    ///
    /// # Panics
    /// If `pixels.len()` is not a multiple of `shape.numel()`, or `labels` does not have one entry per image.
    /// These are bugs in the caller, not problems with user data; the loaders check user data before this.
    pub fn new(
        name: impl Into<String>,
        shape: ImageShape,
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
    ) -> Self {
        let image_len = shape.numel();
        assert!(image_len > 0, "image shape {shape} has no pixels");
        assert_eq!(
            pixels.len() % image_len,
            0,
            "{} pixel bytes is not a whole number of {shape} images",
            pixels.len()
        );
        let images = pixels.len() / image_len;
        if let Some(labels) = &labels {
            assert_eq!(labels.len(), images, "{} labels for {images} images", labels.len());
        }
        Self {
            name: name.into(),
            shape,
            pixels,
            labels,
            class_names,
        }
    }

    /// Where the images came from, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// N, the number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.shape.numel()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// (C, H, W) of each image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// All pixels, (N, C, H, W) row-major bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Image `index` as (C, H, W) bytes.
    pub fn image(&self, index: usize) -> &[u8] {
        let image_len = self.shape.numel();
        &self.pixels[index * image_len..(index + 1) * image_len]
    }

    /// (N,) labels, if the source has them.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// Class index -> name, for sources that name their classes (image folders); empty for IDX files.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// K, the number of classes: the named classes if any, else 1 + the largest label, else 0 (no labels).
    pub fn num_classes(&self) -> usize {
        if !self.class_names.is_empty() {
            return self.class_names.len();
        }
        match &self.labels {
            Some(labels) => labels.iter().max().map_or(0, |&largest| largest as usize + 1),
            None => 0,
        }
    }

    /// Writes the images at `indices` into `out`, shape (B, C, H, W) with B = `indices.len()`, scaled to `range`.
    ///
    /// # Panics
    /// If `out.len()` is not `indices.len() * C * H * W` or an index is out of range.
    pub fn fill_images(&self, indices: &[usize], range: PixelRange, out: &mut [f32]) {
        let image_len = self.shape.numel();
        assert_eq!(
            out.len(),
            indices.len() * image_len,
            "output buffer holds {} values but {} images of {} need {}",
            out.len(),
            indices.len(),
            self.shape,
            indices.len() * image_len
        );
        for (&index, out_image) in indices.iter().zip(out.chunks_exact_mut(image_len)) {
            for (&byte, value) in self.image(index).iter().zip(out_image.iter_mut()) {
                *value = range.from_unit(byte as f32 / 255.0);
            }
        }
    }

    /// Writes the labels at `indices` into `out`, shape (B,). Returns false (and leaves `out` alone) when the
    /// dataset has no labels.
    ///
    /// # Panics
    /// If `out.len()` is not `indices.len()` or an index is out of range.
    pub fn fill_labels(&self, indices: &[usize], out: &mut [u32]) -> bool {
        assert_eq!(out.len(), indices.len(), "label buffer length");
        let Some(labels) = &self.labels else {
            return false;
        };
        for (&index, label) in indices.iter().zip(out.iter_mut()) {
            *label = labels[index];
        }
        true
    }

    /// Counts of each label, (K,); empty when the dataset has no labels.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in self.labels().unwrap_or(&[]) {
            counts[label as usize] += 1;
        }
        counts
    }
}

/// The two splits of a dataset: the training images and the held-out test images.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}
