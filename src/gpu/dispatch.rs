//! A dispatch: a kernel, its bound buffers, and how many workgroups to launch.

use std::sync::Arc;

use super::{Gpu, GpuBuffer, GpuError, Kernel};
use crate::shaders::{Access, EntryPoint};

/// One recorded kernel launch. Made once (bind group included) and replayed every step.
#[derive(Debug)]
pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// Bytes of the distinct storage buffers bound (an estimate of the memory traffic: each read or written once).
    pub bytes: u64,
    /// Launches after the first, in order, each with its kernel and bind group: one step split into several
    /// launches (see [`Dispatch::followed_by`]).
    pub then: Vec<(Arc<Kernel>, wgpu::BindGroup, [u32; 3])>,
}

impl Dispatch {
    /// Records the launch (and those after it) into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
        for (kernel, bind_group, [x, y, z]) in &self.then {
            if !Arc::ptr_eq(kernel, &self.kernel) {
                pass.set_pipeline(&kernel.pipeline);
            }
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(*x, *y, *z);
        }
    }

    /// This dispatch, then `next`, as one step of a plan: wgpu orders the launches within the pass, so `next`
    /// sees what this one wrote. The profiler times them together, under this dispatch's kernel's name.
    pub fn followed_by(mut self, next: Dispatch) -> Dispatch {
        self.then.push((next.kernel, next.bind_group, next.workgroups));
        self.then.extend(next.then);
        self.bytes = self.bytes.max(next.bytes);
        self
    }

    pub fn name(&self) -> String {
        self.kernel.entry.qualified_name()
    }
}

/// Workgroups for `invocations` threads of a 1-D kernel with `workgroup_x` threads per group, folded into
/// a 2-D grid when one dimension would exceed `max_per_dimension`. Shaders compute their linear index as
/// `id.x + id.y * num_workgroups.x * workgroup_x` (see `shaders/shared/common.wgsl`) and return past the end.
pub fn grid_1d(invocations: u64, workgroup_x: u32, max_per_dimension: u32) -> [u32; 3] {
    let groups = invocations.div_ceil(workgroup_x as u64).max(1);
    if groups <= max_per_dimension as u64 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dimension as u64);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

impl Gpu {
    /// Binds `buffers` (in binding order) to `entry`'s kernel and fixes the workgroup count.
    pub fn dispatch(
        &self,
        entry: &'static EntryPoint,
        buffers: &[&GpuBuffer],
        workgroups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        let kernel = self.kernel(entry)?;
        if buffers.len() != entry.bindings.len() {
            return Err(GpuError::BindingCount {
                kernel: entry.qualified_name(),
                expected: entry.bindings.len(),
                found: buffers.len(),
                names: entry.bindings.iter().map(|b| b.name).collect::<Vec<_>>().join(", "),
            });
        }
        for (binding, buffer) in entry.bindings.iter().zip(buffers) {
            let is_uniform = buffer.buffer.usage().contains(wgpu::BufferUsages::UNIFORM);
            if is_uniform != (binding.access == Access::Uniform) {
                return Err(GpuError::Validation {
                    context: entry.qualified_name(),
                    message: format!(
                        "binding `{}` is a {:?} binding but buffer `{}` is {}",
                        binding.name,
                        binding.access,
                        buffer.label,
                        if is_uniform {
                            "a uniform buffer"
                        } else {
                            "a storage buffer"
                        }
                    ),
                });
            }
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(GpuError::Validation {
                context: entry.qualified_name(),
                message: format!("workgroup count {workgroups:?} exceeds the adapter's {max} per dimension"),
            });
        }
        let entries: Vec<wgpu::BindGroupEntry> = entry
            .bindings
            .iter()
            .zip(buffers)
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: binding.binding,
                resource: buffer.buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry.name),
            layout: &kernel.layout,
            entries: &entries,
        });
        let mut bytes = 0;
        for (i, buffer) in buffers.iter().enumerate() {
            let first_use = !buffers[..i].iter().any(|other| std::ptr::eq(*other, *buffer));
            if first_use && !buffer.buffer.usage().contains(wgpu::BufferUsages::UNIFORM) {
                bytes += buffer.bytes;
            }
        }
        Ok(Dispatch {
            kernel,
            bind_group,
            workgroups,
            bytes,
            then: Vec::new(),
        })
    }

    /// A dispatch of a 1-D kernel over `invocations` threads.
    pub fn dispatch_1d(
        &self,
        entry: &'static EntryPoint,
        buffers: &[&GpuBuffer],
        invocations: u64,
    ) -> Result<Dispatch, GpuError> {
        let grid = grid_1d(
            invocations,
            entry.workgroup_size[0],
            self.limits.max_compute_workgroups_per_dimension,
        );
        self.dispatch(entry, buffers, grid)
    }

    /// Encodes `dispatches` into one compute pass, submits once, and waits.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<(), GpuError> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("run"),
                timestamp_writes: None,
            });
            for dispatch in dispatches {
                dispatch.record(&mut pass);
            }
        }
        self.queue.submit([encoder.finish()]);
        self.wait()
    }
}
