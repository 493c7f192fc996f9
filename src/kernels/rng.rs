//! Random fills (`shaders/rng.wgsl`, generator in `shaders/shared/philox.wgsl`): raw Philox 4x32-10 words,
//! uniform [0, 1) floats and standard normals, reproducible from (seed, step, stream) on any GPU.
//!
//! A [`Draw`] names one fill: its key is the seed and its counters are (offset + i / 4, stream, step), so
//! different steps or streams give independent numbers, and the same draw gives the same buffer everywhere.
//! Plans give each random use within a step its own stream (for instance the VAE's eps, the diffusion noise and
//! timesteps) and pass the training step as `step`: a fill is recorded once with its [`DrawParams`] and, before
//! each step's submit, `params.set(gpu, &Draw::new(seed, step, stream))` gives it that step's numbers.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::{rng as wgsl, EntryPoint};

/// Keep in sync with `struct Params` in shaders/rng.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RngParams {
    pub n: u32,
    pub offset: u32,
    pub stream: u32,
    pub _pad0: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step_lo: u32,
    pub step_hi: u32,
}

/// Where a fill's words come from: key = seed, counter = (offset + i / 4, stream, step low word, step high word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Draw {
    pub seed: u64,
    pub step: u64,
    /// Which independent sequence within a step.
    pub stream: u32,
    /// The first counter block (0 unless a fill continues another).
    pub offset: u32,
}

impl Draw {
    pub fn new(seed: u64, step: u64, stream: u32) -> Self {
        Self {
            seed,
            step,
            stream,
            offset: 0,
        }
    }

    /// Philox's 64-bit key: the seed as (low word, high word).
    pub fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// Philox's 128-bit counter for block `block` of the fill (elements 4 * block .. 4 * block + 3).
    pub fn counter(&self, block: u32) -> [u32; 4] {
        [
            self.offset.wrapping_add(block),
            self.stream,
            self.step as u32,
            (self.step >> 32) as u32,
        ]
    }

    /// The kernel params of a fill of `n` elements.
    pub fn params(&self, n: usize) -> Result<RngParams, GpuError> {
        let n = u32::try_from(n).map_err(|_| GpuError::Validation {
            context: "rng".to_string(),
            message: format!("a random fill of {n} elements is over 2^32; fill it in parts with `offset`"),
        })?;
        Ok(RngParams {
            n,
            offset: self.offset,
            stream: self.stream,
            _pad0: 0,
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            step_lo: self.step as u32,
            step_hi: (self.step >> 32) as u32,
        })
    }
}

/// A fill's params uniform: the draw and the number of elements. A recorded fill is replayed every step with
/// [`DrawParams::set`] giving it the step's draw (the write lands before the next submit).
#[derive(Debug)]
pub struct DrawParams {
    pub buffer: GpuBuffer,
    n: usize,
}

impl DrawParams {
    pub fn new(gpu: &Gpu, draw: &Draw, n: usize) -> Result<Self, GpuError> {
        Ok(Self {
            buffer: gpu.uniform("rng", &draw.params(n)?)?,
            n,
        })
    }

    /// Makes the fills recorded with these params draw `draw` from the next submit on.
    pub fn set(&self, gpu: &Gpu, draw: &Draw) -> Result<(), GpuError> {
        gpu.write(&self.buffer, &[draw.params(self.n)?])
    }

    /// Elements filled.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

fn fill(gpu: &Gpu, entry: &'static EntryPoint, out: &GpuBuffer, params: &DrawParams) -> Result<Dispatch, GpuError> {
    if out.len_words() < params.n {
        return Err(GpuError::BufferSize {
            label: out.label.clone(),
            capacity: out.bytes,
            bytes: params.n as u64 * 4,
        });
    }
    // One thread per block of four elements.
    gpu.dispatch_1d(entry, &[&params.buffer, out], params.n.div_ceil(4) as u64)
}

/// out_bits (n) = the raw Philox words, as u32.
pub fn bits(gpu: &Gpu, out_bits: &GpuBuffer, params: &DrawParams) -> Result<Dispatch, GpuError> {
    fill(gpu, &wgsl::PHILOX_BITS, out_bits, params)
}

/// out (n) = uniform floats in [0, 1), multiples of 2^-24 (the top 24 bits of each word).
pub fn uniform(gpu: &Gpu, out: &GpuBuffer, params: &DrawParams) -> Result<Dispatch, GpuError> {
    fill(gpu, &wgsl::UNIFORM_FILL, out, params)
}

/// out (n) = standard normal floats (Box-Muller on pairs of words).
pub fn normal(gpu: &Gpu, out: &GpuBuffer, params: &DrawParams) -> Result<Dispatch, GpuError> {
    fill(gpu, &wgsl::NORMAL_FILL, out, params)
}

/// u32 words as their 16-bit halves (each exact in f32), high halves first, for exact comparisons.
fn halves(words: &[u32]) -> Vec<f32> {
    let high = words.iter().map(|w| (w >> 16) as f32);
    high.chain(words.iter().map(|w| (w & 0xFFFF) as f32)).collect()
}

/// Checks of the raw words, bit for bit.
fn bits_check(gpu: &Gpu, draw: Draw, n: usize) -> Result<Comparison, GpuError> {
    let out = check::poisoned(gpu, "bits", n)?;
    gpu.run(&[&bits(gpu, &out, &DrawParams::new(gpu, &draw, n)?)?])?;
    let mut gpu_words: Vec<u32> = gpu.read(&out)?;
    gpu_words.truncate(n);
    let expected: Vec<f64> = halves(&cpu::rng::bits(draw, n)).iter().map(|&h| h as f64).collect();
    Ok(check::compare(&halves(&gpu_words), &expected, Tolerance::new(0.0, 0.0)))
}

/// Sizes: odd ones, and the default models' draws: the VAE's eps (128 x 20), the GAN's z (128 x 64),
/// the diffusion noise (128 x 784).
pub const CHECK_SIZES: [usize; 7] = [1, 7, 33, 129, 128 * 20, 128 * 64, 128 * 784];

/// Draws the checks use: plain, a 64-bit seed and step with another stream, and a counter block that wraps.
pub const CHECK_DRAWS: [Draw; 3] = [
    Draw {
        seed: 0,
        step: 0,
        stream: 0,
        offset: 0,
    },
    Draw {
        seed: 0x0123_4567_89AB_CDEF,
        step: (7 << 32) | 12345,
        stream: 3,
        offset: 0,
    },
    Draw {
        seed: 42,
        step: 1,
        stream: 1,
        offset: u32::MAX - 5,
    },
];

/// Every fill against the CPU twin: words and uniforms exactly, normals to float precision.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for n in CHECK_SIZES {
        for (d, draw) in CHECK_DRAWS.into_iter().enumerate() {
            let shape = format!(
                "n={n} draw {d}: seed={:#x} step={} stream={}",
                draw.seed, draw.step, draw.stream
            );
            let shape = if draw.offset != 0 {
                format!("{shape} offset={}", draw.offset)
            } else {
                shape
            };
            checks.push(KernelCheck::new(
                wgsl::PHILOX_BITS.qualified_name(),
                format!("{shape}; 16-bit halves"),
                move |gpu| bits_check(gpu, draw, n),
            ));
            checks.push(KernelCheck::new(
                wgsl::UNIFORM_FILL.qualified_name(),
                shape.clone(),
                move |gpu| {
                    let out = check::poisoned(gpu, "uniform", n)?;
                    gpu.run(&[&uniform(gpu, &out, &DrawParams::new(gpu, &draw, n)?)?])?;
                    Ok(check::compare(
                        &check::download(gpu, &out, n)?,
                        &cpu::rng::uniform(draw, n),
                        Tolerance::new(0.0, 0.0),
                    ))
                },
            ));
            checks.push(KernelCheck::new(
                wgsl::NORMAL_FILL.qualified_name(),
                shape,
                move |gpu| {
                    let out = check::poisoned(gpu, "normal", n)?;
                    gpu.run(&[&normal(gpu, &out, &DrawParams::new(gpu, &draw, n)?)?])?;
                    Ok(check::compare(
                        &check::download(gpu, &out, n)?,
                        &cpu::rng::normal(draw, n),
                        Tolerance::ELEMENTWISE,
                    ))
                },
            ));
        }
    }
    checks
}
