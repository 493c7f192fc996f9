//! Losses: the GPU against the CPU twins, the gradient twins against finite differences, hand-derived values,
//! extreme logits, determinism, and the params layout.

use latent::check::{self, finite_difference_gradient, TestRng, Tolerance};
use latent::cpu::loss as twin;
use latent::field_offsets;
use latent::gpu::BufferRole;
use latent::gpu::Tiling;
use latent::kernels::loss::{self, LossInputs, LossKind, LossParams, LossSlot, Target};
use latent::kernels::params_layout_mismatch;
use latent::shaders;

#[test]
fn losses_match_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), loss::checks());
}

/// The serial per-sample kernels (CPU adapters') walk the workgroup kernels' tree: the same bits.
#[test]
fn serial_forwards_give_the_workgroup_forwards_bits() {
    let gpu = check::shared_gpu();
    let kinds = [
        LossKind::Mse,
        LossKind::Bce(None),
        LossKind::Bce(Some(1.0)),
        LossKind::Kl,
    ];
    for kind in kinds {
        for (batch, features) in [(128, 784), (3, 300), (129, 7), (128, 20), (2, 1000)] {
            let inputs = LossInputs::random(kind, batch, features, 7);
            let x = check::upload(gpu, "x", &inputs.x).unwrap();
            let y = check::upload(gpu, "y", &inputs.y).unwrap();
            let mut bits = Vec::new();
            for tiling in [Tiling::Workgroup, Tiling::Registers] {
                let per_sample = check::poisoned(gpu, "per_sample", batch).unwrap();
                let dispatch = loss::per_sample_sums(gpu, tiling, kind, &per_sample, &x, &y, batch, features).unwrap();
                gpu.run(&[&dispatch]).unwrap();
                let values = check::download(gpu, &per_sample, batch).unwrap();
                bits.push(values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert_eq!(bits[0], bits[1], "{kind:?} B={batch} P={features}");
        }
    }
}

#[test]
fn params_struct_matches_its_wgsl_twin() {
    let fields = field_offsets!(
        LossParams,
        [
            batch,
            features,
            scale,
            accumulate,
            target_value,
            constant_target,
            slot,
            _pad
        ]
    );
    for entry in shaders::ENTRY_POINTS.iter().filter(|e| e.shader.name == "loss") {
        let mismatch = params_layout_mismatch(entry, size_of::<LossParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

fn assert_gradient(what: &str, analytic: &[f64], numeric: &[f64]) {
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-7 + 1e-6 * n.abs(),
            "{what}: d[{i}] analytic {a} vs numeric {n}"
        );
    }
}

fn random(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f64> {
    check::to_f64(&TestRng::new(seed).uniform_vec(len, lo, hi))
}

/// Each gradient twin against central differences of its batch loss (L = 1 · loss).
#[test]
fn loss_gradient_twins_match_finite_differences() {
    let (batch, features) = (3, 5);
    let n = batch * features;
    let x = random(n, -3.0, 3.0, 1);
    let y = random(n, 0.0, 1.0, 2);

    let numeric = finite_difference_gradient(&x, 1e-6, |x| twin::mse(x, &y, batch, features));
    assert_gradient("mse", &twin::mse_backward(&x, &y, batch, features), &numeric);

    let numeric = finite_difference_gradient(&x, 1e-6, |x| twin::squared_error(x, &y, batch, features));
    assert_gradient("squared_error", &twin::squared_error_backward(&x, &y, batch), &numeric);

    let numeric = finite_difference_gradient(&x, 1e-6, |x| twin::bce_with_logits(x, &y, batch, features));
    assert_gradient("bce", &twin::bce_with_logits_backward(&x, &y, batch), &numeric);

    let logvar = random(n, -2.0, 1.0, 3);
    let (dmu, dlogvar) = twin::kl_backward(&x, &logvar, batch);
    let numeric = finite_difference_gradient(&x, 1e-6, |mu| twin::kl(mu, &logvar, batch, features));
    assert_gradient("kl dmu", &dmu, &numeric);
    let numeric = finite_difference_gradient(&logvar, 1e-6, |lv| twin::kl(&x, lv, batch, features));
    assert_gradient("kl dlogvar", &dlogvar, &numeric);

    let labels = [4u32, 0, 2];
    let numeric = finite_difference_gradient(&x, 1e-6, |x| twin::cross_entropy(x, &labels, batch, features));
    assert_gradient(
        "cross_entropy",
        &twin::cross_entropy_backward(&x, &labels, batch, features),
        &numeric,
    );
}

/// Hand-derived values and derivatives.
#[test]
fn losses_by_hand() {
    // MSE of x = [1, 3] against 0, B = 1, P = 2: (1 + 9) / 2 = 5; d/dx = 2 x / 2 = [1, 3].
    assert_eq!(twin::mse(&[1.0, 3.0], &[0.0, 0.0], 1, 2), 5.0);
    assert_eq!(twin::mse_backward(&[1.0, 3.0], &[0.0, 0.0], 1, 2), [1.0, 3.0]);
    // BCE at logit 0, target 1: log(1 + e^0) = ln 2; d/dx = σ(0) - 1 = -1/2, over B = 2: -1/4.
    let bce = twin::bce_with_logits_per_sample(&[0.0], &[1.0], 1, 1)[0];
    assert!((bce - std::f64::consts::LN_2).abs() < 1e-15);
    assert_eq!(
        twin::bce_with_logits_backward(&[0.0, 0.0], &[1.0, 1.0], 2),
        [-0.25, -0.25]
    );
    // KL at mu = 0, logvar = 0 (q = the prior): 0 with zero gradients. At mu = 1, logvar = 0:
    // -0.5 (1 + 0 - 1 - 1) = 0.5, d/dmu = mu = 1, d/dlogvar = 0.5 (e^0 - 1) = 0.
    assert_eq!(twin::kl(&[0.0], &[0.0], 1, 1), 0.0);
    assert_eq!(twin::kl(&[1.0], &[0.0], 1, 1), 0.5);
    assert_eq!(twin::kl_backward(&[1.0], &[0.0], 1), (vec![1.0], vec![0.0]));
    // Cross-entropy with C equal logits: ln C whatever the label; d/dx = 1/C - onehot.
    let ce = twin::cross_entropy(&[2.0; 4], &[1], 1, 4);
    assert!((ce - 4f64.ln()).abs() < 1e-15);
    assert_eq!(
        twin::cross_entropy_backward(&[2.0; 4], &[1], 1, 4),
        [0.25, -0.75, 0.25, 0.25]
    );
}

/// Confident logits: BCE stays finite and keeps its relative precision where log(1 + exp(-|x|)) is below
/// f32's epsilon; cross-entropy does not overflow exp.
#[test]
fn extreme_logits_stay_accurate() {
    let gpu = check::shared_gpu();
    // One logit per image, as the GAN's discriminator, target 1: losses log(1 + e^-x) = e^-30, e^-20, e^-10
    // (where log(1 + u) in f32 would lose 3 digits), ln 2, and 100 (no overflow).
    let logits = [30.0f32, 20.0, 10.0, 0.0, -100.0];
    let batch = logits.len();
    let slots = check::poisoned(gpu, "loss", 1).unwrap();
    let slot = LossSlot {
        buffer: &slots,
        slot: 0,
        accumulate: false,
    };
    let per_sample = check::poisoned(gpu, "per_sample", batch).unwrap();
    let x = check::upload(gpu, "logits", &logits).unwrap();
    let [first, second] =
        loss::bce_with_logits_forward(gpu, &slot, &per_sample, &x, Target::Constant(1.0), batch, 1).unwrap();
    gpu.run(&[&first, &second]).unwrap();
    let expected = twin::bce_with_logits_per_sample(&check::to_f64(&logits), &[1.0; 5], batch, 1);
    check::assert_close(
        "bce per sample",
        &check::download(gpu, &per_sample, batch).unwrap(),
        &expected,
        Tolerance::new(0.0, 1e-5),
    );

    // Cross-entropy of logits far past exp's f32 range (88): only differences from the row maximum meet exp.
    let logits = [1000.0f32, 990.0, -1000.0];
    let labels = gpu.buffer_from("labels", BufferRole::Scratch, &[1u32]).unwrap();
    let x = check::upload(gpu, "logits", &logits).unwrap();
    let per_sample = check::poisoned(gpu, "per_sample", 1).unwrap();
    let [first, second] = loss::cross_entropy_forward(gpu, &slot, &per_sample, &x, &labels, 1, 3).unwrap();
    gpu.run(&[&first, &second]).unwrap();
    let expected = twin::cross_entropy_per_sample(&check::to_f64(&logits), &[1], 1, 3);
    check::assert_close(
        "cross-entropy",
        &check::download(gpu, &per_sample, 1).unwrap(),
        &expected,
        Tolerance::new(0.0, 1e-5),
    );
}

/// A label out of range poisons the loss with NaN instead of reading another row.
#[test]
fn label_out_of_range_gives_nan() {
    let gpu = check::shared_gpu();
    let slots = check::poisoned(gpu, "loss", 1).unwrap();
    let slot = LossSlot {
        buffer: &slots,
        slot: 0,
        accumulate: false,
    };
    let per_sample = check::poisoned(gpu, "per_sample", 2).unwrap();
    let x = check::upload(gpu, "logits", &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let labels = gpu.buffer_from("labels", BufferRole::Scratch, &[0u32, 2]).unwrap();
    let [first, second] = loss::cross_entropy_forward(gpu, &slot, &per_sample, &x, &labels, 2, 2).unwrap();
    gpu.run(&[&first, &second]).unwrap();
    let values = check::download(gpu, &per_sample, 2).unwrap();
    assert!(values[0].is_finite() && values[1].is_nan(), "{values:?}");
}

/// Same inputs, same bits, for the per-sample sums and the batch mean.
#[test]
fn losses_are_deterministic() {
    let gpu = check::shared_gpu();
    let (batch, features) = (128, 784);
    let mut rng = TestRng::new(9);
    let x = check::upload(gpu, "x", &rng.uniform_vec(batch * features, -8.0, 8.0)).unwrap();
    let y = check::upload(gpu, "y", &rng.uniform_vec(batch * features, 0.0, 1.0)).unwrap();
    let per_sample = check::poisoned(gpu, "per_sample", batch).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let slots = check::poisoned(gpu, "loss", 1).unwrap();
        let slot = LossSlot {
            buffer: &slots,
            slot: 0,
            accumulate: false,
        };
        let [first, second] =
            loss::bce_with_logits_forward(gpu, &slot, &per_sample, &x, Target::Values(&y), batch, features).unwrap();
        gpu.run(&[&first, &second]).unwrap();
        let mut bits: Vec<u32> = check::download(gpu, &per_sample, batch)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        bits.push(check::download(gpu, &slots, 1).unwrap()[0].to_bits());
        runs.push(bits);
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn slot_past_the_loss_buffer_is_an_error() {
    let gpu = check::shared_gpu();
    let slots = check::poisoned(gpu, "loss", 2).unwrap();
    let slot = LossSlot {
        buffer: &slots,
        slot: 5,
        accumulate: false,
    };
    let x = check::upload(gpu, "x", &[0.0; 4]).unwrap();
    let per_sample = check::poisoned(gpu, "per_sample", 2).unwrap();
    let error = loss::mse_forward(gpu, &slot, &per_sample, &x, &x, 2, 2)
        .expect_err("slot 5 of a 2-slot buffer")
        .to_string();
    assert!(error.contains("loss"), "{error}");
}
