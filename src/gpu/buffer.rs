//! GPU buffers with a label and a role, so plans can account memory per role and errors can name buffers.

use bytemuck::Pod;

use super::{Gpu, GpuError};

/// What a buffer holds; `latent train` reports GPU memory per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferRole {
    Weights,
    Gradients,
    OptimizerState,
    Activations,
    /// Batches and per-step scalars written by the host.
    Inputs,
    /// Uniform parameter blocks of kernels.
    Params,
    /// Anything else (test buffers, readback staging).
    Scratch,
}

/// A storage or uniform buffer on the GPU.
#[derive(Debug)]
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub label: String,
    pub role: BufferRole,
    /// Size in bytes (at least 4; a multiple of 4).
    pub bytes: u64,
}

impl GpuBuffer {
    /// The number of f32 (or u32) elements the buffer holds.
    pub fn len_words(&self) -> usize {
        (self.bytes / 4) as usize
    }
}

impl Gpu {
    fn check_size(&self, label: &str, bytes: u64, uniform: bool) -> Result<(), GpuError> {
        let (limit, what) = if uniform {
            (
                self.limits.max_uniform_buffer_binding_size,
                "max_uniform_buffer_binding_size",
            )
        } else {
            (
                self.limits.max_storage_buffer_binding_size,
                "max_storage_buffer_binding_size",
            )
        };
        if bytes > limit {
            return Err(GpuError::BufferTooLarge {
                label: label.to_string(),
                bytes,
                limit,
                what,
            });
        }
        if bytes > self.limits.max_buffer_size {
            return Err(GpuError::BufferTooLarge {
                label: label.to_string(),
                bytes,
                limit: self.limits.max_buffer_size,
                what: "max_buffer_size",
            });
        }
        Ok(())
    }

    /// Creates a wgpu buffer inside out-of-memory, validation and internal error scopes, so that a failed
    /// allocation is a [`GpuError::Allocation`] naming the buffer, its size and the adapter's limit rather than
    /// wgpu's uncaptured-error panic. Every buffer latent makes goes through here.
    pub fn create_buffer_checked(&self, descriptor: &wgpu::BufferDescriptor) -> Result<wgpu::Buffer, GpuError> {
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let buffer = self.device.create_buffer(descriptor);
        // Popped in reverse order of pushing; on native backends the futures are already resolved.
        let errors = [
            pollster::block_on(internal.pop()),
            pollster::block_on(validation.pop()),
            pollster::block_on(out_of_memory.pop()),
        ];
        match errors.into_iter().flatten().next() {
            None => Ok(buffer),
            Some(error) => {
                buffer.destroy();
                Err(GpuError::Allocation {
                    label: descriptor.label.unwrap_or("unlabelled").to_string(),
                    bytes: descriptor.size,
                    limit: self.limits.max_buffer_size,
                    out_of_memory: matches!(error, wgpu::Error::OutOfMemory { .. }),
                    message: error_text(&error),
                })
            }
        }
    }

    /// A zero-filled storage buffer of `bytes` bytes (rounded up to a multiple of 4, at least 4).
    pub fn buffer(&self, label: &str, role: BufferRole, bytes: u64) -> Result<GpuBuffer, GpuError> {
        let bytes = bytes.max(4).next_multiple_of(4);
        self.check_size(label, bytes, false)?;
        let buffer = self.create_buffer_checked(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })?;
        Ok(GpuBuffer {
            buffer,
            label: label.to_string(),
            role,
            bytes,
        })
    }

    /// A storage buffer holding `data`.
    pub fn buffer_from<T: Pod>(&self, label: &str, role: BufferRole, data: &[T]) -> Result<GpuBuffer, GpuError> {
        let buffer = self.buffer(label, role, std::mem::size_of_val(data) as u64)?;
        self.write(&buffer, data)?;
        Ok(buffer)
    }

    /// A uniform buffer holding `value` (a `#[repr(C)]` twin of a WGSL struct).
    pub fn uniform<T: Pod>(&self, label: &str, value: &T) -> Result<GpuBuffer, GpuError> {
        let bytes = (std::mem::size_of::<T>() as u64).max(16).next_multiple_of(16);
        self.check_size(label, bytes, true)?;
        let buffer = self.create_buffer_checked(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })?;
        let buffer = GpuBuffer {
            buffer,
            label: label.to_string(),
            role: BufferRole::Params,
            bytes,
        };
        self.write(&buffer, std::slice::from_ref(value))?;
        Ok(buffer)
    }

    /// Queues a write of `data` at the start of `buffer` (it lands before the next submit).
    pub fn write<T: Pod>(&self, buffer: &GpuBuffer, data: &[T]) -> Result<(), GpuError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() as u64 > buffer.bytes {
            return Err(GpuError::BufferSize {
                label: buffer.label.clone(),
                capacity: buffer.bytes,
                bytes: bytes.len() as u64,
            });
        }
        if bytes.len() % 4 == 0 {
            self.queue.write_buffer(&buffer.buffer, 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(&buffer.buffer, 0, &padded);
        }
        Ok(())
    }

    /// Copies the whole buffer back to the host, waiting for all submitted work. Not for the step loop.
    pub fn read<T: Pod>(&self, buffer: &GpuBuffer) -> Result<Vec<T>, GpuError> {
        let staging = self.create_buffer_checked(&wgpu::BufferDescriptor {
            label: Some(&format!("readback of {}", buffer.label)),
            size: buffer.bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })?;
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
        encoder.copy_buffer_to_buffer(&buffer.buffer, 0, &staging, 0, buffer.bytes);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.wait()?;
        let readback_error = |message: String| GpuError::Readback {
            label: buffer.label.clone(),
            message,
        };
        receiver
            .recv()
            .map_err(|e| readback_error(e.to_string()))?
            .map_err(|e| readback_error(e.to_string()))?;
        let data = slice.get_mapped_range().map_err(|e| readback_error(e.to_string()))?;
        let whole = (data.len() / std::mem::size_of::<T>()) * std::mem::size_of::<T>();
        let values = bytemuck::pod_collect_to_vec(&data[..whole]);
        drop(data);
        staging.unmap();
        Ok(values)
    }

    /// Blocks until every submitted command has finished.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Validation {
                context: "waiting for the GPU".into(),
                message: e.to_string(),
            })?;
        self.device_error()
    }
}

/// A wgpu error's description on one line.
pub(crate) fn error_text(error: &wgpu::Error) -> String {
    match error {
        wgpu::Error::OutOfMemory { .. } => "out of GPU memory".to_string(),
        wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. } => {
            // wgpu's descriptions span lines ("Validation Error\n\nCaused by:\n  ..."): one line for messages.
            description.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    }
}
