//! Convolutions and resampling: the GPU against the CPU twins, the backward twins against finite differences,
//! hand-derived cases, determinism, and the params structs against their WGSL twins.

use latent::check::{self, finite_difference_gradient, TestRng};
use latent::cpu;
use latent::field_offsets;
use latent::kernels::conv2d::{self, Conv2dParams, Conv2dShape};
use latent::kernels::params_layout_mismatch;
use latent::shaders;

fn random(rng: &mut TestRng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.uniform(-1.0, 1.0) as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[track_caller]
fn assert_gradient(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths differ");
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-7 + 1e-6 * n.abs(),
            "{what}: [{i}] analytic {a} vs numeric {n}"
        );
    }
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    let conv = field_offsets!(
        Conv2dParams,
        [
            batch,
            in_channels,
            in_height,
            in_width,
            out_channels,
            out_height,
            out_width,
            kernel_h,
            kernel_w,
            stride,
            padding,
            has_bias
        ]
    );
    for entry in [
        &shaders::conv2d::CONV2D_FORWARD,
        &shaders::conv2d::CONV2D_INPUT_BACKWARD,
        &shaders::conv2d::CONV2D_WEIGHT_BACKWARD,
        &shaders::conv2d::CONV2D_BIAS_BACKWARD,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<Conv2dParams>(), &conv);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

#[test]
fn conv2d_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), conv2d::checks());
}

/// The conv2d backward twins against central differences of L = sum(dy * conv2d(x, w, b)).
#[test]
fn conv2d_backward_twins_match_finite_differences() {
    let shapes = [
        Conv2dShape::square(2, 2, 3, (5, 4), 3, 2, 1),
        Conv2dShape::square(1, 2, 2, (6, 5), 4, 2, 1),
        Conv2dShape {
            kernel_h: 2,
            kernel_w: 3,
            ..Conv2dShape::square(1, 3, 2, (4, 5), 0, 1, 2)
        },
        Conv2dShape::square(2, 3, 2, (3, 3), 1, 1, 0),
    ];
    for shape in shapes {
        let mut rng = TestRng::new(shape.input_len() as u64);
        let x = random(&mut rng, shape.input_len());
        let w = random(&mut rng, shape.weight_len());
        let b = random(&mut rng, shape.out_channels);
        let dy = random(&mut rng, shape.output_len());
        let label = shape.label();
        let numeric_dx = finite_difference_gradient(&x, 1e-6, |x| {
            dot(&dy, &cpu::conv2d::forward(&shape, x, &w, Some(&b)))
        });
        assert_gradient(
            &format!("dx {label}"),
            &cpu::conv2d::input_backward(&shape, &w, &dy),
            &numeric_dx,
        );
        let numeric_dw = finite_difference_gradient(&w, 1e-6, |w| {
            dot(&dy, &cpu::conv2d::forward(&shape, &x, w, Some(&b)))
        });
        assert_gradient(
            &format!("dw {label}"),
            &cpu::conv2d::weight_backward(&shape, &x, &dy),
            &numeric_dw,
        );
        let numeric_db = finite_difference_gradient(&b, 1e-6, |b| {
            dot(&dy, &cpu::conv2d::forward(&shape, &x, &w, Some(b)))
        });
        let plane = shape.out_height() * shape.out_width();
        assert_gradient(
            &format!("dbias {label}"),
            &cpu::conv2d::bias_backward(shape.batch, shape.out_channels, plane, &dy),
            &numeric_db,
        );
    }
}

/// Hand-derived: a 1x1 convolution of one channel is y = w x + b, so dx = w dy, dw = sum x dy, db = sum dy.
/// A 3x3 kernel with padding 1 over a 1x1 image sees only its centre tap: y = w[1,1] x, dw[1,1] = x dy, other
/// taps get 0.
#[test]
fn conv2d_hand_derived_cases() {
    let s = Conv2dShape::square(1, 1, 1, (1, 2), 1, 1, 0);
    assert_eq!(cpu::conv2d::forward(&s, &[2.0, -1.0], &[3.0], Some(&[0.5])), [6.5, -2.5]);
    assert_eq!(cpu::conv2d::input_backward(&s, &[3.0], &[1.0, 2.0]), [3.0, 6.0]);
    // dw = 2*1 + (-1)*2 = 0
    assert_eq!(cpu::conv2d::weight_backward(&s, &[2.0, -1.0], &[1.0, 2.0]), [0.0]);
    assert_eq!(cpu::conv2d::bias_backward(1, 1, 2, &[1.0, 2.0]), [3.0]);

    let s = Conv2dShape::square(1, 1, 1, (1, 1), 3, 1, 1);
    let w: Vec<f64> = (1..=9).map(f64::from).collect();
    assert_eq!(cpu::conv2d::forward(&s, &[2.0], &w, None), [10.0]);
    let mut expected_dw = [0.0; 9];
    expected_dw[4] = 2.0 * 3.0;
    assert_eq!(cpu::conv2d::weight_backward(&s, &[2.0], &[3.0]), expected_dw);
    assert_eq!(cpu::conv2d::input_backward(&s, &w, &[3.0]), [15.0]);

    // Stride 2, kernel 2, no padding over a 2x2 image: one output, the dot product of image and kernel.
    let s = Conv2dShape::square(1, 1, 1, (2, 2), 2, 2, 0);
    assert_eq!(s.out_height(), 1);
    assert_eq!(s.flops(), 2 * 4);
    assert_eq!(cpu::conv2d::forward(&s, &[1.0, 2.0, 3.0, 4.0], &[1.0, 0.0, 0.0, -1.0], None), [-3.0]);
}

/// Same inputs, bit-identical outputs: the weight and bias gradients sum in a fixed order.
#[test]
fn conv2d_gradients_are_deterministic() {
    let gpu = check::shared_gpu();
    let shape = Conv2dShape::square(2, 16, 24, (14, 14), 3, 1, 1);
    let mut rng = TestRng::new(5);
    let x = rng.uniform_vec(shape.input_len(), -1.0, 1.0);
    let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
    let (x_gpu, dy_gpu) = (check::upload(gpu, "x", &x).unwrap(), check::upload(gpu, "dy", &dy).unwrap());
    let run = || {
        let dw = check::poisoned(gpu, "dw", shape.weight_len()).unwrap();
        let db = check::poisoned(gpu, "db", shape.out_channels).unwrap();
        let plane = shape.out_height() * shape.out_width();
        gpu.run(&[
            &conv2d::weight_backward(gpu, &dw, &x_gpu, &dy_gpu, &shape).unwrap(),
            &conv2d::bias_backward(gpu, &db, &dy_gpu, shape.batch, shape.out_channels, plane).unwrap(),
        ])
        .unwrap();
        let mut out = check::download(gpu, &dw, shape.weight_len()).unwrap();
        out.extend(check::download(gpu, &db, shape.out_channels).unwrap());
        out.into_iter().map(f32::to_bits).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let gpu = check::shared_gpu();
    let buffer = check::upload(gpu, "b", &[0.0; 16]).unwrap();
    let too_big = Conv2dShape::square(1, 1, 1, (2, 2), 5, 1, 1);
    let error = conv2d::forward(gpu, &buffer, &buffer, &buffer, None, &too_big).unwrap_err();
    assert!(error.to_string().contains("does not fit"), "{error}");
    let small = Conv2dShape::square(1, 1, 1, (8, 8), 3, 1, 1);
    let error = conv2d::forward(gpu, &buffer, &buffer, &buffer, None, &small).unwrap_err();
    assert!(error.to_string().contains("does not fit"), "{error}");
}
