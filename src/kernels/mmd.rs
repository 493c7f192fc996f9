//! The WAE's latent regulariser (`shaders/mmd.wgsl`): the unbiased maximum mean discrepancy between a batch of
//! codes z (B, D) and as many prior samples (B, D), with the inverse multiquadratic kernel
//! k(a, b) = Σ_s sC / (sC + |a - b|²), C = 2 D σ², σ² = 1 (Tolstikhin et al. 2018).
//!
//! The paper's text gives the single scale C; its code sums over s in {0.1, 0.2, 0.5, 1, 2, 5, 10}, and so does
//! latent: with the single scale, codes that drift far from the prior (the reconstruction cost pushes them
//! apart) get a gradient falling as |z - p|^-3 and are never pulled back; a first mnist-10k run with it decoded
//! prior codes into grey blobs.
//!
//! Like the losses, the forward is per-sample values (each sample's share of weight · MMD, times B) and their
//! mean into a loss slot; the backward writes (or adds) weight · dMMD/dz. Prior samples get no gradient.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::kernels::loss::{mean_dispatch, LossSlot};
use crate::shaders::mmd as wgsl;

/// Keep in sync with `struct Params` in shaders/mmd.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MmdParams {
    pub batch: u32,
    pub dim: u32,
    pub c: f32,
    pub weight: f32,
    pub accumulate: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// The kernel's base scale C = 2 D σ² for the N(0, I) prior (σ² = 1).
pub fn imq_scale(dim: usize) -> f64 {
    2.0 * dim as f64
}

fn params(batch: usize, dim: usize, weight: f64, accumulate: bool, context: &str) -> Result<MmdParams, GpuError> {
    let elements = batch.checked_mul(dim).filter(|&n| n > 0 && n <= u32::MAX as usize);
    if batch < 2 || elements.is_none() {
        return Err(GpuError::Validation {
            context: context.to_string(),
            message: format!(
                "MMD needs at least 2 samples (the unbiased estimate divides by B - 1) and a non-empty latent; got \
                 batch {batch}, dimension {dim}: use --batch 2 or more"
            ),
        });
    }
    Ok(MmdParams {
        batch: batch as u32,
        dim: dim as u32,
        c: imq_scale(dim) as f32,
        weight: weight as f32,
        accumulate: accumulate as u32,
        ..Default::default()
    })
}

/// per_sample (B) = weight · B · share_i, then loss[slot] = weight · MMD (the mean of the per-sample values).
#[allow(clippy::too_many_arguments)]
pub fn mmd_forward(
    gpu: &Gpu,
    loss: &LossSlot,
    per_sample: &GpuBuffer,
    z: &GpuBuffer,
    prior: &GpuBuffer,
    batch: usize,
    dim: usize,
    weight: f64,
) -> Result<[Dispatch; 2], GpuError> {
    let p = params(batch, dim, weight, false, "mmd::mmd_forward")?;
    let uniform = gpu.uniform("mmd_forward", &p)?;
    let entry = &wgsl::MMD_FORWARD;
    Ok([
        gpu.dispatch_1d(
            entry,
            &[&uniform, per_sample, z, prior],
            batch as u64 * entry.workgroup_size[0] as u64,
        )?,
        mean_dispatch(gpu, loss, per_sample, batch, 1.0 / batch as f64)?,
    ])
}

/// dz (B, D) = weight · dMMD/dz, or += with `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn mmd_backward(
    gpu: &Gpu,
    dz: &GpuBuffer,
    z: &GpuBuffer,
    prior: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    dim: usize,
    weight: f64,
) -> Result<Dispatch, GpuError> {
    let p = params(batch, dim, weight, accumulate, "mmd::mmd_backward")?;
    let uniform = gpu.uniform("mmd_backward", &p)?;
    gpu.dispatch_1d(&wgsl::MMD_BACKWARD, &[&uniform, dz, z, prior], (batch * dim) as u64)
}

/// Random codes and prior samples, roughly on the prior's scale.
fn random_inputs(batch: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = TestRng::new(seed);
    let n = batch * dim;
    (rng.uniform_vec(n, -2.0, 2.0), rng.uniform_vec(n, -2.0, 2.0))
}

/// The per-sample values followed by the loss (slot 1 of 3, added to 0.75 with `accumulate`) against the twin.
pub fn run_forward_check(
    gpu: &Gpu,
    batch: usize,
    dim: usize,
    weight: f64,
    accumulate: bool,
    seed: u64,
) -> Result<Comparison, GpuError> {
    let (z, prior) = random_inputs(batch, dim, seed);
    let start = if accumulate { 0.75 } else { f32::NAN };
    let slots = check::upload(gpu, "loss", &[f32::NAN, start, f32::NAN])?;
    let loss = LossSlot {
        buffer: &slots,
        slot: 1,
        accumulate,
    };
    let per_sample = check::poisoned(gpu, "per_sample", batch)?;
    let (zb, pb) = (check::upload(gpu, "z", &z)?, check::upload(gpu, "prior", &prior)?);
    let [first, second] = mmd_forward(gpu, &loss, &per_sample, &zb, &pb, batch, dim, weight)?;
    gpu.run(&[&first, &second])?;
    let mut got = check::download(gpu, &per_sample, batch)?;
    got.push(check::download(gpu, &slots, 3)?[1]);
    let (z, prior) = (check::to_f64(&z), check::to_f64(&prior));
    let c = imq_scale(dim);
    let mut expected = cpu::mmd::mmd_per_sample(&z, &prior, batch, dim, c, weight);
    expected.push(cpu::mmd::mmd(&z, &prior, batch, dim, c, weight) + if accumulate { 0.75 } else { 0.0 });
    Ok(check::compare(&got, &expected, Tolerance::ACCUMULATED))
}

/// dz against the twin (added to a random start with `accumulate`).
pub fn run_backward_check(
    gpu: &Gpu,
    batch: usize,
    dim: usize,
    weight: f64,
    accumulate: bool,
    seed: u64,
) -> Result<Comparison, GpuError> {
    let (z, prior) = random_inputs(batch, dim, seed);
    let n = batch * dim;
    let start = if accumulate {
        TestRng::new(seed + 1).uniform_vec(n, -0.01, 0.01)
    } else {
        vec![f32::NAN; n]
    };
    let dz = check::upload(gpu, "dz", &start)?;
    let (zb, pb) = (check::upload(gpu, "z", &z)?, check::upload(gpu, "prior", &prior)?);
    gpu.run(&[&mmd_backward(gpu, &dz, &zb, &pb, accumulate, batch, dim, weight)?])?;
    let got = check::download(gpu, &dz, n)?;
    let mut expected = cpu::mmd::mmd_backward(
        &check::to_f64(&z),
        &check::to_f64(&prior),
        batch,
        dim,
        imq_scale(dim),
        weight,
    );
    if accumulate {
        for (e, s) in expected.iter_mut().zip(&start) {
            *e += *s as f64;
        }
    }
    Ok(check::compare(&got, &expected, Tolerance::ACCUMULATED))
}

/// Forward and backward on odd shapes and the WAE's (B = 128, D = 8, λ = 10) against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let shapes = [(2, 1, 1.0), (7, 3, 1.0), (300, 5, 2.5), (128, 8, 10.0)];
    let mut checks = Vec::new();
    for (index, (batch, dim, weight)) in shapes.into_iter().enumerate() {
        let accumulate = index == 1;
        let suffix = if accumulate { " accumulate" } else { "" };
        let shape = format!("B={batch} D={dim} weight={weight}{suffix}");
        let seed = (batch * 1000 + dim) as u64;
        checks.push(KernelCheck::new("mmd::mmd_forward", shape.clone(), move |gpu| {
            run_forward_check(gpu, batch, dim, weight, accumulate, seed)
        }));
        checks.push(KernelCheck::new("mmd::mmd_backward", shape, move |gpu| {
            run_backward_check(gpu, batch, dim, weight, accumulate, seed)
        }));
    }
    checks
}
