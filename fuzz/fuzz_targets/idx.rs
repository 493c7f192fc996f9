//! The IDX reader on one file's bytes, raw or gzip-compressed (decided by the gzip magic, as on disk):
//! decompression, then the image and the label parsers, then the pair check.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use latent::data::idx;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-idx3-ubyte.gz");
    let Ok(bytes) = idx::decompress_if_gzip(data.to_vec(), path) else {
        return;
    };
    let images = idx::parse_idx_images(&bytes, path);
    let labels = idx::parse_idx_labels(&bytes, path);
    if let Ok((shape, pixels)) = images {
        assert_eq!(pixels.len() % shape.numel(), 0);
    }
    if let Ok(labels) = labels {
        assert_eq!(labels.len() + 8, bytes.len());
    }
    // The same bytes as both files of a pair (they can only agree when both parse).
    let _ = idx::parse_idx_pair(&bytes, path, &bytes, path, "fuzz".to_string());
});
