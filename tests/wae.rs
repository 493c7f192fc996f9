//! The wae: its parameters, one step of each regulariser's plan against the CPU reference, a short run that
//! lowers its loss, and the command line end to end (both regularisers) on a tiny dataset; the sliced
//! Wasserstein distance's properties.

use std::process::Command;

use latent::check::{self, TestRng};
use latent::models::wae::{self, Regularizer};
use latent::models::ModelKind;
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, PlanOptions, TrainOptions};
use latent::swd::sliced_wasserstein;
use latent::train::{self, TrainRequest};

mod common;
use common::{latent, tiny_mnist};

#[test]
fn parameters_are_the_ae_with_an_8_dimensional_code_and_the_latent_discriminator() {
    let mmd = wae::objective(2, latent::data::ImageShape::MNIST, Regularizer::Mmd)
        .unwrap()
        .graph;
    // The ae's 170,193 less 8 codes' worth of enc.5 (8 x 3137) and dec.0 (8 x 3136).
    assert_eq!(mmd.parameter_count(), 120_009);
    let adversarial = wae::objective(2, latent::data::ImageShape::MNIST, Regularizer::Adversarial)
        .unwrap()
        .graph;
    // disc: 8 x 512 + 512, 512 x 512 + 512, 512 + 1.
    assert_eq!(adversarial.parameter_count(), 120_009 + 267_777);
    let names: Vec<&str> = adversarial.params.iter().map(|p| p.name.as_str()).collect();
    for name in [
        "enc.0.weight",
        "enc.5.bias",
        "dec.0.weight",
        "dec.5.bias",
        "disc.0.weight",
        "disc.4.bias",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // The discriminator's step holds the encoder and the discriminator under the same names (one store serves
    // both plans): all but the decoder's 28,224 + 32,800 + 513.
    let d_step = wae::discriminator_step(2, latent::data::ImageShape::MNIST)
        .unwrap()
        .graph;
    assert_eq!(d_step.parameter_count(), adversarial.parameter_count() - 61_537);
}

/// One training step of `graph` (every parameter, or those under `prefixes`) on the GPU and on the f64 CPU
/// reference: the same losses and the same weights after the update.
fn step_matches_reference(graph: &latent::graph::Graph, x_id: latent::graph::TensorId, prefixes: &[&str]) {
    let gpu = check::shared_gpu();
    let batch = graph.shape(x_id)[0];
    let train = TrainOptions {
        optimizer: wae::optimizer(1e-3),
        update_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    };
    let mut store = ParamStore::new(5);
    let options = PlanOptions {
        name: "wae".into(),
        train: Some(train.clone()),
        seed: 5,
    };
    let plan = plan::compile(gpu, graph, &mut store, &options).unwrap();
    let mut reference = Reference::new(graph, 5, train);
    let x = TestRng::new(11).uniform_vec(batch * 784, 0.0, 1.0);
    plan.write_input(gpu, x_id, &x).unwrap();
    reference.set_input(x_id, &x);
    plan.run(gpu, 0);
    let gpu_losses = plan.read_losses(gpu).unwrap();
    let cpu_losses = reference.step(0).unwrap();
    assert_eq!(gpu_losses.len(), cpu_losses.len());
    for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
        assert!(
            (*g as f64 - c).abs() <= 1e-5 + 1e-4 * c.abs(),
            "losses {gpu_losses:?} vs {cpu_losses:?}"
        );
    }
    for entry in &store.entries {
        let values: Vec<f32> = gpu.read(&entry.value).unwrap();
        let expected = reference.param(&entry.name).unwrap();
        let tolerance = check::Tolerance {
            atol: 1e-6,
            rtol: 1e-3,
            max_relative_frobenius: Some(1e-5),
        };
        check::assert_close(&entry.name, &values[..expected.len()], expected, tolerance);
    }
}

#[test]
fn mmd_step_matches_the_cpu_reference() {
    let o = wae::objective(4, latent::data::ImageShape::MNIST, Regularizer::Mmd).unwrap();
    step_matches_reference(&o.graph, o.x, &[]);
}

#[test]
fn adversarial_steps_match_the_cpu_reference() {
    let d = wae::discriminator_step(4, latent::data::ImageShape::MNIST).unwrap();
    step_matches_reference(&d.graph, d.x, &[wae::DISCRIMINATOR]);
    let o = wae::objective(4, latent::data::ImageShape::MNIST, Regularizer::Adversarial).unwrap();
    step_matches_reference(&o.graph, o.x, &wae::AUTOENCODER);
}

#[test]
fn a_short_run_lowers_its_loss() {
    let gpu = check::shared_gpu();
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 8);
    let request = TrainRequest {
        epochs: Some(3),
        batch: Some(8),
        seed: Some(1),
        data: Some(data),
        run: Some(directory.path().join("run")),
        log_every: 1000,
        ..TrainRequest::new(ModelKind::Wae)
    };
    let summary = train::train(gpu, &request).unwrap();
    let metrics = latent::run::RunDir::open(&summary.run).unwrap().metrics().unwrap();
    let losses: Vec<f64> = metrics.iter().map(|m| m["train"]["loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 3);
    assert!(
        losses[2] < losses[0] - 5.0,
        "the training loss must fall over 3 epochs: {losses:?}"
    );
}

/// `latent train wae` with each regulariser, `sample`, `reconstruct`, `interpolate` and `eval` (FID and the
/// sliced Wasserstein distance with a tiny classifier run) on a tiny dataset.
#[test]
fn command_line_end_to_end_on_a_tiny_dataset() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 32, 16);
    let data_s = data.to_str().unwrap();
    let classifier = directory.path().join("classifier");
    let classifier_s = classifier.to_str().unwrap();
    latent(&[
        "train",
        "classifier",
        "--data",
        data_s,
        "--run",
        classifier_s,
        "--batch",
        "16",
        "--epochs",
        "1",
    ]);
    for regularizer in ["mmd", "adversarial"] {
        let run = directory.path().join(regularizer);
        let run_s = run.to_str().unwrap();
        latent(&[
            "train",
            "wae",
            "--regularizer",
            regularizer,
            "--data",
            data_s,
            "--run",
            run_s,
            "--batch",
            "8",
            "--steps",
            "4",
        ]);
        for file in [
            "checkpoint.safetensors",
            "config.json",
            "metrics.jsonl",
            "loss.png",
            "samples/epoch-001.png",
        ] {
            assert!(
                run.join(file).is_file(),
                "{regularizer}: the run directory lacks {file}"
            );
        }
        let config = std::fs::read_to_string(run.join("config.json")).unwrap();
        assert!(config.contains(regularizer), "{config}");
        let metrics = latent::run::RunDir::open(&run).unwrap().metrics().unwrap();
        let term = if regularizer == "mmd" { "mmd" } else { "adversarial" };
        for key in ["reconstruction", term, "loss"] {
            assert!(
                metrics[0]["train"][key].as_f64().unwrap().is_finite(),
                "{regularizer}: {key}"
            );
            assert!(
                metrics[0]["test"][key].as_f64().unwrap().is_finite(),
                "{regularizer}: test {key}"
            );
        }
        // Resume to a longer total, without naming the regulariser again.
        latent(&["train", "wae", "--resume", run_s, "--steps", "6"]);
        assert_eq!(latent::run::RunDir::open(&run).unwrap().metrics().unwrap().len(), 2);

        let out = directory.path().join(format!("{regularizer}-out"));
        let out_s = out.to_str().unwrap();
        latent(&["sample", "--run", run_s, "--n", "10", "--out", out_s]);
        latent(&["reconstruct", "--run", run_s, "--n", "8", "--out", out_s]);
        latent(&[
            "interpolate",
            "--run",
            run_s,
            "--pairs",
            "2",
            "--steps",
            "4",
            "--out",
            out_s,
        ]);
        for file in ["grid.png", "samples.npy", "reconstruct.png", "interpolate.png"] {
            assert!(out.join(file).is_file(), "{regularizer}: {file} missing");
        }
        let eval = latent(&[
            "eval",
            "--run",
            run_s,
            "--fid-n",
            "16",
            "--projections",
            "32",
            "--classifier",
            classifier_s,
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        assert_eq!(report["regularizer"], regularizer, "{report}");
        for key in ["reconstruction_l2", "test_mmd", "fid", "fid_floor", "swd", "swd_floor"] {
            let value = report[key].as_f64().unwrap_or(f64::NAN);
            assert!(value.is_finite(), "{regularizer}: {key} in {report}");
        }
        assert!(report["swd"].as_f64().unwrap() > 0.0, "{report}");
    }
}

#[test]
fn the_regularizer_belongs_to_the_wae() {
    let directory = tempfile::tempdir().unwrap();
    let run = directory.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_latent"))
        .args([
            "train",
            "ae",
            "--regularizer",
            "mmd",
            "--steps",
            "1",
            "--run",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--regularizer is for the wae"), "{stderr}");
}

/// Random images in [0, 1], (n, 784).
fn images(n: usize, seed: u64) -> Vec<f32> {
    TestRng::new(seed).uniform_vec(n * 784, 0.0, 1.0)
}

#[test]
fn sliced_wasserstein_is_zero_for_a_set_against_itself_and_symmetric() {
    let (a, b) = (images(50, 1), images(50, 2));
    assert_eq!(sliced_wasserstein(&a, &a, 784, 64, 0), 0.0);
    let ab = sliced_wasserstein(&a, &b, 784, 64, 0);
    let ba = sliced_wasserstein(&b, &a, 784, 64, 0);
    assert!(ab > 0.0 && (ab - ba).abs() <= 1e-12 * ab, "{ab} vs {ba}");
    // The order of the points does not matter.
    let mut reversed = Vec::new();
    for image in a.chunks(784).rev() {
        reversed.extend_from_slice(image);
    }
    assert!(sliced_wasserstein(&a, &reversed, 784, 64, 0).abs() < 1e-12);
}

/// Shifting every pixel by c moves each projection by c Σθ_i, so SW_2 = c sqrt(mean (Σθ_i)²) ≈ c (E(Σθ_i)² = 1
/// for a uniform unit θ): it grows linearly with the shift.
#[test]
fn sliced_wasserstein_grows_with_a_shift() {
    let a = images(40, 3);
    let mut previous = 0.0;
    for shift in [0.05f32, 0.1, 0.2, 0.4] {
        let b: Vec<f32> = a.iter().map(|v| v + shift).collect();
        let distance = sliced_wasserstein(&a, &b, 784, 256, 1);
        assert!(distance > previous, "shift {shift}: {distance} after {previous}");
        assert!(
            (distance / shift as f64 - 1.0).abs() < 0.25,
            "shift {shift}: SW_2 {distance}"
        );
        previous = distance;
    }
}
