//! The CPU twin of a plan: the same graph run forward, backward and through the optimizer on the f64 CPU twins.
//!
//! It starts from the same initial weights (drawn in f32 from the same seed) and reads the same inputs, so a GPU
//! training trace can be compared with it step by step: losses and final weights within float32 tolerance.

use std::collections::HashMap;

use super::params::initial_values;
use super::TrainOptions;
use crate::cpu;
use crate::graph::{Graph, NormMode, Op, TensorId, TensorKind};
use crate::kernels::matmul::{Layout, MatmulShape};
use crate::optim::Optimizer;

/// A graph's values on the CPU, in f64.
pub struct Reference<'g> {
    graph: &'g Graph,
    train: TrainOptions,
    /// Values by storage tensor id.
    values: Vec<Vec<f64>>,
    grads: Vec<Option<Vec<f64>>>,
    /// Optimizer moments by parameter name (`exp_avg`, `exp_avg_sq`, or `momentum_buffer`).
    moments: HashMap<String, Vec<Vec<f64>>>,
    /// The seed of the noise streams and the step being computed (noise is drawn from (seed, step, stream)).
    seed: u64,
    current_step: u64,
}

/// An op the reference executor cannot run yet.
#[derive(Debug, thiserror::Error)]
#[error("the CPU reference has no twin for op {0}")]
pub struct Unsupported(pub &'static str);

impl<'g> Reference<'g> {
    /// Parameters start where the GPU's do: `initial_values(seed, spec)`.
    pub fn new(graph: &'g Graph, seed: u64, train: TrainOptions) -> Self {
        let mut values: Vec<Vec<f64>> = graph.tensors.iter().map(|t| vec![0.0; t.len()]).collect();
        for spec in &graph.params {
            values[spec.tensor.0] = initial_values(seed, spec).into_iter().map(f64::from).collect();
        }
        Self {
            graph,
            train,
            values,
            grads: vec![None; graph.tensors.len()],
            moments: HashMap::new(),
            seed,
            current_step: 0,
        }
    }

    fn value(&self, id: TensorId) -> &[f64] {
        &self.values[self.graph.storage(id).0]
    }

    fn set(&mut self, id: TensorId, values: Vec<f64>) {
        let storage = self.graph.storage(id);
        self.values[storage.0] = values;
    }

    /// Sets an input tensor (f32 data, like the GPU's).
    pub fn set_input(&mut self, id: TensorId, data: &[f32]) {
        self.set(id, data.iter().map(|&v| v as f64).collect());
    }

    /// The current values of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&[f64]> {
        self.graph.param_named(name).map(|spec| self.value(spec.tensor))
    }

    /// One training step (global step `step`, 0-based): forward, backward, update. Returns the losses in graph
    /// order.
    pub fn step(&mut self, step: u64) -> Result<Vec<f64>, Unsupported> {
        self.current_step = step;
        let losses = self.forward()?;
        self.backward()?;
        self.update(step);
        Ok(losses)
    }

    /// The values of any tensor after the last forward pass.
    pub fn tensor(&self, id: TensorId) -> &[f64] {
        self.value(id)
    }

    /// Sets the step whose noise the next [`forward`](Self::forward) draws.
    pub fn set_step(&mut self, step: u64) {
        self.current_step = step;
    }

    /// The forward pass; returns the losses in graph order.
    pub fn forward(&mut self) -> Result<Vec<f64>, Unsupported> {
        let mut losses = Vec::new();
        for op in &self.graph.ops {
            let y = match op {
                Op::BatchNorm2d { .. } => self.batch_norm_forward(op),
                _ => self.forward_op(op)?,
            };
            if op.is_loss() {
                losses.push(y[0]);
            }
            self.set(op.output(), y);
        }
        Ok(losses)
    }

    fn forward_op(&self, op: &Op) -> Result<Vec<f64>, Unsupported> {
        let g = self.graph;
        Ok(match *op {
            Op::Linear { x, weight, bias, y } => {
                let (batch, out_features) = (g.shape(y)[0], g.shape(y)[1]);
                let in_features = g.shape(weight)[1];
                let mut out = vec![0.0; batch * out_features];
                let bias = bias.map(|b| self.value(b));
                let shape = MatmulShape::new(batch, out_features, in_features);
                cpu::matmul::matmul(
                    &mut out,
                    self.value(x),
                    self.value(weight),
                    bias,
                    Layout::NT,
                    shape,
                    None,
                    false,
                );
                out
            }
            Op::Conv2d {
                x,
                weight,
                bias,
                geometry,
                ..
            } => {
                let s = super::conv_shape::<false>(g, x, weight, geometry);
                cpu::conv2d::forward(&s, self.value(x), self.value(weight), bias.map(|b| self.value(b)))
            }
            Op::ConvTranspose2d {
                x,
                weight,
                bias,
                geometry,
                ..
            } => {
                let s = super::conv_shape::<true>(g, x, weight, geometry);
                cpu::conv_transpose2d::forward(&s, self.value(x), self.value(weight), bias.map(|b| self.value(b)))
            }
            Op::Activation { activation, x, .. } => cpu::activation::forward(activation, self.value(x)),
            Op::Add { a, b, .. } => cpu::arith::add(self.value(a), self.value(b)),
            Op::AddPerChannel { x, v, .. } => {
                let s = g.shape(x);
                cpu::arith::add_channel_bias(self.value(x), self.value(v), s[0] * s[1], s[2] * s[3])
            }
            Op::MaxPool2 { x, .. } => {
                let s = g.shape(x);
                cpu::resample::max_pool2d_forward(self.value(x), s[0] * s[1], s[2], s[3])
            }
            Op::Upsample2 { x, .. } => {
                let s = g.shape(x);
                cpu::resample::upsample_nearest2d_forward(self.value(x), s[0] * s[1], s[2], s[3])
            }
            Op::Concat { a, b, .. } => {
                let (sa, sb) = (g.shape(a), g.shape(b));
                cpu::concat::concat_channels_forward(self.value(a), self.value(b), sa[0], sa[1], sb[1], sa[2] * sa[3])
            }
            Op::BceWithLogits { logits, target, .. } => {
                let (batch, features) = per_sample(g, logits);
                vec![cpu::loss::bce_with_logits(
                    self.value(logits),
                    self.value(target),
                    batch,
                    features,
                )]
            }
            Op::BceWithLogitsConstant { logits, target, .. } => {
                let (batch, features) = per_sample(g, logits);
                let targets = vec![target as f64; batch * features];
                vec![cpu::loss::bce_with_logits(
                    self.value(logits),
                    &targets,
                    batch,
                    features,
                )]
            }
            Op::GaussianKl { mu, logvar, weight, .. } => {
                let (batch, latent) = per_sample(g, mu);
                vec![weight as f64 * cpu::loss::kl(self.value(mu), self.value(logvar), batch, latent)]
            }
            Op::MeanSquaredError { prediction, target, .. } => {
                let (batch, features) = per_sample(g, prediction);
                vec![cpu::loss::mse(
                    self.value(prediction),
                    self.value(target),
                    batch,
                    features,
                )]
            }
            Op::SquaredError { prediction, target, .. } => {
                let (batch, features) = per_sample(g, prediction);
                vec![cpu::loss::squared_error(
                    self.value(prediction),
                    self.value(target),
                    batch,
                    features,
                )]
            }
            Op::Mmd { z, prior, weight, .. } => {
                let (batch, dim) = per_sample(g, z);
                let c = crate::kernels::mmd::imq_scale(dim);
                vec![cpu::mmd::mmd(
                    self.value(z),
                    self.value(prior),
                    batch,
                    dim,
                    c,
                    weight as f64,
                )]
            }
            Op::CrossEntropy { logits, labels, .. } => {
                let (batch, classes) = per_sample(g, logits);
                let labels: Vec<u32> = self.value(labels).iter().map(|&l| l as u32).collect();
                vec![cpu::loss::cross_entropy(self.value(logits), &labels, batch, classes)]
            }
            Op::NormalNoise { y, stream } => {
                let draw = crate::kernels::rng::Draw::new(self.seed, self.current_step, stream);
                cpu::rng::normal(draw, g.tensor(y).len())
            }
            Op::Reparameterize { mu, logvar, eps, .. } => {
                cpu::reparam::forward(self.value(eps), self.value(mu), self.value(logvar))
            }
            Op::GroupNorm {
                groups,
                x,
                weight,
                bias,
                ..
            } => {
                let s = g.shape(x);
                cpu::groupnorm::forward(
                    self.value(x),
                    self.value(weight),
                    self.value(bias),
                    s[0],
                    s[1],
                    groups,
                    s[2] * s[3],
                    1e-5,
                )
                .y
            }
            Op::QSample {
                x0,
                eps,
                t,
                ref schedule,
                ..
            } => {
                let t: Vec<u32> = self.value(t).iter().map(|&v| v as u32).collect();
                let per_sample = g.tensor(x0).len() / t.len();
                cpu::diffusion::q_sample(&schedule.rows(), self.value(x0), self.value(eps), &t, per_sample)
            }
            Op::TimestepEmbedding { t, y } => {
                let t: Vec<u32> = self.value(t).iter().map(|&v| v as u32).collect();
                let frequencies = crate::kernels::diffusion::timestep_frequencies(g.shape(y)[1]);
                cpu::diffusion::timestep_embedding(&t, &frequencies)
            }
            _ => return Err(Unsupported(op.name())),
        })
    }

    fn needs(&self, id: TensorId) -> bool {
        match &self.graph.tensor(self.graph.storage(id)).kind {
            TensorKind::Param(p) => self.train.updates(&self.graph.params[p.0].name),
            TensorKind::Activation => true,
            _ => false,
        }
    }

    fn accumulate(&mut self, id: TensorId, contribution: Vec<f64>) {
        if !self.needs(id) {
            return;
        }
        let storage = self.graph.storage(id);
        match &mut self.grads[storage.0] {
            Some(grad) => grad.iter_mut().zip(contribution).for_each(|(g, c)| *g += c),
            slot => *slot = Some(contribution),
        }
    }

    /// The backward pass: gradients of the sum of the losses.
    pub fn backward(&mut self) -> Result<(), Unsupported> {
        self.grads = vec![None; self.graph.tensors.len()];
        let g = self.graph;
        for op in g.ops.iter().rev() {
            if op.is_loss() {
                self.backward_loss(op);
                continue;
            }
            let Some(dy) = self.grads[g.storage(op.output()).0].clone() else {
                continue;
            };
            self.backward_op(op, &dy)?;
        }
        Ok(())
    }

    fn backward_loss(&mut self, op: &Op) {
        let g = self.graph;
        match *op {
            Op::BceWithLogits { logits, target, .. } => {
                let batch = g.shape(logits)[0];
                let d = cpu::loss::bce_with_logits_backward(self.value(logits), self.value(target), batch);
                self.accumulate(logits, d);
            }
            Op::BceWithLogitsConstant { logits, target, .. } => {
                let batch = g.shape(logits)[0];
                let targets = vec![target as f64; g.tensor(logits).len()];
                let d = cpu::loss::bce_with_logits_backward(self.value(logits), &targets, batch);
                self.accumulate(logits, d);
            }
            Op::GaussianKl { mu, logvar, weight, .. } => {
                let batch = g.shape(mu)[0];
                let (dmu, dlogvar) = cpu::loss::kl_backward(self.value(mu), self.value(logvar), batch);
                let weighted = |d: Vec<f64>| d.into_iter().map(|v| weight as f64 * v).collect::<Vec<_>>();
                self.accumulate(mu, weighted(dmu));
                self.accumulate(logvar, weighted(dlogvar));
            }
            Op::MeanSquaredError { prediction, target, .. } => {
                let (batch, features) = per_sample(g, prediction);
                let d = cpu::loss::mse_backward(self.value(prediction), self.value(target), batch, features);
                self.accumulate(prediction, d);
            }
            Op::SquaredError { prediction, target, .. } => {
                let batch = g.shape(prediction)[0];
                let d = cpu::loss::squared_error_backward(self.value(prediction), self.value(target), batch);
                self.accumulate(prediction, d);
            }
            Op::Mmd { z, prior, weight, .. } => {
                let (batch, dim) = per_sample(g, z);
                let c = crate::kernels::mmd::imq_scale(dim);
                let d = cpu::mmd::mmd_backward(self.value(z), self.value(prior), batch, dim, c, weight as f64);
                self.accumulate(z, d);
            }
            Op::CrossEntropy { logits, labels, .. } => {
                let (batch, classes) = per_sample(g, logits);
                let labels: Vec<u32> = self.value(labels).iter().map(|&l| l as u32).collect();
                let d = cpu::loss::cross_entropy_backward(self.value(logits), &labels, batch, classes);
                self.accumulate(logits, d);
            }
            _ => unreachable!("losses only"),
        }
    }

    fn backward_op(&mut self, op: &Op, dy: &[f64]) -> Result<(), Unsupported> {
        let g = self.graph;
        match *op {
            Op::Linear { x, weight, bias, y } => {
                let (batch, out_features) = (g.shape(y)[0], g.shape(y)[1]);
                let in_features = g.shape(weight)[1];
                let mut dx = vec![0.0; batch * in_features];
                let shape = MatmulShape::new(batch, in_features, out_features);
                cpu::matmul::matmul(&mut dx, dy, self.value(weight), None, Layout::NN, shape, None, false);
                let mut dw = vec![0.0; out_features * in_features];
                let shape = MatmulShape::new(out_features, in_features, batch);
                cpu::matmul::matmul(&mut dw, dy, self.value(x), None, Layout::TN, shape, None, false);
                self.accumulate(x, dx);
                self.accumulate(weight, dw);
                if let Some(bias) = bias {
                    self.accumulate(bias, cpu::reduce::sum_rows(dy, batch, out_features));
                }
            }
            Op::Conv2d {
                x,
                weight,
                bias,
                geometry,
                ..
            } => {
                let s = super::conv_shape::<false>(g, x, weight, geometry);
                let dx = cpu::conv2d::input_backward(&s, self.value(weight), dy);
                let dw = cpu::conv2d::weight_backward(&s, self.value(x), dy);
                self.accumulate(x, dx);
                self.accumulate(weight, dw);
                if let Some(bias) = bias {
                    let plane = s.out_height() * s.out_width();
                    self.accumulate(bias, cpu::conv2d::bias_backward(s.batch, s.out_channels, plane, dy));
                }
            }
            Op::ConvTranspose2d {
                x,
                weight,
                bias,
                geometry,
                ..
            } => {
                let s = super::conv_shape::<true>(g, x, weight, geometry);
                let dx = cpu::conv_transpose2d::input_backward(&s, self.value(weight), dy);
                let dw = cpu::conv_transpose2d::weight_backward(&s, self.value(x), dy);
                self.accumulate(x, dx);
                self.accumulate(weight, dw);
                if let Some(bias) = bias {
                    let plane = s.out_height() * s.out_width();
                    self.accumulate(bias, cpu::conv2d::bias_backward(s.batch, s.out_channels, plane, dy));
                }
            }
            Op::Activation { activation, x, .. } => {
                let dx = cpu::activation::backward(activation, self.value(x), dy);
                self.accumulate(x, dx);
            }
            Op::Add { a, b, .. } => {
                self.accumulate(a, dy.to_vec());
                self.accumulate(b, dy.to_vec());
            }
            Op::AddPerChannel { x, v, .. } => {
                let s = g.shape(x);
                self.accumulate(x, dy.to_vec());
                self.accumulate(v, cpu::reduce::sum_cols(dy, s[0] * s[1], s[2] * s[3]));
            }
            Op::MaxPool2 { x, .. } => {
                let s = g.shape(x);
                let dx = cpu::resample::max_pool2d_backward(self.value(x), dy, s[0] * s[1], s[2], s[3]);
                self.accumulate(x, dx);
            }
            Op::Upsample2 { x, .. } => {
                let s = g.shape(x);
                self.accumulate(
                    x,
                    cpu::resample::upsample_nearest2d_backward(dy, s[0] * s[1], s[2], s[3]),
                );
            }
            Op::Concat { a, b, .. } => {
                let (sa, sb) = (g.shape(a), g.shape(b));
                let (da, db) = cpu::concat::concat_channels_backward(dy, sa[0], sa[1], sb[1], sa[2] * sa[3]);
                self.accumulate(a, da);
                self.accumulate(b, db);
            }
            // Noise has no inputs: its gradient (the GAN's z feeds G) goes nowhere.
            Op::NormalNoise { .. } => {}
            Op::BatchNorm2d {
                x, weight, bias, mode, ..
            } => {
                if mode == NormMode::Eval {
                    return Err(Unsupported("batch_norm2d backward in evaluation mode"));
                }
                // The batch statistics again (x still holds this step's values), then the training backward.
                let s = g.shape(x);
                let (batch, channels, inner) = (s[0], s[1], s[2] * s[3]);
                let ones = vec![1.0; channels];
                let statistics = cpu::batchnorm::forward_train(
                    self.value(x),
                    &ones,
                    &ones,
                    &ones,
                    &ones,
                    batch,
                    channels,
                    inner,
                    BATCH_NORM_EPS,
                    BATCH_NORM_MOMENTUM,
                );
                let grads = cpu::batchnorm::backward(
                    self.value(x),
                    &statistics.mean,
                    &statistics.rstd,
                    dy,
                    self.value(weight),
                    batch,
                    channels,
                    inner,
                );
                self.accumulate(x, grads.dx);
                self.accumulate(weight, grads.dweight);
                self.accumulate(bias, grads.dbias);
            }
            Op::Reparameterize { mu, logvar, eps, .. } => {
                let (dmu, dlogvar) = cpu::reparam::backward(self.value(eps), self.value(logvar), dy);
                self.accumulate(mu, dmu);
                self.accumulate(logvar, dlogvar);
            }
            Op::GroupNorm {
                groups,
                x,
                weight,
                bias,
                ..
            } => {
                // The forward's statistics, recomputed.
                let s = g.shape(x);
                let (batch, channels, inner) = (s[0], s[1], s[2] * s[3]);
                let (xv, wv) = (self.value(x), self.value(weight));
                let f = cpu::groupnorm::forward(xv, wv, self.value(bias), batch, channels, groups, inner, 1e-5);
                let b = cpu::groupnorm::backward(xv, &f.mean, &f.rstd, dy, wv, batch, channels, groups, inner);
                self.accumulate(x, b.dx);
                self.accumulate(weight, b.dweight);
                self.accumulate(bias, b.dbias);
            }
            // Data and noise in, no gradient out.
            Op::QSample { .. } | Op::TimestepEmbedding { .. } => {}
            _ => return Err(Unsupported(op.name())),
        }
        Ok(())
    }

    /// The optimizer's update of every trained parameter that has a gradient.
    fn update(&mut self, step: u64) {
        let optimizer = self.train.optimizer.clone();
        let values = optimizer.step_values(step);
        for spec in self
            .graph
            .params
            .iter()
            .filter(|p| p.trainable && self.train.updates(&p.name))
        {
            let Some(grad) = self.grads[spec.tensor.0].clone() else {
                continue;
            };
            let n = grad.len();
            let moments = self
                .moments
                .entry(spec.name.clone())
                .or_insert_with(|| vec![vec![0.0; n]; optimizer.state_names().len()]);
            let param = &mut self.values[spec.tensor.0];
            match &optimizer {
                Optimizer::Adam { config, .. } => {
                    let mut state = cpu::optim::AdamState {
                        param: std::mem::take(param),
                        exp_avg: std::mem::take(&mut moments[0]),
                        exp_avg_sq: std::mem::take(&mut moments[1]),
                    };
                    cpu::optim::adam_step(&mut state, &grad, &config.params(0, n as u32), &values, 0..n);
                    *param = state.param;
                    moments[0] = state.exp_avg;
                    moments[1] = state.exp_avg_sq;
                }
                Optimizer::Sgd { config, .. } => {
                    cpu::optim::sgd_step(
                        param,
                        &mut moments[0],
                        &grad,
                        &config.params(0, n as u32),
                        &values,
                        0..n,
                    );
                }
            }
        }
    }
}

/// BatchNorm2d's eps and momentum (models.md; the same as the kernels').
const BATCH_NORM_EPS: f64 = 1e-5;
const BATCH_NORM_MOMENTUM: f64 = 0.1;

impl Reference<'_> {
    /// BatchNorm2d forward: batch statistics in training (updating the running statistics and the counter in
    /// `Train` mode only), running statistics in evaluation.
    fn batch_norm_forward(&mut self, op: &Op) -> Vec<f64> {
        let Op::BatchNorm2d {
            x,
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            mode,
            ..
        } = *op
        else {
            unreachable!("called for BatchNorm2d only")
        };
        let s = self.graph.shape(x);
        let (batch, channels, inner) = (s[0], s[1], s[2] * s[3]);
        if mode == NormMode::Eval {
            return cpu::batchnorm::forward_eval(
                self.value(x),
                self.value(weight),
                self.value(bias),
                self.value(running_mean),
                self.value(running_var),
                channels,
                inner,
                BATCH_NORM_EPS,
            );
        }
        let out = cpu::batchnorm::forward_train(
            self.value(x),
            self.value(weight),
            self.value(bias),
            self.value(running_mean),
            self.value(running_var),
            batch,
            channels,
            inner,
            BATCH_NORM_EPS,
            BATCH_NORM_MOMENTUM,
        );
        if mode == NormMode::Train {
            self.set(running_mean, out.running_mean);
            self.set(running_var, out.running_var);
            let counter = self.graph.params[num_batches_tracked.0].tensor;
            let count = self.value(counter)[0] + 1.0;
            self.set(counter, vec![count]);
        }
        out.y
    }
}

fn per_sample(graph: &Graph, x: TensorId) -> (usize, usize) {
    let shape = graph.shape(x);
    (shape[0], shape[1..].iter().product())
}
