//! The `latent` command line (see shared/spec/cli.md). Results go to stdout (one JSON object with `--json`),
//! progress and diagnostics to stderr.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use latent::bench::{self, KernelBenchOptions, TrainBenchOptions, Workload};
use latent::check::{self, CheckOutcome};
use latent::generate;
use latent::gpu::{self, DeviceSummary, Gpu, GpuOptions};
use latent::models::ModelKind;
use latent::profile::{self, ProfileOptions};
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
    Train(TrainArgs),
    /// A run's metrics on the whole test set (losses, likelihood bounds; FID and the sliced Wasserstein distance of
    /// samples for the models that generate).
    Eval {
        #[arg(long)]
        run: PathBuf,
        /// Samples per image of the importance-weighted likelihood bound (vae); 0 skips it.
        #[arg(long, default_value_t = 100)]
        iwae_k: usize,
        /// Generated images for FID and the sliced Wasserstein distance (gan, vae, wae, ddpm: 50 DDIM steps
        /// each), against the test set, with the floor of as many real training images beside each; 0 skips
        /// both.
        #[arg(long, default_value_t = 1000)]
        fid_n: usize,
        /// Random directions of the sliced Wasserstein distance (SW_2 in pixel space); 0 skips it.
        #[arg(long, default_value_t = 512)]
        projections: usize,
        /// The classifier run whose features FID uses (default: one trained once per dataset and cached under
        /// $LATENT_CACHE, $XDG_CACHE_HOME/latent or ~/.cache/latent).
        #[arg(long)]
        classifier: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Generate images: grid.png and samples.npy ([N, 1, 28, 28] float32 in [0, 1]).
    Sample {
        #[arg(long)]
        run: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 64, value_parser = at_least_one)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory (default: the run directory).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        diffusion: SamplerArgs,
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
        diffusion: SamplerArgs,
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
    Profile {
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
    },
    /// Kernel throughput or training-step time on the chosen adapter.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// GFLOP/s of matmul at square sizes and of the default models' linear and conv shapes, forward and both
    /// gradients (median of repeats after warm-up).
    Kernels {
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
    },
    /// Median training-step time and images/s of every default model.
    Train {
        /// Timed steps per model (default 50 on a GPU, 3 on a CPU driver).
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
    },
}

/// How a ddpm run samples.
#[derive(Args)]
struct SamplerArgs {
    /// ddpm: `ancestral` (all 1000 timesteps) or `ddim` (eta = 0, --steps timesteps).
    #[arg(long, default_value = "ddim")]
    sampler: latent::ddpm::Sampler,
    /// ddpm: DDIM's number of steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// ddpm: sample the trained weights instead of their EMA.
    #[arg(long)]
    no_ema: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// The model: ae, vae, classifier, gan, ddpm or wae.
    model: ModelKind,
    /// Total epochs of the run (default: models.md's recipe).
    #[arg(long, value_parser = at_least_one_u64, conflicts_with = "steps")]
    epochs: Option<u64>,
    /// Total steps of the run, instead of epochs.
    #[arg(long, value_parser = at_least_one_u64)]
    steps: Option<u64>,
    /// Images per step (default 128).
    #[arg(long, value_parser = at_least_one)]
    batch: Option<usize>,
    /// Adam's learning rate (default: the model's, from models.md).
    #[arg(long, value_parser = positive_rate, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Seed of the initial weights, the shuffles and the noise (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// A dataset directory (IDX files in the MNIST layout, or a folder of images); default: embedded mnist-10k.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the run (default: runs/<model>-<date>-<time>).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Continue the run in this directory up to --epochs or --steps.
    #[arg(long, conflicts_with_all = ["run", "data", "batch", "lr", "seed"])]
    resume: Option<PathBuf>,
    /// Update the progress display every this many steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Check the loss for NaN or infinity every this many steps (0: at the end of each epoch only).
    #[arg(long, default_value_t = 50)]
    nan_check_every: u64,
    /// Also write a checkpoint every this many steps, keeping the newest --keep in checkpoints/ (0: per epoch).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Time every kernel of every step with GPU timestamps and print the per-kernel table at the end.
    #[arg(long)]
    profile: bool,
    /// With --profile, write a Chrome trace-event file (open it in ui.perfetto.dev).
    #[arg(long, requires = "profile")]
    trace: Option<PathBuf>,
    /// Periodic checkpoints to keep.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    keep: usize,
    /// wae: the latent regulariser, `mmd` (maximum mean discrepancy, the default) or `adversarial` (a latent
    /// discriminator).
    #[arg(long)]
    regularizer: Option<latent::models::wae::Regularizer>,
    /// ddpm: the noise schedule, `linear` (models.md) or `cosine`.
    #[arg(long)]
    schedule: Option<latent::models::ddpm::ScheduleKind>,
    /// ddpm: the U-Net's base width (64; smaller nets train faster).
    #[arg(long)]
    width: Option<usize>,
    /// ddpm: GroupNorm groups (8; must divide --width).
    #[arg(long)]
    groups: Option<usize>,
    /// ddpm: DDIM steps of each epoch's sample grid (20).
    #[arg(long)]
    preview_steps: Option<usize>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    json: bool,
}

/// A count that must be at least 1 (batch sizes, sample counts).
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A step or epoch total that must be at least 1.
fn at_least_one_u64(text: &str) -> std::result::Result<u64, String> {
    at_least_one(text).map(|n| n as u64)
}

/// A learning rate: a positive, finite number.
fn positive_rate(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(v) => Err(format!("must be a positive number, got {v}")),
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info { json } => info(&cli.device, *json),
        Command::Check { filter, json } => run_checks(&cli.device, filter.as_deref(), *json),
        Command::Profile {
            model,
            steps,
            warmup,
            batch,
            seed,
            ops,
            trace,
            json,
        } => run_profile(
            &cli.device,
            model,
            &ProfileOptions {
                warmup: *warmup,
                steps: *steps,
            },
            *batch,
            *seed,
            *ops,
            trace.as_deref(),
            *json,
        ),
        Command::Bench { what } => match what {
            BenchCommand::Kernels {
                max_size,
                batch,
                repeats,
                json,
            } => bench_kernels(&cli.device, *max_size, *batch, *repeats, *json),
            BenchCommand::Train {
                steps,
                batch,
                model,
                json,
            } => bench_train(&cli.device, *steps, *batch, model, *json),
        },
        Command::Train(args) => train(&cli.device, args),
        Command::Eval {
            run,
            iwae_k,
            fid_n,
            projections,
            classifier,
            json,
        } => with_gpu(
            &cli.device,
            |gpu| {
                let fid = latent::gan::FidOptions {
                    n: *fid_n,
                    classifier: classifier.clone(),
                    projections: *projections,
                };
                Ok(generate::evaluate_with(gpu, run, *iwae_k, &fid)?)
            },
            *json,
            print_eval,
        ),
        Command::Sample {
            run,
            n,
            seed,
            out,
            diffusion,
            json,
        } => with_gpu(
            &cli.device,
            |gpu| {
                if is_ddpm_run(run) {
                    return Ok(latent::ddpm::sample(
                        gpu,
                        run,
                        *n,
                        diffusion.sampler,
                        diffusion.steps,
                        *seed,
                        !diffusion.no_ema,
                        out.as_deref(),
                        std::io::stderr().is_terminal(),
                    )?);
                }
                Ok(generate::sample(gpu, run, *n, *seed, out.as_deref())?)
            },
            *json,
            print_files,
        ),
        Command::Diffuse { run, n, out, json } => with_gpu(
            &cli.device,
            |gpu| Ok(latent::ddpm::diffuse(gpu, run, *n, out.as_deref())?),
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
            json,
        } => with_gpu(
            &cli.device,
            |gpu| {
                let source = match (image, mask, demo) {
                    (Some(image), Some(mask), false) => latent::ddpm::InpaintSource::Files {
                        image: image.clone(),
                        mask: mask.clone(),
                    },
                    _ => latent::ddpm::InpaintSource::Demo { images: 4 },
                };
                Ok(latent::ddpm::inpaint(
                    gpu,
                    run,
                    &source,
                    *n,
                    diffusion.sampler,
                    diffusion.steps,
                    *seed,
                    out.as_deref(),
                    std::io::stderr().is_terminal(),
                )?)
            },
            *json,
            print_files,
        ),
        Command::Reconstruct { run, n, out, json } => with_gpu(
            &cli.device,
            |gpu| Ok(generate::reconstruct(gpu, run, *n, out.as_deref())?),
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
            |gpu| Ok(generate::interpolate(gpu, run, *pairs, *steps, out.as_deref())?),
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
    error: Option<String>,
}

fn info(device: &DeviceArgs, json: bool) -> Result<ExitCode> {
    let options = options(device)?;
    let adapters = gpu::list_adapters(&options);
    let opened = Gpu::new(&options);
    let report = InfoReport {
        adapters,
        chosen: opened.as_ref().ok().map(Gpu::summary),
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
    if !json {
        println!(
            "{:<34} {:<26} {:>11} {:>11}  result",
            "kernel", "shape", "max |diff|", "rel. frob."
        );
    }
    for check in &checks {
        let outcome = check.execute(&gpu);
        if !json {
            println!(
                "{:<34} {:<26} {:>11.3e} {:>11.3e}  {}",
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

fn train(device: &DeviceArgs, args: &TrainArgs) -> Result<ExitCode> {
    let gpu = Gpu::new(&options(device)?)?;
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
        epochs: args.epochs,
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        data: args.data.clone(),
        run: args.run.clone(),
        resume: args.resume.clone(),
        log_every: args.log_every,
        progress: std::io::stderr().is_terminal(),
        nan_check_every: args.nan_check_every,
        save_every: args.save_every,
        keep: args.keep,
        interrupt: Some(interrupt),
        profile: args.profile,
        trace: args.trace.clone(),
        regularizer: args.regularizer,
        ..TrainRequest::new(args.model)
    };
    let outcome = if args.model == ModelKind::Ddpm {
        let options = latent::ddpm::DdpmOptions {
            schedule: args.schedule,
            width: args.width,
            groups: args.groups,
            preview_steps: args.preview_steps,
        };
        latent::ddpm::train(&gpu, &request, &options)
    } else {
        train::train(&gpu, &request)
    };
    let summary = match outcome {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(error.exit_code()));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!("Run written to {}", summary.run.display());
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

/// Whether `run` holds a ddpm run (its config.json says so); errors surface when the run is opened.
fn is_ddpm_run(run: &std::path::Path) -> bool {
    latent::run::RunDir::open(run)
        .and_then(|dir| dir.config())
        .is_ok_and(|config| config.model == ModelKind::Ddpm.name())
}

fn print_files(result: &serde_json::Value) {
    for key in ["grid", "samples", "image"] {
        if let Some(path) = result[key].as_str() {
            println!("wrote {path}");
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

#[allow(clippy::too_many_arguments)]
fn run_profile(
    device: &DeviceArgs,
    model: &str,
    profile_options: &ProfileOptions,
    batch: usize,
    seed: u64,
    ops: bool,
    trace: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode> {
    let kind = bench::model_kind(model)?;
    let gpu = Gpu::new(&options(device)?)?;
    eprintln!("Profiling {kind} (batch {batch}) on {}", gpu.describe());
    let workload = Workload::new(&gpu, kind, batch, seed)?;
    eprintln!(
        "{} dispatches per step; {} warm-up steps, then {} timed",
        workload.dispatches_per_step(),
        profile_options.warmup,
        profile_options.steps
    );
    let report = profile::profile(&gpu, &workload.plan_refs(), profile_options)?;
    if let Some(path) = trace {
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

fn bench_kernels(
    device: &DeviceArgs,
    max_size: Option<usize>,
    batch: usize,
    repeats: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
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
    let header = format!(
        "{:<34} {:<28} {:<30} {:>11} {:>9} {:>8}",
        "benchmark", "shape", "kernel", "median µs", "GFLOP/s", "GB/s"
    );
    if json {
        eprintln!("{header}");
    } else {
        println!("{header}");
    }
    let mut print = |r: &bench::KernelResult| {
        let line = format!(
            "{:<34} {:<28} {:<30} {:>11.1} {:>9.2} {:>8.2}",
            r.name, r.shape, r.kernel, r.median_us, r.gflops, r.gb_per_s
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let report = bench::kernels(&gpu, &options, &mut print)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{} on {} in {:.0} s", report.timing, report.adapter, report.seconds);
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_train(
    device: &DeviceArgs,
    steps: Option<u64>,
    batch: usize,
    models: &[String],
    json: bool,
) -> Result<ExitCode> {
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
    options.steps = steps.unwrap_or(options.steps);
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
    if json {
        eprintln!("{header}");
    } else {
        println!("{header}");
    }
    let mut print = |r: &bench::TrainResult| {
        let line = format!(
            "{:<12} {:>6} {:>11} {:>11.2} {:>10.2} {:>11.1}",
            r.model, r.batch, r.dispatches_per_step, r.median_ms, r.min_ms, r.images_per_s
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let report = bench::train(&gpu, &kinds, &options, &mut print)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
