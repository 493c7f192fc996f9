//! Channel concatenation (`shaders/concat.wgsl`): `cat([a, b], dim=1)` of NCHW tensors and its backward, the
//! split of the gradient. Neither direction needs anything saved.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::kernels::conv2d::require_len;
use crate::shaders::{concat as wgsl, EntryPoint};

/// Keep in sync with `struct Params` in shaders/concat.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConcatParams {
    pub batch: u32,
    pub channels_a: u32,
    pub channels_b: u32,
    pub plane: u32,
}

/// Params for (N, Ca + Cb, plane) and the lengths of a, b and the concatenation.
fn prepare(
    gpu: &Gpu,
    entry: &'static EntryPoint,
    batch: usize,
    channels_a: usize,
    channels_b: usize,
    plane: usize,
) -> Result<(GpuBuffer, [usize; 3]), GpuError> {
    let total = batch * (channels_a + channels_b) * plane;
    if batch == 0 || channels_a == 0 || channels_b == 0 || plane == 0 || total > u32::MAX as usize {
        return Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!(
                "concatenating {batch} x ({channels_a} + {channels_b}) x {plane}: every size must be >= 1 and the \
                 result under 2^32 elements"
            ),
        });
    }
    let params = ConcatParams {
        batch: batch as u32,
        channels_a: channels_a as u32,
        channels_b: channels_b as u32,
        plane: plane as u32,
    };
    let lengths = [batch * channels_a * plane, batch * channels_b * plane, total];
    Ok((gpu.uniform(entry.name, &params)?, lengths))
}

/// out (N, Ca + Cb, H, W) = cat([a (N, Ca, H, W), b (N, Cb, H, W)], dim 1); `plane` = H*W.
#[allow(clippy::too_many_arguments)]
pub fn concat_channels_forward(
    gpu: &Gpu,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    batch: usize,
    channels_a: usize,
    channels_b: usize,
    plane: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::CONCAT_CHANNELS_FORWARD;
    let (params, [len_a, len_b, total]) = prepare(gpu, entry, batch, channels_a, channels_b, plane)?;
    require_len(out, total)?;
    require_len(a, len_a)?;
    require_len(b, len_b)?;
    gpu.dispatch_1d(entry, &[&params, out, a, b], total as u64)
}

/// da (N, Ca, H, W) and db (N, Cb, H, W): dout (N, Ca + Cb, H, W) split along the channels.
#[allow(clippy::too_many_arguments)]
pub fn concat_channels_backward(
    gpu: &Gpu,
    da: &GpuBuffer,
    db: &GpuBuffer,
    dout: &GpuBuffer,
    batch: usize,
    channels_a: usize,
    channels_b: usize,
    plane: usize,
) -> Result<Dispatch, GpuError> {
    let entry = &wgsl::CONCAT_CHANNELS_BACKWARD;
    let (params, [len_a, len_b, total]) = prepare(gpu, entry, batch, channels_a, channels_b, plane)?;
    require_len(da, len_a)?;
    require_len(db, len_b)?;
    require_len(dout, total)?;
    gpu.dispatch_1d(entry, &[&params, da, db, dout], total as u64)
}

/// (batch, Ca, Cb, plane) the checks use: odd shapes and the ddpm's two skip concatenations at batch 2.
pub const CHECK_SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 1, 1),
    (2, 3, 4, 35),
    (3, 7, 1, 33),
    (2, 128, 128, 14 * 14),
    (2, 128, 64, 28 * 28),
];

/// Forward and backward against the CPU twin (exact copies).
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (index, (batch, ca, cb, plane)) in CHECK_SHAPES.into_iter().enumerate() {
        let shape = format!("N{batch} {ca}+{cb} x {plane}");
        let seed = 4000 + 10 * index as u64;
        checks.push(KernelCheck::new(
            wgsl::CONCAT_CHANNELS_FORWARD.qualified_name(),
            shape.clone(),
            move |gpu| {
                let mut rng = TestRng::new(seed);
                let a = rng.uniform_vec(batch * ca * plane, -1.0, 1.0);
                let b = rng.uniform_vec(batch * cb * plane, -1.0, 1.0);
                let total = batch * (ca + cb) * plane;
                let out = check::poisoned(gpu, "out", total)?;
                let (a_gpu, b_gpu) = (check::upload(gpu, "a", &a)?, check::upload(gpu, "b", &b)?);
                gpu.run(&[&concat_channels_forward(
                    gpu, &out, &a_gpu, &b_gpu, batch, ca, cb, plane,
                )?])?;
                let expected =
                    cpu::concat::concat_channels_forward(&check::to_f64(&a), &check::to_f64(&b), batch, ca, cb, plane);
                Ok(check::compare(
                    &check::download(gpu, &out, total)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::CONCAT_CHANNELS_BACKWARD.qualified_name(),
            shape,
            move |gpu| -> Result<Comparison, GpuError> {
                let dout = TestRng::new(seed + 1).uniform_vec(batch * (ca + cb) * plane, -1.0, 1.0);
                let (len_a, len_b) = (batch * ca * plane, batch * cb * plane);
                let (da, db) = (check::poisoned(gpu, "da", len_a)?, check::poisoned(gpu, "db", len_b)?);
                let dout_gpu = check::upload(gpu, "dout", &dout)?;
                gpu.run(&[&concat_channels_backward(
                    gpu, &da, &db, &dout_gpu, batch, ca, cb, plane,
                )?])?;
                let (expected_a, expected_b) =
                    cpu::concat::concat_channels_backward(&check::to_f64(&dout), batch, ca, cb, plane);
                // Both parts compared as one vector [da, db].
                let mut gpu_parts = check::download(gpu, &da, len_a)?;
                gpu_parts.extend(check::download(gpu, &db, len_b)?);
                let expected: Vec<f64> = expected_a.into_iter().chain(expected_b).collect();
                Ok(check::compare(&gpu_parts, &expected, Tolerance::ELEMENTWISE))
            },
        ));
    }
    checks
}
