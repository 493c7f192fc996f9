//! DDIM with eta = 0 (Song et al. 2021): deterministic steps over an evenly spaced subsequence of the timesteps,
//! x_{t'} = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t') eps_theta, x0_hat from x_t and eps_theta.

use super::{Sampler, StepBuffers};
use crate::error::TrainError;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::diffusion::{self as kernels, SampleStep, Schedule};

pub struct Ddim {
    /// Network evaluations of the walk.
    pub steps: usize,
}

impl Ddim {
    pub fn new(steps: usize) -> Self {
        Self { steps }
    }
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn timesteps(&self, schedule: &Schedule) -> Result<Vec<SampleStep>, TrainError> {
        if self.steps == 0 || self.steps > schedule.len() {
            return Err(TrainError::Config(format!(
                "--steps must be between 1 and {} for DDIM, got {}",
                schedule.len(),
                self.steps
            )));
        }
        Ok(schedule.ddim_steps(self.steps))
    }

    fn step(&self, gpu: &Gpu, b: &StepBuffers) -> Result<Dispatch, GpuError> {
        kernels::ddim_step(gpu, b.x, b.eps_theta, b.table, b.step, b.clamp, b.values)
    }
}
