//! The optimizer a training plan applies, with PyTorch's semantics (see `kernels::optim`).

use std::sync::Arc;

use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError};
use crate::kernels::optim::{self as kernels, AdamConfig, OptimStep, SgdConfig};

/// An optimizer and its learning rate.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// Adam, or AdamW when `config.decoupled`.
    Adam { lr: f64, config: AdamConfig },
    /// SGD with momentum (dampening 0).
    Sgd { lr: f64, config: SgdConfig },
}

impl Optimizer {
    /// torch.optim.Adam(lr) with its defaults.
    pub fn adam(lr: f64) -> Self {
        Self::Adam {
            lr,
            config: AdamConfig::DEFAULT,
        }
    }

    /// Adam with betas (beta1, beta2), eps 1e-8.
    pub fn adam_betas(lr: f64, beta1: f64, beta2: f64) -> Self {
        Self::Adam {
            lr,
            config: AdamConfig {
                beta1,
                beta2,
                ..AdamConfig::DEFAULT
            },
        }
    }

    pub fn lr(&self) -> f64 {
        match self {
            Self::Adam { lr, .. } | Self::Sgd { lr, .. } => *lr,
        }
    }

    /// Names of the state tensors kept per parameter (PyTorch's state_dict names).
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            Self::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            Self::Sgd { .. } => &["momentum_buffer"],
        }
    }

    /// The per-step values for global step `step` (0-based; PyTorch's step count is `step + 1`).
    pub fn step_values(&self, step: u64) -> OptimStep {
        match self {
            Self::Adam { lr, config } => config.step(u32::try_from(step + 1).unwrap_or(u32::MAX), *lr),
            Self::Sgd { lr, config } => config.step(*lr),
        }
    }

    /// One parameter tensor's update: `state` holds the buffers named by [`state_names`](Self::state_names).
    pub fn update(
        &self,
        gpu: &Gpu,
        param: &GpuBuffer,
        state: &[Arc<GpuBuffer>],
        grad: &GpuBuffer,
        step_values: &GpuBuffer,
        n: usize,
    ) -> Result<Dispatch, GpuError> {
        match self {
            Self::Adam { config, .. } => {
                kernels::adam_step(gpu, param, &state[0], &state[1], grad, step_values, config, 0, n)
            }
            Self::Sgd { config, .. } => kernels::sgd_step(gpu, param, &state[0], grad, step_values, config, 0, n),
        }
    }
}
