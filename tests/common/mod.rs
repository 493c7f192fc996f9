//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Writes the first `train` and `test` embedded digits as raw IDX files: a tiny dataset for end-to-end tests.
pub fn tiny_mnist(dir: &Path, train: usize, test: usize) {
    let splits = latent::data::embedded::mnist_10k().unwrap();
    for (prefix, dataset, count) in [("train", &splits.train, train), ("t10k", &splits.test, test)] {
        let mut images = vec![0, 0, 8, 3];
        for dim in [count as u32, 28, 28] {
            images.extend_from_slice(&dim.to_be_bytes());
        }
        images.extend_from_slice(&dataset.pixels()[..count * 784]);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&(count as u32).to_be_bytes());
        labels.extend(dataset.labels().unwrap()[..count].iter().map(|&l| l as u8));
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// Runs the `latent` binary and returns its output, failing the test with its stderr unless it succeeded.
pub fn latent(args: &[&str]) -> Output {
    let output = latent_command(args);
    assert!(
        output.status.success(),
        "latent {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs the `latent` binary and returns its output (whatever the status).
pub fn latent_command(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latent"))
        .args(args)
        .output()
        .expect("the latent binary runs")
}
