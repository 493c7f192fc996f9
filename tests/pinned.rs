//! What training computes, pinned: short seeded runs of every model and recipe through the command line, each
//! checkpoint reduced to one hash over every tensor (name, dtype, shape and bytes: weights, buffers, Adam's
//! moments and step, the ddpm's EMA). A refactor of the layers above the plans must leave every hash unchanged.
//!
//! Bit-identical results are promised per adapter (the same kernels in the same order), so the hashes are
//! recorded for the adapter they were measured on; on another adapter the test reports its hashes instead of
//! comparing them. Re-record with `LATENT_PIN_PRINT=1 cargo test --test pinned -- --nocapture`.

mod common;

use common::{checkpoint_hash, latent, tiny_mnist};

/// The adapter the hashes below were recorded on (`Gpu::describe`).
const PINNED_ADAPTER: &str = "llvmpipe (LLVM 15.0.6, 256 bits) (vulkan, CPU, llvmpipe Mesa 22.3.6 (LLVM 15.0.6))";

/// (run name, arguments after `latent train`, checkpoint hash on [`PINNED_ADAPTER`]).
/// 48 training images at batch 16 are 3 steps per epoch, so `--steps 4` crosses an epoch boundary (a reshuffle,
/// the per-epoch evaluation, the checkpoint and the preview in between).
const RUNS: &[(&str, &[&str], u64)] = &[
    ("ae", &["ae", "--batch", "16", "--steps", "4"], 0x07e857317da4104b),
    ("vae", &["vae", "--batch", "16", "--steps", "4"], 0x116763ea34adfef6),
    (
        "classifier",
        &["classifier", "--batch", "16", "--steps", "4"],
        0x9f10546d746d2921,
    ),
    ("gan", &["gan", "--batch", "16", "--steps", "4"], 0x825188b8f59c592c),
    ("wae-mmd", &["wae", "--batch", "16", "--steps", "4"], 0xaa792b6dcb3ca6c2),
    (
        "wae-adversarial",
        &["wae", "--regularizer", "adversarial", "--batch", "16", "--steps", "4"],
        0xda70f9f2c5fffd7e,
    ),
    (
        "ddpm",
        &[
            "ddpm",
            "--batch",
            "4",
            "--steps",
            "3",
            "--width",
            "16",
            "--groups",
            "4",
            "--preview-steps",
            "2",
        ],
        0x8465e5f734c74182,
    ),
    ("ae-kl", &["ae-kl", "--batch", "16", "--steps", "4"], 0xd4a72fc9e03ea2fe),
    (
        "ldm",
        &[
            "ldm",
            "--batch",
            "16",
            "--steps",
            "4",
            "--autoencoder-epochs",
            "1",
            "--guide-epochs",
            "0",
            "--width",
            "32",
            "--blocks",
            "2",
            "--preview-steps",
            "2",
        ],
        0x3332fc3d5a24c024,
    ),
];

#[test]
fn short_runs_of_every_model_match_their_pinned_checkpoint_hashes() {
    let gpu = latent::gpu::Gpu::new(&latent::gpu::GpuOptions::from_env().unwrap()).expect("an adapter");
    let adapter = gpu.describe();
    drop(gpu);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 48, 16);
    let data_s = data.to_str().unwrap();
    let print = std::env::var_os("LATENT_PIN_PRINT").is_some() || adapter != PINNED_ADAPTER;
    let mut mismatches = Vec::new();
    for (name, args, pinned) in RUNS {
        let run = dir.path().join(name);
        let run_s = run.to_str().unwrap();
        let mut command = vec!["train"];
        command.extend_from_slice(args);
        command.extend_from_slice(&["--data", data_s, "--run", run_s, "--seed", "3"]);
        latent(&command);
        let hash = checkpoint_hash(&run.join("checkpoint.safetensors"));
        if print {
            println!("    (\"{name}\", {args:?}, 0x{hash:016x}),");
        }
        if hash != *pinned {
            mismatches.push(format!("{name}: 0x{hash:016x}, pinned 0x{pinned:016x}"));
        }
    }
    if adapter != PINNED_ADAPTER {
        eprintln!("hashes are pinned on {PINNED_ADAPTER:?}, not {adapter:?}: reported above, not compared");
        return;
    }
    assert!(
        mismatches.is_empty(),
        "training changed on {adapter}:\n{}",
        mismatches.join("\n")
    );
}

/// config.json as main wrote it before the recipe interface (9d69082): each model's own section under its name,
/// absent for models without one. Such run directories still load for eval, sample and resume.
#[test]
fn config_json_written_before_the_recipe_interface_still_loads() {
    use latent::models::ddpm::{DdpmConfig, ScheduleKind};
    use latent::models::wae::{Regularizer, WaeConfig};
    use latent::run::RunConfig;
    let common = r#""epochs": 60, "steps": null, "batch": 16, "lr": 0.0002, "seed": 3, "data": null,
        "adapter": "llvmpipe", "latent_version": "0.1.0""#;
    let ddpm: RunConfig = serde_json::from_str(&format!(
        r#"{{"model": "ddpm", {common}, "ddpm": {{"width": 16, "groups": 4, "schedule": "cosine"}}}}"#
    ))
    .unwrap();
    let own: DdpmConfig = ddpm.model_config().unwrap();
    assert_eq!((own.width, own.groups, own.schedule), (16, 4, ScheduleKind::Cosine));
    let wae: RunConfig = serde_json::from_str(&format!(
        r#"{{"model": "wae", {common}, "wae": {{"regularizer": "adversarial"}}}}"#
    ))
    .unwrap();
    assert_eq!(
        wae.model_config::<WaeConfig>().unwrap().regularizer,
        Regularizer::Adversarial
    );
    // Runs from before a model had its own section take that section's defaults.
    let vae: RunConfig = serde_json::from_str(&format!(r#"{{"model": "vae", {common}}}"#)).unwrap();
    assert!(vae.sections.is_empty());
    let old_wae: RunConfig = serde_json::from_str(&format!(r#"{{"model": "wae", {common}}}"#)).unwrap();
    assert_eq!(
        old_wae.model_config::<WaeConfig>().unwrap().regularizer,
        Regularizer::Mmd
    );
    // And a config written now has the same shape: the section under the model's name, nothing else new.
    let written = serde_json::to_value(&wae).unwrap();
    assert_eq!(written["wae"]["regularizer"], "adversarial");
    assert_eq!(written.as_object().unwrap().len(), 10);
}
