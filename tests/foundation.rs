//! The foundation: the shader registry, uniform-struct twins, the harness itself, and the GPU context.

use latent::check::{self, compare, Tolerance};
use latent::field_offsets;
use latent::gpu::{grid_1d, BackendChoice, GpuOptions};
use latent::kernels::{activation::ActivationParams, arith::ArithParams, params_layout_mismatch};
use latent::shaders;

#[test]
fn registry_lists_every_shader_with_entry_points() {
    assert!(!shaders::ALL.is_empty());
    for shader in shaders::ALL {
        assert!(
            shader.path.starts_with("shaders/") && shader.path.ends_with(".wgsl"),
            "{}",
            shader.path
        );
        assert!(
            !shader.source.contains("// include:"),
            "{}: includes were not expanded",
            shader.path
        );
    }
    for entry in shaders::ENTRY_POINTS {
        assert!(entry.invocations() >= 1, "{}", entry.qualified_name());
        let mut numbers: Vec<u32> = entry.bindings.iter().map(|b| b.binding).collect();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            entry.bindings.len(),
            "{}: duplicate bindings",
            entry.qualified_name()
        );
    }
    let relu = shaders::find("activation::relu_forward").expect("relu_forward in the registry");
    assert_eq!(relu.workgroup_size, [256, 1, 1]);
    let names: Vec<&str> = relu.bindings.iter().map(|b| b.name).collect();
    assert_eq!(names, ["params", "out", "x"]);
}

/// Uniform structs exist twice (WGSL and Rust): their sizes and offsets must agree.
#[test]
fn params_structs_match_their_wgsl_twins() {
    let activation = field_offsets!(ActivationParams, [n, slope, _pad0, _pad1]);
    for entry in [&shaders::activation::RELU_FORWARD, &shaders::activation::SILU_BACKWARD] {
        let mismatch = params_layout_mismatch(entry, size_of::<ActivationParams>(), &activation);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let arith = field_offsets!(ArithParams, [n, channels, inner, _pad, alpha, beta, _pad1, _pad2]);
    let mismatch = params_layout_mismatch(&shaders::arith::ADD_CHANNEL_BIAS, size_of::<ArithParams>(), &arith);
    assert!(mismatch.is_none(), "{}", mismatch.unwrap());
}

#[test]
fn comparison_reports_mismatches_and_nan() {
    let ok = compare(&[1.0, 2.0], &[1.0, 2.0 + 1e-7], Tolerance::ELEMENTWISE);
    assert!(ok.passed(), "{ok}");
    let bad = compare(&[1.0, f32::NAN, 3.5], &[1.0, 2.0, 3.0], Tolerance::ELEMENTWISE);
    assert!(!bad.passed());
    assert_eq!(bad.mismatch_count, 2);
    assert_eq!(
        bad.first_mismatches[0].index, 1,
        "a NaN (an unwritten, poisoned element) is a mismatch"
    );
    let report = bad.to_string();
    assert!(
        report.contains("2 of 3 elements out of tolerance") && report.contains("[2] gpu 3.5"),
        "{report}"
    );
    let frobenius = compare(&[1.0, 1.0], &[1.0, 1.0001], Tolerance::ACCUMULATED);
    assert!(
        !frobenius.passed(),
        "relative Frobenius bound 1e-5 must catch a 7e-5 error"
    );
}

#[test]
fn finite_differences_of_a_known_function() {
    // f(x) = x0^2 * x1  =>  df/dx0 = 2 x0 x1, df/dx1 = x0^2
    let grad = check::finite_difference_gradient(&[3.0, 2.0], 1e-5, |x| x[0] * x[0] * x[1]);
    assert!(
        (grad[0] - 12.0).abs() < 1e-6 && (grad[1] - 9.0).abs() < 1e-6,
        "{grad:?}"
    );
}

#[test]
fn grid_folds_into_two_dimensions_past_the_limit() {
    assert_eq!(grid_1d(1, 256, 65535), [1, 1, 1]);
    assert_eq!(grid_1d(257, 256, 65535), [2, 1, 1]);
    let [x, y, _] = grid_1d(256 * 100_000, 256, 65535);
    assert!(x <= 65535 && y >= 2 && (x as u64 * y as u64) >= 100_000);
}

#[test]
fn backend_names_parse_and_unknown_ones_are_explained() {
    assert_eq!("Vulkan".parse::<BackendChoice>().unwrap(), BackendChoice::Vulkan);
    assert_eq!("dx12".parse::<BackendChoice>().unwrap(), BackendChoice::Dx12);
    let error = "cuda".parse::<BackendChoice>().unwrap_err().to_string();
    assert!(error.contains("vulkan, metal, dx12, gl"), "{error}");
    let options = GpuOptions::resolve(Some("metal"), Some("H100")).unwrap();
    assert_eq!(options.backend, Some(BackendChoice::Metal));
    assert_eq!(options.adapter.as_deref(), Some("H100"));
}

#[test]
fn missing_adapter_is_an_error_that_lists_what_exists() {
    let options = GpuOptions::resolve(None, Some("no-such-adapter-xyz")).unwrap();
    let error = latent::gpu::Gpu::new(&options).unwrap_err().to_string();
    assert!(
        error.contains("no-such-adapter-xyz") && error.contains("latent info"),
        "{error}"
    );
}

#[test]
fn binding_count_mismatch_is_an_error_not_a_panic() {
    let gpu = check::shared_gpu();
    let x = check::upload(gpu, "x", &[1.0]).unwrap();
    let error = gpu
        .dispatch_1d(&shaders::activation::RELU_FORWARD, &[&x], 1)
        .unwrap_err()
        .to_string();
    assert!(error.contains("takes 3 buffers (params, out, x)"), "{error}");
}

#[test]
fn oversized_buffer_is_refused_with_the_limit() {
    let gpu = check::shared_gpu();
    let limit = gpu.limits.max_storage_buffer_binding_size;
    let error = gpu
        .buffer("huge", latent::gpu::BufferRole::Activations, limit + 4)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("huge") && error.contains(&limit.to_string()) && error.contains("smaller batch"),
        "{error}"
    );
}
