//! Activations and vector arithmetic: the GPU against the CPU twins, and the backward twins against
//! finite differences.

use latent::check::{self, finite_difference_gradient, TestRng};
use latent::cpu;
use latent::kernels::activation::{self, Activation};
use latent::kernels::arith;

#[test]
fn activations_match_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), activation::checks());
}

#[test]
fn arithmetic_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), arith::checks());
}

/// The backward twins against central differences of L = sum(dy * f(x)).
#[test]
fn activation_backward_twins_match_finite_differences() {
    let mut rng = TestRng::new(7);
    // Keep away from ReLU's kink at 0, where the derivative is not defined.
    let x: Vec<f64> = (0..40)
        .map(|_| rng.uniform(-3.0, 3.0) as f64)
        .filter(|v| v.abs() > 1e-3)
        .collect();
    let dy: Vec<f64> = x.iter().map(|_| rng.uniform(-1.0, 1.0) as f64).collect();
    for act in Activation::ALL {
        let loss = |x: &[f64]| {
            cpu::activation::forward(act, x)
                .iter()
                .zip(&dy)
                .map(|(y, g)| y * g)
                .sum::<f64>()
        };
        let numeric = finite_difference_gradient(&x, 1e-6, loss);
        let analytic = cpu::activation::backward(act, &x, &dy);
        for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            assert!(
                (a - n).abs() <= 1e-6 + 1e-6 * n.abs(),
                "{}: dx[{i}] analytic {a} vs numeric {n}",
                act.name()
            );
        }
    }
}

/// Hand-derived values: sigmoid'(0) = 1/4, tanh'(0) = 1, SiLU'(0) = 1/2, LeakyReLU'(-1) = slope.
#[test]
fn activation_derivatives_at_known_points() {
    let at = |act, x: f64| cpu::activation::backward(act, &[x], &[1.0])[0];
    assert_eq!(at(Activation::Sigmoid, 0.0), 0.25);
    assert_eq!(at(Activation::Tanh, 0.0), 1.0);
    assert_eq!(at(Activation::Silu, 0.0), 0.5);
    assert_eq!(at(Activation::LeakyRelu { slope: 0.2 }, -1.0), 0.2f32 as f64);
    assert_eq!(at(Activation::Relu, -1.0), 0.0);
}
