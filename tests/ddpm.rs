//! The ddpm: the U-Net's size, a training step of a small U-Net against the CPU reference (q_sample, timestep
//! embedding, GroupNorm, SiLU, conv, concat, upsample, EMA), q_sample's statistics through the graph op,
//! sampling and inpainting on the GPU, and the command line end to end on a tiny dataset.

mod common;
use common::{latent, tiny_mnist};

use std::path::Path;
use std::sync::Arc;

use latent::check::{self, TestRng};
use latent::diffusion::{self, ReversePlan};
use latent::graph::Graph;
use latent::kernels::diffusion::Schedule;
use latent::models::ddpm::{self as model, DdpmConfig, ScheduleKind, TimestepPurpose};
use latent::optim::Optimizer;
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, PlanOptions, TrainOptions};

const SEED: u64 = 7;

fn small() -> DdpmConfig {
    DdpmConfig {
        width: 8,
        groups: 2,
        schedule: ScheduleKind::Linear,
        classes: None,
    }
}

#[test]
fn the_default_unet_has_the_parameters_of_models_md() {
    let objective = model::objective(&DdpmConfig::default(), 2, latent::data::ImageShape::MNIST).unwrap();
    assert_eq!(objective.graph.parameter_count(), 1_965_121);
    let names: Vec<&str> = objective.graph.params.iter().map(|p| p.name.as_str()).collect();
    for name in [
        "net.te.0.weight",
        "net.te.2.bias",
        "net.d2.skip.weight",
        "net.u1.t.weight",
        "net.out_n.bias",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        !names.contains(&"net.d1.skip.weight"),
        "d1 keeps its width: no skip conv"
    );
    let shape = |name: &str| objective.graph.param_named(name).unwrap().shape.clone();
    assert_eq!(shape("net.u2.c1.weight"), [128, 256, 3, 3]);
    assert_eq!(shape("net.u1.skip.weight"), [64, 192, 1, 1]);
    assert_eq!(shape("net.m1.t.weight"), [128, 256]);
    // A width that the groups do not divide is refused with the fix.
    let bad = DdpmConfig {
        width: 12,
        groups: 8,
        ..small()
    };
    assert!(bad.validate().unwrap_err().contains("multiple"));
}

/// Two training steps of a width-8 U-Net on 8x8 images: the GPU's losses, x_t, embedding and weights after
/// each step equal the f64 CPU reference's, and the EMA follows ema = 0.999 ema + 0.001 p.
#[test]
fn a_small_unet_training_step_matches_the_cpu_reference() {
    let gpu = check::shared_gpu();
    let (batch, size) = (3, latent::data::ImageShape::new(1, 8, 8));
    let config = small();
    let objective = model::objective(&config, batch, size).unwrap();
    let train = TrainOptions {
        optimizer: Optimizer::adam(1e-3),
        update_prefixes: vec![],
    };
    let mut store = ParamStore::new(SEED);
    let options = PlanOptions {
        name: "small ddpm".into(),
        train: Some(train.clone()),
        seed: SEED,
    };
    let mut plan = plan::compile(gpu, &objective.graph, &mut store, &options).unwrap();
    model::attach_ema(gpu, &mut store, &mut plan, model::EMA_DECAY).unwrap();
    let mut reference = Reference::new(&objective.graph, SEED, train);
    let x = TestRng::new(3).uniform_vec(batch * 64, -1.0, 1.0);
    plan.write_input(gpu, objective.x, &x).unwrap();
    reference.set_input(objective.x, &x);
    let mut ema: Vec<(String, Vec<f64>)> = store
        .entries
        .iter()
        .map(|e| (e.name.clone(), reference.param(&e.name).unwrap().to_vec()))
        .collect();
    let loose = check::Tolerance {
        atol: 1e-5,
        rtol: 1e-4,
        max_relative_frobenius: Some(1e-5),
    };
    for step in 0..2u64 {
        // Timesteps spread over the schedule, including its ends.
        let t = [[0u32, 517, 999], [999, 3, 250]][step as usize];
        plan.write_input(gpu, objective.t, &t).unwrap();
        reference.set_input(objective.t, &t.map(|v| v as f32));
        plan.run(gpu, step);
        let gpu_loss = plan.read_losses(gpu).unwrap()[0] as f64;
        let cpu_loss = reference.step(step).unwrap()[0];
        eprintln!("step {step}: GPU mse {gpu_loss}, CPU mse {cpu_loss}");
        assert!(
            (gpu_loss - cpu_loss).abs() <= 1e-4 * cpu_loss.abs(),
            "step {step}: {gpu_loss} vs {cpu_loss}"
        );
        check::assert_close(
            "x_t",
            &plan.read(gpu, objective.x_t).unwrap(),
            reference.tensor(objective.x_t),
            loose,
        );
        check::assert_close(
            "eps_theta",
            &plan.read(gpu, objective.prediction).unwrap(),
            reference.tensor(objective.prediction),
            check::Tolerance {
                atol: 1e-4,
                rtol: 1e-3,
                max_relative_frobenius: Some(1e-4),
            },
        );
        for (name, values) in &mut ema {
            let p = reference.param(name).unwrap();
            for (e, v) in values.iter_mut().zip(p) {
                *e = model::EMA_DECAY * *e + (1.0 - model::EMA_DECAY) * v;
            }
        }
    }
    let embedding = objective.graph.tensors.iter().position(|t| t.name == "temb").unwrap();
    let embedding = latent::graph::TensorId(embedding);
    check::assert_close(
        "temb",
        &plan.read(gpu, embedding).unwrap(),
        reference.tensor(embedding),
        loose,
    );
    let tolerance = check::Tolerance {
        atol: 2e-5,
        rtol: 1e-3,
        max_relative_frobenius: Some(1e-4),
    };
    for entry in &store.entries {
        let values: Vec<f32> = gpu.read(&entry.value).unwrap();
        let expected = reference.param(&entry.name).unwrap();
        check::assert_close(&entry.name, &values[..expected.len()], expected, tolerance);
        let ema_values: Vec<f32> = gpu.read(entry.ema.as_ref().unwrap()).unwrap();
        let expected = &ema.iter().find(|(n, _)| *n == entry.name).unwrap().1;
        check::assert_close(
            &format!("ema.{}", entry.name),
            &ema_values[..expected.len()],
            expected,
            tolerance,
        );
    }
}

/// x_t = sqrt(ab) x0 + sqrt(1 - ab) eps through the graph op, eps drawn on the GPU: per timestep, the mean and
/// variance of 16,384 values match sqrt(ab) x0 and 1 - ab.
#[test]
fn q_sample_statistics_match_alpha_bar() {
    let gpu = check::shared_gpu();
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        let schedule = kind.schedule();
        let timesteps = [0u32, 10, 100, 500, 999];
        let (n, d) = (timesteps.len(), 16_384);
        let mut g = Graph::new();
        let x0 = g.input("x0", &[n, d]);
        let t = g.integer_input("t", &[n]);
        let eps = g.normal_noise("eps", &[n, d], 0);
        let x_t = g.q_sample(x0, eps, t, Arc::new(schedule.clone())).unwrap();
        let mut store = ParamStore::new(0);
        let options = PlanOptions {
            name: "q_sample".into(),
            train: None,
            seed: 11,
        };
        let plan = plan::compile(gpu, &g, &mut store, &options).unwrap();
        let value = 0.6f32;
        plan.write_input(gpu, x0, &vec![value; n * d]).unwrap();
        plan.write_input(gpu, t, &timesteps).unwrap();
        plan.run(gpu, 0);
        let values = plan.read(gpu, x_t).unwrap();
        for (i, &timestep) in timesteps.iter().enumerate() {
            let ab = schedule.alpha_bars[timestep as usize];
            let row = &values[i * d..(i + 1) * d];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let variance = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let (expected_mean, expected_variance) = (ab.sqrt() * value as f64, 1.0 - ab);
            // Five standard errors (with a floor for t = 0, where the variance is 1e-4).
            let mean_error = 5.0 * (expected_variance / d as f64).sqrt() + 1e-6;
            let variance_error = 5.0 * expected_variance * (2.0 / d as f64).sqrt() + 1e-6;
            eprintln!("{kind:?} t={timestep}: mean {mean:.5} ({expected_mean:.5}), var {variance:.5} ({expected_variance:.5})");
            assert!(
                (mean - expected_mean).abs() < mean_error,
                "{kind:?} t={timestep}: mean {mean} vs {expected_mean}"
            );
            assert!(
                (variance - expected_variance).abs() < variance_error,
                "{kind:?} t={timestep}: variance {variance} vs {expected_variance}"
            );
        }
    }
}

/// Host-drawn timesteps are uniform over 0..T and depend on (seed, step) only.
#[test]
fn timesteps_are_reproducible_and_cover_the_schedule() {
    let a = model::draw_timesteps(1, TimestepPurpose::Train, 5, 20_000, 1000);
    assert_eq!(a, model::draw_timesteps(1, TimestepPurpose::Train, 5, 20_000, 1000));
    assert_ne!(a, model::draw_timesteps(1, TimestepPurpose::Train, 6, 20_000, 1000));
    assert_ne!(a, model::draw_timesteps(1, TimestepPurpose::Test, 5, 20_000, 1000));
    assert!(a.iter().all(|&t| t < 1000));
    let mean = a.iter().map(|&t| t as f64).sum::<f64>() / a.len() as f64;
    assert!((mean - 499.5).abs() < 10.0, "mean timestep {mean}");
    assert!(a.contains(&0) && a.contains(&999));
}

/// Sampling an untrained small U-Net on the GPU (both samplers) gives finite values in [-1, 1] after the final
/// clamp; inpainting gives back every known pixel unchanged.
#[test]
fn sampling_is_finite_and_clamped_and_inpainting_keeps_known_pixels() {
    let gpu = check::shared_gpu();
    let config = small();
    let (n, size) = (3, latent::data::ImageShape::new(1, 8, 8));
    let reverse_plan = |sampler: &str, steps: usize, seed: u64, inpaint: bool| {
        let denoiser = model::denoiser(&config, n, size).unwrap();
        let sampler = diffusion::sampler(sampler, steps).unwrap();
        let options = diffusion::ReverseOptions::pixels(inpaint);
        ReversePlan::new(gpu, denoiser, sampler, &config.schedule.schedule(), seed, &options).unwrap()
    };
    for (sampler, steps) in [("ddim", 10), ("ancestral", 0)] {
        let reverse = reverse_plan(sampler, steps, 1, false);
        let samples = reverse.sample(gpu, &indicatif::ProgressBar::hidden()).unwrap();
        assert_eq!(samples.len(), n * 64);
        assert!(
            samples.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)),
            "{sampler:?}: {samples:?}"
        );
        let spread = samples.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(spread > 0.0, "{sampler:?}: samples are all zero");
    }
    let reverse = reverse_plan("ddim", 8, 2, true);
    let known = TestRng::new(4).uniform_vec(n * 64, -1.0, 1.0);
    let mask: Vec<f32> = (0..n * 64).map(|i| if (i % 64) < 32 { 1.0 } else { 0.0 }).collect();
    let completed = reverse
        .inpaint(gpu, &known, &mask, &indicatif::ProgressBar::hidden())
        .unwrap();
    for i in 0..n * 64 {
        if mask[i] == 1.0 {
            assert_eq!(completed[i], known[i], "known pixel {i} changed");
        } else {
            assert!(completed[i].is_finite() && (-1.0..=1.0).contains(&completed[i]));
        }
    }
    assert!(
        (0..n * 64).any(|i| mask[i] == 0.0 && completed[i] != known[i]),
        "the masked pixels are regenerated"
    );
}

/// The DDIM subsequence covers the schedule from the top down to clean data.
#[test]
fn ddim_steps_walk_down_to_clean_data() {
    let steps = Schedule::ddpm().ddim_steps(20);
    assert_eq!(steps.len(), 20);
    assert_eq!(steps[0].t, 950);
    assert_eq!(steps.last().unwrap().t_prev, -1);
}

fn npy_values(path: &Path, shape: &str) -> Vec<f32> {
    let npy = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    assert!(header.contains(&format!("'shape': {shape}")), "{header}");
    bytemuck::pod_collect_to_vec(&npy[10 + header_len..])
}

/// `latent train ddpm` (a width-8 U-Net) lowers its loss over 3 epochs and writes the run directory; `sample`
/// (DDIM and ancestral), `diffuse`, `inpaint --demo` and `eval` write their files with sane values.
#[test]
fn command_line_end_to_end_with_a_small_unet() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data, 64, 16);
    let run = directory.path().join("run");
    let (run_s, data_s) = (run.to_str().unwrap(), data.to_str().unwrap());
    latent(&[
        "train",
        "ddpm",
        "--data",
        data_s,
        "--run",
        run_s,
        "--batch",
        "16",
        "--epochs",
        "3",
        "--lr",
        "3e-3",
        "--width",
        "8",
        "--groups",
        "2",
        "--preview-steps",
        "2",
    ]);
    for file in [
        "checkpoint.safetensors",
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "samples/epoch-001.png",
        "samples/epoch-003.png",
    ] {
        assert!(run.join(file).is_file(), "the run directory lacks {file}");
    }
    let metrics = latent::run::RunDir::open(&run).unwrap().metrics().unwrap();
    let train: Vec<f64> = metrics.iter().map(|m| m["train"]["mse"].as_f64().unwrap()).collect();
    let test: Vec<f64> = metrics.iter().map(|m| m["test"]["mse"].as_f64().unwrap()).collect();
    eprintln!("train mse {train:?}, test mse {test:?}");
    assert!(train[2] < 0.9 * train[0], "the training MSE must fall: {train:?}");
    assert!(test[2] < test[0], "the test MSE must fall: {test:?}");
    let checkpoint = latent::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert!(
        checkpoint.tensors.contains_key("ema.net.out.weight"),
        "EMA weights are saved"
    );

    let out = directory.path().join("out");
    let out_s = out.to_str().unwrap();
    let report = latent(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "6",
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--out",
        out_s,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["steps"], 3, "{report}");
    let values = npy_values(&out.join("samples.npy"), "(6, 1, 28, 28)");
    assert!(values.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    // (The ancestral sampler's 1000 steps are checked on 8x8 images above: too slow for lavapipe here.)

    latent(&["diffuse", "--run", run_s, "--n", "3", "--out", out_s]);
    let inpaint = latent(&[
        "inpaint", "--run", run_s, "--demo", "--n", "1", "--steps", "3", "--out", out_s, "--json",
    ]);
    let inpaint: serde_json::Value = serde_json::from_slice(&inpaint.stdout).unwrap();
    assert!(
        inpaint["max_known_pixel_change"].as_f64().unwrap() < 1e-6,
        "known pixels come back unchanged: {inpaint}"
    );
    for file in ["grid.png", "samples.npy", "diffuse.png", "inpaint.png", "inpainted.npy"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // FID and SWD of ddpm samples go through the same code as the gan's and vae's (tests/gan.rs, tests/wae.rs);
    // 50 DDIM steps per sample would only slow this test down.
    let eval = latent(&["eval", "--run", run_s, "--fid-n", "0", "--json"]);
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let (mse, mse_ema) = (
        eval["test_mse"].as_f64().unwrap(),
        eval["test_mse_ema"].as_f64().unwrap(),
    );
    assert!(mse.is_finite() && mse_ema.is_finite() && mse > 0.0, "{eval}");
    // The same seeded timesteps and noise as the last epoch's test evaluation.
    assert!(
        (mse - test[2]).abs() < 1e-4 * test[2],
        "eval {mse} vs training's test mse {}",
        test[2]
    );
}
