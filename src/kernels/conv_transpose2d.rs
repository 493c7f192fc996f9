//! 2-D transposed convolution (`shaders/conv_transpose2d.wgsl`): forward, input gradient and weight gradient as
//! implicit GEMM; the bias gradient is [`conv2d::bias_backward`](crate::kernels::conv2d::bias_backward).
//!
//! In the forward pass `y = conv_transpose2d(x, weight) + bias`, so the backward needs `x` (for the weight
//! gradient), `weight` (for the input gradient) and `dy`.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError, Tiling};
use crate::kernels::conv2d::{self, gemm_grid, require_len, GEMM_TILE};
use crate::kernels::conv_registers::{self, check_name, Roles};
use crate::shaders::conv_transpose2d as wgsl;

/// Keep in sync with `struct Params` in shaders/conv_transpose2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvTranspose2dParams {
    pub batch: u32,
    pub in_channels: u32,
    pub in_height: u32,
    pub in_width: u32,
    pub out_channels: u32,
    pub out_height: u32,
    pub out_width: u32,
    pub kernel_h: u32,
    pub kernel_w: u32,
    pub stride: u32,
    pub padding: u32,
    pub has_bias: u32,
}

/// `ConvTranspose2d(in_channels, out_channels, (kernel_h, kernel_w), stride, padding)` applied to a batch of
/// `(batch, in_channels, in_height, in_width)` images, as PyTorch defines it (no output padding, no dilation,
/// no groups). The weight is `[in_channels, out_channels, kernel_h, kernel_w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvTranspose2dShape {
    /// A square kernel, as every default model uses.
    pub const fn square(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        (in_height, in_width): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            batch,
            in_channels,
            out_channels,
            in_height,
            in_width,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            padding,
        }
    }

    /// Ho = (H - 1)*S - 2P + KH (0 when that is not positive; [`validate`](Self::validate) rejects it).
    pub fn out_height(&self) -> usize {
        transposed_out_size(self.in_height, self.kernel_h, self.stride, self.padding)
    }

    /// Wo = (W - 1)*S - 2P + KW
    pub fn out_width(&self) -> usize {
        transposed_out_size(self.in_width, self.kernel_w, self.stride, self.padding)
    }

    /// Elements of x (N, Ci, H, W).
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_height * self.in_width
    }

    /// Elements of y (N, Co, Ho, Wo).
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_height() * self.out_width()
    }

    /// Elements of the weight [Ci, Co, KH, KW].
    pub fn weight_len(&self) -> usize {
        self.in_channels * self.out_channels * self.kernel_h * self.kernel_w
    }

    /// Floating-point operations of the forward pass counted as PyTorch's profiler does for the equivalent
    /// Conv2d input gradient: 2 * N*H*W * Ci * Co*KH*KW (every input pixel times every tap). The input gradient
    /// and the weight gradient each cost the same again. The forward kernel also runs the taps that miss (for
    /// stride 2, 3 in 4 of its K loop are zeros).
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.in_height * self.in_width) as u64
            * self.in_channels as u64
            * (self.out_channels * self.kernel_h * self.kernel_w) as u64
    }

    /// Rejects shapes the kernels cannot run: empty tensors, stride 0, an empty output, or tensors whose indices
    /// do not fit in 32 bits.
    pub fn validate(&self, op: &str) -> Result<(), GpuError> {
        let invalid = |message: String| {
            Err(GpuError::Validation {
                context: op.to_string(),
                message,
            })
        };
        if [
            self.batch,
            self.in_channels,
            self.out_channels,
            self.in_height,
            self.in_width,
            self.kernel_h,
            self.kernel_w,
            self.stride,
        ]
        .contains(&0)
        {
            return invalid(format!(
                "{self:?} has a zero size or stride; every size and the stride must be >= 1"
            ));
        }
        if self.out_height() == 0 || self.out_width() == 0 {
            return invalid(format!(
                "padding {} leaves no output from a {}x{} image with a {}x{} kernel and stride {}: use less padding",
                self.padding, self.in_height, self.in_width, self.kernel_h, self.kernel_w, self.stride
            ));
        }
        let largest = self
            .input_len()
            .max(self.output_len())
            .max(self.weight_len())
            .max(self.out_channels * self.kernel_h * self.kernel_w * GEMM_TILE);
        if largest > u32::MAX as usize - GEMM_TILE {
            return invalid(format!(
                "{self:?} has {largest} elements in one tensor, over the 32-bit indices the kernels use: \
                 use a smaller batch"
            ));
        }
        Ok(())
    }

    fn params(&self, has_bias: bool) -> ConvTranspose2dParams {
        ConvTranspose2dParams {
            batch: self.batch as u32,
            in_channels: self.in_channels as u32,
            in_height: self.in_height as u32,
            in_width: self.in_width as u32,
            out_channels: self.out_channels as u32,
            out_height: self.out_height() as u32,
            out_width: self.out_width() as u32,
            kernel_h: self.kernel_h as u32,
            kernel_w: self.kernel_w as u32,
            stride: self.stride as u32,
            padding: self.padding as u32,
            has_bias: has_bias as u32,
        }
    }

    /// Input (Ci, H, W) as src and output (Co, Ho, Wo) as dst, for the register-tiled kernels.
    pub fn roles(&self) -> Roles {
        Roles {
            batch: self.batch,
            src: [self.in_channels, self.in_height, self.in_width],
            dst: [self.out_channels, self.out_height(), self.out_width()],
            kernel: [self.kernel_h, self.kernel_w],
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// "N2 Ci64 7x7 -> Co32 14x14, k4 s2 p1", for check tables and errors.
    pub fn label(&self) -> String {
        format!(
            "N{} Ci{} {}x{} -> Co{} {}x{}, k{}{} s{} p{}",
            self.batch,
            self.in_channels,
            self.in_height,
            self.in_width,
            self.out_channels,
            self.out_height(),
            self.out_width(),
            self.kernel_h,
            if self.kernel_w == self.kernel_h {
                String::new()
            } else {
                format!("x{}", self.kernel_w)
            },
            self.stride,
            self.padding
        )
    }
}

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
