//! The GPU layer: a headless wgpu context, kernels made from the shader registry, buffers, and dispatches.
//!
//! Everything above this module (kernels, plans, models) talks to the GPU through [`Gpu`], [`Kernel`] and
//! [`Dispatch`]: a kernel is a pipeline with an explicit bind-group layout derived from the registry, a dispatch
//! is a kernel with its bound buffers and workgroup count, and a list of dispatches is encoded into one compute
//! pass and submitted once.

mod buffer;
mod context;
mod dispatch;

pub(crate) use buffer::error_text;
pub use buffer::{BufferRole, GpuBuffer};
pub use context::{
    list_adapters, AdapterSummary, BackendChoice, DeviceSummary, Gpu, GpuOptions, Tiling, ADAPTER_ENV, BACKEND_ENV,
    CPU_LOOP_LIMIT, TILING_ENV,
};
pub use dispatch::{grid_1d, Dispatch};

use crate::shaders::{Access, Capability, EntryPoint};

/// Everything that can go wrong between us and the GPU. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found (backends tried: {}).\n{}",
        tried.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
        no_adapter_hint()
    )]
    NoAdapter { tried: Vec<BackendChoice> },

    #[error(
        "no adapter's name contains {wanted:?} (from --adapter or LATENT_ADAPTER). Available: {}.\n\
         Run `latent info` to list adapters, or leave --adapter out to take the fastest one.",
        if available.is_empty() { "none".to_string() } else { available.join("; ") }
    )]
    AdapterNotFound { wanted: String, available: Vec<String> },

    #[error("unknown backend {0:?} (from --backend or LATENT_BACKEND): use one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),

    #[error("could not open a device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },

    #[error(
        "the GPU reported an error while running: {message}; nothing computed after it can be trusted (an \
         out-of-memory error: use a smaller batch or model)"
    )]
    Device { message: String },

    #[error(
        "kernel {kernel} needs {capability:?}, which {adapter} does not offer; \
         latent picks another kernel variant where one exists, so this is a bug if you did not ask for it"
    )]
    MissingCapability {
        kernel: String,
        capability: Capability,
        adapter: String,
    },

    #[error("kernel {kernel} takes {expected} buffers ({names}), but {found} were given")]
    BindingCount {
        kernel: String,
        expected: usize,
        found: usize,
        names: String,
    },

    #[error(
        "buffer {label} needs {bytes} bytes, over the adapter's limit of {limit} bytes ({what}); \
         use a smaller batch or a smaller model"
    )]
    BufferTooLarge {
        label: String,
        bytes: u64,
        limit: u64,
        what: &'static str,
    },

    #[error(
        "batch {batch} does not fit this adapter: tensor {tensor} needs {bytes} bytes, over the limit of {limit} \
         bytes (max_storage_buffer_binding_size); use --batch {fits} or smaller"
    )]
    BatchTooLarge {
        tensor: String,
        batch: usize,
        bytes: u64,
        limit: u64,
        fits: usize,
    },

    #[error(
        "could not allocate GPU buffer {label} ({bytes} bytes; the adapter's max_buffer_size is {limit} bytes): \
         {message}; {}",
        if *out_of_memory {
            "the GPU is out of memory: use a smaller batch or a smaller model, or close other programs using the GPU"
        } else {
            "use a smaller batch or a smaller model"
        }
    )]
    Allocation {
        label: String,
        bytes: u64,
        limit: u64,
        out_of_memory: bool,
        message: String,
    },

    #[error("buffer {label} holds {capacity} bytes; writing or reading {bytes} bytes does not fit")]
    BufferSize { label: String, capacity: u64, bytes: u64 },

    #[error("reading back {label} from the GPU failed: {message}")]
    Readback { label: String, message: String },

    #[error("the GPU reported an error in {context}: {message}")]
    Validation { context: String, message: String },
}

fn no_adapter_hint() -> &'static str {
    if cfg!(target_os = "linux") {
        "Without a GPU (or its driver), install Mesa's CPU Vulkan driver, which latent runs on headless: \
         `apt-get install mesa-vulkan-drivers libvulkan1` (Debian, Ubuntu). With a GPU, install its \
         vendor's Vulkan driver."
    } else if cfg!(target_os = "macos") {
        "On macOS latent uses Metal, which needs macOS 10.13 or later on a Metal-capable Mac."
    } else if cfg!(target_os = "windows") {
        "On Windows latent uses DX12 or Vulkan: update your GPU driver (WARP, the DX12 software \
         adapter, also works)."
    } else {
        "Install a Vulkan driver for your GPU, or a CPU Vulkan driver such as Mesa's lavapipe."
    }
}

/// A compute pipeline for one registry entry point, with its bind-group layout.
#[derive(Debug)]
pub struct Kernel {
    pub entry: &'static EntryPoint,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    fn new(device: &wgpu::Device, entry: &'static EntryPoint, module: &wgpu::ShaderModule) -> Self {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = entry
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.access {
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let label = entry.qualified_name();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(entry.name),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        Self {
            entry,
            pipeline,
            layout,
        }
    }
}
