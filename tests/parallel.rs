//! `--micro-batches M`: a step's global batch as M micro-batches on one adapter, their gradients summed before
//! the update (`latent::parallel`). The same arithmetic as M ranks under `mpirun` (tests/distributed.rs).

mod common;

use std::path::{Path, PathBuf};

use common::{checkpoint_difference, checkpoint_hash, latent, latent_command, tiny_mnist};

/// 48 training images (3 steps of 16 per epoch) and 16 test images.
fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    tiny_mnist(&data, 48, 16);
    data
}

/// Trains `args` (after `latent train`) into `dir/name` on `data` with seed 3; returns the checkpoint's path.
fn train(dir: &Path, data: &Path, name: &str, args: &[&str]) -> PathBuf {
    let run = dir.join(name);
    let mut command = vec!["train"];
    command.extend_from_slice(args);
    command.extend_from_slice(&[
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    latent(&command);
    run.join("checkpoint.safetensors")
}

const DDPM: &[&str] = &[
    "ddpm",
    "--batch",
    "4",
    "--steps",
    "4",
    "--width",
    "16",
    "--groups",
    "4",
    "--preview-steps",
    "2",
];

/// The ddpm has no batch statistics and draws its timesteps and noise by global sample index, so two
/// micro-batches compute the whole batch's gradient up to the order of additions.
#[test]
fn ddpm_in_two_micro_batches_stays_within_1e5_of_the_whole_batch_after_4_steps() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let whole = train(dir.path(), &data, "whole", DDPM);
    let split = train(dir.path(), &data, "split", &[DDPM, &["--micro-batches", "2"]].concat());
    let (relative, tensor) = checkpoint_difference(&split, &whole, &[]);
    println!("ddpm, --micro-batches 2 against the whole batch: largest relative difference {relative:.3e} ({tensor})");
    assert!(relative <= 1e-5, "{relative:e} in {tensor}");
    assert_ne!(
        checkpoint_hash(&split),
        checkpoint_hash(&whole),
        "the split path ran (its sums round differently)"
    );
}

/// Micro-batches are deterministic, and every micro-batch starts from the step's BatchNorm statistics: the GAN's
/// running statistics are the mean of the micro-batches' and its counter counts steps, not micro-batches.
#[test]
fn gan_micro_batches_repeat_bit_for_bit_and_count_steps_not_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let args = &["gan", "--batch", "16", "--steps", "4", "--micro-batches", "4"];
    let first = train(dir.path(), &data, "first", args);
    let second = train(dir.path(), &data, "second", args);
    assert_eq!(checkpoint_hash(&first), checkpoint_hash(&second));
    let whole = train(dir.path(), &data, "whole", &args[..5]);
    let count = |path: &Path, layer: &str| {
        let checkpoint = latent::checkpoint::Checkpoint::load(path).unwrap();
        checkpoint.i64(&format!("{layer}.num_batches_tracked"), &[]).unwrap()[0]
    };
    for layer in ["generator.net.0", "discriminator.net.3"] {
        assert!(count(&whole, layer) > 0);
        assert_eq!(count(&first, layer), count(&whole, layer), "{layer}");
    }
}

/// The autoencoder has no noise and no batch statistics: two micro-batches only change the order of additions.
#[test]
fn ae_in_two_micro_batches_is_close_to_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let args = &["ae", "--batch", "16", "--steps", "4"];
    let whole = train(dir.path(), &data, "whole", args);
    let split = train(
        dir.path(),
        &data,
        "split",
        &[&args[..], &["--micro-batches", "2"]].concat(),
    );
    let (relative, tensor) = checkpoint_difference(&split, &whole, &[]);
    println!("ae, --micro-batches 2 against the whole batch: largest relative difference {relative:.3e} ({tensor})");
    assert!(relative <= 1e-4, "{relative:e} in {tensor}");
}

#[test]
fn a_batch_that_does_not_split_is_refused_with_the_multiples_that_would() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let run = dir.path().join("run");
    let output = latent_command(&[
        "train",
        "ae",
        "--batch",
        "10",
        "--micro-batches",
        "4",
        "--steps",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "--batch 10 does not split into 1 rank(s) × 4 micro-batch(es): it must be a multiple of 4 (for instance \
             --batch 8 or --batch 12)"
        ),
        "{stderr}"
    );
    assert!(!run.exists(), "a refused command leaves nothing behind");
}

#[test]
fn zero_micro_batches_are_refused() {
    let output = latent_command(&["train", "ae", "--micro-batches", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("invalid value '0' for '--micro-batches <MICRO_BATCHES>': must be at least 1"),
        "{stderr}"
    );
}

/// A noise fill keyed by the part's first sample: samples 2 and 3 of a batch of 4, drawn by a plan of batch 2
/// that starts at sample 2, are the whole batch's samples 2 and 3, bit for bit.
#[test]
fn a_part_of_the_batch_draws_its_samples_noise_of_the_whole_batch() {
    use latent::graph::Graph;
    use latent::plan::{self, ParamStore, Part};
    use latent::recipe::forward_options;
    let gpu = latent::gpu::Gpu::new(&latent::gpu::GpuOptions::from_env().unwrap()).expect("an adapter");
    let noise_plan = |batch: usize| {
        let mut graph = Graph::new();
        let z = graph.normal_noise("z", &[batch, 20], 0);
        let plan = plan::compile(&gpu, &graph, &mut ParamStore::new(5), &forward_options("noise", 5)).unwrap();
        (plan, z)
    };
    let (whole, z) = noise_plan(4);
    whole.run(&gpu, 7);
    let all = whole.read(&gpu, z).unwrap();
    let (part, z) = noise_plan(2);
    part.run_part(&gpu, 7, 2, Part::Gradients);
    let second_half = part.read(&gpu, z).unwrap();
    assert_eq!(second_half, all[40..]);
    part.run_part(&gpu, 7, 0, Part::Gradients);
    assert_eq!(part.read(&gpu, z).unwrap(), all[..40]);
}

/// Fills draw in blocks of 4 values: noise of 3 values per sample cannot start at every sample.
#[test]
fn noise_that_cannot_start_at_every_sample_refuses_a_split() {
    use latent::graph::Graph;
    use latent::plan::{self, ParamStore};
    use latent::recipe::forward_options;
    let gpu = latent::gpu::Gpu::new(&latent::gpu::GpuOptions::from_env().unwrap()).expect("an adapter");
    let mut graph = Graph::new();
    graph.normal_noise("odd", &[4, 3], 0);
    let plan = plan::compile(&gpu, &graph, &mut ParamStore::new(0), &forward_options("odd", 0)).unwrap();
    let error = plan.check_split(4).unwrap_err().to_string();
    assert!(
        error.contains("the noise odd draws 3 values per sample, not a multiple of 4"),
        "{error}"
    );
    let mut graph = Graph::new();
    graph.normal_noise("even", &[4, 8], 0);
    let plan = plan::compile(&gpu, &graph, &mut ParamStore::new(0), &forward_options("even", 0)).unwrap();
    plan.check_split(4).unwrap();
}

/// The ldm's step is one plan once its training set's latents are cached (its frozen encoder is deterministic),
/// so it splits like the ddpm: its timesteps and noise are drawn by global sample index.
#[test]
fn ldm_in_two_micro_batches_stays_within_1e5_of_the_whole_batch_after_4_steps() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let first = dir.path().join("first");
    let first_stage = train(dir.path(), &data, "first", &["ae-kl", "--batch", "16", "--steps", "3"]);
    assert!(first_stage.exists());
    let ldm: &[&str] = &[
        "ldm",
        "--autoencoder",
        first.to_str().unwrap(),
        "--batch",
        "16",
        "--steps",
        "4",
        "--guide-epochs",
        "0",
        "--width",
        "32",
        "--blocks",
        "2",
        "--preview-steps",
        "2",
    ];
    let whole = train(dir.path(), &data, "whole", ldm);
    let split = train(dir.path(), &data, "split", &[ldm, &["--micro-batches", "2"]].concat());
    let (relative, tensor) = checkpoint_difference(&split, &whole, &[]);
    println!("ldm, --micro-batches 2 against the whole batch: largest relative difference {relative:.3e} ({tensor})");
    assert!(relative <= 1e-5, "{relative:e} in {tensor}");
    assert_ne!(
        checkpoint_hash(&split),
        checkpoint_hash(&whole),
        "the split path ran (its sums round differently)"
    );
}
