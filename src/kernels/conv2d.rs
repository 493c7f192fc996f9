//! 2-D convolution (`shaders/conv2d.wgsl`): forward, input gradient, weight gradient and bias gradient, each an
//! implicit GEMM (no im2col buffer) except the bias gradient, a workgroup tree reduction per channel.
//!
//! In the forward pass `y = conv2d(x, weight) + bias`, so the backward needs `x` (for the weight gradient),
//! `weight` (for the input gradient) and `dy`; it needs neither `y` nor `bias`.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Tiling};
use crate::kernels::conv_registers::{self, check_name, Roles};
use crate::shaders::conv2d as wgsl;

/// Keep in sync with `struct Params` in shaders/conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Conv2dParams {
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

/// The C tile of one workgroup of the implicit GEMM kernels is `GEMM_TILE x GEMM_TILE` (TILE_M = TILE_N in the
/// shaders).
pub const GEMM_TILE: usize = 64;

/// `Conv2d(in_channels, out_channels, (kernel_h, kernel_w), stride, padding)` applied to a batch of
/// `(batch, in_channels, in_height, in_width)` images, as PyTorch defines it (zero padding, no dilation, no groups).
/// The weight is `[out_channels, in_channels, kernel_h, kernel_w]`.
pub type Conv2dShape = ConvShape<false>;

/// A convolution (`TRANSPOSED = false`, [`Conv2dShape`]) or a transposed convolution (`true`,
/// `conv_transpose2d::ConvTranspose2dShape`): the same sizes, with their own output size and FLOP count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape<const TRANSPOSED: bool> {
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

impl<const TRANSPOSED: bool> ConvShape<TRANSPOSED> {
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

    fn out_size(&self, size: usize, kernel: usize) -> usize {
        match TRANSPOSED {
            false => out_size(size, kernel, self.stride, self.padding),
            true => crate::kernels::conv_transpose2d::transposed_out_size(size, kernel, self.stride, self.padding),
        }
    }

    /// Ho = (H + 2P - KH) / S + 1; transposed, (H - 1)*S - 2P + KH (0 when the kernel does not fit or nothing is
    /// left; [`validate`](Self::validate) rejects that).
    pub fn out_height(&self) -> usize {
        self.out_size(self.in_height, self.kernel_h)
    }

    /// Wo, as [`out_height`](Self::out_height).
    pub fn out_width(&self) -> usize {
        self.out_size(self.in_width, self.kernel_w)
    }

    /// Elements of x (N, Ci, H, W).
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_height * self.in_width
    }

    /// Elements of y (N, Co, Ho, Wo).
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_height() * self.out_width()
    }

    /// Elements of the weight [Co, Ci, KH, KW] (transposed: [Ci, Co, KH, KW]).
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Floating-point operations (multiply and add counted apart) of the forward pass; the input gradient and the
    /// weight gradient each cost the same again. Padding taps are counted (as cuDNN and the profilers do). A
    /// transposed convolution counts as PyTorch's profiler does for the equivalent Conv2d input gradient:
    /// 2 * N*H*W * Ci * Co*KH*KW (every input pixel times every tap; its forward kernel also runs the taps that
    /// miss: for stride 2, 3 in 4 of its K loop are zeros).
    pub fn flops(&self) -> u64 {
        let taps = (self.kernel_h * self.kernel_w) as u64;
        let (pixels, channels) = match TRANSPOSED {
            false => (
                self.batch * self.out_height() * self.out_width(),
                self.out_channels * self.in_channels,
            ),
            true => (
                self.batch * self.in_height * self.in_width,
                self.in_channels * self.out_channels,
            ),
        };
        2 * pixels as u64 * channels as u64 * taps
    }

    /// Rejects shapes the kernels cannot run: empty tensors, stride 0, a kernel larger than the padded image (an
    /// empty output, transposed), or tensors whose indices do not fit in 32 bits.
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
        if !TRANSPOSED
            && (self.in_height + 2 * self.padding < self.kernel_h || self.in_width + 2 * self.padding < self.kernel_w)
        {
            return invalid(format!(
                "a {}x{} kernel does not fit a {}x{} image with padding {}: use a smaller kernel or more padding",
                self.kernel_h, self.kernel_w, self.in_height, self.in_width, self.padding
            ));
        }
        if TRANSPOSED && (self.out_height() == 0 || self.out_width() == 0) {
            return invalid(format!(
                "padding {} leaves no output from a {}x{} image with a {}x{} kernel and stride {}: use less padding",
                self.padding, self.in_height, self.in_width, self.kernel_h, self.kernel_w, self.stride
            ));
        }
        // The implicit GEMM's K dimension: Ci KH KW (transposed: Co KH KW).
        let gemm_k = if TRANSPOSED {
            self.out_channels
        } else {
            self.in_channels
        } * self.kernel_h
            * self.kernel_w;
        let largest = self
            .input_len()
            .max(self.output_len())
            .max(self.weight_len())
            .max(gemm_k * GEMM_TILE);
        if largest > u32::MAX as usize - GEMM_TILE {
            return invalid(format!(
                "{self:?} has {largest} elements in one tensor, over the 32-bit indices the kernels use: \
                 use a smaller batch"
            ));
        }
        Ok(())
    }

    pub(crate) fn params(&self, has_bias: bool) -> Conv2dParams {
        Conv2dParams {
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

    /// "N2 Ci7 5x5 -> Co3 3x3, k3 s2 p1", for check tables and errors.
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

/// (size + 2 padding - kernel) / stride + 1, or 0 when the kernel does not fit.
pub fn out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    if stride == 0 || size + 2 * padding < kernel {
        return 0;
    }
    (size + 2 * padding - kernel) / stride + 1
}

/// Workgroups for an implicit GEMM with a `rows x cols` result: row tiles along x (folded into z past the
/// per-dimension limit, as the shaders' `tile_origin` expects), column tiles along y.
pub fn gemm_grid(gpu: &Gpu, op: &str, rows: usize, cols: usize) -> Result<[u32; 3], GpuError> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let row_tiles = rows.div_ceil(GEMM_TILE).max(1);
    let col_tiles = cols.div_ceil(GEMM_TILE).max(1);
    if col_tiles > max {
        return Err(GpuError::Validation {
            context: op.to_string(),
            message: format!("{cols} GEMM columns need {col_tiles} workgroups along y, over the limit of {max}"),
        });
    }
    let z = row_tiles.div_ceil(max);
    let x = row_tiles.div_ceil(z);
    Ok([x as u32, col_tiles as u32, z as u32])
}

/// Fails unless `buffer` holds at least `len` f32 values.
pub fn require_len(buffer: &GpuBuffer, len: usize) -> Result<(), GpuError> {
    let bytes = 4 * len as u64;
    if buffer.bytes < bytes {
        return Err(GpuError::BufferSize {
            label: buffer.label.clone(),
            capacity: buffer.bytes,
            bytes,
        });
    }
    Ok(())
}

/// y (N, Co, Ho, Wo) = conv2d(x (N, Ci, H, W), weight [Co, Ci, KH, KW]) + bias [Co] (if given).
pub fn forward(
    gpu: &Gpu,
    y: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    shape: &Conv2dShape,
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
    shape: &Conv2dShape,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV2D_FORWARD.qualified_name();
    shape.validate(&op)?;
    require_len(y, shape.output_len())?;
    require_len(x, shape.input_len())?;
    require_len(weight, shape.weight_len())?;
    if tiling == Tiling::Registers {
        return conv_registers::dense_gather(gpu, y, x, weight, bias, &shape.roles());
    }
    let no_bias;
    let bias_buffer = match bias {
        Some(b) => {
            require_len(b, shape.out_channels)?;
            b
        }
        None => {
            // The binding must hold a buffer; the shader does not read it when has_bias = 0.
            no_bias = gpu.buffer("conv2d no bias", crate::gpu::BufferRole::Scratch, 4)?;
            &no_bias
        }
    };
    let params = gpu.uniform("conv2d_forward", &shape.params(bias.is_some()))?;
    let rows = shape.batch * shape.out_height() * shape.out_width();
    let grid = gemm_grid(gpu, &op, rows, shape.out_channels)?;
    gpu.dispatch(&wgsl::CONV2D_FORWARD, &[&params, y, x, weight, bias_buffer], grid)
}

/// dx (N, Ci, H, W) = d/dx of sum(dy * conv2d(x, weight)): the weight, flipped in effect, applied to dy.
pub fn input_backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    weight: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &Conv2dShape,
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
    shape: &Conv2dShape,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV2D_INPUT_BACKWARD.qualified_name();
    shape.validate(&op)?;
    require_len(dx, shape.input_len())?;
    require_len(weight, shape.weight_len())?;
    require_len(dy, shape.output_len())?;
    if tiling == Tiling::Registers {
        return conv_registers::strided_gather(gpu, dx, dy, weight, None, &shape.roles().swapped());
    }
    let params = gpu.uniform("conv2d_input_backward", &shape.params(false))?;
    let rows = shape.batch * shape.in_height * shape.in_width;
    let grid = gemm_grid(gpu, &op, rows, shape.in_channels)?;
    gpu.dispatch(&wgsl::CONV2D_INPUT_BACKWARD, &[&params, dx, weight, dy], grid)
}

/// dweight [Co, Ci, KH, KW] = sum over n, oh, ow of dy[n, co, oh, ow] * x[n, ci, oh*S - P + kh, ow*S - P + kw].
/// Overwrites dweight (the caller accumulates across uses if a weight is shared).
pub fn weight_backward(
    gpu: &Gpu,
    dweight: &GpuBuffer,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    shape: &Conv2dShape,
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
    shape: &Conv2dShape,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV2D_WEIGHT_BACKWARD.qualified_name();
    shape.validate(&op)?;
    require_len(dweight, shape.weight_len())?;
    require_len(x, shape.input_len())?;
    require_len(dy, shape.output_len())?;
    if tiling == Tiling::Registers {
        return conv_registers::weight_gradient(gpu, dweight, x, dy, &shape.roles());
    }
    let params = gpu.uniform("conv2d_weight_backward", &shape.params(false))?;
    let cols = shape.in_channels * shape.kernel_h * shape.kernel_w;
    let grid = gemm_grid(gpu, &op, shape.out_channels, cols)?;
    gpu.dispatch(&wgsl::CONV2D_WEIGHT_BACKWARD, &[&params, dweight, x, dy], grid)
}

/// dbias [C] = sum over n and the `plane` pixels of dy (N, C, plane). Serves Conv2d (C = Co, plane = Ho*Wo) and
/// ConvTranspose2d alike. Overwrites dbias.
pub fn bias_backward(
    gpu: &Gpu,
    dbias: &GpuBuffer,
    dy: &GpuBuffer,
    batch: usize,
    channels: usize,
    plane: usize,
) -> Result<Dispatch, GpuError> {
    let op = wgsl::CONV2D_BIAS_BACKWARD.qualified_name();
    let count = batch * channels * plane;
    if count == 0 || count > u32::MAX as usize {
        return Err(GpuError::Validation {
            context: op,
            message: format!("dy of {batch} x {channels} x {plane} elements: need between 1 and 2^32 - 1"),
        });
    }
    require_len(dbias, channels)?;
    require_len(dy, count)?;
    let params = Conv2dParams {
        batch: batch as u32,
        out_channels: channels as u32,
        out_height: plane as u32,
        out_width: 1,
        ..Default::default()
    };
    let params = gpu.uniform("conv2d_bias_backward", &params)?;
    // One workgroup per channel, folded into y like `grid_1d`.
    let grid = crate::gpu::grid_1d(channels as u64, 1, gpu.limits.max_compute_workgroups_per_dimension);
    gpu.dispatch(&wgsl::CONV2D_BIAS_BACKWARD, &[&params, dbias, dy], grid)
}

/// Shapes the checks use: odd ones first, then the default models' convolutions at batch 2.
pub fn check_shapes() -> Vec<Conv2dShape> {
    let sq = Conv2dShape::square;
    vec![
        sq(1, 1, 1, (1, 1), 1, 1, 0),
        sq(2, 7, 3, (5, 5), 3, 2, 1),
        sq(1, 3, 5, (5, 7), 4, 2, 1),
        sq(3, 2, 33, (9, 6), 3, 1, 1),
        Conv2dShape {
            kernel_h: 2,
            kernel_w: 3,
            ..sq(1, 7, 129, (11, 13), 0, 1, 0)
        },
        sq(1, 5, 7, (7, 5), 3, 3, 2),
        // ae enc.0, enc.2 (and gan discriminator.net.0 with Co = 64)
        sq(2, 1, 32, (28, 28), 4, 2, 1),
        sq(2, 32, 64, (14, 14), 4, 2, 1),
        // classifier c1; ddpm net.d1.c1, net.ds1, net.m1.c1, net.d2.skip (1x1)
        sq(2, 1, 32, (28, 28), 3, 1, 1),
        sq(2, 64, 64, (28, 28), 3, 1, 1),
        sq(2, 64, 64, (28, 28), 3, 2, 1),
        sq(2, 128, 128, (7, 7), 3, 1, 1),
        sq(2, 64, 128, (14, 14), 1, 1, 0),
    ]
}

fn gpu_result(gpu: &Gpu, buffer: &GpuBuffer, expected: &[f64]) -> Result<Comparison, GpuError> {
    Ok(check::compare(
        &check::download(gpu, buffer, expected.len())?,
        expected,
        Tolerance::ACCUMULATED,
    ))
}

/// Forward (with and without bias), input, weight and bias gradients against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (index, shape) in check_shapes().into_iter().enumerate() {
        for tiling in Tiling::ALL {
            let seed = 1000 + 10 * index as u64;
            // The first odd shape also runs without bias.
            let with_bias = index != 1;
            let label = format!("{}{}", shape.label(), if with_bias { "" } else { " no bias" });
            checks.push(KernelCheck::new(
                check_name(
                    tiling,
                    &wgsl::CONV2D_FORWARD,
                    &crate::shaders::conv_registers::DENSE_GATHER,
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
                    let bias = with_bias.then_some(&b_gpu);
                    gpu.run(&[&forward_tiled(gpu, tiling, &y, &x_gpu, &w_gpu, bias, &shape)?])?;
                    let b64 = check::to_f64(&b);
                    let expected = cpu::conv2d::forward(
                        &shape,
                        &check::to_f64(&x),
                        &check::to_f64(&w),
                        with_bias.then_some(&b64[..]),
                    );
                    gpu_result(gpu, &y, &expected)
                },
            ));
            checks.push(KernelCheck::new(
                check_name(
                    tiling,
                    &wgsl::CONV2D_INPUT_BACKWARD,
                    &crate::shaders::conv_registers::STRIDED_GATHER,
                ),
                shape.label(),
                move |gpu| {
                    let mut rng = TestRng::new(seed + 1);
                    let w = rng.uniform_vec(shape.weight_len(), -1.0, 1.0);
                    let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
                    let dx = check::poisoned(gpu, "dx", shape.input_len())?;
                    let (w_gpu, dy_gpu) = (check::upload(gpu, "w", &w)?, check::upload(gpu, "dy", &dy)?);
                    gpu.run(&[&input_backward_tiled(gpu, tiling, &dx, &w_gpu, &dy_gpu, &shape)?])?;
                    let expected = cpu::conv2d::input_backward(&shape, &check::to_f64(&w), &check::to_f64(&dy));
                    gpu_result(gpu, &dx, &expected)
                },
            ));
            checks.push(KernelCheck::new(
                check_name(
                    tiling,
                    &wgsl::CONV2D_WEIGHT_BACKWARD,
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
                    let expected = cpu::conv2d::weight_backward(&shape, &check::to_f64(&x), &check::to_f64(&dy));
                    gpu_result(gpu, &dw, &expected)
                },
            ));
            if tiling == Tiling::Workgroup {
                checks.push(KernelCheck::new(
                    wgsl::CONV2D_BIAS_BACKWARD.qualified_name(),
                    shape.label(),
                    move |gpu| {
                        let mut rng = TestRng::new(seed + 3);
                        let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
                        let db = check::poisoned(gpu, "dbias", shape.out_channels)?;
                        let dy_gpu = check::upload(gpu, "dy", &dy)?;
                        let plane = shape.out_height() * shape.out_width();
                        gpu.run(&[&bias_backward(
                            gpu,
                            &db,
                            &dy_gpu,
                            shape.batch,
                            shape.out_channels,
                            plane,
                        )?])?;
                        let expected =
                            cpu::conv2d::bias_backward(shape.batch, shape.out_channels, plane, &check::to_f64(&dy));
                        gpu_result(gpu, &db, &expected)
                    },
                ));
            }
        }
    }
    // The classifier's first layer at its real batch: a weight-gradient thread loops over 128 x 28 x 28 pixels of
    // dy, past the CPU drivers' loop limit, so there the batch is split into launches (conv_registers::
    // weight_gradient). The register-tiled kernels only: the workgroup-tiled one runs on GPUs, which have no limit.
    let shape = Conv2dShape::square(128, 1, 32, (28, 28), 3, 1, 1);
    checks.push(KernelCheck::new(
        check_name(
            Tiling::Registers,
            &wgsl::CONV2D_WEIGHT_BACKWARD,
            &crate::shaders::conv_registers::WEIGHT_GRADIENT,
        ),
        format!("{} (past the CPU loop limit)", shape.label()),
        move |gpu| {
            let mut rng = TestRng::new(77);
            let x = rng.uniform_vec(shape.input_len(), -1.0, 1.0);
            let dy = rng.uniform_vec(shape.output_len(), -1.0, 1.0);
            let dw = check::poisoned(gpu, "dw", shape.weight_len())?;
            let (x_gpu, dy_gpu) = (check::upload(gpu, "x", &x)?, check::upload(gpu, "dy", &dy)?);
            gpu.run(&[&weight_backward_tiled(
                gpu,
                Tiling::Registers,
                &dw,
                &x_gpu,
                &dy_gpu,
                &shape,
            )?])?;
            let expected = cpu::conv2d::weight_backward(&shape, &check::to_f64(&x), &check::to_f64(&dy));
            gpu_result(gpu, &dw, &expected)
        },
    ));
    checks
}
