//! Diffusion: the GPU against the CPU twin, the schedule's known values, q_sample's statistics, DDIM's exact
//! recovery of x0 from the true noise, and inpainting's known pixels surviving a whole sampling loop.

use latent::check::{self, shared_gpu, TestRng};
use latent::field_offsets;
use latent::gpu::{BufferRole, Gpu, GpuBuffer};
use latent::kernels::diffusion::{self, timestep_frequencies, DiffusionParams, SampleStep, Schedule, ScheduleRow};
use latent::kernels::params_layout_mismatch;
use latent::shaders;

#[test]
fn diffusion_kernels_match_cpu_twin() {
    check::assert_checks_pass(shared_gpu(), diffusion::checks());
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    let fields = field_offsets!(
        DiffusionParams,
        [n, per_sample, steps, mask_len, clamp_final, eta, _pad1, _pad2]
    );
    let entries: Vec<_> = shaders::ENTRY_POINTS
        .iter()
        .filter(|e| e.shader.name == "diffusion")
        .collect();
    assert_eq!(entries.len(), 7);
    for entry in &entries {
        let mismatch = params_layout_mismatch(entry, size_of::<DiffusionParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let step_fields = field_offsets!(SampleStep, [t, t_prev, _pad0, _pad1]);
    for entry in [
        &shaders::diffusion::DDPM_STEP,
        &shaders::diffusion::DDIM_STEP,
        &shaders::diffusion::DDIM_ETA_STEP,
        &shaders::diffusion::INPAINT_MIX,
        &shaders::diffusion::RENOISE,
    ] {
        let layout = entry
            .bindings
            .iter()
            .find(|b| b.name == "sample_step")
            .and_then(|b| b.uniform)
            .expect("sample_step is a uniform binding");
        let wgsl: Vec<(&str, usize)> = layout.members.iter().map(|(n, o)| (*n, *o as usize)).collect();
        assert_eq!(
            layout.size as usize,
            size_of::<SampleStep>(),
            "{}",
            entry.qualified_name()
        );
        assert_eq!(wgsl, step_fields, "{}", entry.qualified_name());
    }
    // ScheduleRow is a storage struct of six f32 (no uniform layout to compare): the Rust twin must be 24 bytes.
    assert_eq!(size_of::<ScheduleRow>(), 24);
}

#[test]
fn linear_schedule_has_the_ddpm_values() {
    let s = Schedule::ddpm();
    assert_eq!(s.len(), 1000);
    assert_eq!(s.betas[0], 1e-4);
    assert!((s.betas[999] - 0.02).abs() < 1e-15, "{}", s.betas[999]);
    assert_eq!(s.alpha_bars[0], 1.0 - 1e-4);
    // alpha_bar_999 = prod_{t=0}^{999} (1 - beta_t) = 4.0358297653756754e-5 (f64, summed in Python).
    let ab = s.alpha_bars[999];
    assert!((ab - 4.0358297653756754e-05).abs() < 1e-15, "{ab}");
    let rows = s.rows();
    // sqrt(alpha_bar_999) = 0.0063528, beta_999 / sqrt(1 - alpha_bar_999) = 0.0200004.
    assert!((rows[999].sqrt_alpha_bar as f64 - ab.sqrt()).abs() < 1e-9);
    assert!((rows[999].eps_coef as f64 - 0.02 / (1.0 - ab).sqrt()).abs() < 1e-9);
    assert_eq!(rows[0].sigma, 0.01);
}

#[test]
fn cosine_schedule_telescopes_to_its_alpha_bar() {
    let s = Schedule::cosine(1000);
    let f = |u: f64| ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    // Without clipping, prod (1 - beta_s) = prod f(s+1)/f(s) = f((t + 1) / T) / f(0).
    for t in [0, 1, 500, 900] {
        let expected = f((t + 1) as f64 / 1000.0) / f(0.0);
        assert!(
            (s.alpha_bars[t] - expected).abs() < 1e-12,
            "t={t}: {} vs {expected}",
            s.alpha_bars[t]
        );
    }
    assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999));
    assert!(s.alpha_bars.windows(2).all(|w| w[1] < w[0]));
    assert!(s.alpha_bars[999] < 1e-6);
}

#[test]
fn ddim_subsequence_is_evenly_spaced_and_ends_at_clean_data() {
    let steps = Schedule::ddpm().ddim_steps(50);
    assert_eq!(steps.len(), 50);
    assert_eq!((steps[0].t, steps[0].t_prev), (980, 960));
    assert_eq!((steps[49].t, steps[49].t_prev), (0, -1));
}

/// Standard normal values (Box-Muller over the test generator), rounded to f32.
fn normal_vec(rng: &mut TestRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

fn upload_u32(gpu: &Gpu, data: &[u32]) -> GpuBuffer {
    gpu.buffer_from("t", BufferRole::Inputs, data).unwrap()
}

#[test]
fn q_sample_has_the_forward_process_statistics() {
    let gpu = shared_gpu();
    let schedule = Schedule::ddpm();
    let timesteps = [0u32, 100, 500, 999];
    let per_sample = 20_000;
    let n = timesteps.len() * per_sample;
    let x0_value = 0.7f32;
    let mut rng = TestRng::new(2024);
    let eps = normal_vec(&mut rng, n);
    let x_t = gpu.buffer("x_t", BufferRole::Scratch, 4 * n as u64).unwrap();
    let x0 = check::upload(gpu, "x0", &vec![x0_value; n]).unwrap();
    let eps_gpu = check::upload(gpu, "eps", &eps).unwrap();
    let t = upload_u32(gpu, &timesteps);
    let table = diffusion::schedule_buffer(gpu, &schedule).unwrap();
    let dispatch = diffusion::q_sample(gpu, &x_t, &x0, &eps_gpu, &t, &table, timesteps.len(), per_sample).unwrap();
    gpu.run(&[&dispatch]).unwrap();
    let values: Vec<f32> = gpu.read(&x_t).unwrap();
    for (s, &timestep) in timesteps.iter().enumerate() {
        let sample: Vec<f64> = values[s * per_sample..(s + 1) * per_sample]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let m = per_sample as f64;
        let mean = sample.iter().sum::<f64>() / m;
        let variance = sample.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
        let ab = schedule.alpha_bars[timestep as usize];
        let (expected_mean, expected_variance) = (ab.sqrt() * x0_value as f64, 1.0 - ab);
        // Five standard errors: sd(mean) = sqrt(var / m), sd(sample variance) = var sqrt(2 / (m - 1)).
        let mean_bound = 5.0 * (expected_variance / m).sqrt();
        let variance_bound = 5.0 * expected_variance * (2.0 / (m - 1.0)).sqrt();
        assert!(
            (mean - expected_mean).abs() <= mean_bound,
            "t={timestep}: mean {mean}, expected {expected_mean} +- {mean_bound}"
        );
        assert!(
            (variance - expected_variance).abs() <= variance_bound,
            "t={timestep}: variance {variance}, expected {expected_variance} +- {variance_bound}"
        );
    }
}

/// x_t from q_sample, then one DDIM step with eps_theta = the true eps: to t_prev = -1 it gives x0 back, to
/// t_prev >= 0 it gives q_sample(x0, t_prev) with the same eps.
#[test]
fn ddim_with_the_true_noise_recovers_x0_in_one_step() {
    let gpu = shared_gpu();
    let schedule = Schedule::ddpm();
    let rows = schedule.rows();
    let n = 2000;
    let mut rng = TestRng::new(77);
    let x0 = rng.uniform_vec(n, -1.0, 1.0);
    let eps = normal_vec(&mut rng, n);
    let x0_gpu = check::upload(gpu, "x0", &x0).unwrap();
    let eps_gpu = check::upload(gpu, "eps", &eps).unwrap();
    let x = gpu.buffer("x", BufferRole::Scratch, 4 * n as u64).unwrap();
    let t_gpu = gpu.buffer("t", BufferRole::Inputs, 4).unwrap();
    let table = diffusion::schedule_buffer(gpu, &schedule).unwrap();
    let step_buffer = diffusion::sample_step_buffer(gpu).unwrap();
    // Recorded once; t and the step are rewritten before each submit.
    let noise = diffusion::q_sample(gpu, &x, &x0_gpu, &eps_gpu, &t_gpu, &table, 1, n).unwrap();
    let denoise = diffusion::ddim_step(gpu, &x, &eps_gpu, &table, &step_buffer, false, n).unwrap();
    for (t, t_prev) in [(0u32, -1i32), (1, -1), (250, -1), (999, -1), (999, 0), (500, 250)] {
        gpu.write(&t_gpu, &[t]).unwrap();
        diffusion::write_sample_step(gpu, &step_buffer, SampleStep::new(t, t_prev)).unwrap();
        gpu.run(&[&noise, &denoise]).unwrap();
        let got: Vec<f32> = gpu.read(&x).unwrap();
        // x_t carries f32 rounding of a few 1e-7 (|x_t| < 6), which x0_pred divides by sqrt(alpha_bar_t)
        // (0.0064 at t = 999): the bound is 2e-6 / sqrt(alpha_bar_t), 3e-4 at t = 999, 2e-6 at t = 0.
        let sqrt_ab = rows[t as usize].sqrt_alpha_bar as f64;
        let bound = 2e-6 / sqrt_ab;
        let (signal, noise_level) = if t_prev < 0 {
            (1.0, 0.0)
        } else {
            let r = rows[t_prev as usize];
            (r.sqrt_alpha_bar as f64, r.sqrt_one_minus_alpha_bar as f64)
        };
        for i in 0..n {
            let expected = signal * x0[i] as f64 + noise_level * eps[i] as f64;
            assert!(
                (got[i] as f64 - expected).abs() <= bound,
                "t={t}->{t_prev}: x[{i}] = {}, expected {expected} (bound {bound:.1e})",
                got[i]
            );
        }
    }
}

#[test]
fn embedding_has_known_values_at_t_zero_and_large_t() {
    let gpu = shared_gpu();
    let t = [0u32, 1000];
    let emb = gpu.buffer("emb", BufferRole::Scratch, 4 * 128).unwrap();
    let t_gpu = upload_u32(gpu, &t);
    let frequencies = diffusion::frequencies_buffer(gpu, 64).unwrap();
    gpu.run(&[&diffusion::timestep_embedding(gpu, &emb, &t_gpu, &frequencies, 2, 64).unwrap()])
        .unwrap();
    let values: Vec<f32> = gpu.read(&emb).unwrap();
    // t = 0: sin 0 = 0 and cos 0 = 1, exactly.
    assert!(values[..32].iter().all(|&v| v == 0.0));
    assert!(values[32..64].iter().all(|&v| v == 1.0));
    // t = 1000, f_0 = 1: sin(1000) = 0.8268795405320025, cos(1000) = 0.5623790762907029. The angle 1000 is
    // exact in f32; the GPU's own range reduction keeps the error under 1e-6.
    assert!((values[64] as f64 - 0.8268795405320025).abs() < 1e-6, "{}", values[64]);
    assert!((values[96] as f64 - 0.5623790762907029).abs() < 1e-6, "{}", values[96]);
    // The last frequency is 10000^(-31/32) = 1.3335214e-4.
    let f = timestep_frequencies(64);
    assert!((f[31] as f64 - 10000f64.powf(-31.0 / 32.0)).abs() < 1e-10);
    assert_eq!(f[0], 1.0);
}

/// A whole ancestral sampling loop on a short schedule (T = 10) with the mix after every step, recorded once and
/// replayed: the known pixels come back exactly, the generated ones are clamped to [-1, 1].
#[test]
fn inpainting_returns_the_known_pixels_exactly() {
    let gpu = shared_gpu();
    let schedule = Schedule::linear(10, 1e-4, 0.2);
    let (samples, per_sample) = (3, 49);
    let n = samples * per_sample;
    let mut rng = TestRng::new(5);
    let x0 = rng.uniform_vec(n, -1.0, 1.0);
    let mask: Vec<f32> = (0..per_sample).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let x = check::upload(gpu, "x", &normal_vec(&mut rng, n)).unwrap();
    let eps_theta = check::upload(gpu, "eps_theta", &normal_vec(&mut rng, n)).unwrap();
    let z = check::upload(gpu, "z", &normal_vec(&mut rng, n)).unwrap();
    let x0_gpu = check::upload(gpu, "x0", &x0).unwrap();
    let mask_gpu = check::upload(gpu, "mask", &mask).unwrap();
    let table = diffusion::schedule_buffer(gpu, &schedule).unwrap();
    let step_buffer = diffusion::sample_step_buffer(gpu).unwrap();
    let step = diffusion::ddpm_step(gpu, &x, &eps_theta, &z, &table, &step_buffer, true, n).unwrap();
    let mix = diffusion::inpaint_mix(gpu, &x, &x0_gpu, &z, &mask_gpu, &table, &step_buffer, n, per_sample).unwrap();
    for t in (0..10).rev() {
        diffusion::write_sample_step(gpu, &step_buffer, SampleStep::ddpm(t)).unwrap();
        gpu.run(&[&step, &mix]).unwrap();
    }
    let result: Vec<f32> = gpu.read(&x).unwrap();
    for i in 0..n {
        if mask[i % per_sample] == 1.0 {
            assert_eq!(result[i].to_bits(), x0[i].to_bits(), "known pixel {i} changed");
        } else {
            assert!((-1.0..=1.0).contains(&result[i]), "generated pixel {i} = {}", result[i]);
        }
    }
}

#[test]
fn launchers_reject_bad_sizes() {
    let gpu = shared_gpu();
    let small = gpu.buffer("small", BufferRole::Scratch, 16).unwrap();
    let schedule = diffusion::schedule_buffer(gpu, &Schedule::ddpm()).unwrap();
    let step = diffusion::sample_step_buffer(gpu).unwrap();
    let error = diffusion::ddim_step(gpu, &small, &small, &schedule, &step, false, 5).unwrap_err();
    assert!(
        error.to_string().contains("`small` holds 4 values, 5 are needed"),
        "{error}"
    );
    let error = diffusion::inpaint_mix(gpu, &small, &small, &small, &small, &schedule, &step, 4, 3).unwrap_err();
    assert!(error.to_string().contains("does not tile"), "{error}");
    let error = diffusion::timestep_embedding(gpu, &small, &small, &small, 1, 3).unwrap_err();
    assert!(error.to_string().contains("must be even"), "{error}");
}
