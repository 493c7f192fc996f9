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

/// FNV-1a (64 bits) over every tensor of a safetensors file, in name order (name, dtype, shape and bytes).
pub fn checkpoint_hash(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors checkpoint");
    let mut names: Vec<String> = tensors.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |data: &[u8]| {
        for &byte in data {
            hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for name in &names {
        let view = tensors.tensor(name).expect("listed");
        feed(name.as_bytes());
        feed(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
        feed(view.data());
    }
    hash
}

/// The largest relative difference between two checkpoints' float tensors of the same names: per tensor
/// max |a - b| / max |b|, and the tensor where it is largest. Tensors whose name starts with one of `skip` are
/// left out.
pub fn checkpoint_difference(a: &Path, b: &Path, skip: &[&str]) -> (f64, String) {
    let read = |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (bytes_a, bytes_b) = (read(a), read(b));
    let ta = safetensors::SafeTensors::deserialize(&bytes_a).unwrap();
    let tb = safetensors::SafeTensors::deserialize(&bytes_b).unwrap();
    let floats = |data: &[u8]| -> Vec<f32> {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut worst = (0.0f64, String::new());
    for name in ta.names() {
        let (va, vb) = (ta.tensor(name).unwrap(), tb.tensor(name).expect("the same tensors"));
        if va.dtype() != safetensors::Dtype::F32 || skip.iter().any(|s| name.starts_with(s)) {
            continue;
        }
        let (xa, xb) = (floats(va.data()), floats(vb.data()));
        let scale = xb.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        let diff = xa
            .iter()
            .zip(&xb)
            .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
        let relative = if scale > 0.0 { diff / scale } else { diff };
        if relative > worst.0 || worst.1.is_empty() {
            worst = (relative, name.to_string());
        }
    }
    worst
}
