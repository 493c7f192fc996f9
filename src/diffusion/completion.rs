//! Region editing, measured: the built-in masks, the known image and mask of `latent inpaint --image --mask`, and
//! the figures of the completion benchmark (`latent eval --inpaint MASK`) that need no classifier.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::TrainError;

use crate::data::ImageShape;

/// A mask of the completion benchmark: 1 keeps the pixel, 0 regenerates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// The centred box of half the height and width (14x14 on 28x28) regenerated.
    Box,
    /// The left half regenerated.
    LeftHalf,
    /// The bottom half regenerated (the top half kept).
    BottomHalf,
    /// Three random strokes 3 pixels wide, drawn per image.
    Strokes,
    /// A PNG of the run's size: white keeps, black regenerates.
    File(PathBuf),
}

impl FromStr for MaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "box" => Self::Box,
            "left" | "left-half" => Self::LeftHalf,
            "bottom" | "bottom-half" => Self::BottomHalf,
            "strokes" => Self::Strokes,
            path if path.ends_with(".png") || Path::new(path).is_file() => Self::File(path.into()),
            _ => {
                return Err(format!(
                    "unknown mask {s:?}: choose box, left, bottom, strokes or a PNG file"
                ))
            }
        })
    }
}

impl MaskKind {
    pub fn name(&self) -> String {
        match self {
            Self::Box => "box".into(),
            Self::LeftHalf => "left".into(),
            Self::BottomHalf => "bottom".into(),
            Self::Strokes => "strokes".into(),
            Self::File(path) => path.display().to_string(),
        }
    }

    /// The mask of MNIST-shaped image `index` (784 values; the strokes depend on (seed, index)).
    pub fn mask(&self, index: usize, seed: u64) -> Result<Vec<f32>, TrainError> {
        self.mask_for(index, seed, ImageShape::MNIST)
    }

    /// The mask of image `index` of `image` (C·H·W values, every channel alike; the strokes depend on (seed,
    /// index)).
    pub fn mask_for(&self, index: usize, seed: u64, image: ImageShape) -> Result<Vec<f32>, TrainError> {
        let (h, w) = (image.height, image.width);
        let keep = |f: &dyn Fn(usize, usize) -> bool| -> Vec<f32> {
            (0..h * w).map(|i| if f(i / w, i % w) { 1.0 } else { 0.0 }).collect()
        };
        let plane = match self {
            Self::Box => keep(&|r, c| !((h / 4..h / 4 + h / 2).contains(&r) && (w / 4..w / 4 + w / 2).contains(&c))),
            Self::LeftHalf => keep(&|_, c| c >= w / 2),
            Self::BottomHalf => keep(&|r, _| r < h / 2),
            Self::Strokes => strokes(index, seed, h, w),
            Self::File(path) => return load_mask(path, image),
        };
        Ok(plane.repeat(image.channels))
    }
}

/// Three straight strokes 3 pixels wide between random points of an H x W plane (at least 4 pixels from the
/// border on 28x28: the points lie in [H/7, 6H/7)), from ChaCha8 keyed by (seed, index).
fn strokes(index: usize, seed: u64, h: usize, w: usize) -> Vec<f32> {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&0x7374_726f_6b65u64.to_le_bytes());
    key[16..24].copy_from_slice(&(index as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    let mut mask = vec![1.0f32; h * w];
    let rows = h as f32 / 7.0..6.0 * h as f32 / 7.0;
    let columns = w as f32 / 7.0..6.0 * w as f32 / 7.0;
    for _ in 0..3 {
        let (r0, c0) = (rng.random_range(rows.clone()), rng.random_range(columns.clone()));
        let (r1, c1) = (rng.random_range(rows.clone()), rng.random_range(columns.clone()));
        for s in 0..=64 {
            let t = s as f32 / 64.0;
            let (r, c) = (r0 + t * (r1 - r0), c0 + t * (c1 - c0));
            for dr in -1i32..=1 {
                for dc in -1i32..=1 {
                    let (rr, cc) = (r.round() as i32 + dr, c.round() as i32 + dc);
                    if (0..h as i32).contains(&rr) && (0..w as i32).contains(&cc) {
                        mask[rr as usize * w + cc as usize] = 0.0;
                    }
                }
            }
        }
    }
    mask
}

/// A PNG exactly of the run's size (C, H, W), as values in [0, 1]: luma for a 1-channel run, RGB planes for a
/// 3-channel one (alpha composited onto black, as training data is).
fn load_png(path: &Path, what: &str, image: ImageShape) -> Result<Vec<f32>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::Config(format!("--{what} {}: {e}", path.display())))?;
    let decoded =
        image::load_from_memory(&bytes).map_err(|e| TrainError::Config(format!("--{what} {}: {e}", path.display())))?;
    if (decoded.width(), decoded.height()) != (image.width as u32, image.height as u32) {
        return Err(TrainError::Config(format!(
            "--{what} {} is {}x{}, the run's images are {}x{}; give a {what} of that size",
            path.display(),
            decoded.width(),
            decoded.height(),
            image.width,
            image.height
        )));
    }
    let values = crate::data::folder::decode_image(&bytes, path, image, crate::data::Fit::default())?;
    Ok(values.into_iter().map(|v| v as f32 / 255.0).collect())
}

/// A mask PNG of the run's size: white (>= 128) keeps, black regenerates; one plane (its luma) for every channel.
pub fn load_mask(path: &Path, image: ImageShape) -> Result<Vec<f32>, TrainError> {
    let plane = load_png(path, "mask", ImageShape::new(1, image.height, image.width))?;
    let plane: Vec<f32> = plane
        .into_iter()
        .map(|v| if v >= 128.0 / 255.0 { 1.0 } else { 0.0 })
        .collect();
    Ok(plane.repeat(image.channels))
}

/// An image PNG of the run's size (C, H, W) in [0, 1].
pub fn load_known_image(path: &Path, image: ImageShape) -> Result<Vec<f32>, TrainError> {
    load_png(path, "image", image)
}

/// The seam score: the mean absolute difference between 4-neighbour pixels across the mask's boundary (one kept,
/// one regenerated), over every image and channel of `image`; None when no mask has a boundary. On real images it
/// is the figure a completion that joins the known pixels should match.
pub fn seam_score(images: &[f32], masks: &[f32], image: ImageShape) -> Option<f64> {
    let (h, w) = (image.height, image.width);
    let (mut sum, mut pairs) = (0.0f64, 0usize);
    for (plane, mask) in images.chunks(h * w).zip(masks.chunks(h * w)) {
        for r in 0..h {
            for c in 0..w {
                let i = r * w + c;
                for j in [(c + 1 < w).then_some(i + 1), (r + 1 < h).then_some(i + w)]
                    .into_iter()
                    .flatten()
                {
                    if mask[i] != mask[j] {
                        sum += (plane[i] - plane[j]).abs() as f64;
                        pairs += 1;
                    }
                }
            }
        }
    }
    (pairs > 0).then(|| sum / pairs as f64)
}

/// The largest change of a known pixel (mask 1) between `known` and `completed`.
pub fn max_known_change(completed: &[f32], known: &[f32], masks: &[f32]) -> f32 {
    completed
        .iter()
        .zip(known)
        .zip(masks)
        .filter(|(_, &m)| m == 1.0)
        .map(|((a, b), _)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_masks_keep_what_they_say() {
        let kept = |m: &MaskKind| m.mask(0, 0).unwrap().iter().sum::<f32>() as usize;
        assert_eq!(kept(&MaskKind::Box), 784 - 196);
        assert_eq!(kept(&MaskKind::LeftHalf), 392);
        assert_eq!(kept(&MaskKind::BottomHalf), 392);
        let strokes = MaskKind::Strokes.mask(3, 1).unwrap();
        assert!(strokes.iter().any(|&v| v == 0.0) && strokes.iter().any(|&v| v == 1.0));
        assert_eq!(strokes, MaskKind::Strokes.mask(3, 1).unwrap());
        assert_ne!(strokes, MaskKind::Strokes.mask(4, 1).unwrap());
    }

    #[test]
    fn the_seam_score_sees_a_step_across_the_boundary() {
        let mask = MaskKind::BottomHalf.mask(0, 0).unwrap();
        let flat = vec![0.5f32; 784];
        let mnist = ImageShape::MNIST;
        assert_eq!(seam_score(&flat, &mask, mnist), Some(0.0), "a flat image has no seam");
        let step: Vec<f32> = (0..784).map(|i| if i / 28 < 14 { 0.0 } else { 1.0 }).collect();
        assert_eq!(
            seam_score(&step, &mask, mnist),
            Some(1.0),
            "a step at the boundary is all seam"
        );
        assert_eq!(
            seam_score(&flat, &[1.0; 784], mnist),
            None,
            "an unmasked image has no boundary"
        );
    }

    #[test]
    fn a_mask_of_another_size_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.png");
        image::GrayImage::new(32, 32).save(&path).unwrap();
        let error = load_mask(&path, ImageShape::MNIST).unwrap_err().to_string();
        assert!(error.contains("is 32x32, the run's images are 28x28"), "{error}");
        let error = load_known_image(&path, ImageShape::new(3, 16, 16))
            .unwrap_err()
            .to_string();
        assert!(error.contains("is 32x32, the run's images are 16x16"), "{error}");
    }

    #[test]
    fn masks_of_colour_runs_cover_every_channel_alike() {
        let shape = ImageShape::new(3, 16, 16);
        let mask = MaskKind::Box.mask_for(0, 0, shape).unwrap();
        assert_eq!(mask.len(), 3 * 256);
        assert_eq!(
            mask.iter().filter(|&&v| v == 0.0).count(),
            3 * 64,
            "an 8x8 box in each channel"
        );
        assert_eq!(mask[..256], mask[256..512]);
        assert_eq!(mask[..256], mask[512..]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.png");
        let mut png = image::GrayImage::from_pixel(16, 16, image::Luma([255]));
        png.put_pixel(3, 2, image::Luma([0]));
        png.save(&path).unwrap();
        let loaded = load_mask(&path, shape).unwrap();
        let regenerated: Vec<usize> = (0..loaded.len()).filter(|&i| loaded[i] == 0.0).collect();
        assert_eq!(regenerated, vec![2 * 16 + 3, 256 + 2 * 16 + 3, 512 + 2 * 16 + 3]);
    }
}
