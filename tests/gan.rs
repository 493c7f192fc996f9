//! The GAN (models.md's DCGAN) and the FID evaluator: parameter names and counts, the two plans each updating
//! only their own net, the discriminator step against the CPU reference, the JSD and FID formulas, and the
//! command line end to end on a tiny dataset.

mod common;
use common::{latent, tiny_mnist};

use latent::check::{self, TestRng};
use latent::fid;
use latent::graph::Graph;
use latent::models::gan;
use latent::models::{self, ModelKind};
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, PlanOptions, TrainOptions};
use latent::train;

/// Every learned tensor of models.md's gan, in PyTorch's layouts.
const SPEC: [(&str, &[usize]); 20] = [
    ("generator.fc.weight", &[6272, 64]),
    ("generator.fc.bias", &[6272]),
    ("generator.net.0.weight", &[128]),
    ("generator.net.0.bias", &[128]),
    ("generator.net.2.weight", &[128, 64, 4, 4]),
    ("generator.net.2.bias", &[64]),
    ("generator.net.3.weight", &[64]),
    ("generator.net.3.bias", &[64]),
    ("generator.net.5.weight", &[64, 1, 4, 4]),
    ("generator.net.5.bias", &[1]),
    ("discriminator.net.0.weight", &[64, 1, 4, 4]),
    ("discriminator.net.0.bias", &[64]),
    ("discriminator.net.2.weight", &[128, 64, 4, 4]),
    ("discriminator.net.2.bias", &[128]),
    ("discriminator.net.3.weight", &[128]),
    ("discriminator.net.3.bias", &[128]),
    ("discriminator.net.6.weight", &[1, 6272]),
    ("discriminator.net.6.bias", &[1]),
    ("generator.net.0.running_mean", &[128]),
    ("discriminator.net.3.running_var", &[128]),
];

#[test]
fn gan_graphs_have_the_names_shapes_and_count_of_models_md() {
    let d_step = models::gan::discriminator_step(2, latent::data::ImageShape::MNIST).unwrap();
    let g_step = models::gan::generator_step(2, latent::data::ImageShape::MNIST).unwrap();
    for graph in [&d_step.graph, &g_step.graph] {
        assert_eq!(graph.parameter_count(), 679_042);
        for (name, shape) in SPEC {
            let spec = graph.param_named(name).unwrap_or_else(|| panic!("no parameter {name}"));
            assert_eq!(spec.shape, shape, "{name}");
        }
    }
    assert_eq!(
        train::train_graph(ModelKind::Gan, 2).unwrap().graph.parameter_count(),
        679_042
    );
    // D is applied twice in the D step with one set of weights.
    let d_weights = d_step
        .graph
        .params
        .iter()
        .filter(|p| p.name == "discriminator.net.0.weight")
        .count();
    assert_eq!(d_weights, 1);
}

fn x_batch(batch: usize, seed: u64) -> Vec<f32> {
    TestRng::new(seed).uniform_vec(batch * 784, -1.0, 1.0)
}

/// Every parameter value of the store, by name.
fn snapshot(gpu: &latent::gpu::Gpu, store: &ParamStore) -> Vec<(String, bool, Vec<f32>)> {
    store
        .entries
        .iter()
        .map(|e| {
            let mut values: Vec<f32> = gpu.read(&e.value).unwrap();
            values.truncate(e.len());
            (e.name.clone(), e.trainable, values)
        })
        .collect()
}

/// After the D step, G's weights are bit-identical and D's have moved; after the G step, D's weights are
/// bit-identical and G's have moved.
#[test]
fn each_gan_plan_updates_only_its_own_network() {
    let gpu = check::shared_gpu();
    let batch = 4;
    let plans = gan::compile(gpu, batch, latent::data::ImageShape::MNIST, 2e-4, 7).unwrap();
    plans
        .discriminator
        .write_input(gpu, plans.x, &x_batch(batch, 3))
        .unwrap();
    let before = snapshot(gpu, &plans.store);
    plans.discriminator.run(gpu, 0);
    let after_d = snapshot(gpu, &plans.store);
    plans.generator.run(gpu, 0);
    let after_g = snapshot(gpu, &plans.store);
    for ((name, trainable, v0), ((_, _, v1), (_, _, v2))) in before.iter().zip(after_d.iter().zip(&after_g)) {
        if !trainable {
            continue;
        }
        let is_d = name.starts_with("discriminator.");
        if is_d {
            assert_ne!(v0, v1, "the D step must update {name}");
            assert_eq!(v1, v2, "the G step must leave {name} bit-identical");
        } else {
            assert_eq!(v0, v1, "the D step must leave {name} bit-identical");
            assert_ne!(v1, v2, "the G step must update {name}");
        }
    }
    // Running statistics: G's are updated once per step (by the D step only), D's by both plans.
    let counter = |snap: &[(String, bool, Vec<f32>)], name: &str| snap.iter().find(|(n, _, _)| n == name).unwrap().2[0];
    assert_eq!(counter(&after_g, "generator.net.0.num_batches_tracked"), 1.0);
    assert_eq!(counter(&after_g, "discriminator.net.3.num_batches_tracked"), 3.0);
    // The D plan computes no gradient for G: no G gradient buffer exists before the G plan made one, and the
    // G plan computed none for D's weights.
    let d_only = ["discriminator.net.0.weight", "discriminator.net.6.weight"];
    let g_grad = plans.store.get("generator.fc.weight").unwrap().grad.is_some();
    assert!(g_grad, "the G plan computes G's gradients");
    for name in d_only {
        assert!(plans.store.get(name).unwrap().grad.is_some(), "{name}");
    }
}

/// The discriminator step on a batch of 4 for 2 steps equals its f64 CPU twin: both loss terms every step,
/// and every tensor of the store (weights of both nets, running statistics, counters) at the end.
#[test]
fn discriminator_step_matches_the_cpu_reference() {
    let gpu = check::shared_gpu();
    let batch = 4;
    let seed = 11;
    let d_step = models::gan::discriminator_step(batch, latent::data::ImageShape::MNIST).unwrap();
    let train = TrainOptions {
        optimizer: gan::optimizer(2e-4),
        update_prefixes: vec![models::gan::DISCRIMINATOR.into()],
    };
    let mut store = ParamStore::new(seed);
    let options = PlanOptions {
        name: "d step".into(),
        train: Some(train.clone()),
        seed,
    };
    let plan = plan::compile(gpu, &d_step.graph, &mut store, &options).unwrap();
    let mut reference = Reference::new(&d_step.graph, seed, train);
    let x = x_batch(batch, 5);
    plan.write_input(gpu, d_step.x, &x).unwrap();
    reference.set_input(d_step.x, &x);
    for step in 0..2 {
        plan.run(gpu, step);
        let gpu_losses = plan.read_losses(gpu).unwrap();
        let cpu_losses = reference.step(step).unwrap();
        eprintln!("step {step}: GPU {gpu_losses:?} CPU {cpu_losses:?}");
        assert_eq!(gpu_losses.len(), 2);
        for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
            assert!(
                (*g as f64 - c).abs() <= 1e-4 * c.abs().max(1e-2),
                "step {step}: losses {gpu_losses:?} vs {cpu_losses:?}"
            );
        }
        let tolerance = check::Tolerance {
            atol: 1e-5,
            rtol: 1e-4,
            max_relative_frobenius: Some(1e-5),
        };
        check::assert_close(
            "G(z)",
            &plan.read(gpu, d_step.fake).unwrap(),
            reference.tensor(d_step.fake),
            tolerance,
        );
    }
    for entry in &store.entries {
        let values: Vec<f32> = gpu.read(&entry.value).unwrap();
        let expected = reference.param(&entry.name).unwrap();
        let tolerance = if entry.name == "discriminator.net.2.bias" {
            // This bias feeds BatchNorm, which removes any per-channel constant: its exact gradient is 0 and
            // both sides see rounding noise, which Adam turns into steps of up to lr each. Only that bound holds.
            check::Tolerance {
                atol: 2.0 * 2.0 * 2e-4,
                rtol: 0.0,
                max_relative_frobenius: None,
            }
        } else if entry.name == "discriminator.net.3.running_mean" {
            // The batch means carry that bias: momentum 0.1 x 2 updates after the first step x 8e-4.
            check::Tolerance {
                atol: 0.1 * 2.0 * 8e-4,
                rtol: 0.0,
                max_relative_frobenius: None,
            }
        } else {
            check::Tolerance {
                atol: 1e-6,
                rtol: 1e-3,
                max_relative_frobenius: Some(1e-5),
            }
        };
        check::assert_close(&entry.name, &values[..expected.len()], expected, tolerance);
    }
}

/// BCE against a constant target, on the GPU and in the reference, forward and backward, alone in a tiny graph.
#[test]
fn constant_target_bce_matches_the_cpu_reference() {
    let gpu = check::shared_gpu();
    let batch = 6;
    for target in [0.0, 1.0] {
        let mut g = Graph::new();
        let x = g.input("x", &[batch, 5]);
        let logits = g.linear("fc", x, 3).unwrap();
        g.bce_with_logits_constant("bce", logits, target);
        let train = TrainOptions {
            optimizer: latent::optim::Optimizer::adam(1e-2),
            update_prefixes: vec![],
        };
        let mut store = ParamStore::new(1);
        let options = PlanOptions {
            name: "bce".into(),
            train: Some(train.clone()),
            seed: 1,
        };
        let plan = plan::compile(gpu, &g, &mut store, &options).unwrap();
        let mut reference = Reference::new(&g, 1, train);
        let xs = TestRng::new(4).uniform_vec(batch * 5, -2.0, 2.0);
        plan.write_input(gpu, x, &xs).unwrap();
        reference.set_input(x, &xs);
        for step in 0..3 {
            plan.run(gpu, step);
            let gpu_loss = plan.read_losses(gpu).unwrap()[0] as f64;
            let cpu_loss = reference.step(step).unwrap()[0];
            assert!(
                (gpu_loss - cpu_loss).abs() <= 1e-5 * cpu_loss.abs().max(1.0),
                "{gpu_loss} vs {cpu_loss}"
            );
        }
        for entry in &store.entries {
            let values: Vec<f32> = gpu.read(&entry.value).unwrap();
            let expected = reference.param(&entry.name).unwrap();
            check::assert_close(
                &entry.name,
                &values[..expected.len()],
                expected,
                check::Tolerance::ELEMENTWISE,
            );
        }
    }
}

#[test]
fn jsd_estimate_is_zero_for_an_undecided_discriminator_and_log_2_for_a_perfect_one() {
    // D = 1/2 everywhere (logit 0): log 2 + ½ (log ½ + log ½) = 0.
    assert!(gan::jsd_estimate(&[0.0; 10], &[0.0; 7]).abs() < 1e-12);
    // D = 1 on real, 0 on fake: log 2.
    let perfect = gan::jsd_estimate(&[60.0; 4], &[-60.0; 4]);
    assert!((perfect - std::f64::consts::LN_2).abs() < 1e-12, "{perfect}");
    // D(x) = 3/4 on real and 1/4 on fake: log 2 + log 3/4.
    let l = 3f32.ln();
    let value = gan::jsd_estimate(&[l], &[-l]);
    assert!(
        (value - (std::f64::consts::LN_2 + 0.75f64.ln())).abs() < 1e-6,
        "{value}"
    );
    assert!((gan::mean_probability(&[0.0, l]) - 0.625).abs() < 1e-6);
}

#[test]
fn fid_is_zero_against_itself_grows_with_noise_and_matches_a_closed_form() {
    let (n, dim) = (400, 16);
    let mut rng = TestRng::new(8);
    // Correlated features: a random linear map of uniform noise, plus an offset.
    let mixing = rng.uniform_vec(dim * dim, -1.0, 1.0);
    let raw = rng.uniform_vec(n * dim, -1.0, 1.0);
    let features: Vec<f32> = (0..n)
        .flat_map(|i| {
            let (raw, mixing) = (&raw, &mixing);
            (0..dim).map(move |j| 0.5 + (0..dim).map(|k| mixing[j * dim + k] * raw[i * dim + k]).sum::<f32>())
        })
        .collect();
    let itself = fid::fid(&features, &features, dim);
    assert!(itself.abs() < 1e-8, "FID of a set with itself: {itself}");
    let mut last = itself;
    for sigma in [0.05, 0.2, 0.8] {
        let noise = TestRng::new(9).uniform_vec(n * dim, -sigma, sigma);
        let noisy: Vec<f32> = features.iter().zip(&noise).map(|(f, e)| f + e).collect();
        let value = fid::fid(&noisy, &features, dim);
        assert!(
            value > last,
            "FID must grow with the noise: {value} after {last} at sigma {sigma}"
        );
        last = value;
    }
    // Scaling by 2: S_a = 4 S_b, mu_a = 2 mu_b, so FID = |mu_b|² + tr(4S + S - 2·2S) = |mu_b|² + tr(S_b).
    let doubled: Vec<f32> = features.iter().map(|v| 2.0 * v).collect();
    let stats = fid::FeatureStatistics::new(&features, dim);
    let expected = stats.mean.norm_squared() + stats.covariance.trace();
    let value = fid::fid(&doubled, &features, dim);
    assert!((value - expected).abs() < 1e-6 * expected, "{value} vs {expected}");
    // Entropy of a uniform histogram over 10 classes: log 10.
    assert!((fid::entropy(&[3; 10]) - 10f64.ln()).abs() < 1e-12);
    assert_eq!(fid::entropy(&[0, 5, 0]), 0.0);
}

/// `latent train gan`, `sample`, `interpolate` and `eval` (FID with a tiny classifier run, JSD, class entropy) on
/// a tiny dataset: every promised file, finite numbers; and the vae's eval reports FID too.
#[test]
fn gan_command_line_end_to_end_on_a_tiny_dataset() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 20);
    let data_s = data.to_str().unwrap();
    let run = directory.path().join("gan");
    let classifier = directory.path().join("classifier");
    let (run_s, classifier_s) = (run.to_str().unwrap(), classifier.to_str().unwrap());
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
    latent(&[
        "train", "gan", "--data", data_s, "--run", run_s, "--batch", "16", "--epochs", "2",
    ]);
    for file in [
        "checkpoint.safetensors",
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "samples/epoch-001.png",
        "samples/epoch-002.png",
    ] {
        assert!(run.join(file).is_file(), "the run directory lacks {file}");
    }
    let metrics = latent::run::RunDir::open(&run).unwrap().metrics().unwrap();
    assert_eq!(metrics.len(), 2);
    for key in ["d_loss", "g_loss", "d_real", "d_fake"] {
        assert!(metrics[1]["train"][key].as_f64().unwrap().is_finite(), "{key}");
    }
    for key in ["d_x", "d_g_z", "jsd_nats"] {
        assert!(metrics[1]["test"][key].as_f64().unwrap().is_finite(), "{key}");
    }
    // Resume one more epoch.
    latent(&["train", "gan", "--resume", run_s, "--epochs", "3"]);
    assert_eq!(latent::run::RunDir::open(&run).unwrap().metrics().unwrap().len(), 3);

    let out = directory.path().join("out");
    let out_s = out.to_str().unwrap();
    latent(&["sample", "--run", run_s, "--n", "10", "--out", out_s]);
    latent(&[
        "interpolate",
        "--run",
        run_s,
        "--pairs",
        "2",
        "--steps",
        "5",
        "--out",
        out_s,
    ]);
    for file in ["grid.png", "samples.npy", "interpolate.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let npy = std::fs::read(out.join("samples.npy")).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&npy[10 + header_len..]);
    assert_eq!(values.len(), 10 * 784);
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));

    let eval = latent(&[
        "eval",
        "--run",
        run_s,
        "--fid-n",
        "16",
        "--classifier",
        classifier_s,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    for key in [
        "fid",
        "fid_floor",
        "swd",
        "swd_floor",
        "jsd_nats",
        "d_x",
        "d_g_z",
        "class_entropy_nats",
    ] {
        let value = report[key].as_f64().unwrap_or(f64::NAN);
        assert!(value.is_finite(), "{key} in {report}");
    }
    assert!(report["fid"].as_f64().unwrap() >= 0.0 && report["fid_floor"].as_f64().unwrap() >= 0.0);
    let histogram: Vec<u64> = report["class_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(histogram.iter().sum::<u64>(), 16);

    // The vae's eval reports FID beside its likelihood bounds.
    let vae = directory.path().join("vae");
    let vae_s = vae.to_str().unwrap();
    latent(&[
        "train", "vae", "--data", data_s, "--run", vae_s, "--batch", "16", "--epochs", "1",
    ]);
    let eval = latent(&[
        "eval",
        "--run",
        vae_s,
        "--iwae-k",
        "2",
        "--fid-n",
        "16",
        "--classifier",
        classifier_s,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(report["fid"].as_f64().unwrap().is_finite(), "{report}");
    assert!(report["swd"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["negative_elbo_nats"].as_f64().unwrap().is_finite(), "{report}");
}
