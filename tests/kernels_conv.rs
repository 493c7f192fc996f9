//! Convolutions and resampling: the GPU against the CPU twins, the backward twins against finite differences,
//! hand-derived cases, determinism, and the params structs against their WGSL twins.

use latent::check::{self, finite_difference_gradient, TestRng};
use latent::cpu;
use latent::field_offsets;
use latent::kernels::concat::{self, ConcatParams};
use latent::kernels::conv2d::{self, Conv2dParams, Conv2dShape};
use latent::kernels::conv_registers::{self as registers, ConvRegistersParams};
use latent::kernels::conv_transpose2d::{self, ConvTranspose2dParams, ConvTranspose2dShape};
use latent::kernels::params_layout_mismatch;
use latent::kernels::resample::{self, ResampleParams};
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
    let transposed = field_offsets!(
        ConvTranspose2dParams,
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
        &shaders::conv_transpose2d::CONV_TRANSPOSE2D_FORWARD,
        &shaders::conv_transpose2d::CONV_TRANSPOSE2D_INPUT_BACKWARD,
        &shaders::conv_transpose2d::CONV_TRANSPOSE2D_WEIGHT_BACKWARD,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<ConvTranspose2dParams>(), &transposed);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let registers = field_offsets!(
        ConvRegistersParams,
        [
            batch,
            src_channels,
            src_height,
            src_width,
            dst_channels,
            dst_height,
            dst_width,
            kernel_h,
            kernel_w,
            stride,
            padding,
            has_bias,
            first_image,
            images,
            accumulate,
            _pad
        ]
    );
    for entry in [
        &shaders::conv_registers::DENSE_GATHER,
        &shaders::conv_registers::STRIDED_GATHER,
        &shaders::conv_registers::WEIGHT_GRADIENT,
        &shaders::conv_subgroup::DENSE_GATHER,
        &shaders::conv_subgroup::STRIDED_GATHER,
        &shaders::conv_subgroup::WEIGHT_GRADIENT,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<ConvRegistersParams>(), &registers);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let resample = field_offsets!(
        ResampleParams,
        [planes, in_height, in_width, out_height, out_width, _pad0, _pad1, _pad2]
    );
    for entry in [
        &shaders::resample::MAX_POOL2D_FORWARD,
        &shaders::resample::MAX_POOL2D_BACKWARD,
        &shaders::resample::UPSAMPLE_NEAREST2D_FORWARD,
        &shaders::resample::UPSAMPLE_NEAREST2D_BACKWARD,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<ResampleParams>(), &resample);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let concat = field_offsets!(ConcatParams, [batch, channels_a, channels_b, plane]);
    for entry in [
        &shaders::concat::CONCAT_CHANNELS_FORWARD,
        &shaders::concat::CONCAT_CHANNELS_BACKWARD,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<ConcatParams>(), &concat);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

/// conv_rows' gathers (stride 1, 8 consecutive pixels per thread) give the bits of conv_subgroup's, on the
/// models' stride-1 shapes and on odd ones (images that end mid-block, more than 8 channels but not 32).
#[test]
fn rows_gathers_give_the_subgroup_gathers_bits() {
    let gpu = check::shared_gpu();
    if !gpu.has_subgroups_of(latent::kernels::matmul::SUBGROUP_LANES) {
        eprintln!(
            "skipped: {} has no 8-lane subgroups, so it runs no conv_rows kernels",
            gpu.describe()
        );
        return;
    }
    let sq = Conv2dShape::square;
    // (shape, the gathers that take conv_rows: dense at stride 1, strided where dx rows are S times dy's)
    let both: &[bool] = &[false, true];
    let strided: &[bool] = &[true];
    let shapes = [
        (sq(2, 64, 64, (28, 28), 3, 1, 1), both),
        (sq(2, 128, 128, (7, 7), 3, 1, 1), both),
        (sq(2, 64, 128, (14, 14), 1, 1, 0), both),
        (sq(2, 2, 33, (9, 6), 3, 1, 1), both),
        (sq(1, 4, 12, (5, 3), 5, 1, 2), both),
        (sq(2, 16, 1, (28, 28), 3, 1, 1), both),
        // past stride 1, outputs of at most 8 channels: the gan's and ae's 1-channel dx, and odd ones
        (sq(2, 1, 64, (28, 28), 4, 2, 1), strided),
        (sq(4, 8, 9, (10, 6), 3, 2, 1), strided),
        (sq(2, 4, 8, (12, 9), 4, 3, 1), strided),
    ];
    let mut rng = TestRng::new(41);
    for (shape, modes) in shapes {
        for &transposed in modes {
            // The dense gather computes y from x; the strided one dx from dy (the roles swapped).
            let roles = if transposed {
                shape.roles().swapped()
            } else {
                shape.roles()
            };
            let src_len = roles.batch * roles.src.iter().product::<usize>();
            let dst_len = roles.batch * roles.dst.iter().product::<usize>();
            let src = check::upload(gpu, "src", &rng.uniform_vec(src_len, -1.0, 1.0)).unwrap();
            let weight = check::upload(gpu, "weight", &rng.uniform_vec(shape.weight_len(), -1.0, 1.0)).unwrap();
            let bias = check::upload(gpu, "bias", &rng.uniform_vec(roles.dst[0], -1.0, 1.0)).unwrap();
            assert!(
                roles.takes_rows(gpu, &src, transposed),
                "{shape:?} transposed={transposed} should take conv_rows"
            );
            let mut bits = Vec::new();
            for rows in [false, true] {
                let dst = check::poisoned(gpu, "dst", dst_len).unwrap();
                let dispatch = if transposed {
                    registers::strided_gather_as(gpu, rows, &dst, &src, &weight, None, &roles)
                } else {
                    registers::dense_gather_as(gpu, rows, &dst, &src, &weight, Some(&bias), &roles)
                }
                .unwrap();
                gpu.run(&[&dispatch]).unwrap();
                let values = check::download(gpu, &dst, dst_len).unwrap();
                bits.push(values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert_eq!(bits[0], bits[1], "{shape:?} transposed={transposed}");
        }
    }
}

/// The narrow weight gradient (a column a thread) adds the same products in the same order as the kernel of 8
/// columns a thread: the same bits, on few-column layers (first layers, the 1-channel transposed convolutions'
/// grads) and at the classifier's first layer past the CPU loop limit (batch 128: several launches).
#[test]
fn narrow_weight_gradient_gives_the_same_bits() {
    let gpu = check::shared_gpu();
    let sq = Conv2dShape::square;
    let shapes = [
        sq(128, 1, 32, (28, 28), 3, 1, 1),
        sq(3, 1, 64, (28, 28), 4, 2, 1),
        sq(2, 2, 5, (9, 7), 3, 1, 1),
        sq(2, 2, 40, (12, 12), 4, 2, 1),
        sq(2, 1, 9, (6, 5), 1, 1, 0),
    ];
    let mut rng = TestRng::new(43);
    for shape in shapes {
        // Conv2d's weight gradient (src x, grad dy) and ConvTranspose2d's (src dy, grad x: the roles swapped).
        for roles in [shape.roles(), shape.roles().swapped()] {
            let columns = roles.src[0] * roles.kernel[0] * roles.kernel[1];
            if columns > registers::NARROW_COLUMNS {
                continue;
            }
            let src_len = roles.batch * roles.src.iter().product::<usize>();
            let grad_len = roles.batch * roles.dst.iter().product::<usize>();
            let src = check::upload(gpu, "src", &rng.uniform_vec(src_len, -1.0, 1.0)).unwrap();
            let grad = check::upload(gpu, "grad", &rng.uniform_vec(grad_len, -1.0, 1.0)).unwrap();
            let dw_len = roles.dst[0] * columns;
            let mut bits = Vec::new();
            for narrow in [false, true] {
                let dw = check::poisoned(gpu, "dw", dw_len).unwrap();
                let dispatch = registers::weight_gradient_as(gpu, narrow, &dw, &src, &grad, &roles).unwrap();
                gpu.run(&[&dispatch]).unwrap();
                let values = check::download(gpu, &dw, dw_len).unwrap();
                bits.push(values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert_eq!(bits[0], bits[1], "{roles:?}");
        }
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
        let numeric_dx =
            finite_difference_gradient(&x, 1e-6, |x| dot(&dy, &cpu::conv2d::forward(&shape, x, &w, Some(&b))));
        assert_gradient(
            &format!("dx {label}"),
            &cpu::conv2d::input_backward(&shape, &w, &dy),
            &numeric_dx,
        );
        let numeric_dw =
            finite_difference_gradient(&w, 1e-6, |w| dot(&dy, &cpu::conv2d::forward(&shape, &x, w, Some(&b))));
        assert_gradient(
            &format!("dw {label}"),
            &cpu::conv2d::weight_backward(&shape, &x, &dy),
            &numeric_dw,
        );
        let numeric_db =
            finite_difference_gradient(&b, 1e-6, |b| dot(&dy, &cpu::conv2d::forward(&shape, &x, &w, Some(b))));
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
    assert_eq!(
        cpu::conv2d::forward(&s, &[2.0, -1.0], &[3.0], Some(&[0.5])),
        [6.5, -2.5]
    );
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
    assert_eq!(
        cpu::conv2d::forward(&s, &[1.0, 2.0, 3.0, 4.0], &[1.0, 0.0, 0.0, -1.0], None),
        [-3.0]
    );
}

/// Same inputs, bit-identical outputs: the weight and bias gradients sum in a fixed order.
#[test]
fn conv2d_gradients_are_deterministic() {
    let gpu = check::shared_gpu();
    let shape = Conv2dShape::square(2, 16, 24, (14, 14), 3, 1, 1);
    let mut rng = TestRng::new(5);
    let x = rng.uniform_vec(shape.input_len(), -1.0, 1.0);
    let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
    let (x_gpu, dy_gpu) = (
        check::upload(gpu, "x", &x).unwrap(),
        check::upload(gpu, "dy", &dy).unwrap(),
    );
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

#[test]
fn conv_transpose2d_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), conv_transpose2d::checks());
}

#[test]
fn resample_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), resample::checks());
}

#[test]
fn concat_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), concat::checks());
}

/// The transposed-convolution backward twins against central differences of
/// L = sum(dy * conv_transpose2d(x, w, b)); the forward twin is the scatter form, written independently.
#[test]
fn conv_transpose2d_backward_twins_match_finite_differences() {
    let shapes = [
        ConvTranspose2dShape::square(2, 2, 3, (3, 2), 4, 2, 1),
        ConvTranspose2dShape::square(1, 3, 2, (3, 3), 3, 2, 1),
        ConvTranspose2dShape {
            kernel_h: 2,
            kernel_w: 3,
            ..ConvTranspose2dShape::square(1, 2, 2, (2, 3), 0, 3, 0)
        },
    ];
    for shape in shapes {
        let mut rng = TestRng::new(shape.input_len() as u64 + 99);
        let x = random(&mut rng, shape.input_len());
        let w = random(&mut rng, shape.weight_len());
        let b = random(&mut rng, shape.out_channels);
        let dy = random(&mut rng, shape.output_len());
        let label = shape.label();
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&dy, &cpu::conv_transpose2d::forward(&shape, x, w, Some(b)));
        assert_gradient(
            &format!("dx {label}"),
            &cpu::conv_transpose2d::input_backward(&shape, &w, &dy),
            &finite_difference_gradient(&x, 1e-6, |x| loss(x, &w, &b)),
        );
        assert_gradient(
            &format!("dw {label}"),
            &cpu::conv_transpose2d::weight_backward(&shape, &x, &dy),
            &finite_difference_gradient(&w, 1e-6, |w| loss(&x, w, &b)),
        );
        let plane = shape.out_height() * shape.out_width();
        assert_gradient(
            &format!("dbias {label}"),
            &cpu::conv2d::bias_backward(shape.batch, shape.out_channels, plane, &dy),
            &finite_difference_gradient(&b, 1e-6, |b| loss(&x, &w, b)),
        );
    }
}

/// ConvTranspose2d(Ci -> Co) is the input gradient of Conv2d(Co -> Ci) with the same weight tensor, and its input
/// gradient is that Conv2d's forward: the two twins must agree.
#[test]
fn conv_transpose2d_is_the_conv2d_input_gradient() {
    let t = ConvTranspose2dShape::square(2, 3, 2, (5, 4), 4, 2, 1);
    let c = Conv2dShape::square(2, 2, 3, (t.out_height(), t.out_width()), 4, 2, 1);
    assert_eq!((c.out_height(), c.out_width()), (5, 4));
    let mut rng = TestRng::new(3);
    let x = random(&mut rng, t.input_len());
    let w = random(&mut rng, t.weight_len());
    let dy = random(&mut rng, t.output_len());
    let via_conv = cpu::conv2d::input_backward(&c, &w, &x);
    for (a, b) in cpu::conv_transpose2d::forward(&t, &x, &w, None).iter().zip(&via_conv) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    let via_conv = cpu::conv2d::forward(&c, &dy, &w, None);
    for (a, b) in cpu::conv_transpose2d::input_backward(&t, &w, &dy).iter().zip(&via_conv) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

/// Hand-derived: with k4 s2 p1 one input pixel becomes a 2x2 output reading the kernel's centre taps,
/// y[oh, ow] = x w[oh + 1, ow + 1]; so dx = sum_{oh, ow} dy[oh, ow] w[oh + 1, ow + 1] and dw[kh, kw] = x dy[kh - 1, kw - 1]
/// on the centre taps, 0 on the border ones.
#[test]
fn conv_transpose2d_hand_derived_cases() {
    let s = ConvTranspose2dShape::square(1, 1, 1, (1, 1), 4, 2, 1);
    assert_eq!((s.out_height(), s.out_width()), (2, 2));
    let w: Vec<f64> = (0..16).map(f64::from).collect();
    assert_eq!(
        cpu::conv_transpose2d::forward(&s, &[2.0], &w, Some(&[1.0])),
        [11.0, 13.0, 19.0, 21.0]
    );
    // dx = 1*5 + 2*6 + 3*9 + 4*10 = 84
    assert_eq!(
        cpu::conv_transpose2d::input_backward(&s, &w, &[1.0, 2.0, 3.0, 4.0]),
        [84.0]
    );
    let mut expected = [0.0; 16];
    (expected[5], expected[6], expected[9], expected[10]) = (2.0, 4.0, 6.0, 8.0);
    assert_eq!(
        cpu::conv_transpose2d::weight_backward(&s, &[2.0], &[1.0, 2.0, 3.0, 4.0]),
        expected
    );
    // ae dec.3: 7 -> 14; dec.5: 14 -> 28.
    assert_eq!(
        ConvTranspose2dShape::square(1, 64, 32, (7, 7), 4, 2, 1).out_height(),
        14
    );
    assert_eq!(
        ConvTranspose2dShape::square(1, 32, 1, (14, 14), 4, 2, 1).out_height(),
        28
    );
}

/// The resample and concat backward twins against central differences. Max-pool inputs are distinct, so the
/// argmax does not move under the probe step.
#[test]
fn resample_and_concat_backward_twins_match_finite_differences() {
    let mut rng = TestRng::new(11);
    let (planes, height, width) = (3, 5, 4);
    let x = random(&mut rng, planes * height * width);
    let dy_pool = random(&mut rng, planes * (height / 2) * (width / 2));
    assert_gradient(
        "max_pool2d dx",
        &cpu::resample::max_pool2d_backward(&x, &dy_pool, planes, height, width),
        &finite_difference_gradient(&x, 1e-6, |x| {
            dot(&dy_pool, &cpu::resample::max_pool2d_forward(x, planes, height, width))
        }),
    );
    let dy_up = random(&mut rng, planes * 4 * height * width);
    assert_gradient(
        "upsample_nearest2d dx",
        &cpu::resample::upsample_nearest2d_backward(&dy_up, planes, height, width),
        &finite_difference_gradient(&x, 1e-6, |x| {
            dot(
                &dy_up,
                &cpu::resample::upsample_nearest2d_forward(x, planes, height, width),
            )
        }),
    );
    let (batch, ca, cb, plane) = (2, 2, 3, 5);
    let a = random(&mut rng, batch * ca * plane);
    let b = random(&mut rng, batch * cb * plane);
    let dout = random(&mut rng, batch * (ca + cb) * plane);
    let (da, db) = cpu::concat::concat_channels_backward(&dout, batch, ca, cb, plane);
    let cat = |a: &[f64], b: &[f64]| dot(&dout, &cpu::concat::concat_channels_forward(a, b, batch, ca, cb, plane));
    assert_gradient("concat da", &da, &finite_difference_gradient(&a, 1e-6, |a| cat(a, &b)));
    assert_gradient("concat db", &db, &finite_difference_gradient(&b, 1e-6, |b| cat(&a, b)));
}

/// Hand-derived: the max of a window has derivative 1 at its first maximum (row-major) and 0 elsewhere; an odd
/// last row and column are dropped (gradient 0). Upsampling copies, so its backward sums each 2x2 block.
#[test]
fn resample_hand_derived_cases() {
    // One 3x3 plane: a single 2x2 window [[1, 1], [0, 1]] (all three 1s tie) plus a dropped row and column of 9s.
    let x = [1.0, 1.0, 9.0, 0.0, 1.0, 9.0, 9.0, 9.0, 9.0];
    assert_eq!(cpu::resample::max_pool2d_forward(&x, 1, 3, 3), [1.0]);
    assert_eq!(
        cpu::resample::max_pool2d_backward(&x, &[5.0], 1, 3, 3),
        [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    // [[0, 2], [2, 1]]: the first 2 (top right) takes the gradient.
    assert_eq!(
        cpu::resample::max_pool2d_backward(&[0.0, 2.0, 2.0, 1.0], &[1.0], 1, 2, 2),
        [0.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(
        cpu::resample::upsample_nearest2d_forward(&[1.0, 2.0], 1, 1, 2),
        [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]
    );
    assert_eq!(
        cpu::resample::upsample_nearest2d_backward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 1, 1, 2),
        [1.0 + 2.0 + 5.0 + 6.0, 3.0 + 4.0 + 7.0 + 8.0]
    );
    assert_eq!(
        cpu::concat::concat_channels_forward(&[1.0, 2.0], &[3.0, 4.0], 2, 1, 1, 1),
        [1.0, 3.0, 2.0, 4.0]
    );
}

/// The GPU max-pool follows the same tie rule on a window of four equal values and on a plane of one image
/// with a dropped last column.
#[test]
fn max_pool2d_ties_on_the_gpu() {
    let gpu = check::shared_gpu();
    let x = [3.0f32, 3.0, 7.0, 3.0, 3.0, 7.0];
    let dx = check::poisoned(gpu, "dx", 6).unwrap();
    let (x_gpu, dy_gpu) = (
        check::upload(gpu, "x", &x).unwrap(),
        check::upload(gpu, "dy", &[2.0]).unwrap(),
    );
    gpu.run(&[&resample::max_pool2d_backward(gpu, &dx, &x_gpu, &dy_gpu, 1, 2, 3).unwrap()])
        .unwrap();
    assert_eq!(check::download(gpu, &dx, 6).unwrap(), [2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

/// The implicit-GEMM grid folds row tiles into z past the per-dimension limit, covering every tile.
#[test]
fn gemm_grid_folds_large_launches() {
    let gpu = check::shared_gpu();
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    assert_eq!(conv2d::gemm_grid(gpu, "t", 100, 65).unwrap(), [2, 2, 1]);
    let rows = (2 * max + 3) * conv2d::GEMM_TILE;
    let [x, y, z] = conv2d::gemm_grid(gpu, "t", rows, 1).unwrap();
    assert!((x as usize) <= max && y == 1 && z == 3, "{x} {y} {z}");
    assert!((x * z) as usize >= 2 * max + 3);
}
