//! Plans: a graph compiled into the fixed list of dispatches one step replays.
//!
//! Compiling walks the graph's ops in order (the forward pass), then in reverse (the backward pass: each op
//! turns its output's gradient into its inputs' gradients, accumulating where a tensor feeds several ops), then
//! emits the optimizer's update for every trainable parameter whose gradient was computed. Every buffer, pipeline
//! and bind group is made here, once. A step writes the batch and the per-step scalars into existing buffers,
//! encodes the list into one compute pass, and submits once.

mod lower;
pub mod params;
pub mod reference;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::graph::{Graph, TensorId};
use crate::optim::Optimizer;
pub use params::{LoadError, ParamEntry, ParamStore};

/// Which part of the step a dispatch belongs to (for profiles and counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Forward,
    Backward,
    Optimizer,
    /// Bookkeeping: the running sums of the losses.
    Metrics,
}

/// One dispatch of a plan, labelled with the op it came from.
#[derive(Debug)]
pub struct Step {
    /// e.g. `fc1.out linear` or `fc1.weight adam`
    pub label: String,
    pub phase: Phase,
    pub dispatch: Dispatch,
    /// Floating-point operations of this dispatch (0 where not counted).
    pub flops: u64,
    /// Bytes moved, estimated as the sizes of the distinct storage buffers the dispatch binds.
    pub bytes: u64,
}

/// Values the host rewrites before every step (a random stream's step counter, Adam's step count), so that
/// the recorded bind groups never change.
pub struct StepWrite {
    pub buffer: Arc<GpuBuffer>,
    /// The bytes for global step `step` (0-based).
    pub bytes: Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
}

/// Values the host rewrites before each replay that depend on which samples of the step's global batch the plan
/// holds: a noise fill's draw. It is keyed by the global index of the plan's first sample, so a step split into
/// micro-batches or across ranks draws, sample for sample, what the whole batch draws.
pub struct SampleWrite {
    pub buffer: Arc<GpuBuffer>,
    /// The tensor filled, for error messages.
    pub label: String,
    /// Elements drawn per sample.
    pub per_sample: usize,
    /// The bytes for global step `step` when the plan's first sample is sample `first` of the global batch.
    pub bytes: Box<dyn Fn(u64, u64) -> Vec<u8> + Send + Sync>,
}

impl std::fmt::Debug for SampleWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SampleWrite({})", self.buffer.label)
    }
}

/// A part of a training plan's step, for a step whose gradients are summed over micro-batches or ranks before
/// the update: the gradients (forward, backward and the loss sums), then the optimizer's update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Gradients,
    Update,
}

impl Part {
    fn holds(self, phase: Phase) -> bool {
        (phase == Phase::Optimizer) == (self == Part::Update)
    }
}

impl std::fmt::Debug for StepWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepWrite({})", self.buffer.label)
    }
}

/// What a plan is for.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub name: String,
    /// Compute gradients and update these parameters (by name predicate); `None`: forward only.
    pub train: Option<TrainOptions>,
    /// The seed of the random streams (noise ops).
    pub seed: u64,
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub optimizer: Optimizer,
    /// Only parameters whose name starts with one of these are updated (empty: all). Gradients still flow
    /// through the others (the GAN's generator step backpropagates through the discriminator).
    pub update_prefixes: Vec<String>,
}

impl TrainOptions {
    fn updates(&self, name: &str) -> bool {
        self.update_prefixes.is_empty() || self.update_prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// A compiled graph: every buffer made, every dispatch recorded.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub steps: Vec<Step>,
    pub step_writes: Vec<StepWrite>,
    pub sample_writes: Vec<SampleWrite>,
    /// The gradients of the parameters this plan updates, in update order: what a split step sums.
    pub gradients: Vec<Arc<GpuBuffer>>,
    /// The persistent state this plan's forward updates (BatchNorm's running statistics and count): what a split
    /// step averages.
    pub states: Vec<Arc<GpuBuffer>>,
    /// Buffers of the graph's tensors, by tensor id (views share their storage's buffer).
    tensors: Vec<Option<Arc<GpuBuffer>>>,
    /// The graph's tensor names and shapes, by id.
    names: Vec<(String, Vec<usize>)>,
    /// Loss tensors, in graph order.
    losses: Vec<TensorId>,
    /// Per-sample values (N) of each loss.
    per_sample: Vec<(TensorId, Arc<GpuBuffer>)>,
    /// Every buffer this plan made (parameters excluded), for memory accounting.
    owned: Vec<Arc<GpuBuffer>>,
    loss_staging: Option<wgpu::Buffer>,
    /// Running sums of each loss over the steps since the last reset (training plans), one buffer per loss.
    loss_sums: Vec<Arc<GpuBuffer>>,
    /// What the first submit reported, once it has happened.
    first_submit: std::sync::OnceLock<Result<(), String>>,
}

/// Compiles `graph` against the shared `store`.
pub fn compile(gpu: &Gpu, graph: &Graph, store: &mut ParamStore, options: &PlanOptions) -> Result<Plan, GpuError> {
    let mut builder = lower::Builder::new(gpu, graph, store, options)?;
    for (index, op) in graph.ops.iter().enumerate() {
        builder.forward(index, op)?;
    }
    if let Some(train) = &options.train {
        builder.backward()?;
        builder.optimizer_updates(train)?;
    }
    builder.finish()
}

/// Refuses a graph whose tensors would not fit the adapter's buffer-binding limit, before anything is allocated:
/// the error names the largest tensor and a batch size that fits. `batch` is the leading dimension of the
/// graph's batched tensors.
pub fn check_batch_fits(gpu: &Gpu, graph: &Graph, batch: usize) -> Result<(), GpuError> {
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    for tensor in graph
        .tensors
        .iter()
        .filter(|t| !matches!(t.kind, crate::graph::TensorKind::View(_)))
    {
        let bytes = tensor.len() as u64 * 4;
        if bytes <= limit {
            continue;
        }
        if tensor.shape.first() == Some(&batch) && batch > 0 {
            let per_sample = bytes / batch as u64;
            return Err(GpuError::BatchTooLarge {
                tensor: tensor.name.clone(),
                batch,
                bytes,
                limit,
                fits: (limit / per_sample.max(1)).max(1) as usize,
            });
        }
        return Err(GpuError::BufferTooLarge {
            label: tensor.name.clone(),
            bytes,
            limit,
            what: "max_storage_buffer_binding_size",
        });
    }
    Ok(())
}

impl Plan {
    /// The buffer of tensor `id`.
    pub fn buffer(&self, id: TensorId) -> &Arc<GpuBuffer> {
        self.tensors[id.0]
            .as_ref()
            .expect("every tensor of a compiled plan has a buffer")
    }

    /// The tensor named `name`.
    pub fn tensor_id(&self, name: &str) -> Option<TensorId> {
        self.names.iter().position(|(n, _)| n == name).map(TensorId)
    }

    /// Writes host data into an input tensor (a batch, labels, timesteps) before the next step.
    pub fn write_input<T: bytemuck::Pod>(&self, gpu: &Gpu, input: TensorId, data: &[T]) -> Result<(), GpuError> {
        let (name, shape) = &self.names[input.0];
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(GpuError::BufferSize {
                label: name.clone(),
                capacity: (expected * 4) as u64,
                bytes: std::mem::size_of_val(data) as u64,
            });
        }
        gpu.write(self.buffer(input), data)
    }

    /// Records every dispatch into one compute pass of `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_where(encoder, |_| true);
    }

    /// Records the dispatches of the phases `keep` accepts, in order, into one compute pass of `encoder`.
    fn encode_where(&self, encoder: &mut wgpu::CommandEncoder, keep: impl Fn(Phase) -> bool) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&self.name),
            timestamp_writes: None,
        });
        for step in self.steps.iter().filter(|s| keep(s.phase)) {
            step.dispatch.record(&mut pass);
        }
    }

    /// Queues the per-step values of global step `step` for a replay whose first sample is sample `first` of the
    /// step's global batch (0 for a whole-batch step). They land before the next submit.
    pub fn write_step_values(&self, gpu: &Gpu, step: u64, first: u64) {
        for write in &self.step_writes {
            gpu.queue.write_buffer(&write.buffer.buffer, 0, &(write.bytes)(step));
        }
        for write in &self.sample_writes {
            gpu.queue
                .write_buffer(&write.buffer.buffer, 0, &(write.bytes)(step, first));
        }
    }

    /// Refuses to split a global batch of `global` samples into parts if a noise fill could not start at every
    /// part's first sample: the fills draw in blocks of 4 elements, so each sample's share must be a multiple of 4.
    pub fn check_split(&self, global: usize) -> Result<(), GpuError> {
        for write in &self.sample_writes {
            let blocks = (global * write.per_sample) / 4;
            if write.per_sample % 4 != 0 || u32::try_from(blocks).is_err() {
                return Err(GpuError::Validation {
                    context: format!("plan {:?}", self.name),
                    message: format!(
                        "the noise {} draws {} values per sample, not a multiple of 4 (or over 2^34 in all), so a \
                         batch cannot be split into micro-batches or across ranks; train it with --micro-batches 1 \
                         on one process",
                        write.label, write.per_sample
                    ),
                });
            }
        }
        Ok(())
    }

    /// Writes the per-step values of global step `step`, encodes the plan and submits it once. Does not wait.
    ///
    /// The first submit runs inside out-of-memory, validation and internal error scopes. If it fails, the
    /// plan submits nothing more (every later submit would fail the same way, and wgpu panics on an error no
    /// scope catches) and the plan's next readback returns the error, naming the plan.
    pub fn run(&self, gpu: &Gpu, step: u64) {
        if let Some(Err(_)) = self.first_submit.get() {
            return;
        }
        self.write_step_values(gpu, step, 0);
        self.submit_where(gpu, |_| true);
    }

    /// One part of global step `step` (see [`Part`]) for the samples from global index `first` on; the
    /// gradients part writes the per-step values first. Does not wait. Running the gradients part, then the
    /// update part with the same gradients, computes what [`run`](Self::run) computes.
    pub fn run_part(&self, gpu: &Gpu, step: u64, first: u64, part: Part) {
        if let Some(Err(_)) = self.first_submit.get() {
            return;
        }
        if part == Part::Gradients {
            self.write_step_values(gpu, step, first);
        }
        self.submit_where(gpu, |phase| part.holds(phase));
    }

    /// Encodes the dispatches of the phases `keep` accepts and submits them once; the first submit inside error
    /// scopes (see [`run`](Self::run)).
    fn submit_where(&self, gpu: &Gpu, keep: impl Fn(Phase) -> bool + Copy) {
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some(&self.name),
        });
        if self.first_submit.get().is_some() {
            self.encode_where(&mut encoder, keep);
            gpu.queue.submit([encoder.finish()]);
            return;
        }
        let out_of_memory = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = gpu.device.push_error_scope(wgpu::ErrorFilter::Internal);
        self.encode_where(&mut encoder, keep);
        gpu.queue.submit([encoder.finish()]);
        let errors = [
            pollster::block_on(internal.pop()),
            pollster::block_on(validation.pop()),
            pollster::block_on(out_of_memory.pop()),
        ];
        let result = match errors.into_iter().flatten().next() {
            None => Ok(()),
            Some(error) => Err(crate::gpu::error_text(&error)),
        };
        let _ = self.first_submit.set(result);
    }

    /// The first submit's error, if it failed (see [`run`](Self::run)).
    pub fn submit_error(&self) -> Result<(), GpuError> {
        match self.first_submit.get() {
            Some(Err(message)) => Err(GpuError::Validation {
                context: format!("the first step of plan {:?}", self.name),
                message: message.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The loss tensors' names, in the order `read_losses` returns them.
    pub fn loss_names(&self) -> Vec<&str> {
        self.losses.iter().map(|id| self.names[id.0].0.as_str()).collect()
    }

    /// Reads the losses of the last submitted step (waits for the GPU: call it every N steps, not every step).
    pub fn read_losses(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        self.submit_error()?;
        let Some(staging) = &self.loss_staging else {
            return Ok(Vec::new());
        };
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("losses") });
        for (i, id) in self.losses.iter().enumerate() {
            encoder.copy_buffer_to_buffer(&self.buffer(*id).buffer, 0, staging, (i * 4) as u64, 4);
        }
        gpu.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        gpu.wait()?;
        let fail = |message: String| GpuError::Readback {
            label: "losses".into(),
            message,
        };
        receiver
            .recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let values = bytemuck::pod_collect_to_vec(&slice.get_mapped_range().map_err(|e| fail(e.to_string()))?);
        staging.unmap();
        Ok(values)
    }

    /// Reads the per-sample values (N) of loss `loss` from the last step (waits for the GPU).
    pub fn read_per_sample(&self, gpu: &Gpu, loss: TensorId) -> Result<Vec<f32>, GpuError> {
        self.submit_error()?;
        let (_, buffer) = self
            .per_sample
            .iter()
            .find(|(id, _)| *id == loss)
            .ok_or_else(|| GpuError::Validation {
                context: self.name.clone(),
                message: format!("tensor {} is not a loss of this plan", self.names[loss.0].0),
            })?;
        gpu.read(buffer)
    }

    /// The sums of each loss over the steps since the last [`reset_loss_sums`](Self::reset_loss_sums), without
    /// a readback per step (waits for the GPU).
    pub fn read_loss_sums(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        self.submit_error()?;
        self.loss_sums.iter().map(|b| Ok(gpu.read::<f32>(b)?[0])).collect()
    }

    /// Zeroes the loss sums (lands before the next submit).
    pub fn reset_loss_sums(&self, gpu: &Gpu) -> Result<(), GpuError> {
        self.loss_sums.iter().try_for_each(|b| gpu.write(b, &[0.0f32]))
    }

    /// Reads any tensor back (waits for the GPU).
    pub fn read(&self, gpu: &Gpu, id: TensorId) -> Result<Vec<f32>, GpuError> {
        self.submit_error()?;
        let mut values: Vec<f32> = gpu.read(self.buffer(id))?;
        values.truncate(self.names[id.0].1.iter().product());
        Ok(values)
    }

    /// Dispatches per step, by phase.
    pub fn dispatch_counts(&self) -> BTreeMap<Phase, usize> {
        let mut counts = BTreeMap::new();
        for step in &self.steps {
            *counts.entry(step.phase).or_insert(0) += 1;
        }
        counts
    }

    /// Bytes of the buffers this plan made, by role (shared parameters are counted by `memory_with`).
    pub fn own_memory(&self) -> BTreeMap<BufferRole, u64> {
        let mut memory = BTreeMap::new();
        let mut seen = HashSet::new();
        for buffer in &self.owned {
            if seen.insert(Arc::as_ptr(buffer)) {
                *memory.entry(buffer.role).or_insert(0) += buffer.bytes;
            }
        }
        memory
    }
}

/// GPU memory of the parameter store by role (weights, gradients, optimizer state).
pub fn store_memory(store: &ParamStore) -> BTreeMap<BufferRole, u64> {
    let mut memory = BTreeMap::new();
    for entry in &store.entries {
        let buffers = std::iter::once(&entry.value)
            .chain(entry.grad.iter())
            .chain(entry.optimizer_state.iter().map(|(_, b)| b))
            .chain(entry.ema.iter());
        for buffer in buffers {
            *memory.entry(buffer.role).or_insert(0) += buffer.bytes;
        }
    }
    memory
}

/// The kernels' shape of a `Conv2d` op (`TRANSPOSED = false`: weight (Co, Ci, k, k)) or a `ConvTranspose2d` op
/// (`true`: weight (Ci, Co, k, k)).
pub(crate) fn conv_shape<const TRANSPOSED: bool>(
    graph: &Graph,
    x: TensorId,
    weight: TensorId,
    geometry: crate::graph::ConvGeometry,
) -> crate::kernels::conv2d::ConvShape<TRANSPOSED> {
    let (xs, ws) = (graph.shape(x), graph.shape(weight));
    let out_channels = if TRANSPOSED { ws[1] } else { ws[0] };
    let (kernel, stride, padding) = (geometry.kernel, geometry.stride, geometry.padding);
    crate::kernels::conv2d::ConvShape::square(xs[0], xs[1], out_channels, (xs[2], xs[3]), kernel, stride, padding)
}
