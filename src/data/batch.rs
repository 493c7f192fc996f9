//! `Batcher`: seeded, resumable shuffled batches written into caller-owned buffers.
//!
//! One epoch is a fresh permutation of the N images cut into floor(N / B) full batches; the last N mod B images of
//! the permutation are dropped for that epoch (they are in other places of the next epoch's permutation).
//!
//! Every random choice is derived from (seed, epoch) or (seed, epoch, step) alone, never from earlier calls, so
//! batch `step` of epoch `epoch` is the same on every run and on every machine, and a run resumed from a
//! checkpoint at (epoch, step) continues with exactly the batches it would have seen. The generator is ChaCha8
//! (`rand_chacha`), whose output is specified bit for bit; the shuffle is `rand` 0.10's Fisher-Yates, and a test
//! (`batch_order_is_pinned_for_a_known_seed`) fails if a dependency update ever changes the order.

use std::borrow::Borrow;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dataset::{Dataset, PixelRange};
use super::error::DataError;

/// What a ChaCha8 stream is used for; part of its seed so the streams never overlap.
#[derive(Clone, Copy)]
enum Purpose {
    Shuffle = 1,
    Binarize = 2,
}

/// A generator for one purpose at one (seed, epoch, step): its 32-byte ChaCha key is the four values as
/// little-endian u64s.
fn derived_rng(seed: u64, purpose: Purpose, epoch: u64, step: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&epoch.to_le_bytes());
    key[24..32].copy_from_slice(&step.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// The permutation of 0..len for (seed, epoch): Fisher-Yates driven by ChaCha8.
pub fn shuffled_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut derived_rng(seed, Purpose::Shuffle, epoch, 0));
    order
}

/// Cuts a dataset into shuffled batches of B images, shape (B, C, H, W), for any (epoch, step).
///
/// `D` is the dataset or anything that borrows one (`Dataset`, `&Dataset`, `Arc<Dataset>`).
///
/// ```no_run
/// # use latent::data::{Batcher, PixelRange, embedded};
/// # fn main() -> Result<(), latent::data::DataError> {
/// let splits = embedded::mnist_10k()?;
/// let mut batcher = Batcher::new(&splits.train, 128, 42)?.with_range(PixelRange::MinusOneToOne);
/// let mut images = vec![0.0f32; batcher.images_len()]; // (B, C, H, W)
/// let mut labels = vec![0u32; batcher.batch_size()]; // (B,)
/// for epoch in 0..2 {
///     for step in 0..batcher.steps_per_epoch() {
///         batcher.fill(epoch, step, &mut images, Some(&mut labels));
///         // upload `images` and train one step
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Batcher<D: Borrow<Dataset> = Dataset> {
    dataset: D,
    batch_size: usize,
    seed: u64,
    range: PixelRange,
    binarize: bool,
    /// The permutation of `cached_epoch`, the epoch last asked for, so `fill` shuffles once per epoch rather
    /// than once per step. Only a cache: it never changes what a batch contains.
    cached_epoch: Option<u64>,
    cached_order: Vec<usize>,
}

impl<D: Borrow<Dataset>> Batcher<D> {
    /// Batches of `batch_size` images from `dataset`, shuffled from `seed`; pixels in [0, 1], not binarised.
    ///
    /// Fails when `batch_size` is 0 or larger than the dataset (no full batch would exist).
    pub fn new(dataset: D, batch_size: usize, seed: u64) -> Result<Self, DataError> {
        let images = dataset.borrow().len();
        if batch_size == 0 || batch_size > images {
            return Err(DataError::BadBatchSize {
                dataset: dataset.borrow().name().to_string(),
                batch_size,
                images,
            });
        }
        Ok(Self {
            dataset,
            batch_size,
            seed,
            range: PixelRange::ZeroToOne,
            binarize: false,
            cached_epoch: None,
            cached_order: Vec::new(),
        })
    }

    /// Scales pixels to `range`: [0, 1] as byte / 255, or [-1, 1] as 2 x - 1.
    pub fn with_range(mut self, range: PixelRange) -> Self {
        self.range = range;
        self
    }

    /// Dynamic binarisation: each pixel of each batch becomes 1 with probability equal to its [0, 1] intensity,
    /// else 0 (then scaled to `range`), drawn afresh per (seed, epoch, step).
    pub fn with_binarize(mut self, binarize: bool) -> Self {
        self.binarize = binarize;
        self
    }

    pub fn dataset(&self) -> &Dataset {
        self.dataset.borrow()
    }

    /// B, images per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn range(&self) -> PixelRange {
        self.range
    }

    pub fn binarize(&self) -> bool {
        self.binarize
    }

    /// floor(N / B): full batches per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.dataset().len() / self.batch_size
    }

    /// The (epoch, step within the epoch) of the `global_step`-th batch counted from the start of training.
    pub fn position(&self, global_step: u64) -> (u64, usize) {
        let steps_per_epoch = self.steps_per_epoch() as u64;
        (global_step / steps_per_epoch, (global_step % steps_per_epoch) as usize)
    }

    /// B * C * H * W: the length of the image buffer `fill` writes.
    pub fn images_len(&self) -> usize {
        self.batch_size * self.dataset().shape().numel()
    }

    /// The permutation of image indices 0..N for `epoch`; batch `step` is `order[step * B..(step + 1) * B]`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        shuffled_order(self.dataset().len(), self.seed, epoch)
    }

    /// The image indices of batch `step` of `epoch`, (B,).
    ///
    /// # Panics
    /// If `step >= steps_per_epoch()`.
    pub fn indices(&mut self, epoch: u64, step: usize) -> &[usize] {
        let batch = self.batch_range(epoch, step);
        &self.cached_order[batch]
    }

    /// Writes batch `step` of `epoch`: images into `images`, (B, C, H, W) row-major f32 in the batcher's range,
    /// and, when `labels` is given and the dataset has labels, the labels into it, (B,).
    /// Returns whether labels were written.
    ///
    /// The result depends only on (seed, epoch, step) and the options, so any batch can be reproduced or resumed.
    ///
    /// # Panics
    /// If `step >= steps_per_epoch()`, `images.len() != images_len()` or `labels.len() != batch_size()`.
    pub fn fill(&mut self, epoch: u64, step: usize, images: &mut [f32], labels: Option<&mut [u32]>) -> bool {
        let batch = self.batch_range(epoch, step);
        let batch = &self.cached_order[batch];
        let dataset = self.dataset.borrow();
        if self.binarize {
            let rng = derived_rng(self.seed, Purpose::Binarize, epoch, step as u64);
            fill_binarized(dataset, batch, self.range, rng, images);
        } else {
            dataset.fill_images(batch, self.range, images);
        }
        match labels {
            Some(labels) => dataset.fill_labels(batch, labels),
            None => false,
        }
    }

    /// Shuffles for `epoch` unless that order is cached, and returns where batch `step` lies in it.
    fn batch_range(&mut self, epoch: u64, step: usize) -> std::ops::Range<usize> {
        let steps_per_epoch = self.steps_per_epoch();
        assert!(
            step < steps_per_epoch,
            "step {step} is past the end of the epoch ({steps_per_epoch} steps of batch {})",
            self.batch_size
        );
        if self.cached_epoch != Some(epoch) {
            self.cached_order = self.order(epoch);
            self.cached_epoch = Some(epoch);
        }
        step * self.batch_size..(step + 1) * self.batch_size
    }
}

/// Dynamic binarisation of the images at `indices` into `out` (B, C, H, W): pixel = 1 when u < byte / 255 with
/// u ~ U[0, 1) drawn from `rng` in pixel order, else 0; then mapped to `range`.
fn fill_binarized(dataset: &Dataset, indices: &[usize], range: PixelRange, mut rng: ChaCha8Rng, out: &mut [f32]) {
    dataset.fill_images(indices, PixelRange::ZeroToOne, out);
    let (off, on) = (range.from_unit(0.0), range.from_unit(1.0));
    for value in out.iter_mut() {
        let uniform: f32 = rng.random();
        *value = if uniform < *value { on } else { off };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::ImageShape;

    fn counting_dataset(images: usize) -> Dataset {
        let pixels = (0..images).map(|i| i as u8).collect();
        Dataset::new("counting", ImageShape::new(1, 1, 1), pixels, None, Vec::new())
    }

    #[test]
    fn order_is_a_permutation() {
        let mut order = shuffled_order(1000, 7, 3);
        order.sort_unstable();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn position_splits_global_steps() {
        let batcher = Batcher::new(counting_dataset(10), 3, 0).unwrap();
        assert_eq!(batcher.steps_per_epoch(), 3);
        assert_eq!(batcher.position(0), (0, 0));
        assert_eq!(batcher.position(2), (0, 2));
        assert_eq!(batcher.position(3), (1, 0));
        assert_eq!(batcher.position(7), (2, 1));
    }

    #[test]
    fn zero_or_oversized_batch_is_an_error() {
        assert!(matches!(
            Batcher::new(counting_dataset(10), 0, 0),
            Err(DataError::BadBatchSize { .. })
        ));
        assert!(matches!(
            Batcher::new(counting_dataset(10), 11, 0),
            Err(DataError::BadBatchSize { .. })
        ));
    }
}
