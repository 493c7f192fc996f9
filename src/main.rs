//! The `latent` command line (see shared/spec/cli.md). Results go to stdout (one JSON object with `--json`),
//! progress and diagnostics to stderr.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use latent::bench::{self, KernelBenchOptions, TrainBenchOptions, Workload};
use latent::check::{self, CheckOutcome};
use latent::commands;
use latent::gpu::{self, DeviceSummary, Gpu, GpuOptions};
use latent::models::ModelKind;
use latent::parallel::{self, Group};
use latent::peak::{Peak, PeakOptions};
use latent::profile::{self, ProfileOptions};
use latent::recipe::{DiffusionOptions, EvalOptions, InpaintRequest, InpaintSource, SampleRequest};
use latent::train::{self, TrainRequest};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "latent",
    version,
    about = "Train and sample latent-variable generative models on any GPU"
)]
struct Cli {
    #[command(flatten)]
    device: DeviceArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct DeviceArgs {
    /// Graphics API: vulkan, metal, dx12 or gl (default: every one available, fastest adapter first).
    #[arg(long, global = true, env = gpu::BACKEND_ENV)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (case-insensitive); `latent info` lists them.
    #[arg(long, global = true, env = gpu::ADAPTER_ENV)]
    adapter: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter, the one chosen, its features and the limits latent cares about.
    Info {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Train a model (ae, vae, classifier, gan, ddpm, wae) with the defaults of models.md on the embedded data
    /// unless --data.
    Train {
        #[command(flatten)]
        request: TrainRequest,
        /// Print a JSON summary on stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// A run's metrics on the whole test set (losses, likelihood bounds; FID and the sliced Wasserstein distance of
    /// samples for the models that generate).
    Eval {
        #[arg(long)]
        run: PathBuf,
        #[command(flatten)]
        options: EvalOptions,
        #[arg(long)]
        json: bool,
    },
    /// Generate images: grid.png (RGB for colour runs) and samples.npy ([N, C, H, W] float32 in [0, 1]; the run's
    /// image shape, 1x28x28 for MNIST).
    Sample {
        #[arg(long)]
        run: PathBuf,
        #[command(flatten)]
        request: SampleRequest,
        #[arg(long)]
        json: bool,
    },
    /// The forward (noising) process of a ddpm run on test images at t = 0 .. 999: diffuse.png.
    Diffuse {
        #[arg(long)]
        run: PathBuf,
        /// Test images (rows).
        #[arg(long, default_value_t = 8)]
        n: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Regenerate the masked part of an image with a ddpm run (mask: white keeps, black regenerates):
    /// inpaint.png (original | masked | completions) and inpainted.npy.
    Inpaint {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, required_unless_present = "demo", requires = "mask")]
        image: Option<PathBuf>,
        #[arg(long, requires = "image")]
        mask: Option<PathBuf>,
        /// Use the first test images with built-in masks (a centred box, the lower half).
        #[arg(long, conflicts_with_all = ["image", "mask"])]
        demo: bool,
        /// Completions per image.
        #[arg(long, default_value_t = 4)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        diffusion: DiffusionOptions,
        /// RePaint's resamplings r: after every j-th step, jump back j steps (re-noising) and denoise them again,
        /// r - 1 times, so the new region joins the known one (1: plain inpainting; RePaint uses 10).
        #[arg(long, default_value_t = 1)]
        resample: usize,
        /// RePaint's jump length j, in the sampler's steps (RePaint uses 10 of 250).
        #[arg(long, default_value_t = 5)]
        jump: usize,
        #[arg(long)]
        json: bool,
    },
    /// Test images beside their reconstructions (ae, vae, wae): reconstruct.png.
    Reconstruct {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value_t = 32)]
        n: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Straight walks in latent space between pairs of test images (ae, vae, wae; the gan between prior codes):
    /// interpolate.png.
    Interpolate {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value_t = 8)]
        pairs: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run every kernel against its CPU twin on the chosen adapter and print a pass/fail table.
    Check {
        /// Only kernels whose name contains this text (e.g. `activation` or `arith::axpy`).
        #[arg(long)]
        filter: Option<String>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Time every kernel of MODEL's training step with GPU timestamps: a table per kernel and per op.
    Profile(ProfileArgs),
    /// Kernel throughput or training-step time on the chosen adapter.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Args)]
struct ProfileArgs {
    /// ae, vae, classifier, gan, ddpm or wae (the wae's default regulariser, mmd)
    model: String,
    /// Timed training steps (after the warm-up).
    #[arg(long, default_value_t = 5)]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also print the table per op (each dispatch's step label).
    #[arg(long)]
    ops: bool,
    /// Write a Chrome trace-event JSON file (open it in ui.perfetto.dev).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// GFLOP/s of matmul at square sizes and of the default models' linear and conv shapes, forward and both
    /// gradients (median of repeats after warm-up).
    Kernels(KernelBenchArgs),
    /// Median training-step time and images/s of every default model.
    Train(TrainBenchArgs),
    /// MB/s of the data-parallel gradient exchange at every default model's gradient size (run it under
    /// `mpirun -n K` for K ranks; on one process it is a copy).
    Allreduce(AllReduceBenchArgs),
    /// The adapter's ceilings, each from a purpose-written kernel: f32 (and f16) FMA throughput, storage-buffer
    /// read, write and copy bandwidth; cached per adapter and driver for the roofline columns of `profile` and
    /// `bench kernels`.
    Peak(PeakBenchArgs),
}

#[derive(Args)]
struct PeakBenchArgs {
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AllReduceBenchArgs {
    /// Timed exchanges per model (after one warm-up).
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KernelBenchArgs {
    /// Largest square matmul (default 4096 on a GPU, 1024 on a CPU driver).
    #[arg(long)]
    max_size: Option<usize>,
    /// Batch of the linear and conv shapes.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed repeats per kernel (default 10 on a GPU, 3 on a CPU driver).
    #[arg(long)]
    repeats: Option<usize>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainBenchArgs {
    /// Timed steps per model, after 5 warm-up steps on a GPU or 3 on a CPU driver (default 50 on a GPU, 10 on a CPU driver).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Only these models (repeatable; default: all).
    #[arg(long)]
    model: Vec<String>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info { json } => info(&cli.device, *json),
        Command::Check { filter, json } => run_checks(&cli.device, filter.as_deref(), *json),
        Command::Profile(args) => run_profile(&cli.device, args),
        Command::Bench { what } => match what {
            BenchCommand::Kernels(args) => bench_kernels(&cli.device, args),
            BenchCommand::Train(args) => bench_train(&cli.device, args),
            BenchCommand::Allreduce(args) => bench_allreduce(&cli.device, args),
            BenchCommand::Peak(args) => bench_peak(&cli.device, args.json),
        },
        Command::Train { request, json } => train(&cli.device, request, *json),
        Command::Eval { run, options, json } => with_gpu(
            &cli.device,
            |gpu| Ok(commands::evaluate(gpu, run, options)?),
            *json,
            print_eval,
        ),
        Command::Sample { run, request, json } => with_gpu(
            &cli.device,
            |gpu| {
                let request = SampleRequest {
                    progress: std::io::stderr().is_terminal(),
                    ..request.clone()
                };
                Ok(commands::sample(gpu, run, &request)?)
            },
            *json,
            print_files,
        ),
        Command::Diffuse { run, n, out, json } => with_gpu(
            &cli.device,
            |gpu| Ok(commands::diffuse(gpu, run, *n, out.clone())?),
            *json,
            print_files,
        ),
        Command::Inpaint {
            run,
            image,
            mask,
            demo,
            n,
            seed,
            out,
            diffusion,
            resample,
            jump,
            json,
        } => with_gpu(
            &cli.device,
            |gpu| {
                let source = match (image, mask, demo) {
                    (Some(image), Some(mask), false) => InpaintSource::Files {
                        image: image.clone(),
                        mask: mask.clone(),
                    },
                    _ => InpaintSource::Demo { images: 4 },
                };
                let request = InpaintRequest {
                    source,
                    n: *n,
                    seed: *seed,
                    out: out.clone(),
                    diffusion: diffusion.clone(),
                    resample: *resample,
                    jump: *jump,
                    progress: std::io::stderr().is_terminal(),
                };
                Ok(commands::inpaint(gpu, run, &request)?)
            },
            *json,
            print_files,
        ),
        Command::Reconstruct { run, n, out, json } => with_gpu(
            &cli.device,
            |gpu| Ok(commands::reconstruct(gpu, run, *n, out.clone())?),
            *json,
            print_files,
        ),
        Command::Interpolate {
            run,
            pairs,
            steps,
            out,
            json,
        } => with_gpu(
            &cli.device,
            |gpu| Ok(commands::interpolate(gpu, run, *pairs, *steps, out.clone())?),
            *json,
            print_files,
        ),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn options(device: &DeviceArgs) -> Result<GpuOptions> {
    Ok(GpuOptions::resolve(
        device.backend.as_deref(),
        device.adapter.as_deref(),
    )?)
}

#[derive(Serialize)]
struct InfoReport {
    adapters: Vec<gpu::AdapterSummary>,
    chosen: Option<DeviceSummary>,
    /// The chosen adapter's cached ceilings (`latent bench peak`), if measured.
    ceilings: Option<Peak>,
    error: Option<String>,
}

fn info(device: &DeviceArgs, json: bool) -> Result<ExitCode> {
    let options = options(device)?;
    let adapters = gpu::list_adapters(&options);
    let opened = Gpu::new(&options);
    let report = InfoReport {
        adapters,
        chosen: opened.as_ref().ok().map(Gpu::summary),
        ceilings: opened.as_ref().ok().and_then(Peak::cached),
        error: opened.as_ref().err().map(|e| e.to_string()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("Adapters:");
        if report.adapters.is_empty() {
            println!("  (none)");
        }
        for a in &report.adapters {
            println!(
                "  {} [{}, {}] driver: {} {}",
                a.name, a.backend, a.device_type, a.driver, a.driver_info
            );
        }
        if let Some(chosen) = &report.chosen {
            let a = &chosen.adapter;
            println!("\nChosen: {} ({}, {})", a.name, a.backend, a.device_type);
            println!(
                "  features: {}",
                if chosen.features.is_empty() {
                    "none".into()
                } else {
                    chosen.features.join(", ")
                }
            );
            println!(
                "  subgroup size: {}..{}",
                chosen.subgroup_size[0], chosen.subgroup_size[1]
            );
            println!("  kernels: {}", chosen.kernels);
            println!(
                "  max storage buffer binding: {}",
                bytes(chosen.max_storage_buffer_binding_size)
            );
            println!("  max buffer size: {}", bytes(chosen.max_buffer_size));
            println!(
                "  workgroup memory: {}",
                bytes(chosen.max_compute_workgroup_storage_size as u64)
            );
            println!(
                "  invocations per workgroup: {} (size up to {:?})",
                chosen.max_compute_invocations_per_workgroup, chosen.max_compute_workgroup_size
            );
            println!(
                "  workgroups per dimension: {}",
                chosen.max_compute_workgroups_per_dimension
            );
            println!(
                "  storage buffers per stage: {}",
                chosen.max_storage_buffers_per_shader_stage
            );
            match &report.ceilings {
                Some(peak) => println!("  measured ceilings: {}", peak.summary()),
                None => println!(
                    "  measured ceilings: not yet on this adapter and driver; `latent bench peak` measures them"
                ),
            }
        }
    }
    match report.error {
        Some(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= 1 << 30 && n % (1 << 30) == 0 {
        format!("{} GiB", n >> 30)
    } else if n >= MIB {
        format!("{:.0} MiB ({n} bytes)", n as f64 / MIB as f64)
    } else {
        format!("{} KiB ({n} bytes)", n / 1024)
    }
}

#[derive(Serialize)]
struct CheckReport {
    adapter: String,
    passed: usize,
    failed: usize,
    checks: Vec<CheckOutcome>,
}

fn run_checks(device: &DeviceArgs, filter: Option<&str>, json: bool) -> Result<ExitCode> {
    let gpu = Gpu::new(&options(device)?)?;
    eprintln!("Checking kernels on {}", gpu.describe());
    let checks: Vec<_> = check::all_checks()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.kernel.contains(f)))
        .collect();
    if checks.is_empty() {
        return Err(format!("no kernel matches --filter {:?}", filter.unwrap_or_default()).into());
    }
    let mut outcomes = Vec::new();
    // Columns as wide as their longest entry, so that long kernel names and shapes stay aligned.
    let name_width = checks.iter().map(|c| c.kernel.len()).max().unwrap_or(0);
    let shape_width = checks.iter().map(|c| c.shape.len()).max().unwrap_or(0);
    if !json {
        println!(
            "{:<name_width$} {:<shape_width$} {:>11} {:>11}  result",
            "kernel", "shape", "max |diff|", "rel. frob."
        );
    }
    for check in &checks {
        let outcome = check.execute(&gpu);
        if !json {
            println!(
                "{:<name_width$} {:<shape_width$} {:>11.3e} {:>11.3e}  {}",
                outcome.kernel,
                outcome.shape,
                outcome.max_abs_diff,
                outcome.relative_frobenius,
                if outcome.passed { "pass" } else { "FAIL" }
            );
            if let Some(detail) = &outcome.detail {
                println!("    {}", detail.replace('\n', "\n    "));
            }
        }
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let report = CheckReport {
        adapter: gpu.describe(),
        passed: outcomes.len() - failed,
        failed,
        checks: outcomes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "\n{} passed, {} failed on {}",
            report.passed, report.failed, report.adapter
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn train(device: &DeviceArgs, request: &TrainRequest, json: bool) -> Result<ExitCode> {
    let (group, local_rank) = parallel::join()?;
    let (rank, ranks) = (group.rank(), group.size());
    let gpu = match Gpu::new_for_local_rank(&options(device)?, local_rank) {
        Ok(gpu) => gpu,
        Err(error) if ranks > 1 => fail_rank(group.as_ref(), &error.to_string(), 1),
        Err(error) => return Err(error.into()),
    };
    // The first Ctrl-C finishes the step, writes a checkpoint and exits with 130; a second one exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to exit at once)");
    })?;
    let request = TrainRequest {
        progress: std::io::stderr().is_terminal(),
        interrupt: Some(interrupt),
        ..request.clone()
    };
    let summary = match train::train_in(&gpu, &request, group.as_ref()) {
        Ok(summary) => summary,
        // Every rank failed alike (at the start, on a NaN the ranks share, on Ctrl-C): rank 0 says why, and all
        // end normally.
        Err(error) if error.same_on_every_rank() => {
            if rank == 0 {
                eprintln!("error: {error}");
            }
            return Ok(ExitCode::from(error.exit_code()));
        }
        // One rank failed where the others cannot see it: it says why and stops them all.
        Err(error) if ranks > 1 => fail_rank(group.as_ref(), &error.to_string(), error.exit_code() as i32),
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(error.exit_code()));
        }
    };
    if rank > 0 {
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!("Run written to {}", summary.run.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints this rank's failure and ends every rank of the run with status `code`.
fn fail_rank(group: &dyn Group, message: &str, code: i32) -> ! {
    eprintln!("error on rank {} of {}: {message}", group.rank(), group.size());
    group.abort(code)
}

fn bench_allreduce(device: &DeviceArgs, args: &AllReduceBenchArgs) -> Result<ExitCode> {
    let (group, local_rank) = parallel::join()?;
    let gpu = Gpu::new_for_local_rank(&options(device)?, local_rank)?;
    let leader = group.rank() == 0;
    if leader {
        eprintln!(
            "Gradient exchange (all-gather, sum in rank order, scale) over {} rank(s) on {}, median of {} after a \
             warm-up",
            group.size(),
            gpu.describe(),
            args.repeats
        );
    }
    let header = format!(
        "{:<12} {:>12} {:>6} {:>11} {:>10}",
        "model", "bytes", "ranks", "median ms", "MB/s"
    );
    if leader {
        table_line(args.json, &header);
    }
    let results = bench::bench_allreduce(&gpu, group.as_ref(), args.repeats)?;
    if leader {
        for r in &results {
            let line = format!(
                "{:<12} {:>12} {:>6} {:>11.3} {:>10.1}",
                r.model, r.bytes, r.ranks, r.median_ms, r.mb_per_s
            );
            table_line(args.json, &line);
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the GPU, runs `work`, and prints its JSON result (`--json`) or a human summary.
fn with_gpu(
    device: &DeviceArgs,
    work: impl FnOnce(&Gpu) -> Result<serde_json::Value>,
    json: bool,
    human: fn(&serde_json::Value),
) -> Result<ExitCode> {
    let gpu = Gpu::new(&options(device)?)?;
    let result = work(&gpu)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        human(&result);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_files(result: &serde_json::Value) {
    for key in ["grid", "samples", "image"] {
        if let Some(path) = result[key].as_str() {
            println!("wrote {path}");
        }
    }
    if let (Some(shown), Some(n)) = (result["grid_images"].as_u64(), result["n"].as_u64()) {
        if shown < n {
            println!("(grid.png shows the first {shown} of {n} samples; samples.npy holds all of them)");
        }
    }
}

fn print_eval(report: &serde_json::Value) {
    println!(
        "{} run {} (step {}), {} test images, on {}",
        report["model"], report["run"], report["step"], report["test_images"], report["adapter"]
    );
    let rows = [
        ("negative_elbo_nats", "test negative ELBO (nats/image)"),
        ("negative_elbo_bits_per_dim", "  in bits/dim"),
        ("reconstruction_nats", "  reconstruction term (BCE)"),
        ("kl_nats", "  KL term"),
        ("iwae_nll_nats", "IWAE negative log-likelihood (nats/image)"),
        ("iwae_nll_bits_per_dim", "  in bits/dim"),
        ("bce_nats", "test BCE (nats/image)"),
        ("reconstruction_l2", "test reconstruction cost |x - x̂|² per image"),
        ("lambda_mmd_batch", "  λ MMD within test batches"),
        ("adversarial", "  adversarial term BCE(D(z), 1)"),
        ("test_mmd", "MMD(test codes, prior samples)"),
        ("cross_entropy", "test cross-entropy"),
        ("accuracy", "test accuracy"),
        ("d_x", "mean D(x) on the test set"),
        ("d_g_z", "mean D(G(z)) on as many samples"),
        ("jsd_nats", "Jensen-Shannon estimate (nats)"),
        ("fid", "FID against the test set"),
        ("fid_floor", "  floor (real training images)"),
        ("swd", "sliced Wasserstein distance SW_2 to the test set"),
        ("swd_floor", "  floor (real training images)"),
        ("class_entropy_nats", "class entropy of the samples (nats)"),
        ("test_mse_ema", "test epsilon-MSE, EMA weights"),
        ("test_mse", "test epsilon-MSE, trained weights"),
    ];
    for (key, label) in rows {
        if let Some(value) = report[key].as_f64() {
            println!("{label:<44} {value:.4}");
        }
    }
    if let Some(block) = report["mmd_block"].as_u64() {
        println!(
            "(the {} run's test MMD: inverse multiquadratic kernel, mean over blocks of {block} codes)",
            report["regularizer"]
        );
    }
    if let Some(k) = report["iwae_k"].as_u64() {
        println!("(IWAE with k = {k} samples per image)");
    }
    if let Some(n) = report["fid_n"].as_u64() {
        println!(
            "(FID over {n} samples and {n} real images, features of {}; class histogram {})",
            report["fid_classifier"], report["class_histogram"]
        );
    }
    if let (Some(n), Some(l)) = (report["swd_n"].as_u64(), report["swd_projections"].as_u64()) {
        println!("(SW_2 over {n} samples and {n} test images, {l} random directions, pixels in [0, 1])");
    }
}

fn run_profile(device: &DeviceArgs, args: &ProfileArgs) -> Result<ExitCode> {
    let ProfileArgs {
        batch, seed, ops, json, ..
    } = *args;
    let profile_options = &ProfileOptions {
        warmup: args.warmup,
        steps: args.steps,
    };
    let kind = bench::model_kind(&args.model)?;
    let gpu = Gpu::new(&options(device)?)?;
    eprintln!("Profiling {kind} (batch {batch}) on {}", gpu.describe());
    let workload = Workload::new(&gpu, kind, batch, seed)?;
    eprintln!(
        "{} dispatches per step; {} warm-up steps, then {} timed",
        workload.dispatches_per_step(),
        profile_options.warmup,
        profile_options.steps
    );
    let report =
        profile::profile(&gpu, &workload.plan_refs(), profile_options)?.with_ceilings(Peak::load_or_measure(&gpu)?);
    if let Some(path) = &args.trace {
        report.write_trace(path)?;
        eprintln!("trace written to {} (open it in ui.perfetto.dev)", path.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(notice) = &report.notice {
            eprintln!("note: {notice}");
        }
        print!("{}", report.table(ops));
    }
    Ok(ExitCode::SUCCESS)
}

/// A benchmark table's line: on stdout, or on stderr when stdout carries the JSON report.
fn table_line(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

fn bench_peak(device: &DeviceArgs, json: bool) -> Result<ExitCode> {
    let gpu = Gpu::new(&options(device)?)?;
    let options = PeakOptions::for_gpu(&gpu);
    eprintln!(
        "Ceilings of {} (FMA: {} invocations, each dispatch at least {} ms; bandwidth: {} per dispatch; median of {})",
        gpu.describe(),
        options.invocations,
        options.min_ms,
        bytes(options.bandwidth_bytes),
        options.repeats
    );
    let peak = Peak::measure(&gpu, &options)?;
    let path = peak.save(&gpu);
    if json {
        println!("{}", serde_json::to_string_pretty(&peak)?);
    } else {
        println!("f32 FMA     {:>10.1} GFLOP/s", peak.fma_f32_gflops);
        match peak.fma_f16_gflops {
            Some(g) => println!("f16 FMA     {g:>10.1} GFLOP/s"),
            None => println!("f16 FMA     not offered (no SHADER_F16)"),
        }
        println!("read        {:>10.1} GB/s", peak.read_gb_per_s);
        println!("write       {:>10.1} GB/s", peak.write_gb_per_s);
        println!("copy        {:>10.1} GB/s (bytes read + written)", peak.copy_gb_per_s);
        println!(
            "ridge point {:>10.2} FLOP/byte (below it a kernel is bound by bandwidth)",
            peak.fma_f32_gflops / peak.bandwidth()
        );
    }
    match path {
        Ok(path) => eprintln!("cached at {}", path.display()),
        Err(e) => eprintln!("warning: could not cache the ceilings: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_kernels(device: &DeviceArgs, args: &KernelBenchArgs) -> Result<ExitCode> {
    let KernelBenchArgs {
        max_size,
        batch,
        repeats,
        json,
    } = *args;
    let gpu = Gpu::new(&options(device)?)?;
    let mut options = KernelBenchOptions::for_gpu(&gpu);
    options.batch = batch;
    options.max_size = max_size.unwrap_or(options.max_size);
    options.repeats = repeats.unwrap_or(options.repeats).max(1);
    eprintln!(
        "Kernel throughput on {} (matmul up to {}, batch {}, median of {} after {} warm-up)",
        gpu.describe(),
        options.max_size,
        options.batch,
        options.repeats,
        options.warmup
    );
    let peak = Peak::load_or_measure(&gpu)?;
    eprintln!("ceilings: {}", peak.summary());
    let header = format!(
        "{:<34} {:<28} {:<30} {:>11} {:>9} {:>8} {:>9} {:>8}",
        "benchmark", "shape", "kernel", "median µs", "GFLOP/s", "GB/s", "roofline", "bound"
    );
    table_line(json, &header);
    let mut print = |r: &bench::KernelResult| {
        let line = format!(
            "{:<34} {:<28} {:<30} {:>11.1} {:>9.2} {:>8.2} {:>9} {:>8}",
            r.name,
            r.shape,
            r.kernel,
            r.median_us,
            r.gflops,
            r.gb_per_s,
            profile::percent(r.roofline_percent),
            r.bound
        );
        table_line(json, &line);
    };
    let report = bench::kernels(&gpu, &options, &peak, &mut print)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{} on {} in {:.0} s", report.timing, report.adapter, report.seconds);
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_train(device: &DeviceArgs, args: &TrainBenchArgs) -> Result<ExitCode> {
    let (models, batch, json) = (&args.model, args.batch, args.json);
    let kinds: Vec<ModelKind> = if models.is_empty() {
        ModelKind::ALL.to_vec()
    } else {
        models
            .iter()
            .map(|m| bench::model_kind(m))
            .collect::<std::result::Result<_, _>>()?
    };
    let gpu = Gpu::new(&options(device)?)?;
    let mut options = TrainBenchOptions::for_gpu(&gpu);
    options.batch = batch;
    options.steps = args.steps.unwrap_or(options.steps);
    eprintln!(
        "Training-step time on {} (batch {}, median of {} steps after {} warm-up)",
        gpu.describe(),
        options.batch,
        options.steps,
        options.warmup
    );
    let header = format!(
        "{:<12} {:>6} {:>11} {:>11} {:>10} {:>11}",
        "model", "batch", "dispatches", "median ms", "min ms", "images/s"
    );
    table_line(json, &header);
    let mut print = |r: &bench::TrainResult| {
        let line = format!(
            "{:<12} {:>6} {:>11} {:>11.2} {:>10.2} {:>11.1}",
            r.model, r.batch, r.dispatches_per_step, r.median_ms, r.min_ms, r.images_per_s
        );
        table_line(json, &line);
    };
    let report = bench::train(&gpu, &kinds, &options, &mut print)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
