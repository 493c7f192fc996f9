//! One writer per run directory: a second `latent train` on a run that another process trains is refused with
//! the holder's pid, readers (`sample --out`) still work meanwhile, and the lock of a holder killed with
//! SIGKILL is free.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latent::checkpoint::Checkpoint;
use latent::run::{RunDir, RunError, LOCK};

mod common;
use common::{latent, latent_command, tiny_mnist};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Two locks on one run in one process conflict as two processes would (each lock is its own open file), and
/// dropping the first frees the run.
#[test]
fn a_held_lock_refuses_a_second_one_until_dropped() {
    let directory = tempfile::tempdir().unwrap();
    let run = RunDir::create(&directory.path().join("run")).unwrap();
    let first = run.lock_for_writing().unwrap();
    let text = std::fs::read_to_string(run.path.join(LOCK)).unwrap();
    assert!(text.starts_with(&format!("pid {}\n", std::process::id())), "{text}");
    match run.lock_for_writing() {
        Err(error @ RunError::Locked { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
            assert!(message.contains(&run.path.display().to_string()), "{message}");
            assert!(message.contains("--out"), "{message}");
        }
        other => panic!("expected RunError::Locked, got {other:?}"),
    }
    drop(first);
    run.lock_for_writing()
        .expect("the lock is free once its holder is dropped");
}

#[test]
fn a_second_trainer_is_refused_with_the_holders_pid_and_a_killed_holder_frees_the_run() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 16);
    let run = directory.path().join("run");
    let (data, run_arg) = (data.to_str().unwrap(), run.to_str().unwrap());
    latent(&[
        "train", "vae", "--data", data, "--run", run_arg, "--batch", "16", "--epochs", "1",
    ]);

    let mut holder = Command::new(env!("CARGO_BIN_EXE_latent"))
        .args(["train", "vae", "--resume", run_arg, "--epochs", "100000"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let recorded = format!("pid {}\n", holder.id());
    let start = Instant::now();
    while !std::fs::read_to_string(run.join(LOCK)).is_ok_and(|text| text.starts_with(&recorded)) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A second writer, resuming or starting a new run in the same directory, is refused.
    let output = latent_command(&["train", "vae", "--resume", run_arg, "--epochs", "100000"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "{run_arg} is being written by another latent process (pid {}",
            holder.id()
        )),
        "{message}"
    );
    assert!(
        message.contains("latent train vae --resume"),
        "the holder's command line: {message}"
    );
    assert!(
        message.contains(&format!("latent sample --run {run_arg} --out")),
        "{message}"
    );

    // Readers still work while it trains.
    let out = directory.path().join("samples-elsewhere");
    latent(&["sample", "--run", run_arg, "--n", "4", "--out", out.to_str().unwrap()]);
    assert!(out.join("grid.png").is_file());

    holder.kill().unwrap(); // SIGKILL: no destructor runs, the lock file stays behind
    holder.wait().unwrap();
    assert!(Path::new(&run).join(LOCK).is_file());
    let step: u64 = Checkpoint::load(&run.join("checkpoint.safetensors"))
        .unwrap()
        .meta("step")
        .unwrap();
    let output = latent_command(&["train", "vae", "--resume", run_arg, "--steps", &(step + 1).to_string()]);
    assert!(
        output.status.success(),
        "after the holder was killed: {}",
        stderr(&output)
    );
}
