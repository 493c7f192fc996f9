//! Inputs that fuzzing (fuzz/, see fuzz/README.md) or probing its targets found to crash, hang or allocate far
//! beyond their size, each inline as bytes with what it now gets. CPU only: no GPU is opened.

use std::path::Path;

use latent::data::{folder, DataError, Fit, ImageShape};

/// A 69-byte PNG whose header claims 16000 x 16000 gray pixels (then a few bytes of image data). The decoder
/// allocated its whole 256 MB pixel buffer before finding the data missing (found with the image_folder
/// target's binary and -malloc_limit_mb=64). Now the header is checked against the file's size first.
const PNG_CLAIMING_256_MB: [u8; 69] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x3e, 0x80, 0x00, 0x00, 0x3e, 0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x64, 0x15, 0x80, 0x02, 0x00, 0x00, 0x00,
    0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0xa0, 0x3d, 0x00, 0x00, 0x00, 0x64, 0x00, 0x01, 0x86,
    0x64, 0x3c, 0x35, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn an_image_header_claiming_more_than_its_file_holds_is_refused_before_decoding() {
    let path = Path::new("digits/train/huge.png");
    let error = folder::decode_image(&PNG_CLAIMING_256_MB, path, ImageShape::MNIST, Fit::default()).unwrap_err();
    assert!(matches!(error, DataError::ImageHeaderTooLarge { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "digits/train/huge.png: the header says 16000 x 16000 pixels (256,000,000 bytes decoded), more than a \
         69-byte file can hold; the file is truncated or damaged, remove it or re-export it"
    );
    // The same through the path the folder loader and `latent inpaint --image/--mask` take.
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("mask.png");
    std::fs::write(&file, PNG_CLAIMING_256_MB).unwrap();
    let error = folder::load_image(&file, ImageShape::MNIST, Fit::default()).unwrap_err();
    assert!(matches!(error, DataError::ImageHeaderTooLarge { .. }), "{error:?}");
}

/// The bound is deflate's and JPEG's, not a guess: a blank 3000 x 3000 PNG (over 500:1) still loads.
#[test]
fn a_highly_compressible_image_still_decodes() {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let blank = vec![255u8; 3000 * 3000];
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::NoFilter)
        .write_image(&blank, 3000, 3000, image::ExtendedColorType::L8)
        .unwrap();
    assert!(png.len() * 500 < blank.len(), "{} bytes", png.len());
    let pixels = folder::decode_image(&png, Path::new("blank.png"), ImageShape::MNIST, Fit::default()).unwrap();
    assert_eq!(pixels, vec![255u8; 28 * 28]);
}
