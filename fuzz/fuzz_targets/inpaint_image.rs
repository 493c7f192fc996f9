//! `latent inpaint --image A --mask B`: both files read by `data::folder::load_image`'s decode path into
//! (1, 28, 28), the mask thresholded at 128. The first two bytes give the image's length; the rest is the mask.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use latent::data::{folder, Fit, ImageShape};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (image, mask) = data[2..].split_at(split);
    let shape = ImageShape::MNIST;
    let image = folder::decode_image(image, Path::new("image.png"), shape, Fit::default());
    let mask = folder::decode_image(mask, Path::new("mask.png"), shape, Fit::default());
    if let (Ok(image), Ok(mask)) = (image, mask) {
        assert_eq!(image.len(), 28 * 28);
        assert_eq!(mask.len(), 28 * 28);
        let known = mask.iter().filter(|&&b| b >= 128).count();
        assert!(known <= mask.len());
    }
});
