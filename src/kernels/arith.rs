//! Vector arithmetic (`shaders/arith.wgsl`): add, scale, axpy, copy, fill, per-channel broadcast add, and the
//! repeat and combination of halves of classifier-free guidance. CPU adapters run the first five four elements
//! per invocation (`shaders/arith_vec4.wgsl`, the same bits) where the length is a multiple of 4
//! ([`Gpu::takes_vec4`]).

use bytemuck::{Pod, Zeroable};

use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::{arith as wgsl, arith_vec4 as wgsl_vec4, EntryPoint};

/// Keep in sync with `struct Params` in shaders/arith.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ArithParams {
    pub n: u32,
    pub channels: u32,
    pub inner: u32,
    pub _pad: u32,
    pub alpha: f32,
    pub beta: f32,
    pub _pad1: u32,
    pub _pad2: u32,
}

fn params(gpu: &Gpu, label: &str, n: usize, alpha: f32, beta: f32) -> Result<GpuBuffer, GpuError> {
    gpu.uniform(
        label,
        &ArithParams {
            n: n as u32,
            alpha,
            beta,
            ..Default::default()
        },
    )
}

/// An elementwise kernel over elements 0..n of `buffers` (out first), from arith_vec4 where the adapter takes it.
fn elementwise(
    gpu: &Gpu,
    [scalar, vec4]: [&'static EntryPoint; 2],
    buffers: &[&GpuBuffer],
    n: usize,
    alpha: f32,
    beta: f32,
) -> Result<Dispatch, GpuError> {
    let (entry, values) = if gpu.takes_vec4(0, n, buffers) {
        (vec4, n / 4)
    } else {
        (scalar, n)
    };
    let params = params(gpu, entry.name, values, alpha, beta)?;
    let mut bound = vec![&params];
    bound.extend_from_slice(buffers);
    gpu.dispatch_1d(entry, &bound, values as u64)
}

/// out (n) = a (n) + b (n)
pub fn add(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, n: usize) -> Result<Dispatch, GpuError> {
    elementwise(gpu, [&wgsl::ADD, &wgsl_vec4::ADD], &[out, a, b], n, 0.0, 0.0)
}

/// out (n) = alpha * a (n)
pub fn scale(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, alpha: f32, n: usize) -> Result<Dispatch, GpuError> {
    elementwise(gpu, [&wgsl::SCALE, &wgsl_vec4::SCALE], &[out, a], n, alpha, 0.0)
}

/// out (n) = beta * out (n) + alpha * a (n); with beta = 1 this accumulates a gradient.
pub fn axpy(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, alpha: f32, beta: f32, n: usize) -> Result<Dispatch, GpuError> {
    elementwise(gpu, [&wgsl::AXPY, &wgsl_vec4::AXPY], &[out, a], n, alpha, beta)
}

/// out (n) = a (n)
pub fn copy(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, n: usize) -> Result<Dispatch, GpuError> {
    elementwise(gpu, [&wgsl::COPY, &wgsl_vec4::COPY], &[out, a], n, 0.0, 0.0)
}

/// out (n) = value
pub fn fill(gpu: &Gpu, out: &GpuBuffer, value: f32, n: usize) -> Result<Dispatch, GpuError> {
    elementwise(gpu, [&wgsl::FILL, &wgsl_vec4::FILL], &[out], n, value, 0.0)
}

/// out (copies * inner) = a (inner) repeated `copies` times.
pub fn repeat(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, inner: usize, copies: usize) -> Result<Dispatch, GpuError> {
    let n = inner * copies;
    let p = ArithParams {
        n: n as u32,
        inner: inner as u32,
        ..Default::default()
    };
    gpu.dispatch_1d(&wgsl::REPEAT, &[&gpu.uniform("repeat", &p)?, out, a], n as u64)
}

/// out (n) = alpha * a[0 .. n] + beta * a[n .. 2n] (a holds 2n values).
pub fn combine_halves(
    gpu: &Gpu,
    out: &GpuBuffer,
    a: &GpuBuffer,
    alpha: f32,
    beta: f32,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let params = params(gpu, "combine_halves", n, alpha, beta)?;
    gpu.dispatch_1d(&wgsl::COMBINE_HALVES, &[&params, out, a], n as u64)
}

/// out (N, C, H, W) = a (N, C, H, W) + bias (C), with `inner` = H * W.
pub fn add_channel_bias(
    gpu: &Gpu,
    out: &GpuBuffer,
    a: &GpuBuffer,
    bias: &GpuBuffer,
    batch: usize,
    channels: usize,
    inner: usize,
) -> Result<Dispatch, GpuError> {
    let n = batch * channels * inner;
    let p = ArithParams {
        n: n as u32,
        channels: channels as u32,
        inner: inner as u32,
        ..Default::default()
    };
    let params = gpu.uniform("add_channel_bias", &p)?;
    gpu.dispatch_1d(&wgsl::ADD_CHANNEL_BIAS, &[&params, out, a, bias], n as u64)
}

/// Every arithmetic kernel against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for n in [1usize, 7, 33, 36, 129, 100_352] {
        let inputs = move |seed: u64| {
            let mut rng = TestRng::new(seed);
            (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(n, -2.0, 2.0))
        };
        checks.push(KernelCheck::new(
            wgsl::ADD.qualified_name(),
            check::elementwise_shape(n),
            move |gpu| {
                let (a, b) = inputs(1);
                let out = check::poisoned(gpu, "out", n)?;
                let (a_gpu, b_gpu) = (check::upload(gpu, "a", &a)?, check::upload(gpu, "b", &b)?);
                gpu.run(&[&add(gpu, &out, &a_gpu, &b_gpu, n)?])?;
                let expected = cpu::arith::add(&check::to_f64(&a), &check::to_f64(&b));
                Ok(check::compare(
                    &check::download(gpu, &out, n)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::SCALE.qualified_name(),
            check::elementwise_shape(n),
            move |gpu| {
                let (a, _) = inputs(2);
                let out = check::poisoned(gpu, "out", n)?;
                let a_gpu = check::upload(gpu, "a", &a)?;
                gpu.run(&[&scale(gpu, &out, &a_gpu, -0.37, n)?])?;
                let expected = cpu::arith::scale(&check::to_f64(&a), -0.37f32 as f64);
                Ok(check::compare(
                    &check::download(gpu, &out, n)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::AXPY.qualified_name(),
            check::elementwise_shape(n),
            move |gpu| {
                let (a, start) = inputs(3);
                let out = check::upload(gpu, "out", &start)?;
                let a_gpu = check::upload(gpu, "a", &a)?;
                gpu.run(&[&axpy(gpu, &out, &a_gpu, 0.5, 0.9, n)?])?;
                let expected = cpu::arith::axpy(&check::to_f64(&start), &check::to_f64(&a), 0.5, 0.9f32 as f64);
                Ok(check::compare(
                    &check::download(gpu, &out, n)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::COPY.qualified_name(),
            check::elementwise_shape(n),
            move |gpu| {
                let (a, _) = inputs(4);
                let out = check::poisoned(gpu, "out", n)?;
                gpu.run(&[&copy(gpu, &out, &check::upload(gpu, "a", &a)?, n)?])?;
                Ok(check::compare(
                    &check::download(gpu, &out, n)?,
                    &check::to_f64(&a),
                    Tolerance::new(0.0, 0.0),
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::FILL.qualified_name(),
            check::elementwise_shape(n),
            move |gpu| {
                let out = check::poisoned(gpu, "out", n)?;
                gpu.run(&[&fill(gpu, &out, 1.25, n)?])?;
                Ok(check::compare(
                    &check::download(gpu, &out, n)?,
                    &vec![1.25; n],
                    Tolerance::new(0.0, 0.0),
                ))
            },
        ));
    }
    // Classifier-free guidance's batch doubling and combination: odd sizes and the ldm's latents (64, 4, 7, 7).
    for inner in [1usize, 7, 33, 64 * 196] {
        checks.push(KernelCheck::new(
            wgsl::REPEAT.qualified_name(),
            format!("inner={inner} copies=2"),
            move |gpu| {
                let a = TestRng::new(inner as u64).uniform_vec(inner, -2.0, 2.0);
                let out = check::poisoned(gpu, "out", 2 * inner)?;
                gpu.run(&[&repeat(gpu, &out, &check::upload(gpu, "a", &a)?, inner, 2)?])?;
                Ok(check::compare(
                    &check::download(gpu, &out, 2 * inner)?,
                    &cpu::arith::repeat(&check::to_f64(&a), 2),
                    Tolerance::new(0.0, 0.0),
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::COMBINE_HALVES.qualified_name(),
            format!("n={inner}"),
            move |gpu| {
                let a = TestRng::new(inner as u64 + 1).uniform_vec(2 * inner, -2.0, 2.0);
                let out = check::poisoned(gpu, "out", inner)?;
                let (w, a_gpu) = (2.5f32, check::upload(gpu, "a", &a)?);
                gpu.run(&[&combine_halves(gpu, &out, &a_gpu, 1.0 + w, -w, inner)?])?;
                let expected = cpu::arith::combine_halves(&check::to_f64(&a), (1.0 + w) as f64, -w as f64);
                Ok(check::compare(
                    &check::download(gpu, &out, inner)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
    }
    // (N, C, H, W): odd shapes, and the U-Net's time-embedding broadcast (128, 64, 28, 28).
    for (batch, channels, inner) in [(1, 1, 1), (3, 7, 33), (2, 5, 1), (128, 64, 28 * 28)] {
        checks.push(KernelCheck::new(
            wgsl::ADD_CHANNEL_BIAS.qualified_name(),
            format!("N={batch} C={channels} HW={inner}"),
            move |gpu| {
                let n = batch * channels * inner;
                let mut rng = TestRng::new(n as u64);
                let (a, bias) = (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(channels, -1.0, 1.0));
                let out = check::poisoned(gpu, "out", n)?;
                let (a_gpu, bias_gpu) = (check::upload(gpu, "a", &a)?, check::upload(gpu, "bias", &bias)?);
                gpu.run(&[&add_channel_bias(gpu, &out, &a_gpu, &bias_gpu, batch, channels, inner)?])?;
                let expected = cpu::arith::add_channel_bias(&check::to_f64(&a), &check::to_f64(&bias), channels, inner);
                Ok(check::compare(
                    &check::download(gpu, &out, n)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
    }
    checks
}
