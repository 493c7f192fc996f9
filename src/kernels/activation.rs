//! Activations (`shaders/activation.wgsl`): ReLU, LeakyReLU, sigmoid, tanh, SiLU, forward and backward. CPU
//! adapters run them four elements per invocation (`shaders/activation_vec4.wgsl`, the same bits) where the
//! length is a multiple of 4 ([`Gpu::takes_vec4`]).

use bytemuck::{Pod, Zeroable};

use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::{activation as wgsl, activation_vec4 as wgsl_vec4, EntryPoint};

/// Keep in sync with `struct Params` in shaders/activation.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ActivationParams {
    pub n: u32,
    pub slope: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// A pointwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `max(x, 0) + slope * min(x, 0)`; the models use slope 0.2.
    LeakyRelu {
        slope: f32,
    },
    Sigmoid,
    Tanh,
    /// `x * sigmoid(x)`
    Silu,
}

impl Activation {
    /// One of each, for checks.
    pub const ALL: [Activation; 5] = [
        Self::Relu,
        Self::LeakyRelu { slope: 0.2 },
        Self::Sigmoid,
        Self::Tanh,
        Self::Silu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::LeakyRelu { .. } => "leaky_relu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
            Self::Silu => "silu",
        }
    }

    /// The forward kernel, from activation_vec4 when `vec4`.
    pub fn forward_entry(self, vec4: bool) -> &'static EntryPoint {
        match (self, vec4) {
            (Self::Relu, false) => &wgsl::RELU_FORWARD,
            (Self::LeakyRelu { .. }, false) => &wgsl::LEAKY_RELU_FORWARD,
            (Self::Sigmoid, false) => &wgsl::SIGMOID_FORWARD,
            (Self::Tanh, false) => &wgsl::TANH_FORWARD,
            (Self::Silu, false) => &wgsl::SILU_FORWARD,
            (Self::Relu, true) => &wgsl_vec4::RELU_FORWARD,
            (Self::LeakyRelu { .. }, true) => &wgsl_vec4::LEAKY_RELU_FORWARD,
            (Self::Sigmoid, true) => &wgsl_vec4::SIGMOID_FORWARD,
            (Self::Tanh, true) => &wgsl_vec4::TANH_FORWARD,
            (Self::Silu, true) => &wgsl_vec4::SILU_FORWARD,
        }
    }

    /// The backward kernel, from activation_vec4 when `vec4`.
    pub fn backward_entry(self, vec4: bool) -> &'static EntryPoint {
        match (self, vec4) {
            (Self::Relu, false) => &wgsl::RELU_BACKWARD,
            (Self::LeakyRelu { .. }, false) => &wgsl::LEAKY_RELU_BACKWARD,
            (Self::Sigmoid, false) => &wgsl::SIGMOID_BACKWARD,
            (Self::Tanh, false) => &wgsl::TANH_BACKWARD,
            (Self::Silu, false) => &wgsl::SILU_BACKWARD,
            (Self::Relu, true) => &wgsl_vec4::RELU_BACKWARD,
            (Self::LeakyRelu { .. }, true) => &wgsl_vec4::LEAKY_RELU_BACKWARD,
            (Self::Sigmoid, true) => &wgsl_vec4::SIGMOID_BACKWARD,
            (Self::Tanh, true) => &wgsl_vec4::TANH_BACKWARD,
            (Self::Silu, true) => &wgsl_vec4::SILU_BACKWARD,
        }
    }

    fn params(self, n: usize) -> ActivationParams {
        let slope = match self {
            Self::LeakyRelu { slope } => slope,
            _ => 0.0,
        };
        ActivationParams {
            n: n as u32,
            slope,
            ..Default::default()
        }
    }
}

/// y (n) = f(x (n))
pub fn forward(
    gpu: &Gpu,
    activation: Activation,
    y: &GpuBuffer,
    x: &GpuBuffer,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let vec4 = gpu.takes_vec4(0, n, &[y, x]);
    let values = if vec4 { n / 4 } else { n };
    let params = gpu.uniform(activation.name(), &activation.params(values))?;
    gpu.dispatch_1d(activation.forward_entry(vec4), &[&params, y, x], values as u64)
}

/// dx (n) = dy (n) * f'(x (n)), with x the forward's input.
pub fn backward(
    gpu: &Gpu,
    activation: Activation,
    dx: &GpuBuffer,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    n: usize,
) -> Result<Dispatch, GpuError> {
    let vec4 = gpu.takes_vec4(0, n, &[dx, x, dy]);
    let values = if vec4 { n / 4 } else { n };
    let params = gpu.uniform(activation.name(), &activation.params(values))?;
    gpu.dispatch_1d(activation.backward_entry(vec4), &[&params, dx, x, dy], values as u64)
}

/// Sizes the checks use: odd ones, and the default models' real activation sizes.
pub const CHECK_SIZES: [usize; 7] = [1, 7, 33, 36, 129, 128 * 400, 128 * 64 * 14 * 14];

/// Forward and backward of every activation against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for activation in Activation::ALL {
        for n in CHECK_SIZES {
            checks.push(KernelCheck::new(
                activation.forward_entry(false).qualified_name(),
                check::elementwise_shape(n),
                move |gpu| {
                    let mut rng = TestRng::new(n as u64);
                    let x = rng.uniform_vec(n, -4.0, 4.0);
                    let y = check::poisoned(gpu, "y", n)?;
                    let x_gpu = check::upload(gpu, "x", &x)?;
                    gpu.run(&[&forward(gpu, activation, &y, &x_gpu, n)?])?;
                    let expected = cpu::activation::forward(activation, &check::to_f64(&x));
                    Ok(check::compare(
                        &check::download(gpu, &y, n)?,
                        &expected,
                        Tolerance::ELEMENTWISE,
                    ))
                },
            ));
            checks.push(KernelCheck::new(
                activation.backward_entry(false).qualified_name(),
                check::elementwise_shape(n),
                move |gpu| {
                    let mut rng = TestRng::new(n as u64 + 1);
                    let x = rng.uniform_vec(n, -4.0, 4.0);
                    let dy = rng.uniform_vec(n, -1.0, 1.0);
                    let dx = check::poisoned(gpu, "dx", n)?;
                    let (x_gpu, dy_gpu) = (check::upload(gpu, "x", &x)?, check::upload(gpu, "dy", &dy)?);
                    gpu.run(&[&backward(gpu, activation, &dx, &x_gpu, &dy_gpu, n)?])?;
                    let expected = cpu::activation::backward(activation, &check::to_f64(&x), &check::to_f64(&dy));
                    Ok(check::compare(
                        &check::download(gpu, &dx, n)?,
                        &expected,
                        Tolerance::ELEMENTWISE,
                    ))
                },
            ));
        }
    }
    checks
}
