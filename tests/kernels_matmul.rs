//! Matrix multiplication and row/column reductions: the GPU against the CPU twins, the linear layer's backward
//! (matmul and sum twins) against finite differences, hand-derived cases, determinism, and params layouts.

use latent::check::{self, finite_difference_gradient, TestRng, Tolerance};
use latent::cpu;
use latent::field_offsets;
use latent::kernels::matmul::{self, Epilogue, Layout, MatmulParams, MatmulShape, Variant};
use latent::kernels::params_layout_mismatch;
use latent::shaders;

#[test]
fn matmul_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), matmul::checks());
}

#[test]
fn square_256_matches_cpu_twin_in_every_layout() {
    let gpu = check::shared_gpu();
    for variant in Variant::ALL {
        for layout in Layout::ALL {
            let shape = MatmulShape::new(256, 256, 256);
            let comparison = matmul::run_check(gpu, variant, layout, shape, false, None, false, 256)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(comparison.passed(), "{variant:?} {layout:?} 256^3: {comparison}");
        }
    }
}

/// The subgroup kernels sum each output in the registers kernels' order with the same multiply-add, so a
/// training run gives the same bits whichever of the two an adapter runs: checked on the default models' linear
/// layers (K % 8 = 0) and on shapes with a remainder of K and partial tiles.
#[test]
fn subgroup_kernels_give_the_registers_kernels_bits() {
    let gpu = check::shared_gpu();
    if !gpu.has_subgroups_of(matmul::SUBGROUP_LANES) {
        eprintln!(
            "skipped: {} has no 8-lane subgroups, so both variants run the registers kernel",
            gpu.describe()
        );
        return;
    }
    let mut rng = TestRng::new(23);
    let shapes = [
        (128, 400, 784),
        (400, 784, 128),
        (128, 20, 400),
        (37, 68, 132),
        (5, 12, 7),
    ];
    for layout in Layout::ALL {
        for (m, n, k) in shapes {
            let shape = MatmulShape::new(m, n, k);
            let [len_a, len_b, len_c] = shape.lens();
            let a = check::upload(gpu, "a", &rng.uniform_vec(len_a, -1.0, 1.0)).unwrap();
            let b = check::upload(gpu, "b", &rng.uniform_vec(len_b, -1.0, 1.0)).unwrap();
            let bias = check::upload(gpu, "bias", &rng.uniform_vec(n, -1.0, 1.0)).unwrap();
            let epilogue = Epilogue {
                bias: Some(&bias),
                ..Epilogue::NONE
            };
            let mut outputs = Vec::new();
            for variant in [Variant::Registers, Variant::Subgroup] {
                let c = check::upload(gpu, "c", &vec![f32::NAN; len_c]).unwrap();
                let dispatch = matmul::matmul_variant(gpu, variant, &c, &a, &b, layout, shape, &epilogue).unwrap();
                gpu.run(&[&dispatch]).unwrap();
                outputs.push(check::download(gpu, &c, len_c).unwrap());
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&outputs[0]), bits(&outputs[1]), "{layout:?} {shape}");
        }
    }
}

/// The column kernels (N = 1) add the same products in the same order as the registers kernels: the same bits,
/// with a bias and a batch (the gan discriminator's last layer, 6272 -> 1, among them).
#[test]
fn column_matmuls_give_the_registers_bits() {
    let gpu = check::shared_gpu();
    let mut rng = TestRng::new(29);
    let shapes = [
        MatmulShape::new(128, 1, 6272),
        MatmulShape::new(65, 1, 33),
        MatmulShape::new(1, 1, 7),
        MatmulShape::new(7, 1, 65).batched(3, 7 * 65 + 5, 65 + 2, 7 + 3),
    ];
    for layout in Layout::ALL {
        for shape in shapes {
            let [len_a, len_b, len_c] = shape.lens();
            let a = check::upload(gpu, "a", &rng.uniform_vec(len_a, -1.0, 1.0)).unwrap();
            let b = check::upload(gpu, "b", &rng.uniform_vec(len_b, -1.0, 1.0)).unwrap();
            let bias = check::upload(gpu, "bias", &rng.uniform_vec(1, -1.0, 1.0)).unwrap();
            let c0 = rng.uniform_vec(len_c, -1.0, 1.0);
            let epilogue = Epilogue {
                bias: Some(&bias),
                accumulate: true,
                ..Epilogue::NONE
            };
            let mut outputs = Vec::new();
            for variant in [Variant::Registers, Variant::Column] {
                let c = check::upload(gpu, "c", &c0).unwrap();
                let dispatch = matmul::matmul_variant(gpu, variant, &c, &a, &b, layout, shape, &epilogue).unwrap();
                gpu.run(&[&dispatch]).unwrap();
                outputs.push(check::download(gpu, &c, len_c).unwrap());
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&outputs[0]), bits(&outputs[1]), "{layout:?} {shape}");
        }
    }
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    let fields = field_offsets!(
        MatmulParams,
        [m, n, k, has_bias, stride_a, stride_b, stride_c, accumulate, activation, slope, _pad0, _pad1]
    );
    for entry in [
        &shaders::matmul::MATMUL_NN,
        &shaders::matmul::MATMUL_NT,
        &shaders::matmul::MATMUL_TN,
        &shaders::matmul::MATMUL_NN_REGISTERS,
        &shaders::matmul::MATMUL_NT_REGISTERS,
        &shaders::matmul::MATMUL_TN_REGISTERS,
        &shaders::matmul_subgroup::MATMUL_NN_SUBGROUP,
        &shaders::matmul_subgroup::MATMUL_NT_SUBGROUP,
        &shaders::matmul_subgroup::MATMUL_TN_SUBGROUP,
        &shaders::matmul::MATMUL_NN_COLUMN,
        &shaders::matmul::MATMUL_NT_COLUMN,
        &shaders::matmul::MATMUL_TN_COLUMN,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<MatmulParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

#[test]
fn flops_count_a_multiply_and_an_add_per_term() {
    assert_eq!(matmul::flops(2, 3, 4), 48);
    assert_eq!(MatmulShape::new(128, 400, 784).flops(), 2 * 128 * 400 * 784);
}

/// [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]], in each layout (the operands stored
/// transposed where the layout says so), plus bias [1, -100] and ReLU: [[20, 0], [44, 0]].
#[test]
fn matmul_by_hand() {
    let gpu = check::shared_gpu();
    let a = [1.0, 2.0, 3.0, 4.0];
    let a_t = [1.0, 3.0, 2.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let b_t = [5.0, 7.0, 6.0, 8.0];
    let shape = MatmulShape::new(2, 2, 2);
    for (layout, a, b) in [(Layout::NN, a, b), (Layout::NT, a, b_t), (Layout::TN, a_t, b)] {
        let c = check::poisoned(gpu, "c", 4).unwrap();
        let (a, b) = (
            check::upload(gpu, "a", &a).unwrap(),
            check::upload(gpu, "b", &b).unwrap(),
        );
        gpu.run(&[&matmul::matmul(gpu, &c, &a, &b, layout, shape, &Epilogue::NONE).unwrap()])
            .unwrap();
        assert_eq!(
            check::download(gpu, &c, 4).unwrap(),
            [19.0, 22.0, 43.0, 50.0],
            "{layout:?}"
        );

        let bias = check::upload(gpu, "bias", &[1.0, -100.0]).unwrap();
        let epilogue = Epilogue {
            bias: Some(&bias),
            activation: Some(latent::kernels::activation::Activation::Relu),
            accumulate: false,
        };
        gpu.run(&[&matmul::matmul(gpu, &c, &a, &b, layout, shape, &epilogue).unwrap()])
            .unwrap();
        assert_eq!(
            check::download(gpu, &c, 4).unwrap(),
            [20.0, 0.0, 44.0, 0.0],
            "{layout:?}"
        );
        // Accumulate: C = C + A · B.
        gpu.run(&[&matmul::matmul(gpu, &c, &a, &b, layout, shape, &Epilogue::ACCUMULATE).unwrap()])
            .unwrap();
        assert_eq!(
            check::download(gpu, &c, 4).unwrap(),
            [39.0, 22.0, 87.0, 50.0],
            "{layout:?}"
        );
    }
}

/// Same inputs, same bits: the sum over k has a fixed order.
#[test]
fn matmul_is_deterministic() {
    let gpu = check::shared_gpu();
    let shape = MatmulShape::new(129, 65, 257);
    let mut rng = TestRng::new(3);
    let a = check::upload(gpu, "a", &rng.uniform_vec(129 * 257, -1.0, 1.0)).unwrap();
    let b = check::upload(gpu, "b", &rng.uniform_vec(257 * 65, -1.0, 1.0)).unwrap();
    let mut results = Vec::new();
    for _ in 0..2 {
        let c = check::poisoned(gpu, "c", 129 * 65).unwrap();
        gpu.run(&[&matmul::matmul(gpu, &c, &a, &b, Layout::NT, shape, &Epilogue::NONE).unwrap()])
            .unwrap();
        let values: Vec<u32> = check::download(gpu, &c, 129 * 65)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        results.push(values);
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn undersized_buffers_and_empty_shapes_are_errors() {
    let gpu = check::shared_gpu();
    let small = check::upload(gpu, "small", &[0.0; 4]).unwrap();
    let big = check::upload(gpu, "big", &[0.0; 64]).unwrap();
    let error = matmul::matmul(
        gpu,
        &big,
        &small,
        &big,
        Layout::NN,
        MatmulShape::new(4, 4, 4),
        &Epilogue::NONE,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("small") && error.contains("64 bytes"), "{error}");
    let error = matmul::matmul(
        gpu,
        &big,
        &big,
        &big,
        Layout::NN,
        MatmulShape::new(0, 4, 4),
        &Epilogue::NONE,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("at least 1"), "{error}");
}

/// A linear layer y = x Wᵀ + b with L = sum(dy * y): dL/dx = dy W (NN), dL/dW = dyᵀ x (TN), and
/// dL/db = the column sums of dy. The twins against central differences.
#[test]
fn linear_backward_twins_match_finite_differences() {
    let (batch, inputs, outputs) = (3, 5, 4);
    let mut rng = TestRng::new(11);
    let mut vec64 = |len| check::to_f64(&rng.uniform_vec(len, -1.0, 1.0));
    let (x, w, bias, dy) = (
        vec64(batch * inputs),
        vec64(outputs * inputs),
        vec64(outputs),
        vec64(batch * outputs),
    );
    let forward = |x: &[f64], w: &[f64], bias: &[f64]| {
        let mut y = vec![0.0; batch * outputs];
        let shape = MatmulShape::new(batch, outputs, inputs);
        cpu::matmul::matmul(&mut y, x, w, Some(bias), Layout::NT, shape, None, false);
        y.iter().zip(&dy).map(|(y, g)| y * g).sum::<f64>()
    };
    let close = |what: &str, analytic: &[f64], numeric: &[f64]| {
        let comparison = check::compare(
            &analytic.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            numeric,
            Tolerance::new(1e-6, 1e-5),
        );
        assert!(comparison.passed(), "{what}: {comparison}");
    };

    let mut dx = vec![0.0; batch * inputs];
    cpu::matmul::matmul(
        &mut dx,
        &dy,
        &w,
        None,
        Layout::NN,
        MatmulShape::new(batch, inputs, outputs),
        None,
        false,
    );
    close(
        "dx",
        &dx,
        &finite_difference_gradient(&x, 1e-6, |x| forward(x, &w, &bias)),
    );

    let mut dw = vec![0.0; outputs * inputs];
    cpu::matmul::matmul(
        &mut dw,
        &dy,
        &x,
        None,
        Layout::TN,
        MatmulShape::new(outputs, inputs, batch),
        None,
        false,
    );
    close(
        "dW",
        &dw,
        &finite_difference_gradient(&w, 1e-6, |w| forward(&x, w, &bias)),
    );

    let db = cpu::reduce::sum_rows(&dy, batch, outputs);
    close(
        "db",
        &db,
        &finite_difference_gradient(&bias, 1e-6, |b| forward(&x, &w, b)),
    );
}

#[test]
fn reductions_match_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), latent::kernels::reduce::checks());
}

#[test]
fn reduce_params_match_their_wgsl_twin() {
    use latent::kernels::reduce::ReduceParams;
    let fields = field_offsets!(ReduceParams, [rows, cols, n, _pad]);
    for entry in [
        &shaders::reduce::SUM_ROWS,
        &shaders::reduce::SUM_CHUNKS,
        &shaders::reduce::SUM_CHUNKS_SERIAL,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<ReduceParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

/// Column sums of [[1, 2, 3], [4, 5, 6]] are [5, 7, 9], row sums [6, 15], the total 21.
#[test]
fn reductions_by_hand() {
    use latent::kernels::reduce;
    let gpu = check::shared_gpu();
    let x = check::upload(gpu, "x", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let out = check::poisoned(gpu, "out", 3).unwrap();
    gpu.run(&[&reduce::sum_rows(gpu, &out, &x, 2, 3).unwrap()]).unwrap();
    assert_eq!(check::download(gpu, &out, 3).unwrap(), [5.0, 7.0, 9.0]);
    gpu.run(&[&reduce::sum_cols(gpu, &out, &x, 2, 3).unwrap()]).unwrap();
    assert_eq!(check::download(gpu, &out, 2).unwrap(), [6.0, 15.0]);
    let partials = check::poisoned(gpu, "partials", 1).unwrap();
    let [first, second] = reduce::sum_all(gpu, &out, &partials, &x, 6).unwrap();
    gpu.run(&[&first, &second]).unwrap();
    assert_eq!(check::download(gpu, &out, 1).unwrap(), [21.0]);
}

/// The full sum, twice, gives the same bits.
#[test]
fn sum_all_is_deterministic() {
    use latent::kernels::reduce;
    let gpu = check::shared_gpu();
    let n = 200_001;
    let x = check::upload(gpu, "x", &TestRng::new(5).uniform_vec(n, -1.0, 1.0)).unwrap();
    let partials = check::poisoned(gpu, "partials", reduce::sum_all_partials(n)).unwrap();
    let mut totals = Vec::new();
    for _ in 0..2 {
        let out = check::poisoned(gpu, "out", 1).unwrap();
        let [first, second] = reduce::sum_all(gpu, &out, &partials, &x, n).unwrap();
        gpu.run(&[&first, &second]).unwrap();
        totals.push(check::download(gpu, &out, 1).unwrap()[0].to_bits());
    }
    assert_eq!(totals[0], totals[1]);
}

/// sum_chunks_serial (CPU adapters') walks sum_chunks' tree: the same bits for the column sums (the ddpm's
/// per-channel bias gradients, rows N C of H W values) and both stages of the full sum.
#[test]
fn serial_sums_give_the_tree_sums_bits() {
    use latent::gpu::Tiling;
    use latent::kernels::reduce;
    let gpu = check::shared_gpu();
    let bits = |b: &latent::gpu::GpuBuffer, len| {
        check::download(gpu, b, len)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    for (rows, cols) in [(16 * 64, 784), (16 * 256, 49), (7, 1000), (3, 1)] {
        let x = check::upload(gpu, "x", &TestRng::new(9).uniform_vec(rows * cols, -1.0, 1.0)).unwrap();
        let mut sums = Vec::new();
        for tiling in [Tiling::Workgroup, Tiling::Registers] {
            let out = check::poisoned(gpu, "out", rows).unwrap();
            gpu.run(&[&reduce::sum_cols_tiled(gpu, tiling, &out, &x, rows, cols).unwrap()])
                .unwrap();
            sums.push(bits(&out, rows));
        }
        assert_eq!(sums[0], sums[1], "sum_cols R={rows} C={cols}");
    }
    let n = 300_007;
    let x = check::upload(gpu, "x", &TestRng::new(10).uniform_vec(n, -1.0, 1.0)).unwrap();
    let partials = check::poisoned(gpu, "partials", reduce::sum_all_partials(n)).unwrap();
    let mut totals = Vec::new();
    for tiling in [Tiling::Workgroup, Tiling::Registers] {
        let out = check::poisoned(gpu, "out", 1).unwrap();
        let [first, second] = reduce::sum_all_tiled(gpu, tiling, &out, &partials, &x, n).unwrap();
        gpu.run(&[&first, &second]).unwrap();
        totals.push(bits(&out, 1));
    }
    assert_eq!(totals[0], totals[1], "sum_all n={n}");
}
