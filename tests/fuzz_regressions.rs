//! Inputs that fuzzing (fuzz/, see fuzz/README.md) or probing its targets found to crash, hang or allocate far
//! beyond their size, each inline with what it now gets.

use std::path::Path;
use std::process::Command;

use latent::data::{folder, DataError, Fit, ImageShape};

/// A 69-byte PNG whose header claims 16000 x 16000 gray pixels (then a few bytes of image data). The decoder
/// allocated its whole 256 MB pixel buffer before finding the data missing (found with the image_folder
/// target's binary and -malloc_limit_mb=64). Now the header is checked against the file's size first.
const PNG_CLAIMING_256_MB: [u8; 69] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x3e,
    0x80, 0x00, 0x00, 0x3e, 0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x64, 0x15, 0x80, 0x02, 0x00, 0x00, 0x00, 0x0c, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0xa0, 0x3d, 0x00, 0x00, 0x00, 0x64, 0x00, 0x01, 0x86, 0x64, 0x3c, 0x35,
    0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
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

/// Sizes whose shape products overflowed while the graph was built (a panic, "attempt to multiply with
/// overflow", in debug builds; wrapped nonsense in release): a ddpm width of 2^62 in config.json (found by
/// running the run_config target's binary on it) and `--batch 2^62` on the command line. Both are refused
/// with one line before any graph is built.
#[test]
fn sizes_whose_shapes_overflow_are_refused_with_one_line() {
    let directory = tempfile::tempdir().unwrap();
    let run = directory.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(
        run.join("config.json"),
        br#"{"model":"ddpm","epochs":1,"steps":null,"batch":8,"lr":0.001,"seed":0,"data":null,"adapter":"a",
            "latent_version":"0.1.0","ddpm":{"width":4611686018427387904,"groups":1,"schedule":"linear"}}"#,
    )
    .unwrap();
    let run = run.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["sample", "--run", run],
            "config.json: the U-Net's width 4611686018427387904 is over the largest latent builds, 65536",
        ),
        (
            &["train", "ddpm", "--resume", run],
            "config.json: the U-Net's width 4611686018427387904 is over the largest latent builds, 65536",
        ),
        (
            &[
                "train",
                "vae",
                "--batch",
                "4611686018427387904",
                "--run",
                "/nonexistent/never-made",
            ],
            "error: batch 4611686018427387904 is outside 1 ..= 16777216",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_latent")).args(args).output().unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {message}");
        assert!(
            message.contains(expected),
            "{args:?}: expected {expected:?} in:\n{message}"
        );
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
}

/// config.json's learning rate did not survive a write and a read: serde_json's default float parser may be one
/// unit in the last place off, so `0.000...0001` (1e-81 in 81 decimals) was read as 1.0000000000000001e-81,
/// written back as that, and read again as 1e-81; a resumed run could train with another learning rate than
/// the one it saved (found by the run_config target's round-trip check). serde_json's float_roundtrip feature
/// makes parsing exact.
#[test]
fn the_learning_rate_survives_config_json_round_trips() {
    let lr = format!("0.{}1", "0".repeat(80));
    let text = format!(
        r#"{{"model":"vae","epochs":1,"steps":null,"batch":8,"lr":{lr},"seed":0,"data":null,"adapter":"a",
            "latent_version":"0.1.0"}}"#
    );
    let path = Path::new("config.json");
    let config = latent::run::RunConfig::from_json(&text, path).unwrap();
    assert_eq!(config.lr, 1e-81);
    let again = latent::run::RunConfig::from_json(&serde_json::to_string(&config).unwrap(), path).unwrap();
    assert_eq!(again, config);
    for lr in [1e-3, 2e-4, 0.1 + 0.2, 1.0000000000000001e-81, f64::MIN_POSITIVE, 5e-324] {
        let config = latent::run::RunConfig { lr, ..config.clone() };
        let text = serde_json::to_string_pretty(&config).unwrap();
        assert_eq!(
            latent::run::RunConfig::from_json(&text, path).unwrap().lr.to_bits(),
            lr.to_bits(),
            "{text}"
        );
    }
}

/// A hand-edited ddpm section in config.json loads as a RunConfig and is refused by the ddpm's recipe (what
/// `sample`, `eval`, `inpaint` and `--resume` call before anything is built) with one line naming config.json.
#[test]
fn a_hand_edited_ddpm_shape_is_refused_by_its_recipe() {
    use latent::models::ModelKind;
    use latent::run::RunConfig;
    let config = |width: &str, groups: usize| {
        let text = format!(
            r#"{{"model": "ddpm", "epochs": 1, "steps": null, "batch": 8, "lr": 0.0002, "seed": 0, "data": null,
                "adapter": "a", "latent_version": "0.1.0",
                "ddpm": {{"width": {width}, "groups": {groups}, "schedule": "linear"}}}}"#
        );
        RunConfig::from_json(&text, Path::new("runs/x/config.json")).expect("the common fields load")
    };
    let check = |config: RunConfig| {
        ModelKind::Ddpm
            .recipe()
            .check_config(&config)
            .map_err(|e| e.to_string())
    };
    check(config("64", 8)).expect("the default shape builds");
    assert_eq!(
        check(config("4611686018427387904", 8)).unwrap_err(),
        "config.json: the U-Net's width 4611686018427387904 is over the largest latent builds, 65536"
    );
    for groups in [0, 7] {
        assert_eq!(
            check(config("64", groups)).unwrap_err(),
            format!("config.json: the U-Net's width 64 must be a positive multiple of its GroupNorm groups {groups}")
        );
    }
}
