//! The VAE's reparameterisation (`shaders/reparam.wgsl`): z = mu + eps * exp(logvar / 2) and its backward.
//!
//! eps is drawn beforehand into its own buffer with [`crate::kernels::rng::normal`] and kept for the backward.

use bytemuck::{Pod, Zeroable};

use super::batchnorm::{compare_outputs, require};
use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::shaders::reparam as wgsl;

/// Keep in sync with `struct Params` in shaders/reparam.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ReparamParams {
    pub n: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

fn params(gpu: &Gpu, label: &str, n: usize) -> Result<GpuBuffer, GpuError> {
    let n = u32::try_from(n).map_err(|_| GpuError::Validation {
        context: label.to_string(),
        message: format!("{n} latent values are over 2^32; use a smaller batch"),
    })?;
    gpu.uniform(
        label,
        &ReparamParams {
            n,
            ..Default::default()
        },
    )
}

/// z (n) = mu (n) + eps (n) * exp(logvar (n) / 2)
pub fn forward(
    gpu: &Gpu,
    z: &GpuBuffer,
    eps: &GpuBuffer,
    mu: &GpuBuffer,
    logvar: &GpuBuffer,
    n: usize,
) -> Result<Dispatch, GpuError> {
    for buffer in [z, eps, mu, logvar] {
        require(buffer, n)?;
    }
    let params = params(gpu, "reparam_forward", n)?;
    gpu.dispatch_1d(&wgsl::REPARAM_FORWARD, &[&params, z, eps, mu, logvar], n as u64)
}

/// dmu (n) = dz (n) and dlogvar (n) = dz * eps * exp(logvar / 2) / 2, from the forward's eps and logvar.
/// Both are overwritten; the KL term's gradients are added by the loss.
pub fn backward(
    gpu: &Gpu,
    dmu: &GpuBuffer,
    dlogvar: &GpuBuffer,
    eps: &GpuBuffer,
    logvar: &GpuBuffer,
    dz: &GpuBuffer,
    n: usize,
) -> Result<Dispatch, GpuError> {
    for buffer in [dmu, dlogvar, eps, logvar, dz] {
        require(buffer, n)?;
    }
    let params = params(gpu, "reparam_backward", n)?;
    gpu.dispatch_1d(
        &wgsl::REPARAM_BACKWARD,
        &[&params, dmu, dlogvar, eps, logvar, dz],
        n as u64,
    )
}

/// Sizes: odd ones and the vae's (128, 20).
pub const CHECK_SIZES: [usize; 5] = [1, 7, 33, 129, 128 * 20];

/// Both kernels against the CPU twin.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for n in CHECK_SIZES {
        let inputs = move |seed: u64| {
            let mut rng = TestRng::new(seed);
            (
                rng.uniform_vec(n, -3.0, 3.0),
                rng.uniform_vec(n, -2.0, 2.0),
                rng.uniform_vec(n, -4.0, 2.0),
                rng.uniform_vec(n, -1.0, 1.0),
            )
        };
        checks.push(KernelCheck::new(
            wgsl::REPARAM_FORWARD.qualified_name(),
            format!("n={n}"),
            move |gpu| {
                let (eps, mu, logvar, _) = inputs(n as u64);
                let z = check::poisoned(gpu, "z", n)?;
                let eps_gpu = check::upload(gpu, "eps", &eps)?;
                let mu_gpu = check::upload(gpu, "mu", &mu)?;
                let logvar_gpu = check::upload(gpu, "logvar", &logvar)?;
                gpu.run(&[&forward(gpu, &z, &eps_gpu, &mu_gpu, &logvar_gpu, n)?])?;
                let expected =
                    cpu::reparam::forward(&check::to_f64(&eps), &check::to_f64(&mu), &check::to_f64(&logvar));
                Ok(check::compare(
                    &check::download(gpu, &z, n)?,
                    &expected,
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
        checks.push(KernelCheck::new(
            wgsl::REPARAM_BACKWARD.qualified_name(),
            format!("n={n}; outputs dmu, dlogvar"),
            move |gpu| {
                let (eps, _, logvar, dz) = inputs(n as u64 + 1);
                let (dmu, dlogvar) = (check::poisoned(gpu, "dmu", n)?, check::poisoned(gpu, "dlogvar", n)?);
                let eps_gpu = check::upload(gpu, "eps", &eps)?;
                let logvar_gpu = check::upload(gpu, "logvar", &logvar)?;
                let dz_gpu = check::upload(gpu, "dz", &dz)?;
                gpu.run(&[&backward(gpu, &dmu, &dlogvar, &eps_gpu, &logvar_gpu, &dz_gpu, n)?])?;
                let (expected_dmu, expected_dlogvar) =
                    cpu::reparam::backward(&check::to_f64(&eps), &check::to_f64(&logvar), &check::to_f64(&dz));
                Ok(compare_outputs(
                    &[
                        (&check::download(gpu, &dmu, n)?, &expected_dmu),
                        (&check::download(gpu, &dlogvar, n)?, &expected_dlogvar),
                    ],
                    Tolerance::ELEMENTWISE,
                ))
            },
        ));
    }
    checks
}
