//! The ancestral sampler (Ho et al. 2020, Algorithm 2): every timestep T-1 .. 0, with fresh noise z at each,
//! x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t) + sigma_t z.

use super::{Sampler, StepBuffers, Z_STREAM};
use crate::error::TrainError;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::graph::{Graph, TensorId};
use crate::kernels::diffusion::{self as kernels, SampleStep, Schedule};

#[derive(Default)]
pub struct Ancestral {
    /// z, drawn afresh each iteration (stream [`Z_STREAM`] at the iteration's index).
    z: Option<TensorId>,
}

impl Sampler for Ancestral {
    fn name(&self) -> &'static str {
        "ancestral"
    }

    fn timesteps(&self, schedule: &Schedule) -> Result<Vec<SampleStep>, TrainError> {
        Ok((0..schedule.len() as u32).rev().map(SampleStep::ddpm).collect())
    }

    fn prepare(&mut self, g: &mut Graph, shape: &[usize]) {
        self.z = Some(g.normal_noise("z", shape, Z_STREAM));
    }

    fn step(&self, gpu: &Gpu, b: &StepBuffers) -> Result<Dispatch, GpuError> {
        let z = self.z.expect("prepare adds z before the plan is compiled");
        kernels::ddpm_step(
            gpu,
            b.x,
            b.eps_theta,
            b.plan.buffer(z),
            b.table,
            b.step,
            b.clamp,
            b.values,
        )
    }
}
