//! Resampling by 2 (`shaders/resample.wgsl`): max-pool 2x2 stride 2 and nearest upsampling, forward and backward.
//!
//! Tensors are (N, C, H, W) seen as `planes = N*C` planes of `height x width` (the input's size). The max-pool
//! backward recomputes each window's argmax from the forward input `x`, so it needs `x` saved (no index buffer);
//! the upsample backward needs nothing saved.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Tiling};
use crate::kernels::conv2d::require_len;
use crate::shaders::{resample as wgsl, EntryPoint};

/// Keep in sync with `struct Params` in shaders/resample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ResampleParams {
    pub planes: u32,
    pub in_height: u32,
    pub in_width: u32,
    pub out_height: u32,
    pub out_width: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Output plane of `MaxPool2d(2)`: (H / 2, W / 2), rounded down as PyTorch does.
pub fn max_pool2d_out(height: usize, width: usize) -> (usize, usize) {
    (height / 2, width / 2)
}

/// Output plane of nearest upsampling by 2: (2 H, 2 W).
pub fn upsample2d_out(height: usize, width: usize) -> (usize, usize) {
    (2 * height, 2 * width)
}

/// Params for `entry` from `planes` planes of `height x width` to `out_height x out_width`, with the input and
/// output lengths.
fn prepare(
    gpu: &Gpu,
    entry: &'static EntryPoint,
    (planes, height, width): (usize, usize, usize),
    (out_height, out_width): (usize, usize),
) -> Result<(GpuBuffer, usize, usize), GpuError> {
    let (in_len, out_len) = (planes * height * width, planes * out_height * out_width);
    if in_len == 0 || out_len == 0 || in_len.max(out_len) > u32::MAX as usize {
        return Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!(
                "{planes} planes of {height}x{width} -> {out_height}x{out_width}: every size must be >= 1 \
                 (max-pool needs H, W >= 2) and each tensor under 2^32 elements"
            ),
        });
    }
    let params = gpu.uniform(
        entry.name,
        &ResampleParams {
            planes: planes as u32,
            in_height: height as u32,
            in_width: width as u32,
            out_height: out_height as u32,
            out_width: out_width as u32,
            ..Default::default()
        },
    )?;
    Ok((params, in_len, out_len))
}

/// y (N, C, H/2, W/2) = max over each 2x2 window of x (N, C, H, W).
pub fn max_pool2d_forward(
    gpu: &Gpu,
    y: &GpuBuffer,
    x: &GpuBuffer,
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::MAX_POOL2D_FORWARD;
    let (params, in_len, out_len) = prepare(gpu, entry, (planes, height, width), max_pool2d_out(height, width))?;
    require_len(x, in_len)?;
    require_len(y, out_len)?;
    gpu.dispatch_1d(entry, &[&params, y, x], out_len as u64)
}

/// dx (N, C, H, W): each window's dy goes to its first maximum in x (row-major window order); 0 elsewhere.
pub fn max_pool2d_backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Dispatch, GpuError> {
    let windows = gpu.tiling == Tiling::Registers;
    max_pool2d_backward_as(gpu, windows, dx, x, dy, planes, height, width)
}

/// [`max_pool2d_backward`] with one thread per window (`windows`, for even sizes: CPU adapters' choice, where it
/// finds each window's maximum once instead of four times) or one per pixel of dx (odd sizes, GPUs).
#[allow(clippy::too_many_arguments)]
pub fn max_pool2d_backward_as(
    gpu: &Gpu,
    windows: bool,
    dx: &GpuBuffer,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Dispatch, GpuError> {
    let windows = windows && height.is_multiple_of(2) && width.is_multiple_of(2);
    let entry = if windows {
        &wgsl::MAX_POOL2D_BACKWARD_WINDOWS
    } else {
        &wgsl::MAX_POOL2D_BACKWARD
    };
    let (params, in_len, out_len) = prepare(gpu, entry, (planes, height, width), max_pool2d_out(height, width))?;
    require_len(dx, in_len)?;
    require_len(x, in_len)?;
    require_len(dy, out_len)?;
    let threads = if windows { out_len } else { in_len };
    gpu.dispatch_1d(entry, &[&params, dx, x, dy], threads as u64)
}

/// y (N, C, 2H, 2W) = x (N, C, H, W) with each pixel repeated over a 2x2 block.
pub fn upsample_nearest2d_forward(
    gpu: &Gpu,
    y: &GpuBuffer,
    x: &GpuBuffer,
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::UPSAMPLE_NEAREST2D_FORWARD;
    let (params, in_len, out_len) = prepare(gpu, entry, (planes, height, width), upsample2d_out(height, width))?;
    require_len(x, in_len)?;
    require_len(y, out_len)?;
    gpu.dispatch_1d(entry, &[&params, y, x], out_len as u64)
}

/// dx (N, C, H, W) = the sum of dy (N, C, 2H, 2W) over each 2x2 block.
pub fn upsample_nearest2d_backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    dy: &GpuBuffer,
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::UPSAMPLE_NEAREST2D_BACKWARD;
    let (params, in_len, out_len) = prepare(gpu, entry, (planes, height, width), upsample2d_out(height, width))?;
    require_len(dx, in_len)?;
    require_len(dy, out_len)?;
    gpu.dispatch_1d(entry, &[&params, dx, dy], in_len as u64)
}

/// Inputs for the max-pool checks. With `ties`, values are small integers so that windows often hold equal
/// maxima and the tie rule is exercised.
fn pool_input(seed: u64, len: usize, ties: bool) -> Vec<f32> {
    let mut rng = TestRng::new(seed);
    let values = rng.uniform_vec(len, -2.0, 2.0);
    if ties {
        values.iter().map(|v| v.round()).collect()
    } else {
        values
    }
}

/// (planes, height, width, ties) the max-pool checks use: odd shapes, the classifier's two pools at batch 2.
pub const POOL_SHAPES: [(usize, usize, usize, bool); 6] = [
    (1, 2, 2, false),
    (6, 5, 7, false),
    (7, 9, 4, true),
    (3, 33, 3, true),
    (2 * 32, 28, 28, false),
    (2 * 64, 14, 14, true),
];

/// (planes, height, width) the upsample checks use: odd shapes, the ddpm's two upsamples at batch 2.
pub const UPSAMPLE_SHAPES: [(usize, usize, usize); 5] =
    [(1, 1, 1), (6, 5, 7), (3, 1, 33), (2 * 128, 7, 7), (2 * 128, 14, 14)];

/// Every resampling kernel against the CPU twin. Max-pool and upsample copy values exactly; the upsample backward
/// sums four terms.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (index, (planes, height, width, ties)) in POOL_SHAPES.into_iter().enumerate() {
        let shape = format!("P{planes} {height}x{width}{}", if ties { " ties" } else { "" });
        let (ho, wo) = max_pool2d_out(height, width);
        let (in_len, out_len) = (planes * height * width, planes * ho * wo);
        let seed = 2000 + 10 * index as u64;
        checks.push(KernelCheck::new(
            wgsl::MAX_POOL2D_FORWARD.qualified_name(),
            shape.clone(),
            move |gpu| {
                let x = pool_input(seed, in_len, ties);
                let y = check::poisoned(gpu, "y", out_len)?;
                let x_gpu = check::upload(gpu, "x", &x)?;
                gpu.run(&[&max_pool2d_forward(gpu, &y, &x_gpu, planes, height, width)?])?;
                let expected = cpu::resample::max_pool2d_forward(&check::to_f64(&x), planes, height, width);
                Ok(check::compare(
                    &check::download(gpu, &y, out_len)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        // Both backward kernels on every adapter; the window one takes even sizes only.
        let even = height.is_multiple_of(2) && width.is_multiple_of(2);
        let variants = [
            (false, &wgsl::MAX_POOL2D_BACKWARD),
            (true, &wgsl::MAX_POOL2D_BACKWARD_WINDOWS),
        ];
        for (windows, entry) in variants.into_iter().filter(|(windows, _)| !windows || even) {
            checks.push(KernelCheck::new(entry.qualified_name(), shape.clone(), move |gpu| {
                let x = pool_input(seed + 1, in_len, ties);
                let dy = TestRng::new(seed + 2).uniform_vec(out_len, -1.0, 1.0);
                let dx = check::poisoned(gpu, "dx", in_len)?;
                let (x_gpu, dy_gpu) = (check::upload(gpu, "x", &x)?, check::upload(gpu, "dy", &dy)?);
                let dispatch = max_pool2d_backward_as(gpu, windows, &dx, &x_gpu, &dy_gpu, planes, height, width)?;
                gpu.run(&[&dispatch])?;
                let expected =
                    cpu::resample::max_pool2d_backward(&check::to_f64(&x), &check::to_f64(&dy), planes, height, width);
                Ok(check::compare(
                    &check::download(gpu, &dx, in_len)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            }));
        }
    }
    for (index, (planes, height, width)) in UPSAMPLE_SHAPES.into_iter().enumerate() {
        let shape = format!("P{planes} {height}x{width}");
        let (ho, wo) = upsample2d_out(height, width);
        let (in_len, out_len) = (planes * height * width, planes * ho * wo);
        let seed = 3000 + 10 * index as u64;
        checks.push(KernelCheck::new(
            wgsl::UPSAMPLE_NEAREST2D_FORWARD.qualified_name(),
            shape.clone(),
            move |gpu| {
                let x = TestRng::new(seed).uniform_vec(in_len, -1.0, 1.0);
                let y = check::poisoned(gpu, "y", out_len)?;
                let x_gpu = check::upload(gpu, "x", &x)?;
                gpu.run(&[&upsample_nearest2d_forward(gpu, &y, &x_gpu, planes, height, width)?])?;
                let expected = cpu::resample::upsample_nearest2d_forward(&check::to_f64(&x), planes, height, width);
                Ok(check::compare(
                    &check::download(gpu, &y, out_len)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::UPSAMPLE_NEAREST2D_BACKWARD.qualified_name(),
            shape,
            move |gpu| {
                let dy = TestRng::new(seed + 1).uniform_vec(out_len, -1.0, 1.0);
                let dx = check::poisoned(gpu, "dx", in_len)?;
                let dy_gpu = check::upload(gpu, "dy", &dy)?;
                gpu.run(&[&upsample_nearest2d_backward(gpu, &dx, &dy_gpu, planes, height, width)?])?;
                let expected = cpu::resample::upsample_nearest2d_backward(&check::to_f64(&dy), planes, height, width);
                Ok(check::compare(
                    &check::download(gpu, &dx, in_len)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
    }
    checks
}
