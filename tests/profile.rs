//! The profiler and the benchmarks: complete tables, consistent counts, a trace that parses. No timing thresholds:
//! speed is what the benchmarks print, never what a test asserts.

use std::collections::BTreeSet;

use latent::bench::{self, KernelBenchOptions, TrainBenchOptions, Workload};
use latent::check;
use latent::models::ModelKind;
use latent::peak::{Peak, PeakOptions};
use latent::profile::{self, query_slot, ProfileError, ProfileOptions, Profiler, TimingMethod, MAX_QUERIES};

const STEPS: u64 = 2;

fn vae_profile() -> (Workload, profile::Profile) {
    let gpu = check::shared_gpu();
    let workload = Workload::new(gpu, ModelKind::Vae, 8, 3).unwrap();
    let options = ProfileOptions {
        warmup: 1,
        steps: STEPS,
    };
    let report = profile::profile(gpu, &workload.plan_refs(), &options).unwrap();
    (workload, report)
}

#[test]
fn vae_table_lists_every_kernel_once_with_shares_summing_to_100() {
    let (workload, report) = vae_profile();
    let plan = workload.plan_refs()[0];
    eprintln!("{}", report.table(true));

    let in_plan: BTreeSet<String> = plan.steps.iter().map(|s| s.dispatch.name()).collect();
    let in_table: BTreeSet<String> = report.kernels.iter().map(|k| k.kernel.clone()).collect();
    assert_eq!(in_plan, in_table, "every entry point of the plan, and only those");
    assert_eq!(report.kernels.len(), in_table.len(), "one row per kernel");

    let calls: u64 = report.kernels.iter().map(|k| k.calls).sum();
    assert_eq!(calls, plan.steps.len() as u64 * STEPS);
    assert_eq!(report.dispatches, calls);
    assert_eq!(report.steps, STEPS as usize);

    let shares: f64 = report.kernels.iter().map(|k| k.share_percent).sum();
    assert!((shares - 100.0).abs() <= 1.0, "kernel shares sum to {shares}%");
    let op_shares: f64 = report.ops.iter().map(|o| o.share_percent).sum();
    assert!((op_shares - 100.0).abs() <= 1.0, "op shares sum to {op_shares}%");
    let op_calls: u64 = report.ops.iter().map(|o| o.calls).sum();
    assert_eq!(op_calls, calls);

    assert!(
        report.kernels.windows(2).all(|w| w[0].total_ms >= w[1].total_ms),
        "sorted by total time"
    );
    let kernel_ms: f64 = report.kernels.iter().map(|k| k.total_ms).sum();
    let per_step: f64 = report.per_step.iter().map(|s| s.kernels_ms).sum();
    assert!((kernel_ms - per_step).abs() <= 1e-6 * kernel_ms.max(1.0));
    // Matmuls have their flops counted; the table turns them into a throughput.
    let matmul = report
        .kernels
        .iter()
        .find(|k| k.kernel.starts_with("matmul::matmul_nt") || k.kernel.starts_with("matmul_subgroup::matmul_nt"))
        .unwrap();
    assert!(matmul.gflops.is_some());

    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert!(json["kernels"].as_array().unwrap().len() == report.kernels.len());
}

#[test]
fn trace_has_one_event_per_profiled_dispatch() {
    let (workload, report) = vae_profile();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    report.write_trace(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = trace["traceEvents"].as_array().expect("traceEvents is an array");
    let complete: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(complete.len(), workload.plan_refs()[0].steps.len() * STEPS as usize);
    for event in &complete {
        for key in ["name", "cat", "ts", "dur", "pid", "tid", "args"] {
            assert!(event.get(key).is_some(), "event lacks {key}: {event}");
        }
        assert!(event["ts"].as_f64().unwrap() >= 0.0);
        assert!(event["dur"].as_f64().unwrap() >= 0.0);
        assert_eq!(event["tid"], 1, "one plan, one track");
    }
    // Tracks are named after their plans.
    assert!(events.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "vae"));
}

#[test]
fn every_timing_method_counts_the_same_dispatches() {
    let gpu = check::shared_gpu();
    let workload = Workload::new(gpu, ModelKind::Vae, 4, 1).unwrap();
    let plan = workload.plan_refs()[0];
    for method in [TimingMethod::PassPerDispatch, TimingMethod::CpuWallClock] {
        let mut profiler = Profiler::with_method(gpu, method);
        profiler.run(gpu, plan, 0).unwrap();
        let report = profiler.finish().unwrap();
        assert_eq!(report.dispatches, plan.steps.len() as u64, "{method:?}");
        if method == TimingMethod::CpuWallClock {
            assert!(report.notice.is_some(), "CPU timing says so");
        }
    }
}

#[test]
fn nothing_profiled_is_an_error() {
    let gpu = check::shared_gpu();
    assert!(matches!(Profiler::new(gpu).finish(), Err(ProfileError::NoSteps)));
    let options = ProfileOptions { warmup: 0, steps: 0 };
    assert!(matches!(
        profile::profile(gpu, &[], &options),
        Err(ProfileError::NoSteps)
    ));
}

#[test]
fn long_plans_spread_over_query_sets() {
    assert_eq!(query_slot(0), (0, 0));
    assert_eq!(query_slot(MAX_QUERIES - 1), (0, MAX_QUERIES - 1));
    assert_eq!(query_slot(MAX_QUERIES), (1, 0));
    assert_eq!(query_slot(2 * MAX_QUERIES + 5), (2, 5));
    assert_eq!(MAX_QUERIES % 2, 0, "a dispatch's start and end share a set");
}

#[test]
fn unknown_model_names_the_known_ones() {
    let error = bench::model_kind("gpt").unwrap_err().to_string();
    assert!(error.contains("vae") && error.contains("classifier"), "{error}");
}

#[test]
fn bench_kernels_json_parses() {
    let gpu = check::shared_gpu();
    let options = KernelBenchOptions {
        max_size: 256,
        batch: 2,
        warmup: 0,
        repeats: 1,
    };
    let mut seen = 0;
    let peak = made_up_ceilings();
    let report = bench::kernels(gpu, &options, &peak, &mut |_| seen += 1).unwrap();
    let text = serde_json::to_string(&report).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), seen);
    let expected = 1 + 3 * bench::LINEAR_SHAPES.len() + 3 * bench::CONV_SHAPES.len();
    assert_eq!(results.len(), expected);
    for r in results {
        assert!(r["gflops"].is_number(), "{r}");
        assert!(r["kernel"].as_str().unwrap().contains("::"), "{r}");
        assert!(r["roofline_percent"].as_f64().is_some_and(|p| p > 0.0), "{r}");
        assert!(["compute", "memory"].contains(&r["bound"].as_str().unwrap()), "{r}");
    }
    assert_eq!(json["ceilings"]["fma_f32_gflops"], 10.0);
}

/// Ceilings with round numbers: 10 GFLOP/s, at best 5 GB/s (the copy's).
fn made_up_ceilings() -> Peak {
    Peak {
        adapter: "made up".into(),
        version: 1,
        fma_f32_gflops: 10.0,
        fma_f16_gflops: None,
        read_gb_per_s: 4.0,
        write_gb_per_s: 2.0,
        copy_gb_per_s: 5.0,
        bandwidth_bytes: 1 << 20,
    }
}

#[test]
fn the_roofline_limit_is_the_longer_of_compute_and_memory_time() {
    let peak = made_up_ceilings();
    assert_eq!(peak.bandwidth(), 5.0);
    // 1 GFLOP takes 0.1 s at the ceiling, 1 GB 0.2 s: memory binds, and a dispatch of 1 s reached 20%.
    assert_eq!(peak.limit_ns(1_000_000_000, 1_000_000_000), 2e8);
    assert_eq!(peak.bound(1_000_000_000, 1_000_000_000), "memory");
    assert!((peak.share_percent(1_000_000_000, 1_000_000_000, 1e9).unwrap() - 20.0).abs() < 1e-12);
    // 10 GFLOP on 1 GB: compute binds (1 s), and a dispatch of 4 s reached 25%.
    assert_eq!(peak.bound(10_000_000_000, 1_000_000_000), "compute");
    assert!((peak.share_percent(10_000_000_000, 1_000_000_000, 4e9).unwrap() - 25.0).abs() < 1e-12);
    assert_eq!(peak.share_percent(0, 0, 1e9), None);
}

#[test]
fn measured_ceilings_are_positive_and_finite_and_cached_per_adapter() {
    let gpu = check::shared_gpu();
    let options = PeakOptions {
        invocations: 1024,
        min_ms: 1.0,
        bandwidth_bytes: 1 << 20,
        warmup: 0,
        repeats: 1,
    };
    let peak = Peak::measure(gpu, &options).unwrap();
    for value in [
        peak.fma_f32_gflops,
        peak.read_gb_per_s,
        peak.write_gb_per_s,
        peak.copy_gb_per_s,
    ] {
        assert!(value.is_finite() && value > 0.0, "{peak:?}");
    }
    assert_eq!(
        peak.fma_f16_gflops.is_some(),
        gpu.has(latent::shaders::Capability::F16),
        "{peak:?}"
    );
    assert_eq!(peak.adapter, gpu.describe());
    assert_eq!(peak.bandwidth_bytes, 1 << 20);

    let cache = tempfile::tempdir().unwrap();
    assert!(Peak::cached_in(cache.path(), gpu).is_none());
    let path = peak.save_in(cache.path(), gpu).unwrap();
    assert!(path.starts_with(cache.path()), "{}", path.display());
    assert_eq!(Peak::cached_in(cache.path(), gpu), Some(peak.clone()));
    // Ceilings of another adapter or an older version are measured again, not used.
    let other = Peak { version: 0, ..peak };
    other.save_in(cache.path(), gpu).unwrap();
    assert!(Peak::cached_in(cache.path(), gpu).is_none());
}

#[test]
fn bench_train_json_parses() {
    let gpu = check::shared_gpu();
    let options = TrainBenchOptions {
        batch: 2,
        warmup: 0,
        steps: 1,
        seed: 0,
    };
    let report = bench::train(gpu, &[ModelKind::Classifier], &options, &mut |_| {}).unwrap();
    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json["results"][0]["model"], "classifier");
    assert!(json["results"][0]["median_ms"].is_number());
}
