//! The WAE's MMD regulariser: the GPU against the CPU twin, the gradient twin against finite differences and a
//! hand-derived case, the estimate's behaviour on same and shifted distributions, and the params layout.

use latent::check::{self, finite_difference_gradient, TestRng};
use latent::cpu::mmd as twin;
use latent::field_offsets;
use latent::kernels::mmd::{self, imq_scale, MmdParams};
use latent::kernels::params_layout_mismatch;
use latent::shaders;

#[test]
fn mmd_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), mmd::checks());
}

#[test]
fn params_struct_matches_its_wgsl_twin() {
    let fields = field_offsets!(MmdParams, [batch, dim, c, weight, accumulate, _pad0, _pad1, _pad2]);
    for entry in shaders::ENTRY_POINTS.iter().filter(|e| e.shader.name == "mmd") {
        let mismatch = params_layout_mismatch(entry, size_of::<MmdParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

/// Standard normal values from the test generator (Box-Muller).
fn normals(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = TestRng::new(seed);
    (0..len)
        .map(|_| {
            let (u, v) = (rng.uniform(1e-7, 1.0) as f64, rng.uniform(0.0, 1.0) as f64);
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

#[test]
fn gradient_twin_matches_finite_differences() {
    let (batch, dim) = (5, 3);
    let c = imq_scale(dim);
    let z = normals(batch * dim, 1);
    let prior = normals(batch * dim, 2);
    let numeric = finite_difference_gradient(&z, 1e-6, |z| twin::mmd(z, &prior, batch, dim, c, 10.0));
    let analytic = twin::mmd_backward(&z, &prior, batch, dim, c, 10.0);
    for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-8 + 1e-6 * n.abs(),
            "d[{i}]: analytic {a} vs numeric {n}"
        );
    }
}

/// Two 1-D samples per set, C = 2, written out term by term with k_s(d²) = sC / (sC + d²) summed over the scales:
/// z = (0, 1), p = (0, 3): within the codes d² = 1, within the prior d² = 9; across d² = 0, 9, 1, 4.
/// MMD = (2 k(1) + 2 k(9)) / 2 - 2/4 (k(0) + k(9) + k(1) + k(4)) = k(1)/2 + k(9)/2 - k(0)/2 - k(4)/2.
/// d/dz0 = 2/2 g(z0, z1) - 2/4 (g(z0, p0) + g(z0, p1)), g(a, b) = -2 (a - b) Σ_s sC / (sC + d²)²:
/// g(0, 1) = 2 slope(1), g(0, 0) = 0, g(0, 3) = 6 slope(9); dz0 = 2 slope(1) - 3 slope(9).
#[test]
fn hand_derived_case() {
    let z = [0.0, 1.0];
    let prior = [0.0, 3.0];
    let c = imq_scale(1);
    assert_eq!(c, 2.0);
    let k = |squared: f64| twin::SCALES.iter().map(|s| s * c / (s * c + squared)).sum::<f64>();
    let slope = |squared: f64| {
        twin::SCALES
            .iter()
            .map(|s| s * c / (s * c + squared).powi(2))
            .sum::<f64>()
    };
    let value = twin::mmd(&z, &prior, 2, 1, c, 1.0);
    let expected = (k(1.0) + k(9.0) - k(0.0) - k(4.0)) / 2.0;
    assert!((value - expected).abs() < 1e-12, "MMD {value} vs {expected}");
    let dz = twin::mmd_backward(&z, &prior, 2, 1, c, 1.0);
    let expected = 2.0 * slope(1.0) - 3.0 * slope(9.0);
    assert!((dz[0] - expected).abs() < 1e-12, "dz0 {} vs {expected}", dz[0]);
}

/// On the GPU: near 0 for codes drawn from the prior itself, and growing as the codes move away from it.
#[test]
fn mmd_is_small_for_the_same_distribution_and_grows_with_a_shift() {
    let gpu = check::shared_gpu();
    let (batch, dim) = (128, 8);
    let prior: Vec<f32> = normals(batch * dim, 3).iter().map(|&v| v as f32).collect();
    let same: Vec<f32> = normals(batch * dim, 4).iter().map(|&v| v as f32).collect();
    let mut previous = f64::NEG_INFINITY;
    for shift in [0.0f32, 0.5, 1.0, 2.0] {
        let z: Vec<f32> = same.iter().map(|v| v + shift).collect();
        let slots = check::upload(gpu, "loss", &[0.0]).unwrap();
        let loss = latent::kernels::loss::LossSlot {
            buffer: &slots,
            slot: 0,
            accumulate: false,
        };
        let per_sample = check::poisoned(gpu, "per_sample", batch).unwrap();
        let zb = check::upload(gpu, "z", &z).unwrap();
        let pb = check::upload(gpu, "prior", &prior).unwrap();
        let [a, b] = mmd::mmd_forward(gpu, &loss, &per_sample, &zb, &pb, batch, dim, 1.0).unwrap();
        gpu.run(&[&a, &b]).unwrap();
        let value = check::download(gpu, &slots, 1).unwrap()[0] as f64;
        if shift == 0.0 {
            // The estimate's standard deviation at B = 128 is about 1e-2 here (7 scales; one gave 1e-3).
            assert!(value.abs() < 3e-2, "MMD of two samples of N(0, I): {value}");
        } else {
            assert!(
                value > previous + 1e-3,
                "MMD at shift {shift} is {value}, not above {previous}"
            );
        }
        previous = value;
    }
}

#[test]
fn a_batch_of_one_is_refused_with_a_hint() {
    let gpu = check::shared_gpu();
    let buffer = check::upload(gpu, "z", &[0.0; 8]).unwrap();
    let error = mmd::mmd_backward(gpu, &buffer, &buffer, &buffer, false, 1, 8, 1.0).unwrap_err();
    assert!(error.to_string().contains("--batch 2"), "{error}");
}
