//! BatchNorm2d and GroupNorm: the GPU against the CPU twins, the backward twins against finite differences
//! (through the batch statistics), hand-derived cases, and the params structs against their WGSL twins.

use latent::check::{self, finite_difference_gradient, TestRng};
use latent::cpu;
use latent::field_offsets;
use latent::kernels::batchnorm::{self, BatchNorm2d, BatchNormParams};
use latent::kernels::groupnorm::{self, GroupNorm, GroupNormParams, Reduction};
use latent::kernels::params_layout_mismatch;
use latent::shaders;

/// The serial BatchNorm kernels (CPU adapters') walk the tree kernels' reductions: the same bits in y, the saved
/// and running statistics, dx, dweight and dbias, on the gan's shapes (one in two launches) and odd ones.
#[test]
fn serial_batchnorm_gives_the_tree_kernels_bits() {
    let gpu = check::shared_gpu();
    // (128, 64, 14, 14), the gan's, takes the two-launch serial forward.
    for (n, c, h, w) in [
        (128, 128, 7, 7),
        (16, 64, 14, 14),
        (128, 64, 14, 14),
        (5, 3, 11, 11),
        (3, 33, 1, 7),
    ] {
        let base = BatchNorm2d::new(n, c, h, w);
        assert!(
            (base.serial_fits(false) || base.split_fits()) && base.serial_fits(true),
            "N={n} C={c} H={h} W={w}"
        );
        let mut rng = TestRng::new(23);
        let mut upload =
            |len: usize, lo: f32, hi: f32| check::upload(gpu, "input", &rng.uniform_vec(len, lo, hi)).unwrap();
        let (x, dy) = (upload(base.len(), -2.0, 2.0), upload(base.len(), -1.0, 1.0));
        let (weight, bias) = (upload(c, 0.5, 1.5), upload(c, -0.5, 0.5));
        let (start_mean, start_var) = (upload(c, -1.0, 1.0), upload(c, 0.5, 2.0));
        let mut outputs = Vec::new();
        for serial in [false, true] {
            let shape = BatchNorm2d {
                kernels: Some(serial),
                ..base
            };
            let copy = |from: &latent::gpu::GpuBuffer| {
                check::upload(gpu, "running", &check::download(gpu, from, c).unwrap()).unwrap()
            };
            let (running_mean, running_var) = (copy(&start_mean), copy(&start_var));
            let buffer = |len| check::poisoned(gpu, "output", len).unwrap();
            let (y, mean, rstd, dx, dweight, dbias) = (
                buffer(base.len()),
                buffer(c),
                buffer(c),
                buffer(base.len()),
                buffer(c),
                buffer(c),
            );
            gpu.run(&[
                &batchnorm::forward_train(
                    gpu,
                    &y,
                    &mean,
                    &rstd,
                    &running_mean,
                    &running_var,
                    &x,
                    &weight,
                    &bias,
                    &shape,
                )
                .unwrap(),
                &batchnorm::backward(gpu, &dx, &dweight, &dbias, &x, &mean, &rstd, &dy, &weight, &shape).unwrap(),
            ])
            .unwrap();
            let bits = |b: &latent::gpu::GpuBuffer, len| {
                check::download(gpu, b, len)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            outputs.push([
                bits(&y, base.len()),
                bits(&mean, c),
                bits(&rstd, c),
                bits(&running_mean, c),
                bits(&running_var, c),
                bits(&dx, base.len()),
                bits(&dweight, c),
                bits(&dbias, c),
            ]);
        }
        let names = [
            "y",
            "mean",
            "rstd",
            "running_mean",
            "running_var",
            "dx",
            "dweight",
            "dbias",
        ];
        for (k, name) in names.iter().enumerate() {
            assert_eq!(outputs[0][k], outputs[1][k], "{name} of N={n} C={c} H={h} W={w}");
        }
    }
}

/// The serial GroupNorm kernels (CPU adapters') walk the tree kernels' reductions: the same bits in y, mean,
/// rstd, dx, dweight and dbias, on the ddpm's shapes and odd ones.
#[test]
fn serial_groupnorm_gives_the_tree_kernels_bits() {
    let gpu = check::shared_gpu();
    for (n, c, g, h, w) in [
        (4, 64, 8, 28, 28),
        (3, 256, 8, 7, 7),
        (2, 192, 8, 14, 14),
        (3, 6, 3, 5, 7),
    ] {
        let base = GroupNorm::new(n, c, g, h, w);
        let mut rng = TestRng::new(19);
        let mut upload =
            |len: usize, lo: f32, hi: f32| check::upload(gpu, "input", &rng.uniform_vec(len, lo, hi)).unwrap();
        let (x, dy) = (upload(base.len(), -2.0, 2.0), upload(base.len(), -1.0, 1.0));
        let (weight, bias) = (upload(c, 0.5, 1.5), upload(c, -0.5, 0.5));
        let mut outputs = Vec::new();
        for reduction in [Reduction::Tree, Reduction::Serial] {
            let shape = GroupNorm {
                kernels: Some(reduction),
                ..base
            };
            let buffer = |len| check::poisoned(gpu, "output", len).unwrap();
            let (y, mean, rstd, dx) = (
                buffer(base.len()),
                buffer(base.statistics()),
                buffer(base.statistics()),
                buffer(base.len()),
            );
            let (dweight, dbias) = (buffer(c), buffer(c));
            gpu.run(&[
                &groupnorm::forward(gpu, &y, &mean, &rstd, &x, &weight, &bias, &shape).unwrap(),
                &groupnorm::input_backward(gpu, &dx, &x, &mean, &rstd, &dy, &weight, &shape).unwrap(),
                &groupnorm::weight_backward(gpu, &dweight, &dbias, &x, &mean, &rstd, &dy, &shape).unwrap(),
            ])
            .unwrap();
            let bits = |b: &latent::gpu::GpuBuffer, len| {
                check::download(gpu, b, len)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            outputs.push([
                bits(&y, base.len()),
                bits(&mean, base.statistics()),
                bits(&rstd, base.statistics()),
                bits(&dx, base.len()),
                bits(&dweight, c),
                bits(&dbias, c),
            ]);
        }
        for (k, name) in ["y", "mean", "rstd", "dx", "dweight", "dbias"].iter().enumerate() {
            assert_eq!(outputs[0][k], outputs[1][k], "{name} of N={n} C={c} G={g} H={h} W={w}");
        }
    }
}

#[test]
fn batchnorm_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), batchnorm::checks());
}

#[test]
fn groupnorm_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), groupnorm::checks());
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    let fields = field_offsets!(
        BatchNormParams,
        [batch, channels, inner, count, eps, momentum, _pad0, _pad1]
    );
    for entry in [
        &shaders::batchnorm::BATCHNORM_FORWARD_TRAIN,
        &shaders::batchnorm::BATCHNORM_FORWARD_EVAL,
        &shaders::batchnorm::BATCHNORM_BACKWARD,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<BatchNormParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let fields = field_offsets!(
        GroupNormParams,
        [batch, channels, groups, inner, eps, _pad0, _pad1, _pad2]
    );
    for entry in [
        &shaders::groupnorm::GROUPNORM_FORWARD,
        &shaders::groupnorm::GROUPNORM_INPUT_BACKWARD,
        &shaders::groupnorm::GROUPNORM_WEIGHT_BACKWARD,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<GroupNormParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

/// Asserts analytic == numeric within `1e-6 + 1e-6 |numeric|`.
#[track_caller]
fn assert_gradient(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths");
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-6 + 1e-6 * n.abs(),
            "{what}[{i}]: analytic {a} vs numeric {n}"
        );
    }
}

fn random(rng: &mut TestRng, len: usize, lo: f32, hi: f32) -> Vec<f64> {
    check::to_f64(&rng.uniform_vec(len, lo, hi))
}

/// The backward twin against central differences of L = sum(dy * y(x, weight, bias)), with y the training
/// forward: the gradient flows through the batch mean and variance.
#[test]
fn batchnorm_backward_twin_matches_finite_differences() {
    for (batch, channels, inner) in [(2, 1, 1), (3, 2, 2), (2, 3, 5)] {
        let mut rng = TestRng::new(11 + batch as u64);
        let len = batch * channels * inner;
        let x = random(&mut rng, len, -2.0, 2.0);
        let weight = random(&mut rng, channels, 0.5, 1.5);
        let bias = random(&mut rng, channels, -0.5, 0.5);
        let dy = random(&mut rng, len, -1.0, 1.0);
        let (ones, zeros) = (vec![1.0; channels], vec![0.0; channels]);
        let forward = |x: &[f64], weight: &[f64], bias: &[f64]| {
            cpu::batchnorm::forward_train(x, weight, bias, &zeros, &ones, batch, channels, inner, 1e-5, 0.1)
        };
        let loss = |y: &[f64]| y.iter().zip(&dy).map(|(y, g)| y * g).sum::<f64>();

        let saved = forward(&x, &weight, &bias);
        let grads = cpu::batchnorm::backward(&x, &saved.mean, &saved.rstd, &dy, &weight, batch, channels, inner);
        let shape = format!("N={batch} C={channels} HW={inner}");
        let dx = finite_difference_gradient(&x, 1e-6, |x| loss(&forward(x, &weight, &bias).y));
        assert_gradient(&format!("dx {shape}"), &grads.dx, &dx);
        let dweight = finite_difference_gradient(&weight, 1e-6, |w| loss(&forward(&x, w, &bias).y));
        assert_gradient(&format!("dweight {shape}"), &grads.dweight, &dweight);
        let dbias = finite_difference_gradient(&bias, 1e-6, |b| loss(&forward(&x, &weight, b).y));
        assert_gradient(&format!("dbias {shape}"), &grads.dbias, &dbias);
    }
}

/// Hand-derived: one channel, x = (1, 3), weight 2, bias 0.5.
#[test]
fn batchnorm_known_values() {
    // mean = 2, biased var = 1, rstd = 1/sqrt(1 + eps); xhat = (-1, 1) * rstd.
    // y = 2 * xhat + 0.5; running_mean = 0.9 * 0 + 0.1 * 2 = 0.2;
    // running_var = 0.9 * 1 + 0.1 * (1 * 2 / 1) = 1.1 (unbiased variance 2).
    let eps = 1e-5;
    let r = 1.0 / (1.0f64 + eps).sqrt();
    let out = cpu::batchnorm::forward_train(&[1.0, 3.0], &[2.0], &[0.5], &[0.0], &[1.0], 2, 1, 1, eps, 0.1);
    assert_eq!(out.mean, vec![2.0]);
    assert!((out.rstd[0] - r).abs() < 1e-15);
    assert!((out.y[0] - (0.5 - 2.0 * r)).abs() < 1e-15 && (out.y[1] - (0.5 + 2.0 * r)).abs() < 1e-15);
    assert!((out.running_mean[0] - 0.2).abs() < 1e-15);
    assert!((out.running_var[0] - 1.1).abs() < 1e-15);

    // Backward with dy = (1, 0): dbias = 1, dweight = xhat_0 = -r;
    // dx_i = weight * r * (dy_i - mean(dy) - xhat_i * mean(dy * xhat)) = 2r * (dy_i - 1/2 - xhat_i * (-r/2)),
    // so dx_0 = 2r (1/2 - r^2/2) and dx_1 = 2r (-1/2 + r^2/2) = -dx_0 (their sum is 0: a shift of x changes nothing).
    let grads = cpu::batchnorm::backward(&[1.0, 3.0], &out.mean, &out.rstd, &[1.0, 0.0], &[2.0], 2, 1, 1);
    assert!((grads.dbias[0] - 1.0).abs() < 1e-15);
    assert!((grads.dweight[0] + r).abs() < 1e-15);
    let dx0 = 2.0 * r * (0.5 - r * r / 2.0);
    assert!((grads.dx[0] - dx0).abs() < 1e-15 && (grads.dx[1] + dx0).abs() < 1e-15);
}

/// Training needs two values per channel, as in PyTorch; the launcher says so instead of dividing by zero.
#[test]
fn batchnorm_rejects_a_single_value_per_channel() {
    let gpu = check::shared_gpu();
    let shape = BatchNorm2d::new(1, 3, 1, 1);
    let buffer = check::upload(gpu, "b", &[0.0; 3]).unwrap();
    let b = &buffer;
    let error = batchnorm::forward_train(gpu, b, b, b, b, b, b, b, b, &shape).unwrap_err();
    assert!(error.to_string().contains("more than one value per channel"), "{error}");
}

/// The same inputs give bit-identical outputs (the reductions are fixed trees, no atomics).
#[test]
fn batchnorm_is_deterministic() {
    let gpu = check::shared_gpu();
    let shape = BatchNorm2d::new(16, 8, 9, 9);
    let mut rng = TestRng::new(3);
    let x = check::upload(gpu, "x", &rng.uniform_vec(shape.len(), -3.0, 3.0)).unwrap();
    let dy = check::upload(gpu, "dy", &rng.uniform_vec(shape.len(), -1.0, 1.0)).unwrap();
    let weight = check::upload(gpu, "weight", &rng.uniform_vec(8, 0.5, 1.5)).unwrap();
    let run = || {
        let (y, mean, rstd) = (
            check::poisoned(gpu, "y", shape.len()).unwrap(),
            check::poisoned(gpu, "mean", 8).unwrap(),
            check::poisoned(gpu, "rstd", 8).unwrap(),
        );
        let (rm, rv, bias) = (
            check::upload(gpu, "rm", &[0.0; 8]).unwrap(),
            check::upload(gpu, "rv", &[1.0; 8]).unwrap(),
            check::upload(gpu, "bias", &[0.0; 8]).unwrap(),
        );
        let (dx, dw, db) = (
            check::poisoned(gpu, "dx", shape.len()).unwrap(),
            check::poisoned(gpu, "dw", 8).unwrap(),
            check::poisoned(gpu, "db", 8).unwrap(),
        );
        let forward = batchnorm::forward_train(gpu, &y, &mean, &rstd, &rm, &rv, &x, &weight, &bias, &shape).unwrap();
        let backward = batchnorm::backward(gpu, &dx, &dw, &db, &x, &mean, &rstd, &dy, &weight, &shape).unwrap();
        gpu.run(&[&forward, &backward]).unwrap();
        [&y, &mean, &rstd, &rv, &dx, &dw, &db].map(|b| gpu.read::<u32>(b).unwrap())
    };
    assert_eq!(run(), run());
}

/// The backward twin against central differences of L = sum(dy * y(x, weight, bias)): the gradient flows
/// through each (sample, group)'s mean and variance.
#[test]
fn groupnorm_backward_twin_matches_finite_differences() {
    for (batch, channels, groups, inner) in [(1, 2, 1, 3), (2, 4, 2, 3), (2, 6, 3, 1), (3, 3, 3, 4)] {
        let mut rng = TestRng::new(21 + channels as u64);
        let len = batch * channels * inner;
        let x = random(&mut rng, len, -2.0, 2.0);
        let weight = random(&mut rng, channels, 0.5, 1.5);
        let bias = random(&mut rng, channels, -0.5, 0.5);
        let dy = random(&mut rng, len, -1.0, 1.0);
        let forward = |x: &[f64], weight: &[f64], bias: &[f64]| {
            cpu::groupnorm::forward(x, weight, bias, batch, channels, groups, inner, 1e-5)
        };
        let loss = |y: &[f64]| y.iter().zip(&dy).map(|(y, g)| y * g).sum::<f64>();

        let saved = forward(&x, &weight, &bias);
        let grads = cpu::groupnorm::backward(
            &x,
            &saved.mean,
            &saved.rstd,
            &dy,
            &weight,
            batch,
            channels,
            groups,
            inner,
        );
        let shape = format!("N={batch} C={channels} G={groups} HW={inner}");
        let dx = finite_difference_gradient(&x, 1e-6, |x| loss(&forward(x, &weight, &bias).y));
        assert_gradient(&format!("dx {shape}"), &grads.dx, &dx);
        let dweight = finite_difference_gradient(&weight, 1e-6, |w| loss(&forward(&x, w, &bias).y));
        assert_gradient(&format!("dweight {shape}"), &grads.dweight, &dweight);
        let dbias = finite_difference_gradient(&bias, 1e-6, |b| loss(&forward(&x, &weight, b).y));
        assert_gradient(&format!("dbias {shape}"), &grads.dbias, &dbias);
    }
}

/// Hand-derived: GroupNorm(1, 2) on one sample with H * W = 1, x = (1, 3), weight (2, 1), bias (0, 0.5).
#[test]
fn groupnorm_known_values() {
    // One group of both channels: mean 2, var 1, rstd r = 1/sqrt(1 + eps), xhat = (-r, r);
    // y = (2 * -r + 0, 1 * r + 0.5).
    let eps = 1e-5;
    let r = 1.0 / (1.0f64 + eps).sqrt();
    let out = cpu::groupnorm::forward(&[1.0, 3.0], &[2.0, 1.0], &[0.0, 0.5], 1, 2, 1, 1, eps);
    assert_eq!(out.mean, vec![2.0]);
    assert!((out.rstd[0] - r).abs() < 1e-15);
    assert!((out.y[0] + 2.0 * r).abs() < 1e-15 && (out.y[1] - (r + 0.5)).abs() < 1e-15);

    // dy = (1, 1): dbias = dy = (1, 1), dweight = dy * xhat = (-r, r); dxhat = dy * weight = (2, 1),
    // mean(dxhat) = 3/2, mean(dxhat * xhat) = (-2r + r) / 2 = -r/2,
    // dx_0 = r (2 - 3/2 - (-r)(-r/2)) = r (1/2 - r^2/2),  dx_1 = r (1 - 3/2 - r (-r/2)) = -dx_0.
    let grads = cpu::groupnorm::backward(&[1.0, 3.0], &out.mean, &out.rstd, &[1.0, 1.0], &[2.0, 1.0], 1, 2, 1, 1);
    assert_eq!(grads.dbias, vec![1.0, 1.0]);
    assert!((grads.dweight[0] + r).abs() < 1e-15 && (grads.dweight[1] - r).abs() < 1e-15);
    let dx0 = r * (0.5 - r * r / 2.0);
    assert!((grads.dx[0] - dx0).abs() < 1e-15 && (grads.dx[1] + dx0).abs() < 1e-15);
}

/// GroupNorm needs C divisible by G, as in PyTorch; the launcher says so.
#[test]
fn groupnorm_rejects_channels_not_divisible_by_groups() {
    let gpu = check::shared_gpu();
    let shape = GroupNorm::new(1, 6, 4, 1, 1);
    let buffer = check::upload(gpu, "b", &[0.0; 6]).unwrap();
    let b = &buffer;
    let error = groupnorm::forward(gpu, b, b, b, b, b, b, &shape).unwrap_err();
    assert!(error.to_string().contains("multiple of the groups"), "{error}");
}

/// The same inputs give bit-identical outputs.
#[test]
fn groupnorm_is_deterministic() {
    let gpu = check::shared_gpu();
    let shape = GroupNorm::new(4, 16, 8, 9, 9);
    let mut rng = TestRng::new(4);
    let x = check::upload(gpu, "x", &rng.uniform_vec(shape.len(), -3.0, 3.0)).unwrap();
    let dy = check::upload(gpu, "dy", &rng.uniform_vec(shape.len(), -1.0, 1.0)).unwrap();
    let weight = check::upload(gpu, "weight", &rng.uniform_vec(16, 0.5, 1.5)).unwrap();
    let bias = check::upload(gpu, "bias", &rng.uniform_vec(16, -0.5, 0.5)).unwrap();
    let run = || {
        let y = check::poisoned(gpu, "y", shape.len()).unwrap();
        let mean = check::poisoned(gpu, "mean", shape.statistics()).unwrap();
        let rstd = check::poisoned(gpu, "rstd", shape.statistics()).unwrap();
        let dx = check::poisoned(gpu, "dx", shape.len()).unwrap();
        let (dw, db) = (
            check::poisoned(gpu, "dw", 16).unwrap(),
            check::poisoned(gpu, "db", 16).unwrap(),
        );
        let steps = [
            groupnorm::forward(gpu, &y, &mean, &rstd, &x, &weight, &bias, &shape).unwrap(),
            groupnorm::input_backward(gpu, &dx, &x, &mean, &rstd, &dy, &weight, &shape).unwrap(),
            groupnorm::weight_backward(gpu, &dw, &db, &x, &mean, &rstd, &dy, &shape).unwrap(),
        ];
        gpu.run(&steps.iter().collect::<Vec<_>>()).unwrap();
        [&y, &mean, &rstd, &dx, &dw, &db].map(|b| gpu.read::<u32>(b).unwrap())
    };
    assert_eq!(run(), run());
}
