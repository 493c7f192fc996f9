//! The headless GPU context: instance, adapter choice, device with the features and limits we use.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{GpuBuffer, GpuError, Kernel};
use crate::shaders::{Capability, EntryPoint};

/// Environment variable naming the backend (same as `--backend`).
pub const BACKEND_ENV: &str = "LATENT_BACKEND";
/// Environment variable naming an adapter substring (same as `--adapter`).
pub const ADAPTER_ENV: &str = "LATENT_ADAPTER";
/// `workgroup` or `registers`: which variant of the GEMM-shaped kernels to run (see [`Tiling`]).
pub const TILING_ENV: &str = "LATENT_TILING";

/// Loop iterations one invocation may run on Mesa's CPU drivers (llvmpipe, lavapipe): gallivm counts every loop
/// iteration of a shader against one limiter and ends the loops when 65535 have run (`LP_MAX_TGSI_LOOP_ITERATIONS`,
/// there to stop runaway shaders), so a longer kernel silently computes a partial result. The kernels that loop
/// long per invocation on CPU adapters (the register-tiled convolution weight gradient, the serial reductions)
/// keep under this, with a margin for their short loops.
pub const CPU_LOOP_LIMIT: usize = 65_535;

/// How the GEMM-shaped kernels (matmul, convolutions) reuse operands. Both variants compute every output with
/// the same terms in the same order; they differ only in speed on a given adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiling {
    /// Tiles staged in workgroup memory and shared by the workgroup's threads: the GPU kernels.
    Workgroup,
    /// No workgroup memory: each thread reads its operands itself and keeps a larger block of outputs in
    /// registers. On CPU drivers a barrier switches between invocations and costs more than the loads it saves
    /// (lavapipe: 5-8x faster matmuls).
    Registers,
}

impl Tiling {
    pub const ALL: [Tiling; 2] = [Self::Workgroup, Self::Registers];

    /// `Registers` on CPU adapters, `Workgroup` elsewhere, unless `LATENT_TILING` names one.
    fn choose(info: &wgpu::AdapterInfo) -> Tiling {
        match std::env::var(TILING_ENV).as_deref() {
            Ok("workgroup") => Tiling::Workgroup,
            Ok("registers") => Tiling::Registers,
            _ if info.device_type == wgpu::DeviceType::Cpu => Tiling::Registers,
            _ => Tiling::Workgroup,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Workgroup => "workgroup",
            Self::Registers => "registers",
        }
    }
}

/// Optional features we use when the adapter has them. Nothing requires any of them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::SUBGROUP_BARRIER)
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::PIPELINE_CACHE)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// A graphics API that wgpu can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub const ALL: [BackendChoice; 4] = [Self::Vulkan, Self::Metal, Self::Dx12, Self::Gl];

    fn backends(self) -> wgpu::Backends {
        match self {
            Self::Vulkan => wgpu::Backends::VULKAN,
            Self::Metal => wgpu::Backends::METAL,
            Self::Dx12 => wgpu::Backends::DX12,
            Self::Gl => wgpu::Backends::GL,
        }
    }

    fn of(backend: wgpu::Backend) -> Option<Self> {
        match backend {
            wgpu::Backend::Vulkan => Some(Self::Vulkan),
            wgpu::Backend::Metal => Some(Self::Metal),
            wgpu::Backend::Dx12 => Some(Self::Dx12),
            wgpu::Backend::Gl => Some(Self::Gl),
            _ => None,
        }
    }

    /// The backends compiled in for this platform.
    fn available() -> Vec<Self> {
        let enabled = wgpu::Instance::enabled_backend_features();
        Self::ALL
            .into_iter()
            .filter(|b| enabled.contains(b.backends()))
            .collect()
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vulkan => "vulkan",
            Self::Metal => "metal",
            Self::Dx12 => "dx12",
            Self::Gl => "gl",
        })
    }
}

impl FromStr for BackendChoice {
    type Err = GpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(Self::Vulkan),
            "metal" | "mtl" => Ok(Self::Metal),
            "dx12" | "d3d12" => Ok(Self::Dx12),
            "gl" | "gles" | "opengl" => Ok(Self::Gl),
            _ => Err(GpuError::UnknownBackend(s.to_string())),
        }
    }
}

/// Which backend and adapter to use. `None` means: every backend, the highest-performance adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: Option<BackendChoice>,
    pub adapter: Option<String>,
}

impl GpuOptions {
    /// Options from `LATENT_BACKEND` and `LATENT_ADAPTER`, overridden by explicit values (the CLI flags).
    pub fn resolve(backend: Option<&str>, adapter: Option<&str>) -> Result<Self, GpuError> {
        let backend_text = backend.map(str::to_string).or_else(|| non_empty_env(BACKEND_ENV));
        let adapter = adapter.map(str::to_string).or_else(|| non_empty_env(ADAPTER_ENV));
        let backend = backend_text.as_deref().map(BackendChoice::from_str).transpose()?;
        Ok(Self { backend, adapter })
    }

    /// Options from the environment alone (what tests use).
    pub fn from_env() -> Result<Self, GpuError> {
        Self::resolve(None, None)
    }

    fn backends_to_try(&self) -> Vec<BackendChoice> {
        match self.backend {
            Some(b) => vec![b],
            None => BackendChoice::available(),
        }
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// What `latent info` prints about one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
}

impl AdapterSummary {
    fn of(info: &wgpu::AdapterInfo) -> Self {
        Self {
            name: info.name.clone(),
            backend: BackendChoice::of(info.backend).map_or_else(|| format!("{:?}", info.backend), |b| b.to_string()),
            device_type: device_type_name(info.device_type).to_string(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            vendor: info.vendor,
            device: info.device,
        }
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Cpu => "CPU",
        wgpu::DeviceType::Other => "other",
    }
}

/// Higher is preferred: the "high-performance adapter" rule.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 1,
        _ => 0,
    };
    (kind, backend)
}

fn instance(backends: &[BackendChoice]) -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = backends
        .iter()
        .fold(wgpu::Backends::empty(), |acc, b| acc | b.backends());
    wgpu::Instance::new(descriptor)
}

/// Every adapter the chosen backends expose.
pub fn list_adapters(options: &GpuOptions) -> Vec<AdapterSummary> {
    let backends = options.backends_to_try();
    let instance = instance(&backends);
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.iter().map(|a| AdapterSummary::of(&a.get_info())).collect()
}

/// The key limits and features of the device we opened, for `latent info` and error messages.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceSummary {
    pub adapter: AdapterSummary,
    pub features: Vec<String>,
    pub subgroup_size: [u32; 2],
    /// The kernel variants the matmuls and convolutions run (`Tiling`, and whether the 8-lane subgroup kernels
    /// take over on a CPU adapter).
    pub kernels: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_size: [u32; 3],
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

/// The GPU every kernel runs on: one device and queue, and the kernels made for it so far.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The optional features enabled on `device` (a subset of [`WANTED_FEATURES`]).
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// The GEMM kernel variant this adapter runs fastest.
    pub tiling: Tiling,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    kernels: Mutex<HashMap<(&'static str, &'static str), Arc<Kernel>>>,
    /// The first error no error scope caught (an out-of-memory or a lost device mid-training, where wgpu's
    /// default handler would panic): every later [`wait`](Self::wait) and readback returns it.
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpu({} on {:?})", self.info.name, self.info.backend)
    }
}

impl Gpu {
    /// Opens the adapter the options ask for, or the highest-performance one, headless.
    pub fn new(options: &GpuOptions) -> Result<Self, GpuError> {
        Self::new_for_local_rank(options, 0)
    }

    /// As [`new`](Self::new), for process `local_rank` of a distributed run on one machine: where several
    /// adapters are equally preferred (two discrete GPUs), process r opens the (r mod count)-th of them.
    pub fn new_for_local_rank(options: &GpuOptions, local_rank: usize) -> Result<Self, GpuError> {
        let backends = options.backends_to_try();
        let instance = instance(&backends);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if adapters.is_empty() {
            return Err(GpuError::NoAdapter { tried: backends });
        }
        if let Some(wanted) = &options.adapter {
            let needle = wanted.to_lowercase();
            let names: Vec<String> = adapters
                .iter()
                .map(|a| {
                    let info = a.get_info();
                    format!("{} ({})", info.name, AdapterSummary::of(&info).backend)
                })
                .collect();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
            if adapters.is_empty() {
                return Err(GpuError::AdapterNotFound {
                    wanted: wanted.clone(),
                    available: names,
                });
            }
        }
        adapters.sort_by_key(|a| std::cmp::Reverse(preference(&a.get_info())));
        let best = preference(&adapters[0].get_info());
        let equals = adapters
            .iter()
            .take_while(|a| preference(&a.get_info()) == best)
            .count();
        let adapter = adapters.swap_remove(local_rank % equals);
        Self::open(adapter)
    }

    /// Opens a device on `adapter` with every wanted feature it has and all of its limits.
    pub fn open(adapter: wgpu::Adapter) -> Result<Self, GpuError> {
        let info = adapter.get_info();
        let features = adapter.features() & WANTED_FEATURES;
        let limits = adapter.limits();
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: cooperative matrices are used only by kernels that tests compare with their CPU twins,
            // and only where the adapter reports the feature.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("latent"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&descriptor)).map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let tiling = Tiling::choose(&info);
        let uncaptured = Arc::new(Mutex::new(None));
        let slot = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let mut first = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            first.get_or_insert_with(|| super::buffer::error_text(&error));
        }));
        Ok(Self {
            adapter,
            device,
            queue,
            info,
            features,
            limits,
            tiling,
            modules: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
            uncaptured,
        })
    }

    /// The first error the device reported outside any error scope, if any.
    pub fn device_error(&self) -> Result<(), GpuError> {
        let first = self.uncaptured.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match first.as_ref() {
            Some(message) => Err(GpuError::Device {
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the device runs subgroups of exactly `lanes` invocations (the `matmul_subgroup` kernels assume
    /// that their 8-invocation workgroups are one subgroup each).
    pub fn has_subgroups_of(&self, lanes: u32) -> bool {
        self.has(Capability::Subgroups) && self.info.subgroup_min_size == lanes && self.info.subgroup_max_size == lanes
    }

    /// Whether a kernel over elements `first .. first + n` of `buffers` runs its four-elements-per-invocation
    /// twin (a `*_vec4` module, the same bits): on CPU adapters, where a storage buffer is read one lane at a time
    /// and a vec4 load shares that loop over the lanes among 4 values, when the span is vec4-aligned and every
    /// buffer's vec4 view (which ends at its last whole vec4) holds it.
    pub fn takes_vec4(&self, first: usize, n: usize, buffers: &[&GpuBuffer]) -> bool {
        self.tiling == Tiling::Registers
            && first.is_multiple_of(4)
            && n.is_multiple_of(4)
            && buffers.iter().all(|b| first + n <= b.len_words() / 4 * 4)
    }

    /// Whether the device can run shaders that need `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        let needed = match capability {
            Capability::Subgroups => wgpu::Features::SUBGROUP | wgpu::Features::SUBGROUP_BARRIER,
            Capability::F16 => wgpu::Features::SHADER_F16,
            Capability::CooperativeMatrix => {
                wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16
            }
        };
        self.features.contains(needed)
    }

    /// Whether GPU timestamps can be written between dispatches inside one compute pass.
    pub fn timestamps_inside_passes(&self) -> bool {
        self.features
            .contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    }

    /// The chosen adapter and device limits, for `latent info` and error messages.
    pub fn summary(&self) -> DeviceSummary {
        let l = &self.limits;
        DeviceSummary {
            adapter: AdapterSummary::of(&self.info),
            features: self.features.iter_names().map(|(name, _)| name.to_string()).collect(),
            subgroup_size: [self.info.subgroup_min_size, self.info.subgroup_max_size],
            kernels: match self.tiling {
                Tiling::Workgroup => "workgroup-tiled (GPU)".into(),
                Tiling::Registers if self.has_subgroups_of(8) => {
                    "register-tiled, with the 8-lane subgroup kernels (matmul_subgroup, conv_subgroup)".into()
                }
                Tiling::Registers => "register-tiled (CPU)".into(),
            },
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size: [
                l.max_compute_workgroup_size_x,
                l.max_compute_workgroup_size_y,
                l.max_compute_workgroup_size_z,
            ],
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
        }
    }

    /// A one-line description: `llvmpipe (LLVM 15.0.6, 256 bits) (vulkan, CPU, Mesa 22.3.6)`.
    pub fn describe(&self) -> String {
        let s = AdapterSummary::of(&self.info);
        format!(
            "{} ({}, {}, {} {})",
            s.name, s.backend, s.device_type, s.driver, s.driver_info
        )
    }

    /// The compiled pipeline for `entry`, made on first use and shared after.
    pub fn kernel(&self, entry: &'static EntryPoint) -> Result<Arc<Kernel>, GpuError> {
        let key = (entry.shader.name, entry.name);
        if let Some(kernel) = self.kernels.lock().unwrap().get(&key) {
            return Ok(kernel.clone());
        }
        if let Some(missing) = entry.shader.requires.iter().find(|c| !self.has(**c)) {
            return Err(GpuError::MissingCapability {
                kernel: entry.qualified_name(),
                capability: *missing,
                adapter: self.info.name.clone(),
            });
        }
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(entry.shader.name)
                .or_insert_with(|| {
                    self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(entry.shader.path),
                        source: wgpu::ShaderSource::Wgsl(entry.shader.source.into()),
                    })
                })
                .clone()
        };
        let kernel = Arc::new(Kernel::new(&self.device, entry, &module));
        self.kernels.lock().unwrap().insert(key, kernel.clone());
        Ok(kernel)
    }
}
