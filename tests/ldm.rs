//! Latent diffusion and class conditioning: the ldm's and its first stage's training steps against the f64 CPU
//! reference, a conditional U-Net's step, classifier-free guidance (guidance 0 is the conditional model itself),
//! and the command line end to end on a tiny dataset (sampling by class, inpainting's known pixels, the errors).

use std::path::Path;

use latent::check::{self, TestRng};
use latent::data::ImageShape;
use latent::diffusion::{self, ReverseOptions, ReversePlan};
use latent::models::ddpm::{self, DdpmConfig, ScheduleKind};
use latent::models::ldm::{self, LdmConfig};
use latent::optim::Optimizer;
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, PlanOptions, TrainOptions};

mod common;
use common::{latent, latent_command, tiny_mnist};

const SEED: u64 = 11;

fn small_ldm(classes: Option<usize>) -> LdmConfig {
    LdmConfig {
        width: 16,
        blocks: 2,
        groups: 1,
        classes,
        ..LdmConfig::default()
    }
}

fn train_options() -> TrainOptions {
    TrainOptions {
        optimizer: Optimizer::adam(1e-3),
        update_prefixes: vec![],
    }
}

fn plan_options(name: &str) -> PlanOptions {
    PlanOptions {
        name: name.into(),
        train: Some(train_options()),
        seed: SEED,
    }
}

const LOOSE: check::Tolerance = check::Tolerance {
    atol: 2e-5,
    rtol: 1e-3,
    max_relative_frobenius: Some(1e-4),
};

/// A value written into a plan: float data, or integer timesteps.
enum Input {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// Two training steps on GPU and CPU reference: the losses agree to 1e-4 relative and every parameter after them
/// to LOOSE.
fn assert_steps_match(
    graph: &latent::graph::Graph,
    inputs: &[(latent::graph::TensorId, Vec<f32>)],
    per_step: &dyn Fn(u64) -> Vec<(latent::graph::TensorId, Input)>,
) {
    let gpu = check::shared_gpu();
    let mut store = ParamStore::new(SEED);
    let plan = plan::compile(gpu, graph, &mut store, &plan_options("step")).unwrap();
    let mut reference = Reference::new(graph, SEED, train_options());
    for (id, values) in inputs {
        plan.write_input(gpu, *id, values).unwrap();
        reference.set_input(*id, values);
    }
    for step in 0..2u64 {
        for (id, input) in per_step(step) {
            match input {
                Input::F32(values) => {
                    plan.write_input(gpu, id, &values).unwrap();
                    reference.set_input(id, &values);
                }
                Input::U32(values) => {
                    plan.write_input(gpu, id, &values).unwrap();
                    reference.set_input(id, &values.iter().map(|&v| v as f32).collect::<Vec<_>>());
                }
            }
        }
        plan.run(gpu, step);
        let gpu_losses = plan.read_losses(gpu).unwrap();
        let cpu_losses = reference.step(step).unwrap();
        for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
            eprintln!("step {step}: GPU {g}, CPU {c}");
            assert!(
                (*g as f64 - c).abs() <= 1e-4 * c.abs().max(1e-3),
                "step {step}: {g} vs {c}"
            );
        }
    }
    for entry in &store.entries {
        let values: Vec<f32> = gpu.read(&entry.value).unwrap();
        let expected = reference.param(&entry.name).unwrap();
        check::assert_close(&entry.name, &values[..expected.len()], expected, LOOSE);
    }
}

/// The first stage's step (BCE + 0.1 KL through the reparameterisation) on 28x28 images.
#[test]
fn the_first_stage_training_step_matches_the_cpu_reference() {
    let batch = 3;
    let tg = ldm::first_stage::train_graph(batch, ImageShape::MNIST).unwrap();
    let x = TestRng::new(5).uniform_vec(batch * 784, 0.0, 1.0);
    assert_steps_match(&tg.graph, &[(tg.x, x)], &|_| vec![]);
}

/// The conditional latent denoiser's step: q_sample, the residual MLP with the class embedding, the MSE, Adam.
#[test]
fn a_small_conditional_ldm_training_step_matches_the_cpu_reference() {
    let batch = 4;
    let objective = ldm::objective(&small_ldm(Some(10)), batch, ImageShape::MNIST).unwrap();
    let z0 = TestRng::new(6).uniform_vec(batch * ldm::latent_values(ImageShape::MNIST), -2.0, 2.0);
    let class = objective.class.unwrap();
    let t = objective.t;
    assert_steps_match(&objective.graph, &[(objective.z0, z0)], &move |step| {
        let timesteps = [[0u32, 517, 999, 40], [999, 3, 250, 600]][step as usize];
        // Classes 3 and 7, one sample with the null class each step.
        let labels = [[3u32, 10, 7, 3], [7, 7, 10, 3]][step as usize];
        vec![
            (t, Input::U32(timesteps.to_vec())),
            (class, Input::F32(diffusion::one_hot(&labels, 11))),
        ]
    });
}

/// The conditional U-Net (class embedding added to the time embedding) on 8x8 images.
#[test]
fn a_small_conditional_unet_training_step_matches_the_cpu_reference() {
    let config = DdpmConfig {
        width: 8,
        groups: 2,
        schedule: ScheduleKind::Linear,
        classes: Some(10),
    };
    let batch = 3;
    let objective = ddpm::objective(&config, batch, latent::data::ImageShape::new(1, 8, 8)).unwrap();
    let x = TestRng::new(7).uniform_vec(batch * 64, -1.0, 1.0);
    let (t, class) = (objective.t, objective.class.unwrap());
    assert_steps_match(&objective.graph, &[(objective.x, x)], &move |step| {
        let timesteps = [[0u32, 517, 999], [999, 3, 250]][step as usize];
        let labels = [[1u32, 10, 9], [0, 4, 10]][step as usize];
        vec![
            (t, Input::U32(timesteps.to_vec())),
            (class, Input::F32(diffusion::one_hot(&labels, 11))),
        ]
    });
}

/// Training's class rows: one-hot, the null class at about the rate of NULL_PROBABILITY, the same for the same
/// (seed, step).
#[test]
fn training_replaces_about_a_tenth_of_the_labels_by_the_null_class() {
    let labels: Vec<u32> = (0..10_000).map(|i| i % 10).collect();
    let rows = diffusion::training_class_rows(3, 17, &labels, 10, 0);
    assert_eq!(rows, diffusion::training_class_rows(3, 17, &labels, 10, 0));
    assert_ne!(rows, diffusion::training_class_rows(3, 18, &labels, 10, 0));
    let mut nulls = 0;
    for (row, &label) in rows.chunks(11).zip(&labels) {
        assert_eq!(row.iter().sum::<f32>(), 1.0);
        if row[10] == 1.0 {
            nulls += 1;
        } else {
            assert_eq!(row[label as usize], 1.0);
        }
    }
    assert!((900..1100).contains(&nulls), "{nulls} null labels of 10,000");
    // A part of the batch from sample 4000 on draws what the whole batch draws there.
    let part = diffusion::training_class_rows(3, 17, &labels[4000..4100], 10, 4000);
    assert_eq!(part, rows[4000 * 11..4100 * 11]);
}

/// Guidance 0 through the guided plan (the network at twice the samples, the second half on the null class, then
/// (1 + 0) eps_c - 0 eps_null) gives the conditional model's own samples; guidance 3 gives other, finite ones.
#[test]
fn guidance_zero_gives_the_conditional_models_own_samples() {
    let gpu = check::shared_gpu();
    let config = small_ldm(Some(10));
    let n = 5;
    let labels = [0u32, 3, 3, 9, 1];
    let schedule = config.schedule.schedule();
    let build = |batch| ldm::denoiser(&config, batch, ImageShape::MNIST);
    let plain = ReversePlan::for_samples(
        gpu,
        &build,
        n,
        diffusion::sampler("ddim", 8).unwrap(),
        &schedule,
        SEED,
        ReverseOptions {
            inpaint: false,
            clamp: false,
            guidance: None,
            resampling: None,
            autoguidance: None,
        },
        Some(&labels),
    )
    .unwrap();
    let guided = |w: f32| {
        let reverse = ReversePlan::new(
            gpu,
            ldm::denoiser(&config, 2 * n, ImageShape::MNIST).unwrap(),
            diffusion::sampler("ddim", 8).unwrap(),
            &schedule,
            SEED,
            &ReverseOptions {
                inpaint: false,
                clamp: false,
                guidance: Some(w),
                resampling: None,
                autoguidance: None,
            },
        )
        .unwrap();
        reverse.set_classes(gpu, &labels).unwrap();
        reverse.sample(gpu, &indicatif::ProgressBar::hidden()).unwrap()
    };
    let own = plain.sample(gpu, &indicatif::ProgressBar::hidden()).unwrap();
    let at_zero = guided(0.0);
    check::assert_close(
        "guidance 0 against the conditional model",
        &at_zero,
        &own.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        check::Tolerance {
            atol: 1e-6,
            rtol: 1e-5,
            max_relative_frobenius: Some(1e-6),
        },
    );
    let at_three = guided(3.0);
    assert!(at_three.iter().all(|v| v.is_finite()));
    let difference: f32 = at_three.iter().zip(&own).map(|(a, b)| (a - b).abs()).sum();
    assert!(difference > 1e-3, "guidance 3 must change the samples");
}

/// Autoguidance with a guide of the same weights as the model gives the model's own samples ((1 + w) eps - w eps),
/// to rounding; a guide of other weights changes them and they stay finite.
#[test]
fn autoguidance_by_a_copy_of_the_model_gives_its_own_samples() {
    let gpu = check::shared_gpu();
    let config = small_ldm(None);
    let guide_config = LdmConfig {
        width: 8,
        ..small_ldm(None)
    };
    let n = 4;
    let schedule = config.schedule.schedule();
    let options = |autoguidance| ReverseOptions {
        inpaint: false,
        clamp: false,
        guidance: None,
        resampling: None,
        autoguidance,
    };
    let sample = |denoiser, autoguidance| {
        let reverse = ReversePlan::new(
            gpu,
            denoiser,
            diffusion::sampler("ddim", 6).unwrap(),
            &schedule,
            SEED,
            &options(autoguidance),
        )
        .unwrap();
        // The guide's weights `guide.<name>` are a copy of the model's `<name>` when it has the same shape.
        for entry in &reverse.store.entries {
            if let Some(name) = entry.name.strip_prefix(diffusion::GUIDE) {
                let own = reverse.store.entries.iter().find(|e| e.name == name).unwrap();
                if own.shape == entry.shape {
                    let values: Vec<f32> = gpu.read(&own.value).unwrap();
                    gpu.write(&entry.value, &values).unwrap();
                }
            }
        }
        reverse.sample(gpu, &indicatif::ProgressBar::hidden()).unwrap()
    };
    let own = sample(ldm::denoiser(&config, n, ImageShape::MNIST).unwrap(), None);
    let copy = ldm::guided_denoiser(&config, &config, n, ImageShape::MNIST).unwrap();
    assert_eq!(copy.graph.shape(copy.eps_theta), &[2 * n, 4, 7, 7]);
    assert!(copy.graph.param_named("guide.net.b1.l2.weight").is_some());
    let by_copy = sample(copy, Some(2.0));
    check::assert_close(
        "autoguidance by the model itself",
        &by_copy,
        &own.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        check::Tolerance {
            atol: 1e-4,
            rtol: 1e-3,
            max_relative_frobenius: Some(1e-4),
        },
    );
    let weaker = ldm::guided_denoiser(&config, &guide_config, n, ImageShape::MNIST).unwrap();
    let guided = sample(weaker, Some(1.0));
    assert!(guided.iter().all(|v| v.is_finite()));
    let difference: f32 = guided.iter().zip(&own).map(|(a, b)| (a - b).abs()).sum();
    assert!(difference > 1e-3, "a guide of other weights must change the samples");
    let wrong = ReversePlan::new(
        gpu,
        ldm::denoiser(&config, n, ImageShape::MNIST).unwrap(),
        diffusion::sampler("ddim", 6).unwrap(),
        &schedule,
        SEED,
        &options(Some(1.0)),
    );
    assert!(wrong.is_err(), "autoguidance needs the two estimates");
}

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn npy_shape(path: &Path) -> String {
    let npy = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    header
        .split("'shape': ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string()
        + ")"
}

/// One clear line: the command fails, and its stderr names `expected`.
fn assert_refused(args: &[&str], expected: &str) {
    let output = latent_command(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "latent {args:?} must fail");
    assert!(
        stderr.contains(expected),
        "latent {args:?}: expected {expected:?} in:\n{stderr}"
    );
}

/// `latent train ldm --conditional` trains its first stage into the run and then the diffusion; sampling by class
/// (one class, every class as grid rows), inpainting (known pixels bit-exact), reconstruct and eval work; an
/// unconditional ldm on the same first stage (`--autoencoder`) refuses `--class`; bad input gets one clear line.
#[test]
fn command_line_end_to_end_on_a_tiny_dataset() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 16);
    let run = directory.path().join("ldm");
    let (run_s, data_s) = (run.to_str().unwrap(), data.to_str().unwrap());
    let small = ["--width", "16", "--blocks", "1", "--preview-steps", "2"];
    let mut args = vec![
        "train",
        "ldm",
        "--conditional",
        "--data",
        data_s,
        "--run",
        run_s,
        "--batch",
        "16",
        "--epochs",
        "2",
        "--autoencoder-epochs",
        "1",
    ];
    args.extend(small);
    latent(&args);
    for file in [
        "autoencoder/checkpoint.safetensors",
        "autoencoder/config.json",
        "checkpoint.safetensors",
        "config.json",
        "samples/epoch-002.png",
    ] {
        assert!(run.join(file).is_file(), "the run directory lacks {file}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let scale = config["ldm"]["scale"].as_f64().unwrap();
    assert!(scale.is_finite() && scale > 0.0, "{config}");
    assert_eq!(config["ldm"]["classes"], 10);
    let checkpoint = latent::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert!(checkpoint.tensors.contains_key("first_stage.dec.4.weight"));
    assert!(checkpoint.tensors.contains_key("ema.net.ce.weight"));
    assert!(
        !checkpoint.tensors.contains_key("ema.first_stage.dec.4.weight"),
        "the first stage is frozen"
    );
    let first = latent::checkpoint::Checkpoint::load(&run.join("autoencoder/checkpoint.safetensors")).unwrap();
    assert_eq!(
        checkpoint.tensors["first_stage.enc.0.weight"].data, first.tensors["enc.0.weight"].data,
        "the first stage is not trained with the diffusion"
    );

    let out = directory.path().join("out");
    let out_s = out.to_str().unwrap();
    let report = json(&latent(&[
        "sample", "--run", run_s, "--n", "20", "--class", "all", "--steps", "3", "--out", out_s, "--json",
    ]));
    assert_eq!(report["n"], 20);
    let classes: Vec<u64> = report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(
        classes,
        (0..20).map(|i| i / 2).collect::<Vec<u64>>(),
        "two of each class, a row each"
    );
    assert_eq!(npy_shape(&out.join("samples.npy")), "(20, 1, 28, 28)");
    let grid = image::open(out.join("grid.png")).unwrap();
    assert!(
        grid.height() > 4 * grid.width(),
        "ten rows of two: {}x{}",
        grid.width(),
        grid.height()
    );
    let report = json(&latent(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "4",
        "--class",
        "3",
        "--guidance",
        "2",
        "--steps",
        "3",
        "--out",
        out_s,
        "--json",
    ]));
    assert_eq!(report["guidance"], 2.0);
    assert_eq!(report["classes"], serde_json::json!([3, 3, 3, 3]));

    assert_refused(
        &["sample", "--run", run_s, "--class", "12"],
        "--class 12: this model has 10 classes, 0 to 9",
    );
    assert_refused(
        &["sample", "--run", run_s, "--class", "1", "--guidance", "-1"],
        "--guidance -1: the guidance weight must be a finite number >= 0",
    );

    let inpaint = json(&latent(&[
        "inpaint", "--run", run_s, "--demo", "--n", "2", "--steps", "3", "--out", out_s, "--json",
    ]));
    assert_eq!(
        inpaint["max_known_pixel_change"], 0.0,
        "known pixels come back bit for bit: {inpaint}"
    );
    assert_eq!(npy_shape(&out.join("inpainted.npy")), "(16, 1, 28, 28)");
    assert_eq!(inpaint["weights"], "ema", "{inpaint}");
    let trained = json(&latent(&[
        "inpaint", "--run", run_s, "--demo", "--n", "1", "--steps", "2", "--no-ema", "--out", out_s, "--json",
    ]));
    assert_eq!(
        trained["weights"], "trained",
        "--no-ema inpaints with the trained weights: {trained}"
    );
    assert_eq!(trained["max_known_pixel_change"], 0.0, "{trained}");
    // RePaint: 3 DDIM steps, jump 1, 2 resamplings: 3 + 2 jump points x 1 x 1 = 5 network evaluations.
    let inpaint = json(&latent(&[
        "inpaint",
        "--run",
        run_s,
        "--demo",
        "--n",
        "1",
        "--steps",
        "3",
        "--resample",
        "2",
        "--jump",
        "1",
        "--out",
        out_s,
        "--json",
    ]));
    assert_eq!(inpaint["max_known_pixel_change"], 0.0, "{inpaint}");
    assert_refused(
        &["inpaint", "--run", run_s, "--demo", "--steps", "3", "--resample", "0"],
        "--resample 0: give 1 for plain inpainting",
    );
    assert_refused(
        &[
            "inpaint",
            "--run",
            run_s,
            "--demo",
            "--steps",
            "3",
            "--resample",
            "2",
            "--jump",
            "3",
        ],
        "--jump 3: the jump length must be between 1 and 2",
    );
    let big_mask = directory.path().join("mask32.png");
    image::GrayImage::new(32, 32).save(&big_mask).unwrap();
    let digit = directory.path().join("digit.png");
    image::GrayImage::new(28, 28).save(&digit).unwrap();
    assert_refused(
        &[
            "inpaint",
            "--run",
            run_s,
            "--image",
            digit.to_str().unwrap(),
            "--mask",
            big_mask.to_str().unwrap(),
        ],
        "is 32x32, the run's images are 28x28",
    );
    // The completion benchmark on 8 test images, with the bottom half regenerated (FID's features from a tiny
    // classifier run).
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
    let bench = json(&latent(&[
        "eval",
        "--run",
        run_s,
        "--inpaint",
        "bottom",
        "--inpaint-n",
        "8",
        "--inpaint-steps",
        "3",
        "--resample",
        "2",
        "--jump",
        "1",
        "--classifier",
        classifier_s,
        "--json",
    ]));
    assert_eq!(bench["network_evaluations"], 5, "{bench}");
    assert_eq!(bench["max_known_pixel_change"], 0.0, "{bench}");
    assert_eq!(bench["regenerated_fraction"], 0.5, "{bench}");
    for key in [
        "accuracy_on_completions",
        "accuracy_on_originals",
        "fid",
        "fid_floor",
        "seam_score",
        "seam_score_of_real_images",
    ] {
        assert!(bench[key].as_f64().is_some_and(f64::is_finite), "{key}: {bench}");
    }
    latent(&["reconstruct", "--run", run_s, "--n", "4", "--out", out_s]);
    assert!(out.join("reconstruct.png").is_file());
    let eval = json(&latent(&["eval", "--run", run_s, "--fid-n", "0", "--json"]));
    for key in [
        "first_stage_reconstruction_bce_nats",
        "first_stage_reconstruction_mse",
        "latent_scale",
    ] {
        assert!(eval[key].as_f64().is_some_and(f64::is_finite), "{key}: {eval}");
    }

    // An unconditional ldm on the same first stage, with its autoguidance guide (a smaller ldm) trained first.
    let plain = directory.path().join("plain");
    let first_s = run.join("autoencoder");
    let (plain_s, first_s) = (plain.to_str().unwrap(), first_s.to_str().unwrap());
    let mut args = vec![
        "train",
        "ldm",
        "--autoencoder",
        first_s,
        "--data",
        data_s,
        "--run",
        plain_s,
        "--batch",
        "16",
        "--steps",
        "2",
        "--guide-epochs",
        "1",
        "--guide-width",
        "8",
        "--guide-blocks",
        "1",
    ];
    args.extend(small);
    latent(&args);
    assert!(
        !plain.join("autoencoder").exists(),
        "a given first stage is not trained again"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("config.json")).unwrap()).unwrap();
    let own_guide = std::fs::canonicalize(plain.join("guide")).unwrap();
    assert_eq!(config["ldm"]["guide"]["dir"], own_guide.to_str().unwrap(), "{config}");
    assert_eq!(config["ldm"]["guide"]["weight"], 0.5, "{config}");
    let guide_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("guide/config.json")).unwrap()).unwrap();
    assert_eq!(guide_config["ldm"]["width"], 8, "{guide_config}");
    assert_eq!(guide_config["ldm"]["scale"], config["ldm"]["scale"], "the same latents");
    assert!(
        guide_config["ldm"]["guide"].is_null(),
        "a guide has no guide of its own"
    );
    // FID's samples with a sampler of the user's choosing and the run's own guide, named in the report.
    let eval = json(&latent(&[
        "eval",
        "--run",
        plain_s,
        "--fid-n",
        "8",
        "--steps",
        "3",
        "--eta",
        "0.5",
        "--classifier",
        classifier_s,
        "--json",
    ]));
    assert_eq!(
        eval["fid_sampler"],
        format!(
            "ddim, 3 steps, eta 0.5, autoguided by {} at weight 0.5",
            own_guide.display()
        ),
        "{eval}"
    );
    assert!(eval["fid"].as_f64().is_some_and(f64::is_finite), "{eval}");
    let eval = json(&latent(&[
        "eval",
        "--run",
        plain_s,
        "--fid-n",
        "8",
        "--steps",
        "3",
        "--guide-weight",
        "0",
        "--classifier",
        classifier_s,
        "--json",
    ]));
    assert_eq!(
        eval["fid_sampler"], "ddim, 3 steps, eta 1",
        "weight 0: the model alone: {eval}"
    );
    assert_refused(
        &["sample", "--run", plain_s, "--class", "1"],
        "--class: this run is not class-conditional",
    );
    // Autoguidance: a smaller ldm on the same first stage guides the plain one.
    let guide = directory.path().join("guide");
    let guide_s = guide.to_str().unwrap();
    latent(&[
        "train",
        "ldm",
        "--autoencoder",
        first_s,
        "--data",
        data_s,
        "--run",
        guide_s,
        "--batch",
        "16",
        "--steps",
        "1",
        "--guide-epochs",
        "0",
        "--width",
        "8",
        "--blocks",
        "1",
        "--preview-steps",
        "2",
    ]);
    let eval = json(&latent(&[
        "eval",
        "--run",
        plain_s,
        "--fid-n",
        "8",
        "--steps",
        "3",
        "--guide",
        guide_s,
        "--guide-weight",
        "1.5",
        "--classifier",
        classifier_s,
        "--json",
    ]));
    let sampler = eval["fid_sampler"].as_str().unwrap();
    assert!(
        sampler.contains("autoguided by") && sampler.ends_with("at weight 1.5"),
        "{eval}"
    );
    assert!(eval["fid"].as_f64().is_some_and(f64::is_finite), "{eval}");
    let report = json(&latent(&[
        "sample", "--run", plain_s, "--n", "3", "--steps", "3", "--guide", guide_s, "--out", out_s, "--json",
    ]));
    assert_eq!(
        report["sampler"],
        format!("ddim, 3 steps, eta 1, autoguided by {guide_s} at weight 0.5"),
        "{report}"
    );
    assert_eq!(npy_shape(&out.join("samples.npy")), "(3, 1, 28, 28)");
    assert_refused(
        &["sample", "--run", plain_s, "--guide", guide_s, "--guide-weight", "-1"],
        "--guide-weight -1: give a weight of 0",
    );
    assert_refused(
        &["sample", "--run", plain_s, "--guide", first_s],
        "that run's model is ae-kl, not ldm",
    );
    assert_refused(
        &["sample", "--run", plain_s, "--guide", run_s],
        "its noise schedule or class conditioning differs",
    );
    // --autoencoder must name an ae-kl run.
    let wrong = directory.path().join("wrong");
    assert_refused(
        &[
            "train",
            "ldm",
            "--autoencoder",
            run_s,
            "--data",
            data_s,
            "--run",
            wrong.to_str().unwrap(),
            "--steps",
            "1",
            "--batch",
            "16",
        ],
        "that is a ldm run, not an ae-kl run",
    );
}

/// A conditional ddpm (width 8): guided sampling of every class is finite and in [0, 1], one grid row per class.
#[test]
fn a_conditional_ddpm_samples_every_class_with_guidance() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 32, 16);
    let run = directory.path().join("ddpm");
    let run_s = run.to_str().unwrap();
    latent(&[
        "train",
        "ddpm",
        "--conditional",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run_s,
        "--batch",
        "8",
        "--steps",
        "2",
        "--width",
        "8",
        "--groups",
        "2",
        "--preview-steps",
        "2",
    ]);
    let out = directory.path().join("out");
    let report = json(&latent(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "10",
        "--class",
        "all",
        "--guidance",
        "1.5",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["guidance"], 1.5);
    assert_eq!(npy_shape(&out.join("samples.npy")), "(10, 1, 28, 28)");
    let npy = std::fs::read(out.join("samples.npy")).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&npy[10 + header_len..]);
    assert!(values.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    let grid = image::open(out.join("grid.png")).unwrap();
    assert!(
        grid.height() > 5 * grid.width(),
        "ten rows of one: {}x{}",
        grid.width(),
        grid.height()
    );
}

/// RePaint's walk on a small untrained U-Net (8x8): the known pixels come back bit for bit after the jumps back,
/// everything is finite, and the walk makes S + (jump points) (r - 1) j network evaluations.
#[test]
fn resampling_keeps_the_known_pixels_bit_exact() {
    let gpu = check::shared_gpu();
    let config = DdpmConfig {
        width: 8,
        groups: 2,
        schedule: ScheduleKind::Linear,
        classes: None,
    };
    let n = 3;
    let reverse = ReversePlan::new(
        gpu,
        ddpm::denoiser(&config, n, latent::data::ImageShape::new(1, 8, 8)).unwrap(),
        diffusion::sampler("ddim", 6).unwrap(),
        &config.schedule.schedule(),
        SEED,
        &ReverseOptions {
            resampling: Some((2, 3)),
            autoguidance: None,
            ..ReverseOptions::pixels(true)
        },
    )
    .unwrap();
    // Jump points at levels 0 and 2 (below 6 - 2), each revisited twice: 6 + 2 x 2 x 2.
    assert_eq!(reverse.steps.len(), 14);
    let known = TestRng::new(9).uniform_vec(n * 64, -1.0, 1.0);
    let mask: Vec<f32> = (0..n * 64).map(|i| if (i % 64) < 32 { 1.0 } else { 0.0 }).collect();
    let out = reverse
        .inpaint(gpu, &known, &mask, &indicatif::ProgressBar::hidden())
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    for ((o, k), m) in out.iter().zip(&known).zip(&mask) {
        if *m == 1.0 {
            assert_eq!(o, k, "a known pixel changed");
        }
    }
}
