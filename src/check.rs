//! Kernel checking: GPU results against CPU twins, for the tests and for `latent check`.
//!
//! A check uploads random inputs, poisons its output buffers with NaN (so a thread that never writes is caught),
//! runs the kernel once, downloads, and compares with the f64 CPU twin element by element:
//! `|gpu - cpu| <= atol + rtol * |cpu|`. On failure the report lists the first mismatches and the largest
//! difference (llm.c's `validate_result`).

use std::fmt;
use std::sync::OnceLock;

use serde::Serialize;

use crate::gpu::{BufferRole, Gpu, GpuBuffer, GpuError};

/// Allowed difference: `|gpu - cpu| <= atol + rtol * |cpu|`, and optionally a bound on the relative
/// Frobenius error `||gpu - cpu|| / ||cpu||` (for matmul and convolution, whose sums reorder).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    pub max_relative_frobenius: Option<f64>,
}

impl Tolerance {
    pub const fn new(atol: f64, rtol: f64) -> Self {
        Self {
            atol,
            rtol,
            max_relative_frobenius: None,
        }
    }

    /// Elementwise float32 kernels: relative error under 1e-5.
    pub const ELEMENTWISE: Self = Self::new(1e-6, 1e-5);

    /// Reductions over many terms (matmul, convolution): relative Frobenius error under 1e-5, and a loose
    /// per-element bound that still catches a wrong element.
    pub const ACCUMULATED: Self = Self {
        atol: 1e-4,
        rtol: 1e-3,
        max_relative_frobenius: Some(1e-5),
    };
}

/// One element that is out of tolerance.
#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    pub index: usize,
    pub gpu: f32,
    pub cpu: f64,
}

/// The outcome of comparing a GPU result with its CPU twin.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub len: usize,
    pub max_abs_diff: f64,
    /// Index of the largest absolute difference.
    pub worst_index: usize,
    /// `||gpu - cpu||_2 / ||cpu||_2` (0 when both are zero).
    pub relative_frobenius: f64,
    pub mismatch_count: usize,
    /// The first few mismatches, in index order.
    pub first_mismatches: Vec<Mismatch>,
    pub frobenius_ok: bool,
    pub length_ok: bool,
    pub tolerance: Tolerance,
}

const SHOWN_MISMATCHES: usize = 8;

/// Compares a GPU result with the f64 reference.
pub fn compare(gpu: &[f32], cpu: &[f64], tolerance: Tolerance) -> Comparison {
    let len = gpu.len().min(cpu.len());
    let mut max_abs_diff = 0.0f64;
    let mut worst_index = 0;
    let mut diff_sq = 0.0f64;
    let mut ref_sq = 0.0f64;
    let mut mismatch_count = 0;
    let mut first_mismatches = Vec::new();
    for i in 0..len {
        let (g, c) = (gpu[i] as f64, cpu[i]);
        let diff = (g - c).abs();
        // NaN compares false everywhere: treat a non-finite GPU value as an infinite difference.
        let diff = if diff.is_nan() && !(g.is_nan() && c.is_nan()) {
            f64::INFINITY
        } else {
            diff
        };
        if diff > max_abs_diff || (i == 0 && diff.is_infinite()) {
            max_abs_diff = diff;
            worst_index = i;
        }
        diff_sq += if diff.is_finite() { diff * diff } else { f64::INFINITY };
        ref_sq += c * c;
        if !(diff <= tolerance.atol + tolerance.rtol * c.abs()) {
            mismatch_count += 1;
            if first_mismatches.len() < SHOWN_MISMATCHES {
                first_mismatches.push(Mismatch {
                    index: i,
                    gpu: gpu[i],
                    cpu: c,
                });
            }
        }
    }
    let relative_frobenius = if ref_sq > 0.0 {
        (diff_sq / ref_sq).sqrt()
    } else if diff_sq > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let frobenius_ok = tolerance
        .max_relative_frobenius
        .is_none_or(|bound| relative_frobenius <= bound);
    Comparison {
        len,
        max_abs_diff,
        worst_index,
        relative_frobenius,
        mismatch_count,
        first_mismatches,
        frobenius_ok,
        length_ok: gpu.len() == cpu.len(),
        tolerance,
    }
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.mismatch_count == 0 && self.frobenius_ok && self.length_ok
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements, max |gpu - cpu| = {:.3e} at [{}], relative Frobenius error {:.3e}",
            self.len, self.max_abs_diff, self.worst_index, self.relative_frobenius
        )?;
        if !self.length_ok {
            write!(f, "\n  length differs from the reference")?;
        }
        if !self.frobenius_ok {
            if let Some(bound) = self.tolerance.max_relative_frobenius {
                write!(f, "\n  relative Frobenius error over the bound {bound:.1e}")?;
            }
        }
        if self.mismatch_count > 0 {
            write!(
                f,
                "\n  {} of {} elements out of tolerance (atol {:.1e}, rtol {:.1e}); first ones:",
                self.mismatch_count, self.len, self.tolerance.atol, self.tolerance.rtol
            )?;
            for m in &self.first_mismatches {
                write!(
                    f,
                    "\n    [{}] gpu {:e}  cpu {:e}  diff {:.3e}",
                    m.index,
                    m.gpu,
                    m.cpu,
                    (m.gpu as f64 - m.cpu).abs()
                )?;
            }
        }
        Ok(())
    }
}

/// Panics with the full report unless `gpu` matches `cpu` (for tests).
#[track_caller]
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f64], tolerance: Tolerance) {
    let comparison = compare(gpu, cpu, tolerance);
    assert!(
        comparison.passed(),
        "{what}: GPU result differs from the CPU twin: {comparison}"
    );
}

/// The shape label of an elementwise check over n values: lengths that are multiples of 4 run the kernel's
/// `*_vec4` twin on CPU adapters ([`Gpu::takes_vec4`]).
pub fn elementwise_shape(n: usize) -> String {
    if n.is_multiple_of(4) {
        format!("n={n} (vec4 on CPU adapters)")
    } else {
        format!("n={n}")
    }
}

/// A storage buffer filled with NaN, so that any element a kernel fails to write shows up in the comparison.
pub fn poisoned(gpu: &Gpu, label: &str, len: usize) -> Result<GpuBuffer, GpuError> {
    gpu.buffer_from(label, BufferRole::Scratch, &vec![f32::NAN; len.max(1)][..])
}

/// Uploads `data` into a scratch storage buffer.
pub fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> Result<GpuBuffer, GpuError> {
    if data.is_empty() {
        return gpu.buffer(label, BufferRole::Scratch, 4);
    }
    gpu.buffer_from(label, BufferRole::Scratch, data)
}

/// Downloads the first `len` f32 values of `buffer`.
pub fn download(gpu: &Gpu, buffer: &GpuBuffer, len: usize) -> Result<Vec<f32>, GpuError> {
    let mut values: Vec<f32> = gpu.read(buffer)?;
    values.truncate(len);
    Ok(values)
}

/// Central finite differences of a scalar function of `x` (on the f64 CPU twin), for checking a backward
/// kernel's CPU twin: returns d f / d x_i for every i.
pub fn finite_difference_gradient(x: &[f64], step: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            let original = probe[i];
            probe[i] = original + step;
            let up = f(&probe);
            probe[i] = original - step;
            let down = f(&probe);
            probe[i] = original;
            (up - down) / (2.0 * step)
        })
        .collect()
}

/// A deterministic source of test inputs (SplitMix64): checks are reproducible from their seed.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), rounded to f32 (so the GPU and the twin see the same value).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub fn uniform_vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Widens f32 inputs to f64 for the CPU twin.
pub fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// One row of `latent check`'s table.
#[derive(Clone, Debug, Serialize)]
pub struct CheckOutcome {
    pub kernel: String,
    pub shape: String,
    pub max_abs_diff: f64,
    pub relative_frobenius: f64,
    pub passed: bool,
    /// The mismatch report or the error, when it failed.
    pub detail: Option<String>,
}

/// A named kernel check: runs on a GPU and compares against the twin.
pub struct KernelCheck {
    pub kernel: String,
    pub shape: String,
    pub run: Box<dyn Fn(&Gpu) -> Result<Comparison, GpuError> + Send + Sync>,
}

impl KernelCheck {
    pub fn new(
        kernel: impl Into<String>,
        shape: impl Into<String>,
        run: impl Fn(&Gpu) -> Result<Comparison, GpuError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            kernel: kernel.into(),
            shape: shape.into(),
            run: Box::new(run),
        }
    }

    /// Runs the check, never panicking: a GPU error is a failed row.
    pub fn execute(&self, gpu: &Gpu) -> CheckOutcome {
        match (self.run)(gpu) {
            Ok(comparison) => CheckOutcome {
                kernel: self.kernel.clone(),
                shape: self.shape.clone(),
                max_abs_diff: comparison.max_abs_diff,
                relative_frobenius: comparison.relative_frobenius,
                passed: comparison.passed(),
                detail: (!comparison.passed()).then(|| comparison.to_string()),
            },
            Err(error) => CheckOutcome {
                kernel: self.kernel.clone(),
                shape: self.shape.clone(),
                max_abs_diff: f64::NAN,
                relative_frobenius: f64::NAN,
                passed: false,
                detail: Some(error.to_string()),
            },
        }
    }
}

/// Every kernel check `latent check` runs, family by family.
pub fn all_checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    checks.extend(crate::kernels::activation::checks());
    checks.extend(crate::kernels::arith::checks());
    checks.extend(crate::kernels::matmul::checks());
    checks.extend(crate::kernels::reduce::checks());
    checks.extend(crate::kernels::conv2d::checks());
    checks.extend(crate::kernels::conv_transpose2d::checks());
    checks.extend(crate::kernels::resample::checks());
    checks.extend(crate::kernels::concat::checks());
    checks.extend(crate::kernels::loss::checks());
    checks.extend(crate::kernels::mmd::checks());
    checks.extend(crate::kernels::optim::checks());
    checks.extend(crate::kernels::batchnorm::checks());
    checks.extend(crate::kernels::groupnorm::checks());
    checks.extend(crate::kernels::rng::checks());
    checks.extend(crate::kernels::reparam::checks());
    checks.extend(crate::kernels::diffusion::checks());
    checks
}

/// One GPU per test binary, opened from `LATENT_BACKEND` / `LATENT_ADAPTER` (the CPU Vulkan driver is
/// enough). Panics with the full "what to install" message when there is no adapter.
pub fn shared_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let options = crate::gpu::GpuOptions::from_env().unwrap_or_else(|e| panic!("{e}"));
        let gpu = Gpu::new(&options).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("tests run on {}", gpu.describe());
        gpu
    })
}

/// Runs every check on `gpu` and panics with a report of all failures (for tests).
#[track_caller]
pub fn assert_checks_pass(gpu: &Gpu, checks: Vec<KernelCheck>) {
    assert!(!checks.is_empty(), "no checks given");
    let failures: Vec<String> = checks
        .iter()
        .map(|c| c.execute(gpu))
        .filter(|o| !o.passed)
        .map(|o| format!("{} [{}]: {}", o.kernel, o.shape, o.detail.unwrap_or_default()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} kernel check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
