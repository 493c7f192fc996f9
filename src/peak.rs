//! The adapter's measured ceilings (`latent bench peak`) and each kernel's share of its roofline.
//!
//! Four purpose-written kernels (`shaders/peak.wgsl`, `shaders/peak_f16.wgsl`) measure what the adapter can
//! do at best: f32 multiply-add throughput (and f16 where SHADER_F16 is offered), and storage-buffer
//! bandwidth reading, writing and copying. The result is cached per adapter and driver under the cache root
//! (`$LATENT_CACHE`, ...), so the profiler and `bench kernels` can print, beside each kernel's GFLOP/s, its
//! share of the roofline limit: the time the kernel would take at the FLOP ceiling or at the bandwidth ceiling
//! for the bytes it binds, whichever is longer, over the time it took.

use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};
use serde::{Deserialize, Serialize};

use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::profile::{median, time_dispatch, ProfileError};
use crate::shaders::{peak as wgsl, peak_f16 as wgsl_f16, Capability};

/// Changes when the measuring kernels or their sizes change, so older cached ceilings are measured again.
const VERSION: u32 = 1;
/// FLOP per round of `peak_fma` per invocation: 8 vec4 multiply-adds.
const FLOP_PER_ROUND: u64 = 8 * 4 * 2;
/// vec4s each `peak_read` invocation sums (READ_SPAN in peak.wgsl).
const READ_SPAN: u64 = 16;

/// Keep in sync with `struct Params` in shaders/peak.wgsl and peak_f16.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PeakParams {
    pub iterations: u32,
    pub count: u32,
    pub scale: f32,
    pub offset: f32,
}

/// One adapter's ceilings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// `Gpu::describe`: the adapter, backend and driver they were measured on.
    pub adapter: String,
    pub version: u32,
    /// f32 multiply-add throughput, GFLOP/s (an FMA counts 2).
    pub fma_f32_gflops: f64,
    /// The same in f16, where the adapter offers SHADER_F16.
    pub fma_f16_gflops: Option<f64>,
    /// Storage-buffer bandwidth, GB/s of bytes moved.
    pub read_gb_per_s: f64,
    pub write_gb_per_s: f64,
    /// Bytes read plus bytes written per second.
    pub copy_gb_per_s: f64,
    /// Bytes each bandwidth kernel moved per dispatch.
    pub bandwidth_bytes: u64,
}

impl Peak {
    /// The bandwidth ceiling the roofline uses: the best of reading, writing and copying.
    pub fn bandwidth(&self) -> f64 {
        self.read_gb_per_s.max(self.write_gb_per_s).max(self.copy_gb_per_s)
    }

    /// The shortest time (ns) a dispatch of `flops` FLOP binding `bytes` bytes can take: the longer of the
    /// time at the f32 FLOP ceiling and at the bandwidth ceiling.
    pub fn limit_ns(&self, flops: u64, bytes: u64) -> f64 {
        let compute = flops as f64 / self.fma_f32_gflops;
        let memory = bytes as f64 / self.bandwidth();
        compute.max(memory)
    }

    /// Percent of its roofline limit that a dispatch achieving `ns` reached (100 = at the ceiling).
    pub fn share_percent(&self, flops: u64, bytes: u64, ns: f64) -> Option<f64> {
        (ns > 0.0 && (flops > 0 || bytes > 0)).then(|| 100.0 * self.limit_ns(flops, bytes) / ns)
    }

    /// Which ceiling bounds a dispatch of this arithmetic intensity: `compute` or `memory`.
    pub fn bound(&self, flops: u64, bytes: u64) -> &'static str {
        if flops as f64 / self.fma_f32_gflops >= bytes as f64 / self.bandwidth() {
            "compute"
        } else {
            "memory"
        }
    }

    /// One line for `latent info` and the tables' headers.
    pub fn summary(&self) -> String {
        format!(
            "f32 FMA {:.1} GFLOP/s, f16 FMA {}, read {:.1} GB/s, write {:.1} GB/s, copy {:.1} GB/s",
            self.fma_f32_gflops,
            self.fma_f16_gflops
                .map_or("not offered".into(), |g| format!("{g:.1} GFLOP/s")),
            self.read_gb_per_s,
            self.write_gb_per_s,
            self.copy_gb_per_s
        )
    }

    /// Where the ceilings of `gpu` are cached under the cache root `root`: one file per adapter, backend and
    /// driver.
    pub fn cache_path(root: &Path, gpu: &Gpu) -> PathBuf {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in gpu.describe().bytes() {
            hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
        root.join("peak").join(format!("{hash:016x}.json"))
    }

    /// The ceilings of `gpu` cached under `root`, if measured before by this version.
    pub fn cached_in(root: &Path, gpu: &Gpu) -> Option<Self> {
        let text = std::fs::read_to_string(Self::cache_path(root, gpu)).ok()?;
        let peak: Self = serde_json::from_str(&text).ok()?;
        (peak.version == VERSION && peak.adapter == gpu.describe()).then_some(peak)
    }

    /// The ceilings of `gpu` in the cache root ([`crate::fid::cache_root`]), if measured before.
    pub fn cached(gpu: &Gpu) -> Option<Self> {
        Self::cached_in(&crate::fid::cache_root(), gpu)
    }

    /// Writes the ceilings to the cache root.
    pub fn save(&self, gpu: &Gpu) -> std::io::Result<PathBuf> {
        self.save_in(&crate::fid::cache_root(), gpu)
    }

    /// Writes the ceilings under `root` (a temporary file renamed over the old one).
    pub fn save_in(&self, root: &Path, gpu: &Gpu) -> std::io::Result<PathBuf> {
        let path = Self::cache_path(root, gpu);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = path.with_extension("json.partial");
        std::fs::write(
            &partial,
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }

    /// The cached ceilings, or measured now (a second or two) and cached; a cache that cannot be written is
    /// only reported.
    pub fn load_or_measure(gpu: &Gpu) -> Result<Self, ProfileError> {
        if let Some(peak) = Self::cached(gpu) {
            return Ok(peak);
        }
        eprintln!("Measuring the adapter's ceilings once (`latent bench peak`)...");
        let peak = Self::measure(gpu, &PeakOptions::for_gpu(gpu))?;
        if let Err(e) = peak.save(gpu) {
            let path = Self::cache_path(&crate::fid::cache_root(), gpu);
            eprintln!("warning: could not cache the ceilings at {}: {e}", path.display());
        }
        Ok(peak)
    }

    /// Runs the four measuring kernels (five with f16).
    pub fn measure(gpu: &Gpu, options: &PeakOptions) -> Result<Self, ProfileError> {
        let fma_f32_gflops = measure_fma(gpu, &wgsl::PEAK_FMA, options)?;
        let fma_f16_gflops = if gpu.has(Capability::F16) {
            Some(measure_fma(gpu, &wgsl_f16::PEAK_FMA_F16, options)?)
        } else {
            None
        };
        let limit = gpu.limits.max_storage_buffer_binding_size;
        // Whole workgroups of peak_read's sums.
        let unit = 16 * READ_SPAN * 256;
        let bytes = (options.bandwidth_bytes.min(limit) / unit).max(1) * unit;
        let vec4s = bytes / 16;
        let source = gpu.buffer("peak source", BufferRole::Scratch, bytes)?;
        let out = gpu.buffer("peak out", BufferRole::Scratch, bytes)?;
        let time = |dispatch: &Dispatch| -> Result<f64, ProfileError> {
            Ok(median(&time_dispatch(gpu, dispatch, options.warmup, options.repeats)?))
        };
        let dispatch = |entry, count: u64, buffers: &[&GpuBuffer]| -> Result<Dispatch, GpuError> {
            let params = gpu.uniform(
                "peak params",
                &PeakParams {
                    iterations: 0,
                    count: count as u32,
                    scale: 0.5,
                    offset: 0.25,
                },
            )?;
            let mut all = vec![&params];
            all.extend_from_slice(buffers);
            gpu.dispatch_1d(entry, &all, count)
        };
        // Read: `vec4s` read, one vec4 written per READ_SPAN of them.
        let sums = vec4s / READ_SPAN;
        let read_ns = time(&dispatch(&wgsl::PEAK_READ, sums, &[&out, &source])?)?;
        let write_ns = time(&dispatch(&wgsl::PEAK_WRITE, vec4s, &[&out])?)?;
        let copy_ns = time(&dispatch(&wgsl::PEAK_COPY, vec4s, &[&out, &source])?)?;
        Ok(Self {
            adapter: gpu.describe(),
            version: VERSION,
            fma_f32_gflops,
            fma_f16_gflops,
            read_gb_per_s: (bytes + sums * 16) as f64 / read_ns,
            write_gb_per_s: bytes as f64 / write_ns,
            copy_gb_per_s: (2 * bytes) as f64 / copy_ns,
            bandwidth_bytes: bytes,
        })
    }
}

/// How long and how big the measurements are.
#[derive(Clone, Debug, Serialize)]
pub struct PeakOptions {
    /// Invocations of the FMA kernels.
    pub invocations: u64,
    /// The FMA kernels' rounds are raised until one dispatch takes at least this long.
    pub min_ms: f64,
    /// Bytes each bandwidth kernel moves (at most the adapter's storage-binding limit).
    pub bandwidth_bytes: u64,
    pub warmup: usize,
    pub repeats: usize,
}

impl PeakOptions {
    /// Enough invocations to fill a large GPU; fewer, shorter repeats on a CPU driver.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        if crate::bench::is_cpu_adapter(gpu) {
            Self {
                invocations: 1 << 14,
                min_ms: 20.0,
                bandwidth_bytes: 64 << 20,
                warmup: 1,
                repeats: 5,
            }
        } else {
            Self {
                invocations: 1 << 21,
                min_ms: 5.0,
                bandwidth_bytes: 256 << 20,
                warmup: 3,
                repeats: 10,
            }
        }
    }
}

/// GFLOP/s of `entry` (peak_fma or peak_fma_f16): rounds doubled from 16 until a dispatch takes `min_ms`.
fn measure_fma(
    gpu: &Gpu,
    entry: &'static crate::shaders::EntryPoint,
    options: &PeakOptions,
) -> Result<f64, ProfileError> {
    let out = gpu.buffer("peak out", BufferRole::Scratch, options.invocations * 16)?;
    let mut iterations: u32 = 16;
    loop {
        let params = gpu.uniform(
            "peak params",
            &PeakParams {
                iterations,
                count: options.invocations as u32,
                scale: 0.999,
                offset: 1e-3,
            },
        )?;
        let dispatch = gpu.dispatch_1d(entry, &[&params, &out], options.invocations)?;
        let ns = median(&time_dispatch(gpu, &dispatch, options.warmup, options.repeats)?);
        if ns >= options.min_ms * 1e6 || iterations >= 1 << 20 {
            let flops = options.invocations * iterations as u64 * FLOP_PER_ROUND;
            return Ok(flops as f64 / ns);
        }
        // Aim straight at the target from the time measured, at least doubling.
        let factor = (options.min_ms * 1e6 / ns.max(1.0)).ceil().max(2.0) as u32;
        iterations = iterations.saturating_mul(factor).min(1 << 20);
    }
}
