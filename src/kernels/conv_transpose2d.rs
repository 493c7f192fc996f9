//! 2-D transposed convolution (`shaders/conv_transpose2d.wgsl`): forward, input gradient and weight gradient as
//! implicit GEMM; the bias gradient is [`conv2d::bias_backward`](crate::kernels::conv2d::bias_backward).
//!
//! In the forward pass `y = conv_transpose2d(x, weight) + bias`, so the backward needs `x` (for the weight
//! gradient), `weight` (for the input gradient) and `dy`.

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError, Tiling};
use crate::kernels::conv2d::{self, gemm_grid, require_len};
use crate::kernels::conv_registers::{self, check_name};
use crate::shaders::conv_transpose2d as wgsl;

/// The uniform of shaders/conv_transpose2d.wgsl: the same `struct Params` as conv2d's (keep in sync; a test checks
/// both layouts).
pub type ConvTranspose2dParams = conv2d::Conv2dParams;

/// `ConvTranspose2d(in_channels, out_channels, (kernel_h, kernel_w), stride, padding)` applied to a batch of
/// `(batch, in_channels, in_height, in_width)` images, as PyTorch defines it (no output padding, no dilation,
/// no groups). The weight is `[in_channels, out_channels, kernel_h, kernel_w]`.
pub type ConvTranspose2dShape = conv2d::ConvShape<true>;

/// (size - 1)*stride - 2 padding + kernel, or 0 when that is not positive.
pub fn transposed_out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size.saturating_sub(1) * stride + kernel).saturating_sub(2 * padding)
}

/// y (N, Co, Ho, Wo) = conv_transpose2d(x (N, Ci, H, W), weight [Ci, Co, KH, KW]) + bias [Co] (if given).
pub fn forward(
    gpu: &Gpu,
    y: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    forward_tiled(gpu, gpu.tiling, y, x, weight, bias, shape)
}

/// [`forward`] with a chosen kernel variant (the checks run both).
#[allow(clippy::too_many_arguments)]
pub fn forward_tiled(
    gpu: &Gpu,
    tiling: Tiling,
    y: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV_TRANSPOSE2D_FORWARD.qualified_name();
    shape.validate(&op)?;
    require_len(y, shape.output_len())?;
    require_len(x, shape.input_len())?;
    require_len(weight, shape.weight_len())?;
    if tiling == Tiling::Registers {
        return conv_registers::strided_gather(gpu, y, x, weight, bias, &shape.roles());
    }
    let no_bias;
    let bias_buffer = match bias {
        Some(b) => {
            require_len(b, shape.out_channels)?;
            b
        }
        None => {
            // The binding must hold a buffer; the shader does not read it when has_bias = 0.
            no_bias = gpu.buffer("conv_transpose2d no bias", BufferRole::Scratch, 4)?;
            &no_bias
        }
    };
    let params = gpu.uniform("conv_transpose2d_forward", &shape.params(bias.is_some()))?;
    let rows = shape.batch * shape.out_height() * shape.out_width();
    let grid = gemm_grid(gpu, &op, rows, shape.out_channels)?;
    gpu.dispatch(
        &wgsl::CONV_TRANSPOSE2D_FORWARD,
        &[&params, y, x, weight, bias_buffer],
        grid,
    )
}

/// dx (N, Ci, H, W) = d/dx of sum(dy * conv_transpose2d(x, weight)): a Conv2d of dy with the same weight.
pub fn input_backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    weight: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    input_backward_tiled(gpu, gpu.tiling, dx, weight, dy, shape)
}

/// [`input_backward`] with a chosen kernel variant (the checks run both).
#[allow(clippy::too_many_arguments)]
pub fn input_backward_tiled(
    gpu: &Gpu,
    tiling: Tiling,
    dx: &GpuBuffer,
    weight: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV_TRANSPOSE2D_INPUT_BACKWARD.qualified_name();
    shape.validate(&op)?;
    require_len(dx, shape.input_len())?;
    require_len(weight, shape.weight_len())?;
    require_len(dy, shape.output_len())?;
    if tiling == Tiling::Registers {
        return conv_registers::dense_gather(gpu, dx, dy, weight, None, &shape.roles().swapped());
    }
    let params = gpu.uniform("conv_transpose2d_input_backward", &shape.params(false))?;
    let rows = shape.batch * shape.in_height * shape.in_width;
    let grid = gemm_grid(gpu, &op, rows, shape.in_channels)?;
    gpu.dispatch(&wgsl::CONV_TRANSPOSE2D_INPUT_BACKWARD, &[&params, dx, weight, dy], grid)
}

/// dweight [Ci, Co, KH, KW] = sum over n, ih, iw of x[n, ci, ih, iw] * dy[n, co, ih*S - P + kh, iw*S - P + kw].
/// Overwrites dweight.
pub fn weight_backward(
    gpu: &Gpu,
    dweight: &GpuBuffer,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    weight_backward_tiled(gpu, gpu.tiling, dweight, x, dy, shape)
}

/// [`weight_backward`] with a chosen kernel variant (the checks run both).
#[allow(clippy::too_many_arguments)]
pub fn weight_backward_tiled(
    gpu: &Gpu,
    tiling: Tiling,
    dweight: &GpuBuffer,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV_TRANSPOSE2D_WEIGHT_BACKWARD.qualified_name();
    shape.validate(&op)?;
    require_len(dweight, shape.weight_len())?;
    require_len(x, shape.input_len())?;
    require_len(dy, shape.output_len())?;
    if tiling == Tiling::Registers {
        return conv_registers::weight_gradient(gpu, dweight, dy, x, &shape.roles().swapped());
    }
    let params = gpu.uniform("conv_transpose2d_weight_backward", &shape.params(false))?;
    let cols = shape.out_channels * shape.kernel_h * shape.kernel_w;
    let grid = gemm_grid(gpu, &op, shape.in_channels, cols)?;
    gpu.dispatch(
        &wgsl::CONV_TRANSPOSE2D_WEIGHT_BACKWARD,
        &[&params, dweight, x, dy],
        grid,
    )
}

/// dbias [Co] = sum of dy (N, Co, Ho, Wo) over n, oh, ow (the conv2d bias-gradient kernel). Overwrites dbias.
pub fn bias_backward(
    gpu: &Gpu,
    dbias: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &ConvTranspose2dShape,
) -> Result<Dispatch, GpuError> {
    let plane = shape.out_height() * shape.out_width();
    conv2d::bias_backward(gpu, dbias, dy, shape.batch, shape.out_channels, plane)
}

/// Shapes the checks use: odd ones first, then the default models' transposed convolutions at batch 2.
pub fn check_shapes() -> Vec<ConvTranspose2dShape> {
    let sq = ConvTranspose2dShape::square;
    vec![
        sq(1, 1, 1, (1, 1), 1, 1, 0),
        sq(2, 7, 3, (5, 5), 3, 2, 1),
        sq(1, 3, 5, (5, 7), 4, 2, 1),
        sq(3, 2, 33, (4, 3), 3, 1, 1),
        ConvTranspose2dShape {
            kernel_h: 2,
            kernel_w: 3,
            ..sq(1, 129, 7, (6, 5), 0, 3, 0)
        },
        // ae dec.3, dec.5 (= gan generator.net.5 with Ci = 64); gan generator.net.2
        sq(2, 64, 32, (7, 7), 4, 2, 1),
        sq(2, 32, 1, (14, 14), 4, 2, 1),
        sq(2, 128, 64, (7, 7), 4, 2, 1),
    ]
}

fn compare(gpu: &Gpu, buffer: &GpuBuffer, expected: &[f64]) -> Result<Comparison, GpuError> {
    Ok(check::compare(
        &check::download(gpu, buffer, expected.len())?,
        expected,
        Tolerance::ACCUMULATED,
    ))
}

/// Forward (with and without bias), input and weight gradients against the CPU twin. (The bias gradient is the
/// conv2d kernel, checked there.)
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (index, shape) in check_shapes().into_iter().enumerate() {
        for tiling in Tiling::ALL {
            let seed = 5000 + 10 * index as u64;
            let with_bias = index != 1;
            let label = format!("{}{}", shape.label(), if with_bias { "" } else { " no bias" });
            checks.push(KernelCheck::new(
                check_name(
                    tiling,
                    &wgsl::CONV_TRANSPOSE2D_FORWARD,
                    &crate::shaders::conv_registers::STRIDED_GATHER,
                ),
                label.clone(),
                move |gpu| {
                    let mut rng = TestRng::new(seed);
                    let x = rng.uniform_vec(shape.input_len(), -1.0, 1.0);
                    let w = rng.uniform_vec(shape.weight_len(), -1.0, 1.0);
                    let b = rng.uniform_vec(shape.out_channels, -1.0, 1.0);
                    let y = check::poisoned(gpu, "y", shape.output_len())?;
                    let (x_gpu, w_gpu, b_gpu) = (
                        check::upload(gpu, "x", &x)?,
                        check::upload(gpu, "w", &w)?,
                        check::upload(gpu, "b", &b)?,
                    );
                    gpu.run(&[&forward_tiled(
                        gpu,
                        tiling,
                        &y,
                        &x_gpu,
                        &w_gpu,
                        with_bias.then_some(&b_gpu),
                        &shape,
                    )?])?;
                    let b64 = check::to_f64(&b);
                    let expected = cpu::conv_transpose2d::forward(
                        &shape,
                        &check::to_f64(&x),
                        &check::to_f64(&w),
                        with_bias.then_some(&b64[..]),
                    );
                    compare(gpu, &y, &expected)
                },
            ));
            checks.push(KernelCheck::new(
                check_name(
                    tiling,
                    &wgsl::CONV_TRANSPOSE2D_INPUT_BACKWARD,
                    &crate::shaders::conv_registers::DENSE_GATHER,
                ),
                shape.label(),
                move |gpu| {
                    let mut rng = TestRng::new(seed + 1);
                    let w = rng.uniform_vec(shape.weight_len(), -1.0, 1.0);
                    let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
                    let dx = check::poisoned(gpu, "dx", shape.input_len())?;
                    let (w_gpu, dy_gpu) = (check::upload(gpu, "w", &w)?, check::upload(gpu, "dy", &dy)?);
                    gpu.run(&[&input_backward_tiled(gpu, tiling, &dx, &w_gpu, &dy_gpu, &shape)?])?;
                    let expected =
                        cpu::conv_transpose2d::input_backward(&shape, &check::to_f64(&w), &check::to_f64(&dy));
                    compare(gpu, &dx, &expected)
                },
            ));
            checks.push(KernelCheck::new(
                check_name(
                    tiling,
                    &wgsl::CONV_TRANSPOSE2D_WEIGHT_BACKWARD,
                    &crate::shaders::conv_registers::WEIGHT_GRADIENT,
                ),
                shape.label(),
                move |gpu| {
                    let mut rng = TestRng::new(seed + 2);
                    let x = rng.uniform_vec(shape.input_len(), -1.0, 1.0);
                    let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
                    let dw = check::poisoned(gpu, "dw", shape.weight_len())?;
                    let (x_gpu, dy_gpu) = (check::upload(gpu, "x", &x)?, check::upload(gpu, "dy", &dy)?);
                    gpu.run(&[&weight_backward_tiled(gpu, tiling, &dw, &x_gpu, &dy_gpu, &shape)?])?;
                    let expected =
                        cpu::conv_transpose2d::weight_backward(&shape, &check::to_f64(&x), &check::to_f64(&dy));
                    compare(gpu, &dw, &expected)
                },
            ));
        }
    }
    checks
}
