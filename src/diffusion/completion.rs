//! Region editing, measured: the built-in masks, the known image and mask of `latent inpaint --image --mask`, and
//! the figures of the completion benchmark (`latent eval --inpaint MASK`) that need no classifier.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::TrainError;

/// The images' side (the runs are 28x28 grayscale).
const SIDE: usize = 28;

/// A mask of the completion benchmark: 1 keeps the pixel, 0 regenerates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// The centred 14x14 box regenerated.
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

    /// The mask of image `index` (784 values; the strokes depend on (seed, index)).
    pub fn mask(&self, index: usize, seed: u64) -> Result<Vec<f32>, TrainError> {
        let keep = |f: &dyn Fn(usize, usize) -> bool| -> Vec<f32> {
            (0..SIDE * SIDE)
                .map(|i| if f(i / SIDE, i % SIDE) { 1.0 } else { 0.0 })
                .collect()
        };
        Ok(match self {
            Self::Box => keep(&|r, c| !((7..21).contains(&r) && (7..21).contains(&c))),
            Self::LeftHalf => keep(&|_, c| c >= SIDE / 2),
            Self::BottomHalf => keep(&|r, _| r < SIDE / 2),
            Self::Strokes => strokes(index, seed),
            Self::File(path) => load_mask(path)?,
        })
    }
}

/// Three straight strokes 3 pixels wide between random points, from ChaCha8 keyed by (seed, index).
fn strokes(index: usize, seed: u64) -> Vec<f32> {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&0x7374_726f_6b65u64.to_le_bytes());
    key[16..24].copy_from_slice(&(index as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    let mut mask = vec![1.0f32; SIDE * SIDE];
    for _ in 0..3 {
        let (r0, c0) = (rng.random_range(4.0..24.0f32), rng.random_range(4.0..24.0f32));
        let (r1, c1) = (rng.random_range(4.0..24.0f32), rng.random_range(4.0..24.0f32));
        for s in 0..=64 {
            let t = s as f32 / 64.0;
            let (r, c) = (r0 + t * (r1 - r0), c0 + t * (c1 - c0));
            for dr in -1i32..=1 {
                for dc in -1i32..=1 {
                    let (rr, cc) = (r.round() as i32 + dr, c.round() as i32 + dc);
                    if (0..SIDE as i32).contains(&rr) && (0..SIDE as i32).contains(&cc) {
                        mask[rr as usize * SIDE + cc as usize] = 0.0;
                    }
                }
            }
        }
    }
    mask
}

/// A grayscale PNG exactly of the run's size, as values in [0, 1] (the image) or its threshold at 128 (a mask).
fn load_png(path: &Path, what: &str) -> Result<Vec<f32>, TrainError> {
    let image = image::open(path)
        .map_err(|e| TrainError::Config(format!("--{what} {}: {e}", path.display())))?
        .to_luma8();
    if image.dimensions() != (SIDE as u32, SIDE as u32) {
        return Err(TrainError::Config(format!(
            "--{what} {} is {}x{}, the run's images are {SIDE}x{SIDE}; give a {what} of that size",
            path.display(),
            image.width(),
            image.height()
        )));
    }
    Ok(image.pixels().map(|p| p.0[0] as f32 / 255.0).collect())
}

/// A mask PNG: white (>= 128) keeps, black regenerates.
pub fn load_mask(path: &Path) -> Result<Vec<f32>, TrainError> {
    Ok(load_png(path, "mask")?
        .into_iter()
        .map(|v| if v >= 128.0 / 255.0 { 1.0 } else { 0.0 })
        .collect())
}

/// An image PNG in [0, 1].
pub fn load_known_image(path: &Path) -> Result<Vec<f32>, TrainError> {
    load_png(path, "image")
}

/// The seam score: the mean absolute difference between 4-neighbour pixels across the mask's boundary (one kept,
/// one regenerated), over every image; None when no mask has a boundary. On real images it is the figure a
/// completion that joins the known pixels should match.
pub fn seam_score(images: &[f32], masks: &[f32]) -> Option<f64> {
    let (mut sum, mut pairs) = (0.0f64, 0usize);
    for (image, mask) in images.chunks(SIDE * SIDE).zip(masks.chunks(SIDE * SIDE)) {
        for r in 0..SIDE {
            for c in 0..SIDE {
                let i = r * SIDE + c;
                for j in [(c + 1 < SIDE).then_some(i + 1), (r + 1 < SIDE).then_some(i + SIDE)]
                    .into_iter()
                    .flatten()
                {
                    if mask[i] != mask[j] {
                        sum += (image[i] - image[j]).abs() as f64;
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
        assert_eq!(seam_score(&flat, &mask), Some(0.0), "a flat image has no seam");
        let step: Vec<f32> = (0..784).map(|i| if i / 28 < 14 { 0.0 } else { 1.0 }).collect();
        assert_eq!(
            seam_score(&step, &mask),
            Some(1.0),
            "a step at the boundary is all seam"
        );
        assert_eq!(
            seam_score(&flat, &[1.0; 784]),
            None,
            "an unmasked image has no boundary"
        );
    }

    #[test]
    fn a_mask_of_another_size_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.png");
        image::GrayImage::new(32, 32).save(&path).unwrap();
        let error = load_mask(&path).unwrap_err().to_string();
        assert!(error.contains("is 32x32, the run's images are 28x28"), "{error}");
    }
}
