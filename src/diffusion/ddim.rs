//! DDIM (Song et al. 2021) over an evenly spaced subsequence of the timesteps: with eta = 0 deterministic,
//! x_{t'} = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t') eps_theta, x0_hat from x_t and eps_theta; with
//! eta > 0 part of that noise is drawn afresh each step (eta = 1: as much as the ancestral step's).

use super::{Sampler, StepBuffers, Z_STREAM};
use crate::error::TrainError;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::graph::{Graph, TensorId};
use crate::kernels::diffusion::{self as kernels, SampleStep, Schedule};

pub struct Ddim {
    /// Network evaluations of the walk.
    pub steps: usize,
    /// Song et al.'s eta, in [0, 1].
    pub eta: f32,
    /// The fresh noise of eta > 0.
    z: Option<TensorId>,
}

impl Ddim {
    /// Deterministic DDIM (eta = 0).
    pub fn new(steps: usize) -> Self {
        Self::with_eta(steps, 0.0)
    }

    pub fn with_eta(steps: usize, eta: f32) -> Self {
        Self { steps, eta, z: None }
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
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(TrainError::Config(format!(
                "--eta {}: DDIM's eta is between 0 (deterministic) and 1 (the ancestral step's noise)",
                self.eta
            )));
        }
        Ok(schedule.ddim_steps(self.steps))
    }

    fn prepare(&mut self, g: &mut Graph, shape: &[usize]) {
        if self.eta > 0.0 {
            self.z = Some(g.normal_noise("z", shape, Z_STREAM));
        }
    }

    fn step(&self, gpu: &Gpu, b: &StepBuffers) -> Result<Dispatch, GpuError> {
        match self.z {
            Some(z) => {
                let z = b.plan.buffer(z);
                kernels::ddim_eta_step(gpu, b.x, b.eps_theta, z, b.table, b.step, b.clamp, self.eta, b.values)
            }
            None => kernels::ddim_step(gpu, b.x, b.eps_theta, b.table, b.step, b.clamp, b.values),
        }
    }
}
