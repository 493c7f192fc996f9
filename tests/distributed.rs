//! Data parallelism across processes: `mpirun -n 2 latent train ...` (two ranks on this machine's adapter) against
//! one process with `--micro-batches 2`, and the ways a distributed start or run fails.
//!
//! These need the `mpi` feature (`cargo test --features mpi --test distributed`) and Open MPI's `mpirun`; without
//! either they print why and pass. Open MPI in a container wants `--allow-run-as-root` and no single-copy
//! mechanism for shared memory (`OMPI_MCA_btl_vader_single_copy_mechanism=none`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{checkpoint_difference, checkpoint_hash, latent, tiny_mnist};

fn has_mpirun() -> bool {
    let found = Command::new("mpirun").arg("--version").output();
    found.is_ok_and(|o| o.status.success())
}

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<&'static str> {
    if !cfg!(feature = "mpi") {
        return Some("latent was built without the mpi feature (cargo test --features mpi --test distributed)");
    }
    if !has_mpirun() {
        return Some("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)");
    }
    None
}

/// A build without the feature cannot take part in a distributed run: each rank would train alone.
#[test]
fn without_the_mpi_feature_ranks_under_mpirun_are_refused() {
    if cfg!(feature = "mpi") || !has_mpirun() {
        eprintln!("skipped: this build has the mpi feature, or mpirun is not installed");
        return;
    }
    let output = run_ranks(2, &["train", "ae", "--steps", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("started as one of 2 MPI ranks, but this latent was built without the mpi feature"),
        "{stderr}"
    );
}

macro_rules! require_mpi {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// `mpirun` with the settings a container needs, before its application contexts.
fn mpirun() -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none"])
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    command
}

/// `mpirun -n ranks latent args...`.
fn run_ranks(ranks: usize, args: &[&str]) -> Output {
    mpirun()
        .args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_latent")])
        .args(args)
        .output()
        .expect("mpirun runs")
}

fn succeeded(output: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// 48 training images (3 steps of 16 per epoch) and 16 test images.
fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    tiny_mnist(&data, 48, 16);
    data
}

/// `latent train args... --data --run dir/name --seed 3`, as a list.
fn train_args(dir: &Path, data: &Path, name: &str, args: &[&str]) -> Vec<String> {
    let mut command: Vec<String> = ["train"].iter().chain(args).map(|s| s.to_string()).collect();
    let run = dir.join(name);
    for extra in [
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--seed",
        "3",
    ] {
        command.push(extra.to_string());
    }
    command
}

/// The checkpoints of `args` trained by 2 ranks, by one process with `--micro-batches 2` and by one process
/// with the whole batch; checks that the ranks ended with the same weights.
fn three_ways(args: &[&str]) -> [PathBuf; 3] {
    let dir = tempfile::tempdir().unwrap().keep();
    let data = data(&dir);
    let ranks = train_args(&dir, &data, "ranks", args);
    let ranks: Vec<&str> = ranks.iter().map(String::as_str).collect();
    let stderr = succeeded(&run_ranks(2, &ranks), "mpirun -n 2");
    assert!(
        stderr.contains("2 ranks: every rank ended with the same weights"),
        "{stderr}"
    );
    assert!(!stderr.contains("differ from rank 0's"), "{stderr}");
    assert_eq!(stderr.matches("epoch 1/").count(), 1, "only rank 0 prints: {stderr}");
    let micro = train_args(&dir, &data, "micro", &[args, &["--micro-batches", "2"]].concat());
    latent(&micro.iter().map(String::as_str).collect::<Vec<_>>());
    let whole = train_args(&dir, &data, "whole", args);
    latent(&whole.iter().map(String::as_str).collect::<Vec<_>>());
    ["ranks", "micro", "whole"].map(|name| dir.join(name).join("checkpoint.safetensors"))
}

fn report(model: &str, [ranks, micro, whole]: &[PathBuf; 3]) -> f64 {
    let (relative, tensor) = checkpoint_difference(ranks, whole, &[]);
    let (weights, weight) = checkpoint_difference(ranks, whole, &["optim.", "ema."]);
    println!(
        "{model}: 2 ranks {:#018x}, --micro-batches 2 {:#018x}, whole batch {:#018x}; 2 ranks against the whole \
         batch: largest relative difference {relative:.3e} ({tensor}), of the weights and buffers {weights:.3e} \
         ({weight})",
        checkpoint_hash(ranks),
        checkpoint_hash(micro),
        checkpoint_hash(whole)
    );
    relative
}

const STEPS: &[&str] = &["--batch", "16", "--steps", "4"];

#[test]
fn two_ranks_train_the_ae_and_the_vae_bit_for_bit_as_two_micro_batches() {
    require_mpi!();
    for model in ["ae", "vae"] {
        let paths = three_ways(&[&[model], STEPS].concat());
        report(model, &paths);
        assert_eq!(checkpoint_hash(&paths[0]), checkpoint_hash(&paths[1]), "{model}");
    }
}

#[test]
fn two_ranks_train_the_ddpm_as_two_micro_batches_and_within_1e5_of_the_whole_batch() {
    require_mpi!();
    let args = &[
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
    let paths = three_ways(args);
    let relative = report("ddpm", &paths);
    assert_eq!(checkpoint_hash(&paths[0]), checkpoint_hash(&paths[1]));
    assert!(relative <= 1e-5, "{relative:e}");
}

/// Batch statistics (the GAN's BatchNorm) and the MMD are computed within each rank's share: both ranks agree,
/// and agree with two micro-batches, but not with the whole batch.
#[test]
fn two_ranks_train_the_gan_and_the_wae_alike_and_as_two_micro_batches() {
    require_mpi!();
    for args in [&["gan"][..], &["wae"][..], &["wae", "--regularizer", "adversarial"][..]] {
        let paths = three_ways(&[args, STEPS].concat());
        report(&args.join(" "), &paths);
        assert_eq!(checkpoint_hash(&paths[0]), checkpoint_hash(&paths[1]), "{args:?}");
    }
}

/// Ranks and micro-batches together: each rank sums its micro-batches, then the ranks' sums are added, so
/// 2 ranks × 2 micro-batches match one process with 4 micro-batches up to that order of additions.
#[test]
fn two_ranks_of_two_micro_batches_agree_and_match_four_micro_batches_up_to_rounding() {
    require_mpi!();
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let args = ["ae", "--batch", "16", "--steps", "4"];
    let ranks = train_args(
        dir.path(),
        &data,
        "ranks",
        &[&args[..], &["--micro-batches", "2"]].concat(),
    );
    let ranks: Vec<&str> = ranks.iter().map(String::as_str).collect();
    let stderr = succeeded(&run_ranks(2, &ranks), "mpirun -n 2 --micro-batches 2");
    assert!(stderr.contains("2 rank(s) × 2 micro-batch(es) of 4 images"), "{stderr}");
    assert!(
        stderr.contains("2 ranks: every rank ended with the same weights"),
        "{stderr}"
    );
    let one = train_args(
        dir.path(),
        &data,
        "one",
        &[&args[..], &["--micro-batches", "4"]].concat(),
    );
    latent(&one.iter().map(String::as_str).collect::<Vec<_>>());
    let path = |name: &str| dir.path().join(name).join("checkpoint.safetensors");
    let (relative, tensor) = checkpoint_difference(&path("ranks"), &path("one"), &[]);
    println!(
        "ae, 2 ranks × 2 micro-batches {:#018x} against --micro-batches 4 {:#018x}: largest relative difference \
         {relative:.3e} ({tensor})",
        checkpoint_hash(&path("ranks")),
        checkpoint_hash(&path("one"))
    );
    assert!(relative <= 1e-5, "{relative:e} in {tensor}");
}

/// Every rank continues from rank 0's checkpoint: 2 steps and a resume to 4 give what 4 steps give.
#[test]
fn two_ranks_resume_a_run_bit_for_bit() {
    require_mpi!();
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let straight = train_args(dir.path(), &data, "straight", &["vae", "--batch", "16", "--steps", "4"]);
    let straight: Vec<&str> = straight.iter().map(String::as_str).collect();
    succeeded(&run_ranks(2, &straight), "4 steps");
    let first = train_args(dir.path(), &data, "resumed", &["vae", "--batch", "16", "--steps", "2"]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    succeeded(&run_ranks(2, &first), "2 steps");
    let run = dir.path().join("resumed");
    let resume = ["train", "vae", "--resume", run.to_str().unwrap(), "--steps", "4"];
    let stderr = succeeded(&run_ranks(2, &resume), "the resume to 4 steps");
    assert!(
        stderr.contains("2 ranks: every rank ended with the same weights"),
        "{stderr}"
    );
    let hash = |name: &str| checkpoint_hash(&dir.path().join(name).join("checkpoint.safetensors"));
    assert_eq!(hash("resumed"), hash("straight"));
}

/// Under mpirun the step always goes through the exchange; on one rank it must change nothing at all.
#[test]
fn one_rank_under_mpirun_trains_bit_for_bit_as_the_plain_step() {
    require_mpi!();
    for model in ["ae", "gan"] {
        let dir = tempfile::tempdir().unwrap();
        let data = data(dir.path());
        let args = [&[model], STEPS].concat();
        let one = train_args(dir.path(), &data, "one", &args);
        let one: Vec<&str> = one.iter().map(String::as_str).collect();
        let stderr = succeeded(&run_ranks(1, &[&one[..], &["--profile"]].concat()), "mpirun -n 1");
        assert!(stderr.contains("step breakdown"), "{stderr}");
        let plain = train_args(dir.path(), &data, "plain", &args);
        latent(&plain.iter().map(String::as_str).collect::<Vec<_>>());
        let hash = |name: &str| checkpoint_hash(&dir.path().join(name).join("checkpoint.safetensors"));
        assert_eq!(hash("one"), hash("plain"), "{model}");
    }
}

#[test]
fn ranks_with_different_configurations_are_refused_at_the_start() {
    require_mpi!();
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let first = train_args(
        dir.path(),
        &data,
        "run",
        &["ae", "--batch", "16", "--steps", "1", "--lr", "0.001"],
    );
    let mut second = first.clone();
    second[7] = "0.002".into();
    let output = mpirun()
        .args(["-n", "1", env!("CARGO_BIN_EXE_latent")])
        .args(&first)
        .arg(":")
        .args(["-n", "1", env!("CARGO_BIN_EXE_latent")])
        .args(&second)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("error: rank 1's training configuration differs from rank 0's (lr: 0.001 vs 0.002)"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 1, "one line, from rank 0: {stderr}");
    assert!(!dir.path().join("run").exists());
}

#[test]
fn ranks_running_different_binaries_are_refused_at_the_start() {
    require_mpi!();
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    // The same program with one more byte at its end: another build, as far as the ranks can tell.
    let other = dir.path().join("latent-other");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_latent")).unwrap();
    bytes.push(0);
    std::fs::write(&other, bytes).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = train_args(dir.path(), &data, "run", &["ae", "--batch", "16", "--steps", "1"]);
    let output = mpirun()
        .args(["-n", "1", env!("CARGO_BIN_EXE_latent")])
        .args(&args)
        .arg(":")
        .args(["-n", "1", other.to_str().unwrap()])
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("error: rank 1 runs a different latent binary from rank 0's"),
        "{stderr}"
    );
}

/// Rank 1 reads a broken dataset at the same relative path (another working directory): it says so, naming
/// itself, and every rank stops. The run's setup reads the data's shape, so the ranks find this out together at
/// the start (`agree_on_start`: rank 0 prints `rank 1 of 2: ...`) rather than by rank 1 aborting the others.
#[test]
fn a_rank_that_fails_stops_every_rank_with_its_message() {
    require_mpi!();
    let dir = tempfile::tempdir().unwrap();
    for side in ["good", "bad"] {
        std::fs::create_dir_all(dir.path().join(side)).unwrap();
        data(&dir.path().join(side));
    }
    let broken = dir.path().join("bad/data/train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&broken).unwrap();
    bytes.truncate(1000);
    std::fs::write(&broken, bytes).unwrap();
    let args = [
        "train", "ae", "--batch", "16", "--steps", "3", "--data", "data", "--run", "run",
    ];
    let started = std::time::Instant::now();
    let output = mpirun()
        .args(["-n", "1", "-wdir", dir.path().join("good").to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_latent"))
        .args(args)
        .arg(":")
        .args(["-n", "1", "-wdir", dir.path().join("bad").to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_latent"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("rank 1 of 2: "), "{stderr}");
    assert!(stderr.contains("train-images-idx3-ubyte"), "{stderr}");
    assert!(started.elapsed().as_secs() < 120, "the ranks stopped");
}

#[test]
fn the_allreduce_benchmark_reports_every_default_model_over_two_ranks() {
    require_mpi!();
    let output = run_ranks(2, &["bench", "allreduce", "--repeats", "3", "--json"]);
    succeeded(&output, "bench allreduce");
    let results: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = results.as_array().unwrap();
    let models: Vec<&str> = latent::models::ModelKind::ALL.iter().map(|m| m.name()).collect();
    let reported: Vec<&str> = results.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(
        reported, models,
        "one JSON document, from rank 0, a row per model: {results:?}"
    );
    for r in results {
        assert_eq!(r["ranks"], 2);
        assert!(r["bytes"].as_u64().unwrap() > 100_000, "{r}");
        assert!(r["mb_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}
