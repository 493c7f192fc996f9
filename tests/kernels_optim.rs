//! Optimizers: the GPU against the CPU twin, and a few steps against values computed by hand from PyTorch's
//! update rules (torch.optim.Adam / AdamW / SGD, clip_grad_norm_).

use latent::check::{self, shared_gpu};
use latent::cpu;
use latent::field_offsets;
use latent::gpu::{BufferRole, Gpu, GpuBuffer};
use latent::kernels::optim::{self, AdamConfig, GradTensor, OptimParams, OptimStep, SgdConfig};
use latent::kernels::params_layout_mismatch;
use latent::shaders::{self, StructLayout};

#[test]
fn optimizers_match_cpu_twin() {
    check::assert_checks_pass(shared_gpu(), optim::checks());
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    let fields = field_offsets!(
        OptimParams,
        [
            n,
            first,
            partial_offset,
            nesterov,
            beta1,
            beta2,
            one_minus_beta1,
            one_minus_beta2,
            eps,
            weight_decay,
            momentum,
            max_norm,
            ema_decay,
            one_minus_ema_decay,
            _pad0,
            _pad1
        ]
    );
    for entry in shaders::ENTRY_POINTS
        .iter()
        .filter(|e| e.shader.name == "optim" || e.shader.name == "optim_vec4")
    {
        let mismatch = params_layout_mismatch(entry, size_of::<OptimParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    // The per-step uniform is the second uniform binding of the entry points that read it.
    let step_fields = field_offsets!(OptimStep, [lr, step_size, bias_correction2_sqrt, decay]);
    for entry in [
        &shaders::optim::ADAM_STEP,
        &shaders::optim::ADAMW_STEP,
        &shaders::optim::SGD_STEP,
        &shaders::optim_vec4::ADAM_STEP,
        &shaders::optim_vec4::ADAMW_STEP,
    ] {
        let layout: &StructLayout = entry
            .bindings
            .iter()
            .find(|b| b.name == "step_values")
            .and_then(|b| b.uniform)
            .expect("step_values is a uniform binding");
        let wgsl: Vec<(&str, usize)> = layout.members.iter().map(|(n, o)| (*n, *o as usize)).collect();
        assert_eq!(
            layout.size as usize,
            size_of::<OptimStep>(),
            "{}",
            entry.qualified_name()
        );
        assert_eq!(wgsl, step_fields, "{}", entry.qualified_name());
    }
}

/// A one-element parameter with its optimizer state on the GPU, stepped on fixed gradients.
struct OneParam {
    param: GpuBuffer,
    state_a: GpuBuffer,
    state_b: GpuBuffer,
    grad: GpuBuffer,
    step_values: GpuBuffer,
}

impl OneParam {
    fn new(gpu: &Gpu, p: f32) -> Self {
        Self {
            param: gpu.buffer_from("param", BufferRole::Weights, &[p]).unwrap(),
            state_a: gpu.buffer("m", BufferRole::OptimizerState, 4).unwrap(),
            state_b: gpu.buffer("v", BufferRole::OptimizerState, 4).unwrap(),
            grad: gpu.buffer("grad", BufferRole::Gradients, 4).unwrap(),
            step_values: optim::step_buffer(gpu, "step").unwrap(),
        }
    }

    fn value(&self, gpu: &Gpu) -> f64 {
        gpu.read::<f32>(&self.param).unwrap()[0] as f64
    }

    /// Adam steps 1, 2, ... on `grads`, recorded once and replayed with rewritten step values; p after each.
    fn adam(&self, gpu: &Gpu, config: AdamConfig, lr: f64, grads: &[f32]) -> Vec<f64> {
        let dispatch = optim::adam_step(
            gpu,
            &self.param,
            &self.state_a,
            &self.state_b,
            &self.grad,
            &self.step_values,
            &config,
            0,
            1,
        )
        .unwrap();
        let mut trace = Vec::new();
        for (t, g) in grads.iter().enumerate() {
            gpu.write(&self.grad, &[*g]).unwrap();
            optim::write_step(gpu, &self.step_values, config.step(t as u32 + 1, lr)).unwrap();
            gpu.run(&[&dispatch]).unwrap();
            trace.push(self.value(gpu));
        }
        trace
    }

    fn sgd(&self, gpu: &Gpu, config: SgdConfig, lr: f64, grads: &[f32]) -> Vec<f64> {
        let dispatch = optim::sgd_step(
            gpu,
            &self.param,
            &self.state_a,
            &self.grad,
            &self.step_values,
            &config,
            0,
            1,
        )
        .unwrap();
        optim::write_step(gpu, &self.step_values, config.step(lr)).unwrap();
        let mut trace = Vec::new();
        for g in grads {
            gpu.write(&self.grad, &[*g]).unwrap();
            gpu.run(&[&dispatch]).unwrap();
            trace.push(self.value(gpu));
        }
        trace
    }
}

/// The twin's trace for the same steps.
fn adam_twin(config: AdamConfig, lr: f64, p: f64, grads: &[f32]) -> Vec<f64> {
    let mut state = cpu::optim::AdamState::new(vec![p]);
    grads
        .iter()
        .enumerate()
        .map(|(t, &g)| {
            let step = config.step(t as u32 + 1, lr);
            cpu::optim::adam_step(&mut state, &[g as f64], &config.params(0, 1), &step, 0..1);
            state.param[0]
        })
        .collect()
}

#[track_caller]
fn assert_trace(what: &str, got: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(got.len(), expected.len());
    for (step, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= tolerance,
            "{what}: after step {} p = {g}, expected {e} (diff {:.2e})",
            step + 1,
            (g - e).abs()
        );
    }
}

/// f32 weights near 1 are spaced 6e-8 apart and each step rounds once: three steps stay within 2e-7.
const F32_STEPS: f64 = 2e-7;

/// The twin computes in f64 from the f32-rounded hyperparameters the GPU sees (AdamW's 1 - 1e-4 is
/// 0.99989998 in f32, 1.7e-8 off), so its trace differs from exact arithmetic by a few 1e-8.
const TWIN_STEPS: f64 = 1e-7;

#[test]
fn adam_steps_equal_hand_computed_values() {
    let gpu = shared_gpu();
    // p = 1, g = 0.5 every step, lr 1e-3, betas (0.9, 0.999), eps 1e-8.
    // Step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025; m_hat = 0.05 / 0.1 = 0.5,
    //         v_hat = 0.00025 / 0.001 = 0.25; p = 1 - 1e-3 * 0.5 / (0.5 + 1e-8) = 0.99900000002.
    // Step 2: m = 0.045 + 0.05 = 0.095, v = 0.00024975 + 0.00025 = 0.00049975; m_hat = 0.095 / 0.19 = 0.5,
    //         v_hat = 0.00049975 / 0.001999 = 0.25: with a constant gradient m_hat = g and v_hat = g^2 exactly,
    //         so every step moves p by lr * 0.5 / (0.5 + 1e-8) = 1e-3 (1 - 2e-8).
    // After 3 steps: 0.99900000002, 0.99800000004, 0.99700000006.
    let expected = [0.99900000002, 0.99800000004, 0.99700000006];
    let grads = [0.5f32; 3];
    let lr = 1e-3;
    let one = OneParam::new(gpu, 1.0);
    assert_trace(
        "adam",
        &one.adam(gpu, AdamConfig::DEFAULT, lr, &grads),
        &expected,
        F32_STEPS,
    );
    assert_trace(
        "adam twin",
        &adam_twin(AdamConfig::DEFAULT, lr, 1.0, &grads),
        &expected,
        TWIN_STEPS,
    );

    // L2 weight decay 0.1 (Adam's weight_decay: g = 0.5 + 0.1 p).
    // Step 1: g = 0.6, m_hat = 0.6, v_hat = 0.36, p = 1 - 1e-3 * 0.6 / (0.6 + 1e-8) = 0.99900000001667.
    // Step 2: g = 0.5 + 0.1 * 0.999 = 0.5999; m = 0.054 + 0.05999 = 0.11399, m_hat = 0.11399 / 0.19 = 0.5999473684;
    //         v = 0.999 * 0.00036 + 0.001 * 0.5999^2 = 0.00071952001, v_hat = 0.00071952001 / 0.001999
    //         = 0.3599399750, sqrt = 0.5999499771; p = 0.99900000001667 - 1e-3 * 0.5999473684 / 0.5999499871
    //         = 0.99800000438 (the denominator is sqrt(v_hat) + 1e-8).
    // Step 3 likewise (g = 0.5 + 0.0998 = 0.5998): p = 0.99700001598.
    let l2 = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::DEFAULT
    };
    let expected = [0.9990000000166667, 0.998000004381447, 0.9970000159832334];
    let one = OneParam::new(gpu, 1.0);
    assert_trace("adam + L2", &one.adam(gpu, l2, lr, &grads), &expected, F32_STEPS);
    assert_trace("adam + L2 twin", &adam_twin(l2, lr, 1.0, &grads), &expected, TWIN_STEPS);

    // AdamW, weight decay 0.1: p = p (1 - 1e-3 * 0.1) = 0.9999 p first, then the Adam step of 1e-3 (1 - 2e-8).
    // Step 1: 0.9999 - 0.00099999998 = 0.99890000002; step 2: 0.99890000002 * 0.9999 - 0.00099999998
    // = 0.99780011004; step 3: 0.99780011004 * 0.9999 - 0.00099999998 = 0.99670033005.
    let adamw = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::ADAMW
    };
    let expected = [0.99890000002, 0.997800110039998, 0.996700330048994];
    let one = OneParam::new(gpu, 1.0);
    assert_trace("adamw", &one.adam(gpu, adamw, lr, &grads), &expected, F32_STEPS);
    assert_trace("adamw twin", &adam_twin(adamw, lr, 1.0, &grads), &expected, TWIN_STEPS);

    // The GAN's betas (0.5, 0.999), gradients 0.5, -0.25, 1.0.
    // Step 1: m = 0.25, m_hat = 0.25 / 0.5 = 0.5, v_hat = 0.25: p = 0.99900000002.
    // Step 2: m = 0.125 - 0.125 = 0: p does not move.
    // Step 3: m = 0.5, m_hat = 0.5 / (1 - 0.125) = 0.5714285714; v = 0.999 (0.00024975 + 0.0000625) + 0.001
    //         = 0.00131193775, v_hat = 0.00131193775 / (1 - 0.999^3 = 0.002997001) = 0.4377501, sqrt = 0.6616269;
    //         p = 0.99900000002 - 1e-3 * 0.5714285714 / 0.6616269 = 0.99813632815.
    let grads = [0.5f32, -0.25, 1.0];
    let expected = [0.99900000002, 0.99900000002, 0.9981363281508797];
    let one = OneParam::new(gpu, 1.0);
    assert_trace(
        "adam gan",
        &one.adam(gpu, AdamConfig::GAN, lr, &grads),
        &expected,
        F32_STEPS,
    );
    assert_trace(
        "adam gan twin",
        &adam_twin(AdamConfig::GAN, lr, 1.0, &grads),
        &expected,
        TWIN_STEPS,
    );
}

#[test]
fn sgd_steps_equal_hand_computed_values() {
    let gpu = shared_gpu();
    let grads = [0.5f32; 3];
    // p = 1, g = 0.5, lr 0.1, momentum 0.9. buf = 0.5, 0.95, 1.355; p = 0.95, 0.855, 0.7195.
    let heavy_ball = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    };
    let one = OneParam::new(gpu, 1.0);
    assert_trace(
        "sgd",
        &one.sgd(gpu, heavy_ball, 0.1, &grads),
        &[0.95, 0.855, 0.7195],
        F32_STEPS,
    );
    // Nesterov: p -= lr (g + 0.9 buf) with the same buf: 0.1 * 0.95, 0.1 * 1.355, 0.1 * 1.7195;
    // p = 0.905, 0.7695, 0.59755.
    let nesterov = SgdConfig {
        nesterov: true,
        ..heavy_ball
    };
    let one = OneParam::new(gpu, 1.0);
    assert_trace(
        "nesterov",
        &one.sgd(gpu, nesterov, 0.1, &grads),
        &[0.905, 0.7695, 0.59755],
        F32_STEPS,
    );
    // Weight decay 0.1: g = 0.5 + 0.1 p. Step 1: g = 0.6, buf = 0.6, p = 0.94. Step 2: g = 0.594,
    // buf = 0.54 + 0.594 = 1.134, p = 0.8266. Step 3: g = 0.58266, buf = 1.0206 + 0.58266 = 1.60326, p = 0.666274.
    let decayed = SgdConfig {
        weight_decay: 0.1,
        ..heavy_ball
    };
    let one = OneParam::new(gpu, 1.0);
    assert_trace(
        "sgd + L2",
        &one.sgd(gpu, decayed, 0.1, &grads),
        &[0.94, 0.8266, 0.666274],
        F32_STEPS,
    );
}

#[test]
fn ema_steps_equal_hand_computed_values() {
    let gpu = shared_gpu();
    // ema = 0, p = 1, decay 0.999: ema = 1 - 0.999^k = 0.001, 0.001999, 0.002997001.
    let ema = gpu.buffer("ema", BufferRole::Weights, 4).unwrap();
    let param = gpu.buffer_from("param", BufferRole::Weights, &[1.0f32]).unwrap();
    let dispatch = optim::ema_update(gpu, &ema, &param, 0.999, 0, 1).unwrap();
    let mut trace = Vec::new();
    for _ in 0..3 {
        gpu.run(&[&dispatch]).unwrap();
        trace.push(gpu.read::<f32>(&ema).unwrap()[0] as f64);
    }
    // Values near 1e-3 are spaced 1e-10 apart in f32.
    assert_trace("ema", &trace, &[0.001, 0.001999, 0.002997001], 1e-9);
}

/// Clipping two tensors [3] and [4] (total norm 5) all on the GPU.
fn clip_3_4(gpu: &Gpu, max_norm: f64) -> (Vec<f32>, [f32; 2]) {
    let a = gpu.buffer_from("a", BufferRole::Gradients, &[3.0f32]).unwrap();
    let b = gpu.buffer_from("b", BufferRole::Gradients, &[4.0f32]).unwrap();
    let tensors = [
        GradTensor {
            buffer: &a,
            first: 0,
            n: 1,
        },
        GradTensor {
            buffer: &b,
            first: 0,
            n: 1,
        },
    ];
    let partials = gpu
        .buffer(
            "partials",
            BufferRole::Scratch,
            4 * optim::grad_norm_partials_len(&tensors) as u64,
        )
        .unwrap();
    let clip = gpu.buffer("clip", BufferRole::Scratch, 8).unwrap();
    let dispatches = optim::clip_grad_norm(gpu, &tensors, &partials, &clip, max_norm).unwrap();
    gpu.run(&dispatches.iter().collect::<Vec<_>>()).unwrap();
    let clip: Vec<f32> = gpu.read(&clip).unwrap();
    let grads = [gpu.read::<f32>(&a).unwrap()[0], gpu.read::<f32>(&b).unwrap()[0]];
    (grads.to_vec(), [clip[0], clip[1]])
}

#[test]
fn clipping_keeps_small_gradients_and_scales_large_ones() {
    let gpu = shared_gpu();
    // Under: ||(3, 4)|| = 5 <= 10, scale = min(1, 10 / 5.000001) = 1: unchanged, exactly.
    let (grads, clip) = clip_3_4(gpu, 10.0);
    assert_eq!(clip, [5.0, 1.0]);
    assert_eq!(grads, [3.0, 4.0]);
    // Over: max_norm 1, scale = 1 / (5 + 1e-6) = 0.19999996: (0.59999988, 0.79999984), norm 1 - 2e-7.
    let (grads, clip) = clip_3_4(gpu, 1.0);
    assert_eq!(clip[0], 5.0);
    let scale = 1.0 / (5.0 + 1e-6);
    assert!((clip[1] as f64 - scale).abs() < 1e-8, "scale {}", clip[1]);
    assert!((grads[0] as f64 - 3.0 * scale).abs() < 1e-7, "{grads:?}");
    assert!((grads[1] as f64 - 4.0 * scale).abs() < 1e-7, "{grads:?}");
    let norm = (grads[0] as f64).hypot(grads[1] as f64);
    assert!((norm - 1.0).abs() < 1e-6, "clipped norm {norm}");
}

#[test]
fn grad_norm_is_deterministic() {
    let gpu = shared_gpu();
    let mut rng = check::TestRng::new(3);
    let values = rng.uniform_vec(100_003, -1.0, 1.0);
    let grad = gpu.buffer_from("grad", BufferRole::Gradients, &values).unwrap();
    let tensors = [GradTensor {
        buffer: &grad,
        first: 0,
        n: values.len(),
    }];
    let partials = gpu
        .buffer(
            "partials",
            BufferRole::Scratch,
            4 * optim::grad_norm_partials_len(&tensors) as u64,
        )
        .unwrap();
    let clip = gpu.buffer("clip", BufferRole::Scratch, 8).unwrap();
    let dispatches = optim::clip_grad_norm(gpu, &tensors, &partials, &clip, 1e9).unwrap();
    let norm_stages: Vec<_> = dispatches[..2].iter().collect();
    let runs: Vec<Vec<u32>> = (0..3)
        .map(|_| {
            gpu.run(&norm_stages).unwrap();
            gpu.read::<u32>(&clip).unwrap()
        })
        .collect();
    assert!(runs.iter().all(|r| r == &runs[0]), "{runs:?}");
}

#[test]
fn launchers_reject_spans_outside_their_buffers() {
    let gpu = shared_gpu();
    let small = gpu.buffer("small", BufferRole::Weights, 4 * 8).unwrap();
    let error = optim::ema_update(gpu, &small, &small, 0.999, 4, 5).unwrap_err();
    assert!(error.to_string().contains("do not fit buffer `small`"), "{error}");
}
