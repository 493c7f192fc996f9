//! The default models: parameter names, shapes and counts of models.md, the VAE against its CPU twin, a short
//! training run, and the command line end to end on a tiny dataset.

use std::process::Command;

use latent::check::{self, TestRng};
use latent::checkpoint::{Checkpoint, TensorData};
use latent::models::{self, ModelKind};
use latent::optim::Optimizer;
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, PlanOptions, TrainOptions};
use latent::train::{self, TrainRequest};

mod common;
use common::{latent, tiny_mnist};

/// (name, shape) of every tensor of models.md, in PyTorch's layouts.
fn spec(model: ModelKind) -> Vec<(&'static str, Vec<usize>)> {
    match model {
        ModelKind::Ae => vec![
            ("enc.0.weight", vec![32, 1, 4, 4]),
            ("enc.0.bias", vec![32]),
            ("enc.2.weight", vec![64, 32, 4, 4]),
            ("enc.2.bias", vec![64]),
            ("enc.5.weight", vec![16, 3136]),
            ("enc.5.bias", vec![16]),
            ("dec.0.weight", vec![3136, 16]),
            ("dec.0.bias", vec![3136]),
            ("dec.3.weight", vec![64, 32, 4, 4]),
            ("dec.3.bias", vec![32]),
            ("dec.5.weight", vec![32, 1, 4, 4]),
            ("dec.5.bias", vec![1]),
        ],
        // The ae's layers with an 8-dimensional code (the mmd regulariser has no parameters; the adversarial
        // one's discriminator is checked in tests/wae.rs).
        ModelKind::Wae => vec![
            ("enc.0.weight", vec![32, 1, 4, 4]),
            ("enc.0.bias", vec![32]),
            ("enc.2.weight", vec![64, 32, 4, 4]),
            ("enc.2.bias", vec![64]),
            ("enc.5.weight", vec![8, 3136]),
            ("enc.5.bias", vec![8]),
            ("dec.0.weight", vec![3136, 8]),
            ("dec.0.bias", vec![3136]),
            ("dec.3.weight", vec![64, 32, 4, 4]),
            ("dec.3.bias", vec![32]),
            ("dec.5.weight", vec![32, 1, 4, 4]),
            ("dec.5.bias", vec![1]),
        ],
        ModelKind::Vae => vec![
            ("fc1.weight", vec![400, 784]),
            ("fc1.bias", vec![400]),
            ("fc21.weight", vec![20, 400]),
            ("fc21.bias", vec![20]),
            ("fc22.weight", vec![20, 400]),
            ("fc22.bias", vec![20]),
            ("fc3.weight", vec![400, 20]),
            ("fc3.bias", vec![400]),
            ("fc4.weight", vec![784, 400]),
            ("fc4.bias", vec![784]),
        ],
        ModelKind::Ddpm => ddpm_spec(),
        // The ldm's first stage (its own section of models.md).
        ModelKind::AeKl => vec![
            ("enc.0.weight", vec![32, 1, 4, 4]),
            ("enc.0.bias", vec![32]),
            ("enc.2.weight", vec![64, 32, 4, 4]),
            ("enc.2.bias", vec![64]),
            ("enc.mu.weight", vec![4, 64, 3, 3]),
            ("enc.mu.bias", vec![4]),
            ("enc.logvar.weight", vec![4, 64, 3, 3]),
            ("enc.logvar.bias", vec![4]),
            ("dec.0.weight", vec![64, 4, 3, 3]),
            ("dec.0.bias", vec![64]),
            ("dec.2.weight", vec![64, 32, 4, 4]),
            ("dec.2.bias", vec![32]),
            ("dec.4.weight", vec![32, 1, 4, 4]),
            ("dec.4.bias", vec![1]),
        ],
        ModelKind::Ldm => ldm_spec(),
        ModelKind::Classifier => vec![
            ("c1.weight", vec![32, 1, 3, 3]),
            ("c1.bias", vec![32]),
            ("c2.weight", vec![64, 32, 3, 3]),
            ("c2.bias", vec![64]),
            ("f1.weight", vec![128, 3136]),
            ("f1.bias", vec![128]),
            ("f2.weight", vec![10, 128]),
            ("f2.bias", vec![10]),
        ],
        // Learned tensors; BatchNorm's running statistics are checked in tests/gan.rs.
        ModelKind::Gan => vec![
            ("generator.fc.weight", vec![6272, 64]),
            ("generator.fc.bias", vec![6272]),
            ("generator.net.0.weight", vec![128]),
            ("generator.net.0.bias", vec![128]),
            ("generator.net.2.weight", vec![128, 64, 4, 4]),
            ("generator.net.2.bias", vec![64]),
            ("generator.net.3.weight", vec![64]),
            ("generator.net.3.bias", vec![64]),
            ("generator.net.5.weight", vec![64, 1, 4, 4]),
            ("generator.net.5.bias", vec![1]),
            ("discriminator.net.0.weight", vec![64, 1, 4, 4]),
            ("discriminator.net.0.bias", vec![64]),
            ("discriminator.net.2.weight", vec![128, 64, 4, 4]),
            ("discriminator.net.2.bias", vec![128]),
            ("discriminator.net.3.weight", vec![128]),
            ("discriminator.net.3.bias", vec![128]),
            ("discriminator.net.6.weight", vec![1, 6272]),
            ("discriminator.net.6.bias", vec![1]),
        ],
    }
}

/// The ddpm's tensors, written out from models.md's table.
fn ddpm_spec() -> Vec<(&'static str, Vec<usize>)> {
    let mut tensors: Vec<(String, Vec<usize>)> = Vec::new();
    let mut layer = |name: &str, weight: Vec<usize>| {
        let out = weight[0];
        tensors.push((format!("{name}.weight"), weight));
        tensors.push((format!("{name}.bias"), vec![out]));
    };
    layer("net.te.0", vec![256, 64]);
    layer("net.te.2", vec![256, 256]);
    layer("net.inc", vec![64, 1, 3, 3]);
    layer("net.ds1", vec![64, 64, 3, 3]);
    layer("net.ds2", vec![128, 128, 3, 3]);
    layer("net.out", vec![1, 64, 3, 3]);
    for (block, ci, co) in [
        ("net.d1", 64, 64),
        ("net.d2", 64, 128),
        ("net.m1", 128, 128),
        ("net.m2", 128, 128),
        ("net.u2", 256, 128),
        ("net.u1", 192, 64),
    ] {
        layer(&format!("{block}.n1"), vec![ci]);
        layer(&format!("{block}.c1"), vec![co, ci, 3, 3]);
        layer(&format!("{block}.t"), vec![co, 256]);
        layer(&format!("{block}.n2"), vec![co]);
        layer(&format!("{block}.c2"), vec![co, co, 3, 3]);
        if ci != co {
            layer(&format!("{block}.skip"), vec![co, ci, 1, 1]);
        }
    }
    layer("net.out_n", vec![64]);
    tensors
        .into_iter()
        .map(|(name, shape)| (&*Box::leak(name.into_boxed_str()), shape))
        .collect()
}

/// The ldm's denoiser: a residual MLP of width 256 with 3 blocks over the 4x7x7 latent, and its first stage.
fn ldm_spec() -> Vec<(&'static str, Vec<usize>)> {
    // MODELS.md: width W = 512, 4 blocks, time embedding E = 256, latent D = 196.
    let (w, e, d) = (512, 256, 196);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("net.te.0.weight".into(), vec![e, 64]),
        ("net.te.0.bias".into(), vec![e]),
        ("net.te.2.weight".into(), vec![e, e]),
        ("net.te.2.bias".into(), vec![e]),
        ("net.in.weight".into(), vec![w, d]),
        ("net.in.bias".into(), vec![w]),
        ("net.out_n.weight".into(), vec![w]),
        ("net.out_n.bias".into(), vec![w]),
        ("net.out.weight".into(), vec![d, w]),
        ("net.out.bias".into(), vec![d]),
    ];
    for b in 0..4 {
        for (layer, shape) in [
            ("n1.weight", vec![w]),
            ("n1.bias", vec![w]),
            ("l1.weight", vec![w, w]),
            ("l1.bias", vec![w]),
            ("t.weight", vec![w, e]),
            ("t.bias", vec![w]),
            ("l2.weight", vec![w, w]),
            ("l2.bias", vec![w]),
        ] {
            tensors.push((format!("net.b{b}.{layer}"), shape));
        }
    }
    // Its first stage, frozen, inside the same checkpoint.
    for (name, shape) in spec(ModelKind::AeKl) {
        tensors.push((format!("first_stage.{name}"), shape));
    }
    tensors
        .into_iter()
        .map(|(name, shape)| (&*Box::leak(name.into_boxed_str()), shape))
        .collect()
}

#[test]
fn parameter_counts_match_models_md() {
    for (model, count) in [
        (ModelKind::Ae, 170_193),
        (ModelKind::Vae, 652_824),
        (ModelKind::Classifier, 421_642),
        (ModelKind::Gan, 679_042),
        (ModelKind::Ddpm, 1_965_121),
        (ModelKind::Wae, 120_009),
        (ModelKind::AeKl, 73_673),
        (ModelKind::Ldm, 2_990_221),
    ] {
        let tg = train::train_graph(model, 2).unwrap();
        assert_eq!(tg.graph.parameter_count(), count, "{model}");
    }
}

/// A checkpoint written by latent holds exactly the names, shapes and dtypes of models.md (plus optimizer state
/// under `optim.`), so PyTorch's load_state_dict takes the model tensors.
#[test]
fn checkpoints_carry_the_names_shapes_and_dtypes_of_models_md() {
    let gpu = check::shared_gpu();
    let directory = tempfile::tempdir().unwrap();
    for model in ModelKind::ALL {
        let tg = train::train_graph(model, 2).unwrap();
        let mut store = ParamStore::new(0);
        let options = PlanOptions {
            name: "names".into(),
            train: Some(TrainOptions {
                optimizer: Optimizer::adam(1e-3),
                update_prefixes: vec![],
            }),
            seed: 0,
        };
        plan::compile(gpu, &tg.graph, &mut store, &options).unwrap();
        let mut checkpoint = Checkpoint::new(model.name());
        store.save_into(gpu, &mut checkpoint).unwrap();
        let path = directory.path().join(format!("{model}.safetensors"));
        checkpoint.save(&path).unwrap();
        let loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(loaded.model(), model.name());
        let expected = spec(model);
        let is_norm_state = |n: &str| {
            n.ends_with(".running_mean") || n.ends_with(".running_var") || n.ends_with(".num_batches_tracked")
        };
        let model_tensors: Vec<&String> = loaded
            .tensors
            .keys()
            .filter(|n| !n.starts_with("optim.") && !is_norm_state(n))
            .collect();
        assert_eq!(model_tensors.len(), expected.len(), "{model}: {model_tensors:?}");
        for (name, shape) in expected {
            let tensor = loaded
                .tensors
                .get(name)
                .unwrap_or_else(|| panic!("{model}: no tensor {name}"));
            assert_eq!(tensor.shape, shape, "{model}: {name}");
            assert!(matches!(tensor.data, TensorData::F32(_)), "{model}: {name} must be F32");
            if name.starts_with("first_stage.") {
                // The ldm's first stage is frozen: no optimizer state.
                continue;
            }
            for state in ["exp_avg", "exp_avg_sq"] {
                let moment = &loaded.tensors[&format!("optim.{name}.{state}")];
                assert_eq!(moment.shape, shape, "{model}: optim.{name}.{state}");
            }
        }
    }
}

/// The VAE's forward pass (noise included) on fixed weights equals its f64 CPU twin, and so does one step of
/// training.
#[test]
fn vae_forward_and_one_step_match_the_cpu_twin() {
    let gpu = check::shared_gpu();
    let batch = 8;
    let objective = models::vae::objective(batch, latent::data::ImageShape::MNIST).unwrap();
    let train = TrainOptions {
        optimizer: Optimizer::adam(1e-3),
        update_prefixes: vec![],
    };
    let mut store = ParamStore::new(3);
    let options = PlanOptions {
        name: "vae".into(),
        train: Some(train.clone()),
        seed: 3,
    };
    let plan = plan::compile(gpu, &objective.graph, &mut store, &options).unwrap();
    let mut reference = Reference::new(&objective.graph, 3, train);
    let x = TestRng::new(9).uniform_vec(batch * 784, 0.0, 1.0);
    plan.write_input(gpu, objective.x, &x).unwrap();
    reference.set_input(objective.x, &x);

    plan.run(gpu, 0);
    let gpu_losses = plan.read_losses(gpu).unwrap();
    let cpu_losses = reference.step(0).unwrap();
    for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
        assert!(
            (*g as f64 - c).abs() <= 1e-4 * c.abs(),
            "losses {gpu_losses:?} vs {cpu_losses:?}"
        );
    }
    for (name, tensor) in [
        ("mu", objective.mu),
        ("logvar", objective.logvar),
        ("logits", objective.logits),
    ] {
        let tolerance = check::Tolerance {
            atol: 1e-5,
            rtol: 1e-4,
            max_relative_frobenius: Some(1e-5),
        };
        check::assert_close(
            name,
            &plan.read(gpu, tensor).unwrap(),
            reference.tensor(tensor),
            tolerance,
        );
    }
    // After the step, the weights agree too.
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
fn a_short_vae_run_lowers_its_loss() {
    let gpu = check::shared_gpu();
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 256, 64);
    let request = TrainRequest {
        epochs: Some(3),
        batch: Some(32),
        seed: Some(1),
        data: Some(data),
        run: Some(directory.path().join("run")),
        log_every: 1000,
        ..TrainRequest::new(ModelKind::Vae)
    };
    let summary = train::train(gpu, &request).unwrap();
    let metrics = latent::run::RunDir::open(&summary.run).unwrap().metrics().unwrap();
    let losses: Vec<f64> = metrics.iter().map(|m| m["train"]["loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 3);
    assert!(
        losses[2] < losses[0] - 20.0,
        "the training loss must fall over 3 epochs: {losses:?}"
    );
    let test: Vec<f64> = metrics.iter().map(|m| m["test"]["loss"].as_f64().unwrap()).collect();
    assert!(test[2] < test[0], "the test loss must fall too: {test:?}");
}

/// `latent train`, `eval`, `sample`, `reconstruct`, `interpolate` on a tiny dataset write every promised file,
/// and eval's numbers are finite and consistent.
#[test]
fn command_line_end_to_end_on_a_tiny_dataset() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 20);
    let run = directory.path().join("run");
    let (run_s, data_s) = (run.to_str().unwrap(), data.to_str().unwrap());
    latent(&[
        "train", "vae", "--data", data_s, "--run", run_s, "--batch", "16", "--epochs", "2",
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
    // Resume to a larger total: one more epoch.
    latent(&["train", "vae", "--resume", run_s, "--epochs", "3"]);
    let lines = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 3, "resume appends the third epoch");

    let eval = latent(&["eval", "--run", run_s, "--iwae-k", "8", "--fid-n", "0", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let nelbo = report["negative_elbo_nats"].as_f64().unwrap();
    let iwae = report["iwae_nll_nats"].as_f64().unwrap();
    let (bce, kl) = (
        report["reconstruction_nats"].as_f64().unwrap(),
        report["kl_nats"].as_f64().unwrap(),
    );
    assert!(
        nelbo.is_finite() && iwae.is_finite() && bce.is_finite() && kl.is_finite(),
        "{report}"
    );
    assert!(
        (bce + kl - nelbo).abs() < 1e-6 * nelbo,
        "the ELBO is the sum of its terms: {report}"
    );
    assert!(iwae <= nelbo, "the IWAE bound must be tighter than the ELBO: {report}");
    assert!(kl >= 0.0, "{report}");

    let out = directory.path().join("out");
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
        "5",
        "--out",
        out_s,
    ]);
    for file in ["grid.png", "samples.npy", "reconstruct.png", "interpolate.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // samples.npy: float32 [10, 1, 28, 28] with values in [0, 1].
    let npy = std::fs::read(out.join("samples.npy")).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (10, 1, 28, 28)"),
        "{header}"
    );
    assert_eq!((10 + header_len) % 64, 0, "the npy header is padded to 64 bytes");
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&npy[10 + header_len..]);
    assert_eq!(values.len(), 10 * 784);
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn errors_name_the_problem() {
    let directory = tempfile::tempdir().unwrap();
    let not_a_run = directory.path().to_str().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_latent"))
        .args(["eval", "--run", not_a_run])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a latent run directory"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_latent"))
        .args(["train", "gpt"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown model"));
}

/// `latent sample --n 300`: grid.png shows the first 256 (16 x 16), samples.npy holds all 300.
#[test]
fn sample_grids_are_capped_and_samples_npy_keeps_every_sample() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 32, 8);
    let run = directory.path().join("run");
    let (run_s, data_s) = (run.to_str().unwrap(), data.to_str().unwrap());
    latent(&[
        "train", "vae", "--data", data_s, "--run", run_s, "--batch", "16", "--steps", "1",
    ]);
    let out = directory.path().join("out");
    let output = latent(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "300",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["n"].as_u64(), report["grid_images"].as_u64()),
        (Some(300), Some(256))
    );
    let grid = image::open(out.join("grid.png")).unwrap();
    let expected = latent::run::image_grid(&vec![0.0; 256 * 784], [256, 1, 28, 28], 16);
    assert_eq!((grid.width(), grid.height()), expected.dimensions());
    let npy = std::fs::read(out.join("samples.npy")).unwrap();
    let header = String::from_utf8_lossy(&npy[..128]);
    assert!(header.contains("'shape': (300, 1, 28, 28)"), "{header}");
    assert_eq!(
        npy.len() - (10 + u16::from_le_bytes([npy[8], npy[9]]) as usize),
        300 * 784 * 4
    );
}
