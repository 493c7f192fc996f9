//! Vector arithmetic (`shaders/arith.wgsl`): add, scale, axpy, copy, fill, per-channel broadcast add.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::arith as wgsl;

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

/// out (n) = a (n) + b (n)
pub fn add(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, n: usize) -> Result<Dispatch, GpuError> {
    gpu.dispatch_1d(&wgsl::ADD, &[&params(gpu, "add", n, 0.0, 0.0)?, out, a, b], n as u64)
}

/// out (n) = alpha * a (n)
pub fn scale(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, alpha: f32, n: usize) -> Result<Dispatch, GpuError> {
    gpu.dispatch_1d(&wgsl::SCALE, &[&params(gpu, "scale", n, alpha, 0.0)?, out, a], n as u64)
}

/// out (n) = beta * out (n) + alpha * a (n); with beta = 1 this accumulates a gradient.
pub fn axpy(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, alpha: f32, beta: f32, n: usize) -> Result<Dispatch, GpuError> {
    gpu.dispatch_1d(&wgsl::AXPY, &[&params(gpu, "axpy", n, alpha, beta)?, out, a], n as u64)
}

/// out (n) = a (n)
pub fn copy(gpu: &Gpu, out: &GpuBuffer, a: &GpuBuffer, n: usize) -> Result<Dispatch, GpuError> {
    gpu.dispatch_1d(&wgsl::COPY, &[&params(gpu, "copy", n, 0.0, 0.0)?, out, a], n as u64)
}

/// out (n) = value
pub fn fill(gpu: &Gpu, out: &GpuBuffer, value: f32, n: usize) -> Result<Dispatch, GpuError> {
    gpu.dispatch_1d(&wgsl::FILL, &[&params(gpu, "fill", n, value, 0.0)?, out], n as u64)
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
    for n in [1usize, 7, 33, 129, 100_352] {
        let inputs = move |seed: u64| {
            let mut rng = TestRng::new(seed);
            (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(n, -2.0, 2.0))
        };
        checks.push(KernelCheck::new(
            wgsl::ADD.qualified_name(),
            format!("n={n}"),
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
            format!("n={n}"),
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
            format!("n={n}"),
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
            format!("n={n}"),
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
            format!("n={n}"),
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
