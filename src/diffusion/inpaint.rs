//! Inpainting with any sampler (the replacement method, as in Lugmayr et al.'s RePaint with one resampling):
//! after each step to x_{t_prev}, the known pixels are replaced by x0 noised to the same level,
//! x = m * q_sample(x0, t_prev, z') + (1 - m) * x, and by x0 itself at the last step.

use super::{StepBuffers, INPAINT_STREAM};
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::graph::{Graph, TensorId};
use crate::kernels::diffusion as kernels;

pub struct Inpainting {
    /// The known image, in the model's range, and the mask (1 keeps), both shaped as x.
    x0: TensorId,
    mask: TensorId,
    /// z', the known pixels' noise, drawn afresh each iteration.
    z: TensorId,
}

impl Inpainting {
    /// Adds the known image, the mask and the noise of the known pixels to the sampling graph.
    pub fn add_to(g: &mut Graph, shape: &[usize]) -> Self {
        let x0 = g.input("x0", shape);
        let mask = g.input("mask", shape);
        let z = g.normal_noise("z_known", shape, INPAINT_STREAM);
        Self { x0, mask, z }
    }

    /// The inputs the caller writes: (x0, mask).
    pub fn inputs(&self) -> (TensorId, TensorId) {
        (self.x0, self.mask)
    }

    /// The mix after each sampler step.
    pub fn mix(&self, gpu: &Gpu, b: &StepBuffers) -> Result<Dispatch, GpuError> {
        let plan = b.plan;
        kernels::inpaint_mix(
            gpu,
            b.x,
            plan.buffer(self.x0),
            plan.buffer(self.z),
            plan.buffer(self.mask),
            b.table,
            b.step,
            b.values,
            b.values,
        )
    }
}
