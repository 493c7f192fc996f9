//! Lowering: each op of the graph becomes dispatches of the kernel library, forward and backward.
//!
//! Gradients: a tensor's gradient buffer is written by the first op that reaches it in the backward walk and
//! accumulated into by the others (natively where the kernel can, e.g. matmul's `C += A·B`; otherwise through a
//! temporary and an `axpy`). An op whose output gradient was never written (nothing downstream needs it) emits
//! nothing, and a parameter whose gradient was never written is not updated, as in PyTorch.

use std::sync::Arc;

use super::{ParamStore, Phase, Plan, PlanOptions, SampleWrite, Step, StepWrite, TrainOptions};
use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::graph::{Graph, NormMode, Op, TensorId, TensorKind};
use crate::kernels::loss::{self, LossSlot, Target};
use crate::kernels::{
    activation, arith, batchnorm, concat, conv2d, conv_transpose2d, diffusion, groupnorm, matmul, mmd, reduce, reparam,
    resample, rng,
};
use crate::optim::Optimizer;

pub(super) struct Builder<'a> {
    gpu: &'a Gpu,
    graph: &'a Graph,
    store: &'a mut ParamStore,
    options: &'a PlanOptions,
    /// Buffer per tensor id (views point at their storage's buffer).
    buffers: Vec<Option<Arc<GpuBuffer>>>,
    /// Gradient buffer per storage tensor id, made on first use.
    grads: Vec<Option<Arc<GpuBuffer>>>,
    grad_written: Vec<bool>,
    needs_grad: Vec<bool>,
    /// Values an op saves in its forward for its backward (BatchNorm's mean and rstd, ...), by op index.
    saved: Vec<Vec<Arc<GpuBuffer>>>,
    steps: Vec<Step>,
    step_writes: Vec<StepWrite>,
    sample_writes: Vec<SampleWrite>,
    /// Gradients of the updated parameters and the state the forward updates (`Plan::gradients`, `Plan::states`).
    gradients: Vec<Arc<GpuBuffer>>,
    states: Vec<Arc<GpuBuffer>>,
    owned: Vec<Arc<GpuBuffer>>,
    losses: Vec<TensorId>,
    /// Per-sample values of each loss, (N) each.
    per_sample: Vec<(TensorId, Arc<GpuBuffer>)>,
    phase: Phase,
}

/// Sizes of a linear layer from its tensors: (batch, in, out).
fn linear_sizes(graph: &Graph, x: TensorId, weight: TensorId) -> (usize, usize, usize) {
    let (w, xs) = (graph.shape(weight), graph.shape(x));
    (xs[0], w[1], w[0])
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        gpu: &'a Gpu,
        graph: &'a Graph,
        store: &'a mut ParamStore,
        options: &'a PlanOptions,
    ) -> Result<Self, GpuError> {
        let count = graph.tensors.len();
        let mut builder = Self {
            gpu,
            graph,
            store,
            options,
            buffers: vec![None; count],
            grads: vec![None; count],
            grad_written: vec![false; count],
            needs_grad: vec![false; count],
            saved: vec![Vec::new(); graph.ops.len()],
            steps: Vec::new(),
            step_writes: Vec::new(),
            sample_writes: Vec::new(),
            gradients: Vec::new(),
            states: Vec::new(),
            owned: Vec::new(),
            losses: Vec::new(),
            per_sample: Vec::new(),
            phase: Phase::Forward,
        };
        builder.allocate_tensors()?;
        if let Some(train) = &options.train {
            builder.mark_gradients(train);
        }
        Ok(builder)
    }

    /// One buffer per stored tensor; parameters and state come from the shared store.
    fn allocate_tensors(&mut self) -> Result<(), GpuError> {
        for (index, tensor) in self.graph.tensors.iter().enumerate() {
            let bytes = (tensor.len() * 4) as u64;
            let buffer = match &tensor.kind {
                TensorKind::Param(p) | TensorKind::State(p) => {
                    self.store.entry(self.gpu, &self.graph.params[p.0])?.value.clone()
                }
                TensorKind::Input => self.new_buffer(&tensor.name, BufferRole::Inputs, bytes)?,
                TensorKind::Activation => self.new_buffer(&tensor.name, BufferRole::Activations, bytes)?,
                TensorKind::View(_) => continue,
            };
            self.buffers[index] = Some(buffer);
        }
        for index in 0..self.graph.tensors.len() {
            let storage = self.graph.storage(TensorId(index));
            self.buffers[index] = self.buffers[storage.0].clone();
        }
        Ok(())
    }

    fn new_buffer(&mut self, label: &str, role: BufferRole, bytes: u64) -> Result<Arc<GpuBuffer>, GpuError> {
        let buffer = Arc::new(self.gpu.buffer(label, role, bytes)?);
        self.owned.push(buffer.clone());
        Ok(buffer)
    }

    /// A tensor needs a gradient if it is a parameter being updated, or computed from one that does (or from an
    /// input of an op that does): gradients flow back through every op between a loss and a trained parameter.
    fn mark_gradients(&mut self, train: &TrainOptions) {
        for (index, tensor) in self.graph.tensors.iter().enumerate() {
            if let TensorKind::Param(p) = tensor.kind {
                self.needs_grad[index] = train.updates(&self.graph.params[p.0].name);
            }
        }
        // Views and ops propagate in graph order (a view is always made after the tensor it looks at).
        for op in &self.graph.ops {
            let any = op
                .inputs()
                .iter()
                .any(|t| self.needs_grad[self.graph.storage(*t).0] || self.needs_grad[t.0]);
            self.needs_grad[op.output().0] = any;
        }
        for index in 0..self.graph.tensors.len() {
            let storage = self.graph.storage(TensorId(index));
            self.needs_grad[index] = self.needs_grad[index] || self.needs_grad[storage.0];
            self.needs_grad[storage.0] = self.needs_grad[index];
        }
    }

    fn buf(&self, id: TensorId) -> Arc<GpuBuffer> {
        self.buffers[id.0].clone().expect("every tensor has a buffer")
    }

    fn len(&self, id: TensorId) -> usize {
        self.graph.tensor(id).len()
    }

    fn name(&self, id: TensorId) -> &str {
        &self.graph.tensor(id).name
    }

    fn push(&mut self, label: impl Into<String>, dispatch: Dispatch, flops: u64) {
        self.steps.push(Step {
            label: label.into(),
            phase: self.phase,
            bytes: dispatch.bytes,
            dispatch,
            flops,
        });
    }

    fn needs(&self, id: TensorId) -> bool {
        self.needs_grad[id.0]
    }

    /// The gradient buffer of `id` and whether it already holds a contribution (then the caller accumulates).
    fn grad_target(&mut self, id: TensorId) -> Result<(Arc<GpuBuffer>, bool), GpuError> {
        let storage = self.graph.storage(id);
        if self.grads[storage.0].is_none() {
            let tensor = self.graph.tensor(storage);
            let buffer = match tensor.kind {
                TensorKind::Param(p) => {
                    let entry = self.store.entry(self.gpu, &self.graph.params[p.0])?;
                    if entry.grad.is_none() {
                        let label = format!("{}.grad", entry.name);
                        entry.grad = Some(Arc::new(self.gpu.buffer(
                            &label,
                            BufferRole::Gradients,
                            (entry.len() * 4) as u64,
                        )?));
                    }
                    entry.grad.clone().expect("just made")
                }
                _ => {
                    let label = format!("{}.grad", tensor.name);
                    self.new_buffer(&label, BufferRole::Gradients, (tensor.len() * 4) as u64)?
                }
            };
            self.grads[storage.0] = Some(buffer);
        }
        let accumulate = self.grad_written[storage.0];
        self.grad_written[storage.0] = true;
        Ok((self.grads[storage.0].clone().expect("made above"), accumulate))
    }

    /// The gradient of an op's output, if anything downstream wrote it.
    fn output_grad(&self, id: TensorId) -> Option<Arc<GpuBuffer>> {
        let storage = self.graph.storage(id);
        if self.grad_written[storage.0] {
            self.grads[storage.0].clone()
        } else {
            None
        }
    }

    /// Emits a gradient contribution to `id` from a kernel that overwrites its output: straight into the
    /// gradient buffer the first time, through a temporary and an `axpy` after that.
    fn emit_grad(
        &mut self,
        id: TensorId,
        label: &str,
        kernel: impl FnOnce(&Gpu, &GpuBuffer) -> Result<Dispatch, GpuError>,
    ) -> Result<(), GpuError> {
        self.emit_counted_grad(id, label, 0, kernel)
    }

    /// [`Self::emit_grad`] for a kernel of `flops` floating-point operations (the profiler's GFLOP/s and
    /// roofline columns).
    fn emit_counted_grad(
        &mut self,
        id: TensorId,
        label: &str,
        flops: u64,
        kernel: impl FnOnce(&Gpu, &GpuBuffer) -> Result<Dispatch, GpuError>,
    ) -> Result<(), GpuError> {
        let (grad, accumulate) = self.grad_target(id)?;
        if !accumulate {
            let dispatch = kernel(self.gpu, &grad)?;
            self.push(label, dispatch, flops);
            return Ok(());
        }
        let n = self.len(id);
        let temporary = self.new_buffer(
            &format!("{}.grad.part", self.name(id)),
            BufferRole::Gradients,
            (n * 4) as u64,
        )?;
        let dispatch = kernel(self.gpu, &temporary)?;
        self.push(label, dispatch, flops);
        let add = arith::axpy(self.gpu, &grad, &temporary, 1.0, 1.0, n)?;
        self.push(format!("{label} accumulate"), add, n as u64);
        Ok(())
    }

    /// The forward dispatches of op number `index`.
    pub(super) fn forward(&mut self, index: usize, op: &Op) -> Result<(), GpuError> {
        let gpu = self.gpu;
        let label = format!("{} {}", self.name(op.output()), op.name());
        match *op {
            Op::Linear { x, weight, bias, y } => {
                let (batch, input, output) = linear_sizes(self.graph, x, weight);
                let bias = bias.map(|b| self.buf(b));
                let buf = |id| self.buf(id);
                let d = matmul::linear_forward(
                    gpu,
                    &buf(y),
                    &buf(x),
                    &buf(weight),
                    bias.as_deref(),
                    None,
                    batch,
                    input,
                    output,
                )?;
                self.push(label, d, matmul::flops(batch, output, input));
            }
            Op::Activation { activation, x, y } => {
                let d = activation::forward(gpu, activation, &self.buf(y), &self.buf(x), self.len(x))?;
                self.push(label, d, 0);
            }
            Op::Add { a, b, y } => {
                let d = arith::add(gpu, &self.buf(y), &self.buf(a), &self.buf(b), self.len(y))?;
                self.push(label, d, self.len(y) as u64);
            }
            Op::AddPerChannel { x, v, y } => {
                let shape = self.graph.shape(x);
                let (rows, inner) = (shape[0] * shape[1], shape[2] * shape[3]);
                let d = arith::add_channel_bias(gpu, &self.buf(y), &self.buf(x), &self.buf(v), 1, rows, inner)?;
                self.push(label, d, self.len(y) as u64);
            }
            _ => return self.forward_more(index, op, label),
        }
        Ok(())
    }

    /// The backward walk: every op in reverse, turning its output's gradient into its inputs' gradients.
    pub(super) fn backward(&mut self) -> Result<(), GpuError> {
        self.phase = Phase::Backward;
        let graph = self.graph;
        for (index, op) in graph.ops.iter().enumerate().rev() {
            if !op.inputs().iter().any(|t| self.needs(*t)) {
                continue;
            }
            if op.is_loss() {
                self.backward_loss(index, op)?;
                continue;
            }
            let Some(dy) = self.output_grad(op.output()) else {
                continue;
            };
            self.backward_op(index, op, &dy)?;
        }
        Ok(())
    }

    fn backward_op(&mut self, index: usize, op: &Op, dy: &GpuBuffer) -> Result<(), GpuError> {
        let gpu = self.gpu;
        let label = format!("{} {}", self.name(op.output()), op.name());
        match *op {
            Op::Linear { x, weight, bias, y: _ } => {
                let (batch, input, output) = linear_sizes(self.graph, x, weight);
                if self.needs(x) {
                    let (dx, accumulate) = self.grad_target(x)?;
                    let buf = |id| self.buf(id);
                    let d =
                        matmul::linear_input_backward(gpu, &dx, dy, &buf(weight), accumulate, batch, input, output)?;
                    self.push(format!("{label} dx"), d, matmul::flops(batch, input, output));
                }
                if self.needs(weight) {
                    let (dw, accumulate) = self.grad_target(weight)?;
                    let d =
                        matmul::linear_weight_backward(gpu, &dw, dy, &self.buf(x), accumulate, batch, input, output)?;
                    self.push(format!("{label} dweight"), d, matmul::flops(output, input, batch));
                }
                if let Some(bias) = bias.filter(|b| self.needs(*b)) {
                    self.emit_grad(bias, &format!("{label} dbias"), |gpu, db| {
                        reduce::sum_rows(gpu, db, dy, batch, output)
                    })?;
                }
            }
            Op::Activation { activation, x, y: _ } => {
                let n = self.len(x);
                let xb = self.buf(x);
                self.emit_grad(x, &format!("{label} dx"), |gpu, dx| {
                    activation::backward(gpu, activation, dx, &xb, dy, n)
                })?;
            }
            Op::Add { a, b, y } => {
                let n = self.len(y);
                for input in [a, b] {
                    if self.needs(input) {
                        self.emit_grad(input, &format!("{label} d{}", self.name(input)), |gpu, d| {
                            arith::copy(gpu, d, dy, n)
                        })?;
                    }
                }
            }
            Op::AddPerChannel { x, v, y } => {
                let shape = self.graph.shape(y).to_vec();
                let (rows, inner) = (shape[0] * shape[1], shape[2] * shape[3]);
                if self.needs(x) {
                    let n = self.len(x);
                    self.emit_grad(x, &format!("{label} dx"), |gpu, dx| arith::copy(gpu, dx, dy, n))?;
                }
                if self.needs(v) {
                    self.emit_grad(v, &format!("{label} dv"), |gpu, dv| {
                        reduce::sum_cols(gpu, dv, dy, rows, inner)
                    })?;
                }
            }
            _ => return self.backward_more(index, op, dy, label),
        }
        Ok(())
    }

    /// The optimizer's update of every parameter this plan trains and computed a gradient for.
    pub(super) fn optimizer_updates(&mut self, train: &TrainOptions) -> Result<(), GpuError> {
        self.phase = Phase::Optimizer;
        let optimizer = train.optimizer.clone();
        let step_values = Arc::new(crate::kernels::optim::step_buffer(
            self.gpu,
            &format!("{} step values", self.options.name),
        )?);
        self.owned.push(step_values.clone());
        let for_step = optimizer.clone();
        self.step_writes.push(StepWrite {
            buffer: step_values.clone(),
            bytes: Box::new(move |step| bytemuck::bytes_of(&for_step.step_values(step)).to_vec()),
        });
        let graph = self.graph;
        for spec in graph.params.iter().filter(|p| p.trainable && train.updates(&p.name)) {
            if !self.grad_written[spec.tensor.0] {
                continue;
            }
            let entry = self.store.entry(self.gpu, spec)?;
            let n = entry.len();
            let states = optimizer.state_names();
            if entry.optimizer_state.is_empty() {
                for state in states {
                    let label = format!("optim.{}.{state}", entry.name);
                    let buffer = Arc::new(self.gpu.buffer(&label, BufferRole::OptimizerState, (n * 4) as u64)?);
                    entry.optimizer_state.push((state.to_string(), buffer));
                }
            }
            let (value, grad) = (
                entry.value.clone(),
                entry.grad.clone().expect("written gradients exist"),
            );
            let state: Vec<Arc<GpuBuffer>> = entry.optimizer_state.iter().map(|(_, b)| b.clone()).collect();
            let dispatch = optimizer.update(self.gpu, &value, &state, &grad, &step_values, n)?;
            self.push(format!("{} {}", spec.name, optimizer.name()), dispatch, 0);
            self.gradients.push(grad);
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Plan, GpuError> {
        let mut loss_sums = Vec::new();
        if self.options.train.is_some() {
            self.phase = Phase::Metrics;
            for loss in self.losses.clone() {
                let sum = self.new_buffer(&format!("{} sum", self.name(loss)), BufferRole::Scratch, 4)?;
                let d = arith::axpy(self.gpu, &sum, &self.buf(loss), 1.0, 1.0, 1)?;
                self.push(format!("{} sum", self.name(loss)), d, 1);
                loss_sums.push(sum);
            }
        }
        let loss_staging = if self.losses.is_empty() {
            None
        } else {
            Some(self.gpu.create_buffer_checked(&wgpu::BufferDescriptor {
                label: Some("loss readback"),
                size: (self.losses.len() * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })?)
        };
        Ok(Plan {
            name: self.options.name.clone(),
            steps: self.steps,
            step_writes: self.step_writes,
            sample_writes: self.sample_writes,
            gradients: self.gradients,
            states: self.states,
            tensors: self.buffers,
            names: self
                .graph
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            losses: self.losses,
            per_sample: self.per_sample,
            owned: self.owned,
            loss_staging,
            loss_sums,
            first_submit: Default::default(),
        })
    }
}

impl Optimizer {
    fn name(&self) -> &'static str {
        match self {
            Optimizer::Adam { config, .. } if config.decoupled => "adamw",
            Optimizer::Adam { .. } => "adam",
            Optimizer::Sgd { .. } => "sgd",
        }
    }
}

/// (planes = N·C, H, W) of an image tensor.
fn planes(graph: &Graph, x: TensorId) -> (usize, usize, usize) {
    let s = graph.shape(x);
    (s[0] * s[1], s[2], s[3])
}

impl Builder<'_> {
    /// Forward lowering of the image ops.
    fn forward_more(&mut self, index: usize, op: &Op, label: String) -> Result<(), GpuError> {
        let gpu = self.gpu;
        match *op {
            Op::Conv2d {
                x,
                weight,
                bias,
                y,
                geometry,
            } => {
                let shape = super::conv_shape::<false>(self.graph, x, weight, geometry);
                let bias = bias.map(|b| self.buf(b));
                let buf = |id| self.buf(id);
                let d = conv2d::forward(gpu, &buf(y), &buf(x), &buf(weight), bias.as_deref(), &shape)?;
                self.push(label, d, shape.flops());
            }
            Op::ConvTranspose2d {
                x,
                weight,
                bias,
                y,
                geometry,
            } => {
                let shape = super::conv_shape::<true>(self.graph, x, weight, geometry);
                let bias = bias.map(|b| self.buf(b));
                let buf = |id| self.buf(id);
                let d = conv_transpose2d::forward(gpu, &buf(y), &buf(x), &buf(weight), bias.as_deref(), &shape)?;
                self.push(label, d, shape.flops());
            }
            Op::MaxPool2 { x, y } => {
                let (p, h, w) = planes(self.graph, x);
                let d = resample::max_pool2d_forward(gpu, &self.buf(y), &self.buf(x), p, h, w)?;
                self.push(label, d, 0);
            }
            Op::Upsample2 { x, y } => {
                let (p, h, w) = planes(self.graph, x);
                let d = resample::upsample_nearest2d_forward(gpu, &self.buf(y), &self.buf(x), p, h, w)?;
                self.push(label, d, 0);
            }
            Op::Concat { a, b, y } => {
                let (sa, sb) = (self.graph.shape(a), self.graph.shape(b));
                let buf = |id| self.buf(id);
                let d = concat::concat_channels_forward(
                    gpu,
                    &buf(y),
                    &buf(a),
                    &buf(b),
                    sa[0],
                    sa[1],
                    sb[1],
                    sa[2] * sa[3],
                )?;
                self.push(label, d, 0);
            }
            _ => return self.forward_model_ops(index, op, label),
        }
        Ok(())
    }

    /// Backward lowering of the image ops.
    fn backward_more(&mut self, index: usize, op: &Op, dy: &GpuBuffer, label: String) -> Result<(), GpuError> {
        match *op {
            Op::Conv2d {
                x,
                weight,
                bias,
                y: _,
                geometry,
            } => {
                let shape = super::conv_shape::<false>(self.graph, x, weight, geometry);
                let (xb, wb) = (self.buf(x), self.buf(weight));
                if self.needs(x) {
                    self.emit_counted_grad(x, &format!("{label} dx"), shape.flops(), |gpu, dx| {
                        conv2d::input_backward(gpu, dx, &wb, dy, &shape)
                    })?;
                }
                if self.needs(weight) {
                    self.emit_counted_grad(weight, &format!("{label} dweight"), shape.flops(), |gpu, dw| {
                        conv2d::weight_backward(gpu, dw, &xb, dy, &shape)
                    })?;
                }
                if let Some(bias) = bias.filter(|b| self.needs(*b)) {
                    let plane = shape.out_height() * shape.out_width();
                    self.emit_grad(bias, &format!("{label} dbias"), |gpu, db| {
                        conv2d::bias_backward(gpu, db, dy, shape.batch, shape.out_channels, plane)
                    })?;
                }
            }
            Op::ConvTranspose2d {
                x,
                weight,
                bias,
                y: _,
                geometry,
            } => {
                let shape = super::conv_shape::<true>(self.graph, x, weight, geometry);
                let (xb, wb) = (self.buf(x), self.buf(weight));
                if self.needs(x) {
                    self.emit_counted_grad(x, &format!("{label} dx"), shape.flops(), |gpu, dx| {
                        conv_transpose2d::input_backward(gpu, dx, &wb, dy, &shape)
                    })?;
                }
                if self.needs(weight) {
                    self.emit_counted_grad(weight, &format!("{label} dweight"), shape.flops(), |gpu, dw| {
                        conv_transpose2d::weight_backward(gpu, dw, &xb, dy, &shape)
                    })?;
                }
                if let Some(bias) = bias.filter(|b| self.needs(*b)) {
                    self.emit_grad(bias, &format!("{label} dbias"), |gpu, db| {
                        conv_transpose2d::bias_backward(gpu, db, dy, &shape)
                    })?;
                }
            }
            Op::MaxPool2 { x, y: _ } => {
                let (p, h, w) = planes(self.graph, x);
                let xb = self.buf(x);
                self.emit_grad(x, &format!("{label} dx"), |gpu, dx| {
                    resample::max_pool2d_backward(gpu, dx, &xb, dy, p, h, w)
                })?;
            }
            Op::Upsample2 { x, y: _ } => {
                let (p, h, w) = planes(self.graph, x);
                self.emit_grad(x, &format!("{label} dx"), |gpu, dx| {
                    resample::upsample_nearest2d_backward(gpu, dx, dy, p, h, w)
                })?;
            }
            Op::Concat { a, b, y: _ } => {
                let (sa, sb) = (self.graph.shape(a).to_vec(), self.graph.shape(b).to_vec());
                // One kernel writes both halves of the gradient.
                self.emit_grads([a, b], &format!("{label} split"), |gpu, [da, db]| {
                    concat::concat_channels_backward(gpu, da, db, dy, sa[0], sa[1], sb[1], sa[2] * sa[3])
                })?;
            }
            _ => return self.backward_model_ops(index, op, dy, label),
        }
        Ok(())
    }
}

/// (batch, features per sample) of a loss input.
fn per_sample(graph: &Graph, x: TensorId) -> (usize, usize) {
    let shape = graph.shape(x);
    (shape[0], shape[1..].iter().product())
}

impl Builder<'_> {
    /// A per-sample loss buffer (N) beside the loss scalar, kept for evaluation.
    fn per_sample_buffer(&mut self, loss: TensorId, batch: usize) -> Result<Arc<GpuBuffer>, GpuError> {
        let buffer = self.new_buffer(
            &format!("{}.per_sample", self.name(loss)),
            BufferRole::Activations,
            (batch * 4) as u64,
        )?;
        self.per_sample.push((loss, buffer.clone()));
        Ok(buffer)
    }

    /// Forward lowering of losses and the models' special ops. A loss writes its scalar (the batch mean) and its
    /// per-sample values, kept for evaluation.
    fn forward_model_ops(&mut self, index: usize, op: &Op, label: String) -> Result<(), GpuError> {
        let Some((input, _)) = loss_input(op) else {
            return self.forward_stochastic_and_norm(index, op, label);
        };
        let (gpu, loss) = (self.gpu, op.output());
        let (n, f) = per_sample(self.graph, input);
        let samples = self.per_sample_buffer(loss, n)?;
        let loss_buffer = self.buf(loss);
        let slot = LossSlot::first(&loss_buffer);
        let buf = |id| self.buf(id);
        let x = &buf(input);
        let dispatches = match *op {
            Op::BceWithLogits { target, .. } => {
                loss::bce_with_logits_forward(gpu, &slot, &samples, x, Target::Values(&buf(target)), n, f)?
            }
            Op::BceWithLogitsConstant { target, .. } => {
                loss::bce_with_logits_forward(gpu, &slot, &samples, x, Target::Constant(target), n, f)?
            }
            Op::GaussianKl { logvar, weight, .. } => {
                loss::kl_forward(gpu, &slot, &samples, x, &buf(logvar), n, f, weight as f64)?
            }
            Op::MeanSquaredError { target, .. } => loss::mse_forward(gpu, &slot, &samples, x, &buf(target), n, f)?,
            Op::SquaredError { target, .. } => {
                loss::squared_error_forward(gpu, &slot, &samples, x, &buf(target), n, f)?
            }
            Op::Mmd { prior, weight, .. } => {
                mmd::mmd_forward(gpu, &slot, &samples, x, &buf(prior), n, f, weight as f64)?
            }
            Op::CrossEntropy { labels, .. } => {
                loss::cross_entropy_forward(gpu, &slot, &samples, x, &buf(labels), n, f)?
            }
            _ => unreachable!("loss_input names the losses"),
        };
        self.push_all(&label, dispatches);
        self.losses.push(loss);
        Ok(())
    }

    fn push_all<const N: usize>(&mut self, label: &str, dispatches: [Dispatch; N]) {
        for (i, dispatch) in dispatches.into_iter().enumerate() {
            self.push(
                if i == 0 {
                    label.to_string()
                } else {
                    format!("{label} reduce")
                },
                dispatch,
                0,
            );
        }
    }

    /// A loss's gradient seeds the backward walk: d loss / d input, written or accumulated.
    fn backward_loss(&mut self, _index: usize, op: &Op) -> Result<(), GpuError> {
        let gpu = self.gpu;
        let label = format!("{} {}", self.name(op.output()), op.name());
        if let Op::GaussianKl { mu, logvar, weight, .. } = *op {
            let (batch, latent) = per_sample(self.graph, mu);
            if self.needs(mu) || self.needs(logvar) {
                // One kernel writes both gradients: both must be first writes or both accumulations.
                let (dmu, acc_mu) = self.grad_target(mu)?;
                let (dlogvar, acc_logvar) = self.grad_target(logvar)?;
                if acc_mu != acc_logvar {
                    return Err(GpuError::Validation {
                        context: label,
                        message: "mu and logvar gradients are at different accumulation stages".into(),
                    });
                }
                let (mu, logvar) = (self.buf(mu), self.buf(logvar));
                let d = loss::kl_backward(gpu, &dmu, &dlogvar, &mu, &logvar, acc_mu, batch, latent, weight as f64)?;
                self.push(format!("{label} dmu dlogvar"), d, 0);
            }
            return Ok(());
        }
        let (input, gradient) = loss_input(op).expect("backward_loss is called for losses only");
        if !self.needs(input) {
            return Ok(());
        }
        let (n, f) = per_sample(self.graph, input);
        let (dx, acc) = self.grad_target(input)?;
        let buf = |id| self.buf(id);
        let x = &buf(input);
        let d = match *op {
            Op::BceWithLogits { target, .. } => {
                loss::bce_with_logits_backward(gpu, &dx, x, Target::Values(&buf(target)), acc, n, f)?
            }
            Op::BceWithLogitsConstant { target, .. } => {
                loss::bce_with_logits_backward(gpu, &dx, x, Target::Constant(target), acc, n, f)?
            }
            Op::MeanSquaredError { target, .. } => loss::mse_backward(gpu, &dx, x, &buf(target), acc, n, f)?,
            Op::SquaredError { target, .. } => loss::squared_error_backward(gpu, &dx, x, &buf(target), acc, n, f)?,
            Op::Mmd { prior, weight, .. } => mmd::mmd_backward(gpu, &dx, x, &buf(prior), acc, n, f, weight as f64)?,
            Op::CrossEntropy { labels, .. } => loss::cross_entropy_backward(gpu, &dx, x, &buf(labels), acc, n, f)?,
            _ => unreachable!("loss_input names the losses"),
        };
        self.push(format!("{label} {gradient}"), d, 0);
        Ok(())
    }
}

/// A loss's input whose per-sample values it reduces (the first), and its gradient's label; None for other ops.
fn loss_input(op: &Op) -> Option<(TensorId, &'static str)> {
    Some(match *op {
        Op::BceWithLogits { logits, .. }
        | Op::BceWithLogitsConstant { logits, .. }
        | Op::CrossEntropy { logits, .. } => (logits, "dlogits"),
        Op::GaussianKl { mu, .. } => (mu, "dmu dlogvar"),
        Op::MeanSquaredError { prediction, .. } | Op::SquaredError { prediction, .. } => (prediction, "dprediction"),
        Op::Mmd { z, .. } => (z, "dz"),
        _ => return None,
    })
}

impl Builder<'_> {
    /// Emits a kernel that writes the gradients of several inputs at once. Each goes straight to its gradient
    /// buffer on a first write; otherwise to a temporary that is then accumulated (or, for an input that needs no
    /// gradient, to a scratch buffer that is ignored).
    fn emit_grads<const K: usize>(
        &mut self,
        inputs: [TensorId; K],
        label: &str,
        kernel: impl FnOnce(&Gpu, [&GpuBuffer; K]) -> Result<Dispatch, GpuError>,
    ) -> Result<(), GpuError> {
        let mut targets = Vec::with_capacity(K);
        let mut accumulations = Vec::new();
        for input in inputs {
            let n = self.len(input);
            let bytes = (n * 4) as u64;
            if !self.needs(input) {
                targets.push(self.new_buffer(
                    &format!("{} unused grad", self.name(input)),
                    BufferRole::Gradients,
                    bytes,
                )?);
                continue;
            }
            let (grad, accumulate) = self.grad_target(input)?;
            if accumulate {
                let part = self.new_buffer(&format!("{}.grad.part", self.name(input)), BufferRole::Gradients, bytes)?;
                accumulations.push((grad, part.clone(), n));
                targets.push(part);
            } else {
                targets.push(grad);
            }
        }
        let refs: [&GpuBuffer; K] = std::array::from_fn(|i| targets[i].as_ref());
        let dispatch = kernel(self.gpu, refs)?;
        self.push(label.to_string(), dispatch, 0);
        for (grad, part, n) in accumulations {
            let d = arith::axpy(self.gpu, &grad, &part, 1.0, 1.0, n)?;
            self.push(format!("{label} accumulate"), d, n as u64);
        }
        Ok(())
    }

    fn batch_norm_shape(&self, x: TensorId) -> batchnorm::BatchNorm2d {
        let s = self.graph.shape(x);
        batchnorm::BatchNorm2d::new(s[0], s[1], s[2], s[3])
    }

    fn group_norm_shape(&self, x: TensorId, groups: usize) -> groupnorm::GroupNorm {
        let s = self.graph.shape(x);
        groupnorm::GroupNorm::new(s[0], s[1], groups, s[2], s[3])
    }

    /// Forward lowering of random noise, the reparameterisation and the normalisations.
    fn forward_stochastic_and_norm(&mut self, index: usize, op: &Op, label: String) -> Result<(), GpuError> {
        let gpu = self.gpu;
        match *op {
            Op::NormalNoise { y, stream } => {
                let n = self.len(y);
                let seed = self.options.seed;
                let params = rng::DrawParams::new(gpu, &rng::Draw::new(seed, 0, stream), n)?;
                let d = rng::normal(gpu, &self.buf(y), &params)?;
                // Validate the largest step once here, so the per-step rewrite cannot fail.
                rng::Draw::new(seed, u64::MAX, stream).params(n)?;
                let buffer = Arc::new(params.buffer);
                self.owned.push(buffer.clone());
                // Sample s of the step's global batch draws elements s·per_sample.. of the step's fill, whichever
                // part of the batch this plan holds (`Plan::check_split` keeps the offset whole and in range).
                let per_sample = n / self.graph.shape(y)[0];
                self.sample_writes.push(SampleWrite {
                    buffer,
                    label: self.name(y).to_string(),
                    per_sample,
                    bytes: Box::new(move |step, first| {
                        let draw = rng::Draw {
                            offset: (first as usize * per_sample / 4) as u32,
                            ..rng::Draw::new(seed, step, stream)
                        };
                        let params = draw.params(n).expect("validated at compile time");
                        bytemuck::bytes_of(&params).to_vec()
                    }),
                });
                self.push(label, d, 0);
            }
            Op::Reparameterize { mu, logvar, eps, z } => {
                let buf = |id| self.buf(id);
                let d = reparam::forward(gpu, &buf(z), &buf(eps), &buf(mu), &buf(logvar), self.len(z))?;
                self.push(label, d, 0);
            }
            Op::BatchNorm2d {
                x,
                weight,
                bias,
                running_mean,
                running_var,
                num_batches_tracked,
                y,
                mode,
            } => {
                let shape = self.batch_norm_shape(x);
                let c = shape.channels;
                match mode {
                    NormMode::Eval => {
                        let buf = |id| self.buf(id);
                        let d = batchnorm::forward_eval(
                            gpu,
                            &buf(y),
                            &buf(running_mean),
                            &buf(running_var),
                            &buf(x),
                            &buf(weight),
                            &buf(bias),
                            &shape,
                        )?;
                        self.push(label, d, 0);
                    }
                    NormMode::Train | NormMode::TrainNoUpdate => {
                        let mean =
                            self.new_buffer(&format!("{label} mean"), BufferRole::Activations, (c * 4) as u64)?;
                        let rstd =
                            self.new_buffer(&format!("{label} rstd"), BufferRole::Activations, (c * 4) as u64)?;
                        let (running_mean, running_var) = if mode == NormMode::Train {
                            (self.buf(running_mean), self.buf(running_var))
                        } else {
                            // The kernel always updates running statistics: give it throwaway copies.
                            let bytes = (c * 4) as u64;
                            (
                                self.new_buffer("batch_norm unused running_mean", BufferRole::Scratch, bytes)?,
                                self.new_buffer("batch_norm unused running_var", BufferRole::Scratch, bytes)?,
                            )
                        };
                        let buf = |id| self.buf(id);
                        let d = batchnorm::forward_train(
                            gpu,
                            &buf(y),
                            &mean,
                            &rstd,
                            &running_mean,
                            &running_var,
                            &buf(x),
                            &buf(weight),
                            &buf(bias),
                            &shape,
                        )?;
                        self.push(label.clone(), d, 0);
                        if mode == NormMode::Train {
                            // num_batches_tracked += 1 (held as f32 on the GPU; exact below 2^24).
                            let counter = self.graph.params[num_batches_tracked.0].tensor;
                            let one = self.new_buffer("one", BufferRole::Scratch, 4)?;
                            gpu.write(&one, &[1.0f32])?;
                            let d = arith::axpy(gpu, &self.buf(counter), &one, 1.0, 1.0, 1)?;
                            self.push(format!("{label} count"), d, 0);
                            for state in [running_mean.clone(), running_var.clone(), self.buf(counter)] {
                                if !self.states.iter().any(|s| Arc::ptr_eq(s, &state)) {
                                    self.states.push(state);
                                }
                            }
                        }
                        self.saved[index] = vec![mean, rstd];
                    }
                }
            }
            Op::GroupNorm {
                groups,
                x,
                weight,
                bias,
                y,
            } => {
                let shape = self.group_norm_shape(x, groups);
                let bytes = (shape.statistics() * 4) as u64;
                let mean = self.new_buffer(&format!("{label} mean"), BufferRole::Activations, bytes)?;
                let rstd = self.new_buffer(&format!("{label} rstd"), BufferRole::Activations, bytes)?;
                let buf = |id| self.buf(id);
                let d = groupnorm::forward(gpu, &buf(y), &mean, &rstd, &buf(x), &buf(weight), &buf(bias), &shape)?;
                self.push(label, d, 0);
                self.saved[index] = vec![mean, rstd];
            }
            Op::QSample {
                x0,
                eps,
                t,
                y,
                ref schedule,
            } => {
                // The schedule table (T rows) is uploaded once, with the plan.
                let table = Arc::new(diffusion::schedule_buffer(gpu, schedule)?);
                self.owned.push(table.clone());
                let samples = self.graph.shape(x0)[0];
                let per_sample = self.len(x0) / samples;
                let buf = |id| self.buf(id);
                let d = diffusion::q_sample(gpu, &buf(y), &buf(x0), &buf(eps), &buf(t), &table, samples, per_sample)?;
                self.push(label, d, 0);
            }
            Op::TimestepEmbedding { t, y } => {
                let [samples, dim] = [self.graph.shape(y)[0], self.graph.shape(y)[1]];
                let frequencies = Arc::new(diffusion::frequencies_buffer(gpu, dim)?);
                self.owned.push(frequencies.clone());
                let d = diffusion::timestep_embedding(gpu, &self.buf(y), &self.buf(t), &frequencies, samples, dim)?;
                self.push(label, d, 0);
            }
            _ => unreachable!("every op is lowered above: {}", op.name()),
        }
        Ok(())
    }

    /// Backward lowering of the reparameterisation and the normalisations.
    fn backward_model_ops(&mut self, index: usize, op: &Op, dy: &GpuBuffer, label: String) -> Result<(), GpuError> {
        match *op {
            Op::Reparameterize { mu, logvar, eps, z } => {
                let n = self.len(z);
                let (eps, logvar_buffer) = (self.buf(eps), self.buf(logvar));
                self.emit_grads([mu, logvar], &format!("{label} dmu dlogvar"), |gpu, [dmu, dlogvar]| {
                    reparam::backward(gpu, dmu, dlogvar, &eps, &logvar_buffer, dy, n)
                })?;
            }
            Op::BatchNorm2d {
                x, weight, bias, mode, ..
            } => {
                if mode == NormMode::Eval {
                    return Err(GpuError::Validation {
                        context: label,
                        message: "backward through BatchNorm in evaluation mode is not supported; build the graph \
                                  in training mode"
                            .into(),
                    });
                }
                let shape = self.batch_norm_shape(x);
                let (mean, rstd) = (self.saved[index][0].clone(), self.saved[index][1].clone());
                let (xb, wb) = (self.buf(x), self.buf(weight));
                self.emit_grads(
                    [x, weight, bias],
                    &format!("{label} dx dweight dbias"),
                    |gpu, [dx, dw, db]| batchnorm::backward(gpu, dx, dw, db, &xb, &mean, &rstd, dy, &wb, &shape),
                )?;
            }
            Op::GroupNorm {
                groups,
                x,
                weight,
                bias,
                ..
            } => {
                let shape = self.group_norm_shape(x, groups);
                let (mean, rstd) = (self.saved[index][0].clone(), self.saved[index][1].clone());
                let (xb, wb) = (self.buf(x), self.buf(weight));
                if self.needs(x) {
                    self.emit_grad(x, &format!("{label} dx"), |gpu, dx| {
                        groupnorm::input_backward(gpu, dx, &xb, &mean, &rstd, dy, &wb, &shape)
                    })?;
                }
                if self.needs(weight) || self.needs(bias) {
                    self.emit_grads([weight, bias], &format!("{label} dweight dbias"), |gpu, [dw, db]| {
                        groupnorm::weight_backward(gpu, dw, db, &xb, &mean, &rstd, dy, &shape)
                    })?;
                }
            }
            Op::QSample { .. } | Op::TimestepEmbedding { .. } => {
                return Err(GpuError::Validation {
                    context: label,
                    message: "q_sample and the timestep embedding pass no gradient to their inputs; feed them data \
                              and noise, not trained tensors"
                        .into(),
                });
            }
            _ => unreachable!("every op with a gradient is lowered above: {}", op.name()),
        }
        Ok(())
    }
}
