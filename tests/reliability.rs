//! No lost work, clear errors, safe interruption: a planted NaN, a real SIGINT, kill -9 during checkpoint
//! writes, broken checkpoints, an oversized batch, bad flags, and GPU allocations and submits that fail.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latent::check;
use latent::checkpoint::{Checkpoint, CheckpointError, HostTensor};
use latent::gpu::{BufferRole, GpuError};
use latent::models::ModelKind;
use latent::optim::Optimizer;
use latent::plan::{self, LoadError, ParamStore, PlanOptions, TrainOptions};
use latent::train;

mod common;
use common::{latent_command, tiny_mnist};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A tiny dataset and a finished 1-epoch vae run on it.
fn trained_run(root: &Path) -> (String, String) {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    tiny_mnist(&data, 64, 16);
    let run = root.join("run");
    let (data, run) = (data.to_str().unwrap().to_string(), run.to_str().unwrap().to_string());
    let output = latent_command(&[
        "train", "vae", "--data", &data, "--run", &run, "--batch", "16", "--epochs", "1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    (data, run)
}

/// A NaN planted by an absurd learning rate (written into the run's config, then resumed) stops training with
/// the step, the bad loss and the last good checkpoint, which is left untouched.
#[test]
fn a_planted_nan_stops_training_and_keeps_the_last_good_checkpoint() {
    let directory = tempfile::tempdir().unwrap();
    let (_, run) = trained_run(directory.path());
    let config_path = Path::new(&run).join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["lr"] = serde_json::json!(1e30);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let checkpoint = Path::new(&run).join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();

    let output = latent_command(&[
        "train",
        "vae",
        "--resume",
        &run,
        "--epochs",
        "3",
        "--nan-check-every",
        "1",
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("training stopped at step") && message.contains("not finite"),
        "{message}"
    );
    assert!(
        message.contains("last good checkpoint is kept at") && message.contains("checkpoint.safetensors"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        before,
        "the last good checkpoint must not be overwritten"
    );
}

fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < limit,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first SIGINT finishes the step, writes a checkpoint and exits with 130; the run then resumes.
#[test]
fn an_interrupt_writes_a_checkpoint_and_exits_130() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 16);
    let run = directory.path().join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_latent"))
        .args([
            "train",
            "vae",
            "--data",
            data.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
            "--batch",
            "16",
        ])
        .args(["--epochs", "1000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (the first epoch's metrics are written).
    wait_for(&run.join("metrics.jsonl"), Duration::from_secs(120));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("interrupted at step") && message.contains("--resume"),
        "{message}"
    );
    let checkpoint = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    let step: u64 = checkpoint.meta("step").unwrap();
    assert!(step >= 4, "at least the first epoch ran: step {step}");
    // Resume a couple of steps past the interrupt.
    let total = (step + 2).to_string();
    let output = latent_command(&["train", "vae", "--resume", run.to_str().unwrap(), "--steps", &total]);
    assert!(output.status.success(), "{}", stderr(&output));
    let resumed: u64 = Checkpoint::load(&run.join("checkpoint.safetensors"))
        .unwrap()
        .meta("step")
        .unwrap();
    assert_eq!(resumed, step + 2);
}

/// kill -9 at arbitrary moments while checkpoints are written every step: the checkpoint on disk always loads,
/// and training resumes from it.
#[test]
fn kill_9_during_checkpoint_writes_leaves_a_loadable_checkpoint() {
    let directory = tempfile::tempdir().unwrap();
    let (_, run) = trained_run(directory.path());
    let checkpoint = Path::new(&run).join("checkpoint.safetensors");
    for delay_ms in [700u64, 1300, 1900] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_latent"))
            .args([
                "train",
                "vae",
                "--resume",
                &run,
                "--epochs",
                "1000",
                "--save-every",
                "1",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let loaded = Checkpoint::load(&checkpoint).unwrap_or_else(|e| panic!("after kill -9 at {delay_ms} ms: {e}"));
        assert!(loaded.meta::<u64>("step").unwrap() >= 4);
    }
    let step: u64 = Checkpoint::load(&checkpoint).unwrap().meta("step").unwrap();
    let output = latent_command(&["train", "vae", "--resume", &run, "--steps", &(step + 1).to_string()]);
    assert!(output.status.success(), "resume after kill -9: {}", stderr(&output));
}

/// Truncated, corrupted, foreign and mismatched checkpoints give errors naming the file or the tensor.
#[test]
fn broken_checkpoints_are_errors_that_name_the_problem() {
    let gpu = check::shared_gpu();
    let directory = tempfile::tempdir().unwrap();
    let tg = train::train_graph(ModelKind::Vae, 4).unwrap();
    let mut store = ParamStore::new(0);
    let options = PlanOptions {
        name: "vae".into(),
        train: Some(TrainOptions {
            optimizer: Optimizer::adam(1e-3),
            update_prefixes: vec![],
        }),
        seed: 0,
    };
    plan::compile(gpu, &tg.graph, &mut store, &options).unwrap();
    let mut checkpoint = Checkpoint::new("vae");
    store.save_into(gpu, &mut checkpoint).unwrap();
    let path = directory.path().join("good.safetensors");
    checkpoint.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = directory.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = Checkpoint::load(&truncated).unwrap_err();
    assert!(matches!(error, CheckpointError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains("truncated.safetensors") && error.to_string().contains("truncated"),
        "{error}"
    );

    let garbage = directory.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    assert!(matches!(
        Checkpoint::load(&garbage).unwrap_err(),
        CheckpointError::Corrupt { .. }
    ));

    let foreign = Checkpoint::load(&path).unwrap();
    let error = foreign.expect_model("ae").unwrap_err().to_string();
    assert!(error.contains("\"vae\"") && error.contains("\"ae\""), "{error}");

    let mut wrong_shape = Checkpoint::load(&path).unwrap();
    wrong_shape.insert("fc21.weight", HostTensor::f32(&[21, 400], vec![0.0; 21 * 400]));
    match store.load_from(gpu, &wrong_shape).unwrap_err() {
        LoadError::Checkpoint(error @ CheckpointError::Shape { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("fc21.weight") && text.contains("[21, 400]") && text.contains("[20, 400]"),
                "{text}"
            );
        }
        other => panic!("expected a shape error, got {other}"),
    }
    let mut missing = Checkpoint::load(&path).unwrap();
    missing.tensors.remove("fc4.bias");
    let error = store.load_from(gpu, &missing).unwrap_err().to_string();
    assert!(error.contains("fc4.bias"), "{error}");
}

/// A batch whose activations exceed the adapter's buffer-binding limit is refused before any dispatch, with the
/// limit, the need and a batch that fits.
#[test]
fn an_oversized_batch_is_refused_with_a_batch_that_fits() {
    let gpu = check::shared_gpu();
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    // The ae's largest activation is (N, 32, 14, 14): 25,088 bytes per image.
    let batch = (limit / 25_088 + 1) as usize;
    let directory = tempfile::tempdir().unwrap();
    let refused = directory.path().join("refused");
    let output = latent_command(&[
        "train",
        "ae",
        "--batch",
        &batch.to_string(),
        "--steps",
        "1",
        "--run",
        refused.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(!refused.exists(), "a refused command leaves no run directory behind");
    let message = stderr(&output);
    assert!(message.contains(&format!("batch {batch} does not fit")), "{message}");
    assert!(
        message.contains(&limit.to_string()) && message.contains("use --batch"),
        "{message}"
    );
    let suggested: usize = message
        .split("use --batch ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tg = train::train_graph(ModelKind::Ae, suggested).unwrap();
    plan::check_batch_fits(gpu, &tg.graph, suggested).expect("the suggested batch fits");
}

/// Every bad value gets one clear line.
#[test]
fn bad_flags_get_one_clear_line_each() {
    let directory = tempfile::tempdir().unwrap();
    let empty = directory.path().to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["train", "vae", "--batch", "0"], "must be at least 1"),
        (&["train", "vae", "--lr", "-0.1"], "must be a positive number"),
        (&["train", "gpt"], "unknown model \"gpt\""),
        (&["sample", "--run", "/no/such/run"], "not a latent run directory"),
        (&["eval", "--run", empty], "not a latent run directory"),
        (&["sample", "--run", empty, "--n", "0"], "must be at least 1"),
        (&["train", "vae", "--epochs", "0"], "must be at least 1"),
        (
            &["train", "vae", "--epochs", "2", "--steps", "10"],
            "the argument '--epochs <EPOCHS>' cannot be used with '--steps <STEPS>'",
        ),
    ];
    for (args, expected) in cases {
        let output = latent_command(args);
        assert!(!output.status.success(), "{args:?} should fail");
        let message = stderr(&output);
        assert!(
            message.contains(expected),
            "{args:?}: expected {expected:?} in:\n{message}"
        );
        // Mesa's CPU driver may print "error: XDG_RUNTIME_DIR is invalid" when no runtime directory is set; it
        // is the driver's, harmless, and not ours.
        let lines: Vec<&str> = message
            .lines()
            .filter(|l| l.starts_with("error") && !l.contains("XDG_RUNTIME_DIR"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: one error line, got:\n{message}");
    }
}

/// A run of one model is refused by commands (and resumes) of another, with the model named.
#[test]
fn a_foreign_run_directory_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (_, run) = trained_run(directory.path());
    let output = latent_command(&["train", "ae", "--resume", &run]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("is a run of model \"vae\", not \"ae\""), "{message}");
}

/// A buffer over the adapter's max_buffer_size is an error naming the buffer, its size and the limit, both
/// from latent's own check and from wgpu's validation inside the allocation's error scopes (no panic).
#[test]
fn a_buffer_over_the_adapters_limit_is_an_error_naming_it() {
    let gpu = check::shared_gpu();
    let limit = gpu.limits.max_buffer_size;
    let Some(too_big) = limit.checked_add(4).map(|b| b.next_multiple_of(4)) else {
        eprintln!("max_buffer_size is u64::MAX on this adapter; nothing is over it");
        return;
    };
    let message = gpu
        .buffer("test.too_big", BufferRole::Scratch, too_big)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("test.too_big") && message.contains(&too_big.to_string()),
        "{message}"
    );
    assert!(
        message.contains(&gpu.limits.max_storage_buffer_binding_size.min(limit).to_string()),
        "{message}"
    );

    let error = gpu
        .create_buffer_checked(&wgpu::BufferDescriptor {
            label: Some("test.unchecked"),
            size: too_big,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
        .unwrap_err();
    assert!(matches!(error, GpuError::Allocation { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("could not allocate GPU buffer test.unchecked"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "{too_big} bytes; the adapter's max_buffer_size is {limit} bytes"
        )),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    // The device is still usable.
    let small = gpu
        .buffer_from("test.small", BufferRole::Scratch, &[1.0f32, 2.0])
        .unwrap();
    assert_eq!(gpu.read::<f32>(&small).unwrap(), [1.0, 2.0]);
}

/// A one-layer training plan (linear 3 -> 4, MSE) named `name`, and its input x.
fn linear_training_plan(gpu: &latent::gpu::Gpu, name: &str) -> (plan::Plan, latent::graph::TensorId) {
    let mut g = latent::graph::Graph::new();
    let x = g.input("x", &[2, 3]);
    let target = g.input("target", &[2, 4]);
    let y = g.linear("fc", x, 4).unwrap();
    g.mean_squared_error(y, target).unwrap();
    let options = PlanOptions {
        name: name.into(),
        train: Some(TrainOptions {
            optimizer: Optimizer::adam(1e-3),
            update_prefixes: vec![],
        }),
        seed: 0,
    };
    // The plan holds its parameters' buffers; the store can go.
    (plan::compile(gpu, &g, &mut ParamStore::new(0), &options).unwrap(), x)
}

/// A plan whose first submit fails wgpu's validation (a buffer it binds was destroyed) submits nothing more
/// and reports the error, naming the plan, at its next readback instead of panicking.
#[test]
fn a_failed_first_submit_is_an_error_naming_the_plan() {
    let gpu = check::shared_gpu();
    let (plan, x) = linear_training_plan(gpu, "broken plan");
    plan.buffer(x).buffer.destroy();
    plan.run(gpu, 0);
    plan.run(gpu, 1); // skipped: it would fail the same way
    let message = plan.read_losses(gpu).unwrap_err().to_string();
    assert!(message.contains("the first step of plan \"broken plan\""), "{message}");
    assert!(message.contains("destroyed"), "{message}");
}

/// An error after a plan's first submit, which no error scope catches (here a buffer destroyed between steps;
/// in training an out-of-memory or a lost device), no longer reaches wgpu's default handler, which panics: the
/// device keeps the first one and every later wait or readback returns it. (Its own device: the error is kept.)
#[test]
fn an_error_after_the_first_step_is_returned_by_the_next_readback() {
    let gpu = latent::gpu::Gpu::new(&latent::gpu::GpuOptions::from_env().unwrap()).unwrap();
    let gpu = &gpu;
    let (plan, x) = linear_training_plan(gpu, "plan");
    plan.run(gpu, 0);
    assert!(plan.read_losses(gpu).unwrap()[0].is_finite());
    plan.buffer(x).buffer.destroy();
    plan.run(gpu, 1);
    let message = plan.read_losses(gpu).unwrap_err().to_string();
    assert!(message.contains("the GPU reported an error while running"), "{message}");
    assert!(message.contains("destroyed"), "{message}");
    assert!(gpu.wait().is_err(), "the error is kept");
}
