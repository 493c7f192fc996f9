//! The image-folder loader's decode path on one image file's bytes: decode, fit to the dataset's shape, and
//! lay out as (C, H, W). The first byte picks the channels (1 or 3), the fit and the file extension.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use latent::data::{folder, Fit, ImageShape};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let channels = if choice & 1 == 0 { 1 } else { 3 };
    let fit = if choice & 2 == 0 { Fit::CenterCrop } else { Fit::Stretch };
    let path = Path::new(if choice & 4 == 0 { "fuzz.png" } else { "fuzz.jpg" });
    let shape = ImageShape::new(channels, 28, 28);
    if let Ok(pixels) = folder::decode_image(bytes, path, shape, fit) {
        assert_eq!(pixels.len(), shape.numel());
    }
});
