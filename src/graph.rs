//! A model as a graph of ops over tensors with static shapes.
//!
//! The builder reads like the PyTorch module it mirrors:
//! ```ignore
//! let x = g.input("x", &[128, 784]);
//! let h = g.linear("fc1", x, 400)?;
//! let h = g.activation(Activation::Relu, h);
//! ```
//! Parameters get PyTorch's dotted names (`fc1.weight`, `fc1.bias`), layouts and initialisation
//! (U(-1/sqrt(fan_in), 1/sqrt(fan_in))). Ops are kept in the order they were added: that order is the forward
//! pass, and walked in reverse it is the backward pass (see `plan`).

use std::fmt;

use crate::kernels::activation::Activation;
use crate::kernels::diffusion::Schedule;

/// Index of a tensor in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// Index of a parameter (or persistent state) in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// Where a tensor's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorKind {
    /// Written by the host before each step (a batch, labels, timesteps).
    Input,
    /// A learned parameter.
    Param(ParamId),
    /// Persistent, not learned (BatchNorm running statistics).
    State(ParamId),
    /// Computed by an op.
    Activation,
    /// The same values as another tensor, another shape (a reshape costs nothing).
    View(TensorId),
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    /// u32 data (labels, timesteps) rather than f32.
    pub integer: bool,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-bound, bound), PyTorch's default for Linear and Conv weights and biases: bound = 1/sqrt(fan_in).
    Uniform {
        bound: f32,
    },
    Constant(f32),
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// The checkpoint name, as in models.md (`enc.0.weight`).
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// False for persistent state (running statistics), which the optimizer never touches.
    pub trainable: bool,
    /// The tensor standing for this parameter in the graph.
    pub tensor: TensorId,
}

/// Convolution geometry (square kernels, equal stride and padding in both directions, as the models use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
        }
    }

    /// Conv2d output size: floor((n + 2p - k) / s) + 1.
    pub fn conv_out(&self, n: usize) -> Option<usize> {
        (n + 2 * self.padding)
            .checked_sub(self.kernel)
            .map(|r| r / self.stride + 1)
    }

    /// ConvTranspose2d output size: (n - 1) s - 2p + k.
    pub fn transpose_out(&self, n: usize) -> Option<usize> {
        ((n - 1) * self.stride + self.kernel).checked_sub(2 * self.padding)
    }
}

/// How BatchNorm normalises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormMode {
    /// Batch statistics, and the running statistics updated (PyTorch's `train()`).
    Train,
    /// Batch statistics without touching the running statistics: a second forward of the same batch in the same
    /// step (the GAN's generator step recomputes G(z), which PyTorch computed once).
    TrainNoUpdate,
    /// Running statistics (PyTorch's `eval()`).
    Eval,
}

/// One operation. Inputs are named by role; `y` (or `loss`) is the output.
#[derive(Clone, Debug)]
pub enum Op {
    /// y (N, out) = x (N, in) · weight (out, in)ᵀ + bias (out)
    Linear {
        x: TensorId,
        weight: TensorId,
        bias: Option<TensorId>,
        y: TensorId,
    },
    /// y (N, Co, Ho, Wo) = conv2d(x (N, Ci, H, W), weight (Co, Ci, k, k)) + bias (Co)
    Conv2d {
        x: TensorId,
        weight: TensorId,
        bias: Option<TensorId>,
        y: TensorId,
        geometry: ConvGeometry,
    },
    /// y (N, Co, Ho, Wo) = conv_transpose2d(x (N, Ci, H, W), weight (Ci, Co, k, k)) + bias (Co)
    ConvTranspose2d {
        x: TensorId,
        weight: TensorId,
        bias: Option<TensorId>,
        y: TensorId,
        geometry: ConvGeometry,
    },
    /// y = f(x), any shape
    Activation {
        activation: Activation,
        x: TensorId,
        y: TensorId,
    },
    /// y = a + b, same shapes
    Add { a: TensorId, b: TensorId, y: TensorId },
    /// y (N, C, H, W) = x (N, C, H, W) + v (N, C) broadcast over H, W (the U-Net's time embedding)
    AddPerChannel { x: TensorId, v: TensorId, y: TensorId },
    /// BatchNorm2d over (N, C, H, W); batch statistics in training, running statistics in evaluation.
    BatchNorm2d {
        x: TensorId,
        weight: TensorId,
        bias: TensorId,
        running_mean: TensorId,
        running_var: TensorId,
        num_batches_tracked: ParamId,
        y: TensorId,
        mode: NormMode,
    },
    /// GroupNorm(groups, C) over (N, C, H, W)
    GroupNorm {
        groups: usize,
        x: TensorId,
        weight: TensorId,
        bias: TensorId,
        y: TensorId,
    },
    /// 2x2 max-pool, stride 2
    MaxPool2 { x: TensorId, y: TensorId },
    /// Nearest upsampling by 2
    Upsample2 { x: TensorId, y: TensorId },
    /// y (N, Ca + Cb, H, W) = cat([a, b], dim 1)
    Concat { a: TensorId, b: TensorId, y: TensorId },
    /// y ~ N(0, 1), fresh every step from (seed, step, stream); no gradient
    NormalNoise { y: TensorId, stream: u32 },
    /// z = mu + eps * exp(logvar / 2)
    Reparameterize {
        mu: TensorId,
        logvar: TensorId,
        eps: TensorId,
        z: TensorId,
    },
    /// Per image: sum over pixels of BCE-with-logits(logits, target); loss (1) = mean over the batch
    BceWithLogits {
        logits: TensorId,
        target: TensorId,
        loss: TensorId,
    },
    /// Per image: sum over its values of BCE-with-logits(logits, target) against one constant target for every
    /// logit (the GAN's 1 for "real", 0 for "fake"); loss (1) = mean over the batch
    BceWithLogitsConstant {
        logits: TensorId,
        target: f32,
        loss: TensorId,
    },
    /// Per image: KL(N(mu, exp(logvar)) || N(0, I)) (the per-sample values, in nats); loss (1) = weight times
    /// their mean over the batch (1 for the vae; the ldm's first stage is lightly regularised)
    GaussianKl {
        mu: TensorId,
        logvar: TensorId,
        weight: f32,
        loss: TensorId,
    },
    /// Diffusion's forward process: y (N, ...) = sqrt(alpha_bar[t_s]) x0 + sqrt(1 - alpha_bar[t_s]) eps for
    /// sample s, with t (N) a u32 input. No gradient flows into x0, eps or t.
    QSample {
        x0: TensorId,
        eps: TensorId,
        t: TensorId,
        y: TensorId,
        schedule: std::sync::Arc<Schedule>,
    },
    /// The sinusoidal timestep embedding: y (N, E) = cat(sin(t f), cos(t f)), f_i = exp(-ln(10000) i / (E/2)),
    /// t (N) a u32 input. No gradient.
    TimestepEmbedding { t: TensorId, y: TensorId },
    /// loss (1) = mean over all elements of (prediction - target)²
    MeanSquaredError {
        prediction: TensorId,
        target: TensorId,
        loss: TensorId,
    },
    /// Per image: the squared L2 distance sum over its values of (prediction - target)²; loss (1) = mean over the
    /// batch (the WAE's reconstruction cost)
    SquaredError {
        prediction: TensorId,
        target: TensorId,
        loss: TensorId,
    },
    /// loss (1) = weight · MMD(z, prior), the unbiased maximum mean discrepancy with the inverse multiquadratic
    /// kernel between codes z (N, D) and prior samples (N, D) (the WAE-MMD regulariser). No gradient reaches prior.
    Mmd {
        z: TensorId,
        prior: TensorId,
        weight: f32,
        loss: TensorId,
    },
    /// loss (1) = mean over the batch of -log softmax(logits)[label]
    CrossEntropy {
        logits: TensorId,
        labels: TensorId,
        loss: TensorId,
    },
}

impl Op {
    /// The op's output tensor.
    pub fn output(&self) -> TensorId {
        match *self {
            Op::Linear { y, .. }
            | Op::Conv2d { y, .. }
            | Op::ConvTranspose2d { y, .. }
            | Op::Activation { y, .. }
            | Op::Add { y, .. }
            | Op::AddPerChannel { y, .. }
            | Op::BatchNorm2d { y, .. }
            | Op::GroupNorm { y, .. }
            | Op::MaxPool2 { y, .. }
            | Op::Upsample2 { y, .. }
            | Op::Concat { y, .. }
            | Op::NormalNoise { y, .. }
            | Op::QSample { y, .. }
            | Op::TimestepEmbedding { y, .. } => y,
            Op::Reparameterize { z, .. } => z,
            Op::BceWithLogits { loss, .. }
            | Op::BceWithLogitsConstant { loss, .. }
            | Op::GaussianKl { loss, .. }
            | Op::MeanSquaredError { loss, .. }
            | Op::SquaredError { loss, .. }
            | Op::Mmd { loss, .. }
            | Op::CrossEntropy { loss, .. } => loss,
        }
    }

    /// The op's tensor inputs (gradients may flow into these).
    pub fn inputs(&self) -> Vec<TensorId> {
        match *self {
            Op::Linear { x, weight, bias, .. }
            | Op::Conv2d { x, weight, bias, .. }
            | Op::ConvTranspose2d { x, weight, bias, .. } => {
                [Some(x), Some(weight), bias].into_iter().flatten().collect()
            }
            Op::Activation { x, .. } | Op::MaxPool2 { x, .. } | Op::Upsample2 { x, .. } => vec![x],
            Op::Add { a, b, .. } | Op::Concat { a, b, .. } => vec![a, b],
            Op::AddPerChannel { x, v, .. } => vec![x, v],
            Op::BatchNorm2d { x, weight, bias, .. } | Op::GroupNorm { x, weight, bias, .. } => vec![x, weight, bias],
            Op::NormalNoise { .. } => vec![],
            Op::QSample { x0, eps, t, .. } => vec![x0, eps, t],
            Op::TimestepEmbedding { t, .. } => vec![t],
            Op::Reparameterize { mu, logvar, eps, .. } => vec![mu, logvar, eps],
            Op::BceWithLogits { logits, target, .. } => vec![logits, target],
            Op::BceWithLogitsConstant { logits, .. } => vec![logits],
            Op::GaussianKl { mu, logvar, .. } => vec![mu, logvar],
            Op::MeanSquaredError { prediction, target, .. } | Op::SquaredError { prediction, target, .. } => {
                vec![prediction, target]
            }
            Op::Mmd { z, prior, .. } => vec![z, prior],
            Op::CrossEntropy { logits, labels, .. } => vec![logits, labels],
        }
    }

    pub fn is_loss(&self) -> bool {
        matches!(
            self,
            Op::BceWithLogits { .. }
                | Op::BceWithLogitsConstant { .. }
                | Op::GaussianKl { .. }
                | Op::MeanSquaredError { .. }
                | Op::SquaredError { .. }
                | Op::Mmd { .. }
                | Op::CrossEntropy { .. }
        )
    }

    /// A short name for plans and profiles.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "linear",
            Op::Conv2d { .. } => "conv2d",
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
            Op::Activation { activation, .. } => activation.name(),
            Op::Add { .. } => "add",
            Op::AddPerChannel { .. } => "add_per_channel",
            Op::BatchNorm2d { .. } => "batch_norm2d",
            Op::GroupNorm { .. } => "group_norm",
            Op::MaxPool2 { .. } => "max_pool2",
            Op::Upsample2 { .. } => "upsample2",
            Op::Concat { .. } => "concat",
            Op::NormalNoise { .. } => "normal_noise",
            Op::QSample { .. } => "q_sample",
            Op::TimestepEmbedding { .. } => "timestep_embedding",
            Op::Reparameterize { .. } => "reparameterize",
            Op::BceWithLogits { .. } => "bce_with_logits",
            Op::BceWithLogitsConstant { .. } => "bce_with_logits_constant",
            Op::GaussianKl { .. } => "gaussian_kl",
            Op::MeanSquaredError { .. } => "mse",
            Op::SquaredError { .. } => "squared_error",
            Op::Mmd { .. } => "mmd",
            Op::CrossEntropy { .. } => "cross_entropy",
        }
    }
}

/// A shape error while building a model: names the op and both shapes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("shape mismatch in {op} ({layer}): {message}")]
pub struct GraphError {
    pub op: &'static str,
    pub layer: String,
    pub message: String,
}

/// A model's ops, tensors and parameters.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub tensors: Vec<Tensor>,
    pub params: Vec<ParamSpec>,
    pub ops: Vec<Op>,
    /// Put before the name of every parameter made now ([`Graph::within`]).
    prefix: String,
}

fn shape_error(op: &'static str, layer: &str, message: impl fmt::Display) -> GraphError {
    GraphError {
        op,
        layer: layer.to_string(),
        message: message.to_string(),
    }
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0]
    }

    pub fn shape(&self, id: TensorId) -> &[usize] {
        &self.tensors[id.0].shape
    }

    /// The tensor whose buffer holds `id`'s values (itself, or the tensor a view looks at).
    pub fn storage(&self, id: TensorId) -> TensorId {
        match self.tensors[id.0].kind {
            TensorKind::View(of) => self.storage(of),
            _ => id,
        }
    }

    fn add_tensor(&mut self, name: impl Into<String>, shape: &[usize], kind: TensorKind) -> TensorId {
        self.tensors.push(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            kind,
            integer: false,
        });
        TensorId(self.tensors.len() - 1)
    }

    fn activation_tensor(&mut self, name: String, shape: &[usize]) -> TensorId {
        self.add_tensor(name, shape, TensorKind::Activation)
    }

    /// A host-written f32 input (a batch).
    pub fn input(&mut self, name: &str, shape: &[usize]) -> TensorId {
        self.add_tensor(name, shape, TensorKind::Input)
    }

    /// A host-written u32 input (labels, timesteps).
    pub fn integer_input(&mut self, name: &str, shape: &[usize]) -> TensorId {
        let id = self.add_tensor(name, shape, TensorKind::Input);
        self.tensors[id.0].integer = true;
        id
    }

    /// A learned parameter named `name` (a dotted PyTorch name). Asking again for the same name gives the same
    /// tensor: a layer applied twice (the GAN's discriminator on real and fake batches) shares its weights.
    ///
    /// # Panics
    /// If the name was used before with another shape (a bug in the model's definition, not in user input).
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> TensorId {
        let name = &format!("{}{name}", self.prefix);
        if let Some(existing) = self.reuse(name, shape) {
            return existing;
        }
        let id = ParamId(self.params.len());
        let tensor = self.add_tensor(name, shape, TensorKind::Param(id));
        self.params.push(ParamSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            init,
            trainable: true,
            tensor,
        });
        tensor
    }

    /// Builds part of the graph with `prefix` put before its parameters' names (after any outer prefix): a second
    /// copy of a network with weights of its own (the guide of autoguidance beside the model it guides).
    pub fn within<T>(&mut self, prefix: &str, build: impl FnOnce(&mut Self) -> T) -> T {
        let inner = format!("{}{prefix}", self.prefix);
        let outer = std::mem::replace(&mut self.prefix, inner);
        let result = build(self);
        self.prefix = outer;
        result
    }

    fn reuse(&self, name: &str, shape: &[usize]) -> Option<TensorId> {
        let existing = self.params.iter().find(|p| p.name == name)?;
        assert_eq!(existing.shape, shape, "parameter {name} used with two shapes");
        Some(existing.tensor)
    }

    fn state(&mut self, name: &str, shape: &[usize], value: f32) -> TensorId {
        let name = &format!("{}{name}", self.prefix);
        if let Some(existing) = self.reuse(name, shape) {
            return existing;
        }
        let id = ParamId(self.params.len());
        let tensor = self.add_tensor(name, shape, TensorKind::State(id));
        self.params.push(ParamSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            init: Init::Constant(value),
            trainable: false,
            tensor,
        });
        tensor
    }

    /// The parameter with this name, if any.
    pub fn param_named(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    fn push(&mut self, op: Op) -> TensorId {
        let y = op.output();
        self.ops.push(op);
        y
    }

    fn uniform_init(fan_in: usize) -> Init {
        Init::Uniform {
            bound: 1.0 / (fan_in as f32).sqrt(),
        }
    }

    /// `Linear(in, out)` named `layer`: x (N, in) -> (N, out).
    pub fn linear(&mut self, layer: &str, x: TensorId, out_features: usize) -> Result<TensorId, GraphError> {
        let shape = self.shape(x).to_vec();
        let [n, in_features] = shape[..] else {
            return Err(shape_error(
                "linear",
                layer,
                format!("input must be (N, features), got {shape:?}"),
            ));
        };
        let init = Self::uniform_init(in_features);
        let weight = self.param(&format!("{layer}.weight"), &[out_features, in_features], init);
        let bias = self.param(&format!("{layer}.bias"), &[out_features], init);
        let y = self.activation_tensor(format!("{layer}.out"), &[n, out_features]);
        Ok(self.push(Op::Linear {
            x,
            weight,
            bias: Some(bias),
            y,
        }))
    }

    fn image_shape(&self, op: &'static str, layer: &str, x: TensorId) -> Result<[usize; 4], GraphError> {
        let shape = self.shape(x);
        <[usize; 4]>::try_from(shape)
            .map_err(|_| shape_error(op, layer, format!("input must be (N, C, H, W), got {shape:?}")))
    }

    /// `Conv2d(Ci, Co, k, s, p)` named `layer`.
    pub fn conv2d(
        &mut self,
        layer: &str,
        x: TensorId,
        out_channels: usize,
        geometry: ConvGeometry,
    ) -> Result<TensorId, GraphError> {
        let [n, ci, h, w] = self.image_shape("conv2d", layer, x)?;
        let (Some(ho), Some(wo)) = (geometry.conv_out(h), geometry.conv_out(w)) else {
            return Err(shape_error(
                "conv2d",
                layer,
                format!("kernel {geometry:?} is larger than the {h}x{w} input"),
            ));
        };
        let k = geometry.kernel;
        let init = Self::uniform_init(ci * k * k);
        let weight = self.param(&format!("{layer}.weight"), &[out_channels, ci, k, k], init);
        let bias = self.param(&format!("{layer}.bias"), &[out_channels], init);
        let y = self.activation_tensor(format!("{layer}.out"), &[n, out_channels, ho, wo]);
        Ok(self.push(Op::Conv2d {
            x,
            weight,
            bias: Some(bias),
            y,
            geometry,
        }))
    }

    /// `ConvTranspose2d(Ci, Co, k, s, p)` named `layer` (weight (Ci, Co, k, k), fan_in = Co k k as PyTorch).
    pub fn conv_transpose2d(
        &mut self,
        layer: &str,
        x: TensorId,
        out_channels: usize,
        geometry: ConvGeometry,
    ) -> Result<TensorId, GraphError> {
        let [n, ci, h, w] = self.image_shape("conv_transpose2d", layer, x)?;
        let (Some(ho), Some(wo)) = (geometry.transpose_out(h), geometry.transpose_out(w)) else {
            return Err(shape_error(
                "conv_transpose2d",
                layer,
                format!("padding {geometry:?} too large"),
            ));
        };
        let k = geometry.kernel;
        let init = Self::uniform_init(out_channels * k * k);
        let weight = self.param(&format!("{layer}.weight"), &[ci, out_channels, k, k], init);
        let bias = self.param(&format!("{layer}.bias"), &[out_channels], init);
        let y = self.activation_tensor(format!("{layer}.out"), &[n, out_channels, ho, wo]);
        Ok(self.push(Op::ConvTranspose2d {
            x,
            weight,
            bias: Some(bias),
            y,
            geometry,
        }))
    }

    pub fn activation(&mut self, activation: Activation, x: TensorId) -> TensorId {
        let shape = self.shape(x).to_vec();
        let name = format!("{}.{}", self.tensor(x).name, activation.name());
        let y = self.activation_tensor(name, &shape);
        self.push(Op::Activation { activation, x, y })
    }

    pub fn add(&mut self, a: TensorId, b: TensorId) -> Result<TensorId, GraphError> {
        if self.shape(a) != self.shape(b) {
            return Err(shape_error(
                "add",
                "",
                format!("{:?} + {:?}", self.shape(a), self.shape(b)),
            ));
        }
        let shape = self.shape(a).to_vec();
        let y = self.activation_tensor(format!("{}+{}", self.tensor(a).name, self.tensor(b).name), &shape);
        Ok(self.push(Op::Add { a, b, y }))
    }

    /// x (N, C, H, W) + v (N, C) broadcast over H and W.
    pub fn add_per_channel(&mut self, x: TensorId, v: TensorId) -> Result<TensorId, GraphError> {
        let [n, c, h, w] = self.image_shape("add_per_channel", "", x)?;
        if self.shape(v) != [n, c] {
            return Err(shape_error(
                "add_per_channel",
                "",
                format!("x {:?} needs v ({n}, {c}), got {:?}", self.shape(x), self.shape(v)),
            ));
        }
        let y = self.activation_tensor(
            format!("{}+{}", self.tensor(x).name, self.tensor(v).name),
            &[n, c, h, w],
        );
        Ok(self.push(Op::AddPerChannel { x, v, y }))
    }

    /// The same values seen with another shape (Flatten, Unflatten): no copy, no dispatch.
    pub fn reshape(&mut self, x: TensorId, shape: &[usize]) -> Result<TensorId, GraphError> {
        let len: usize = shape.iter().product();
        if len != self.tensor(x).len() {
            return Err(shape_error(
                "reshape",
                "",
                format!(
                    "{:?} has {} elements, {shape:?} has {len}",
                    self.shape(x),
                    self.tensor(x).len()
                ),
            ));
        }
        let name = format!("{}.view", self.tensor(x).name);
        Ok(self.add_tensor(name, shape, TensorKind::View(x)))
    }

    /// `BatchNorm2d(C)` named `layer` (eps 1e-5, momentum 0.1).
    pub fn batch_norm2d(&mut self, layer: &str, x: TensorId, mode: NormMode) -> Result<TensorId, GraphError> {
        let [n, c, h, w] = self.image_shape("batch_norm2d", layer, x)?;
        let weight = self.param(&format!("{layer}.weight"), &[c], Init::Constant(1.0));
        let bias = self.param(&format!("{layer}.bias"), &[c], Init::Constant(0.0));
        let running_mean = self.state(&format!("{layer}.running_mean"), &[c], 0.0);
        let running_var = self.state(&format!("{layer}.running_var"), &[c], 1.0);
        let counter = self.state(&format!("{layer}.num_batches_tracked"), &[], 0.0);
        let TensorKind::State(num_batches_tracked) = self.tensor(counter).kind else {
            unreachable!()
        };
        let y = self.activation_tensor(format!("{layer}.out"), &[n, c, h, w]);
        Ok(self.push(Op::BatchNorm2d {
            x,
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            y,
            mode,
        }))
    }

    /// `GroupNorm(groups, C)` named `layer` (eps 1e-5).
    pub fn group_norm(&mut self, layer: &str, x: TensorId, groups: usize) -> Result<TensorId, GraphError> {
        let [n, c, h, w] = self.image_shape("group_norm", layer, x)?;
        if groups == 0 || c % groups != 0 {
            return Err(shape_error(
                "group_norm",
                layer,
                format!("{c} channels do not split into {groups} groups"),
            ));
        }
        let weight = self.param(&format!("{layer}.weight"), &[c], Init::Constant(1.0));
        let bias = self.param(&format!("{layer}.bias"), &[c], Init::Constant(0.0));
        let y = self.activation_tensor(format!("{layer}.out"), &[n, c, h, w]);
        Ok(self.push(Op::GroupNorm {
            groups,
            x,
            weight,
            bias,
            y,
        }))
    }

    pub fn max_pool2(&mut self, x: TensorId) -> Result<TensorId, GraphError> {
        let [n, c, h, w] = self.image_shape("max_pool2", "", x)?;
        let y = self.activation_tensor(format!("{}.pool", self.tensor(x).name), &[n, c, h / 2, w / 2]);
        Ok(self.push(Op::MaxPool2 { x, y }))
    }

    pub fn upsample2(&mut self, x: TensorId) -> Result<TensorId, GraphError> {
        let [n, c, h, w] = self.image_shape("upsample2", "", x)?;
        let y = self.activation_tensor(format!("{}.up", self.tensor(x).name), &[n, c, 2 * h, 2 * w]);
        Ok(self.push(Op::Upsample2 { x, y }))
    }

    pub fn concat(&mut self, a: TensorId, b: TensorId) -> Result<TensorId, GraphError> {
        let [n, ca, h, w] = self.image_shape("concat", "", a)?;
        let [nb, cb, hb, wb] = self.image_shape("concat", "", b)?;
        if (n, h, w) != (nb, hb, wb) {
            return Err(shape_error(
                "concat",
                "",
                format!("{:?} and {:?} differ outside dim 1", self.shape(a), self.shape(b)),
            ));
        }
        let y = self.activation_tensor(
            format!("cat({},{})", self.tensor(a).name, self.tensor(b).name),
            &[n, ca + cb, h, w],
        );
        Ok(self.push(Op::Concat { a, b, y }))
    }

    /// Fresh N(0, 1) noise of `shape` every step, from random stream `stream`.
    pub fn normal_noise(&mut self, name: &str, shape: &[usize], stream: u32) -> TensorId {
        let y = self.activation_tensor(name.to_string(), shape);
        self.push(Op::NormalNoise { y, stream })
    }

    /// z = mu + eps * exp(logvar / 2)
    pub fn reparameterize(&mut self, mu: TensorId, logvar: TensorId, eps: TensorId) -> Result<TensorId, GraphError> {
        if self.shape(mu) != self.shape(logvar) || self.shape(mu) != self.shape(eps) {
            return Err(shape_error(
                "reparameterize",
                "",
                format!(
                    "mu {:?}, logvar {:?}, eps {:?}",
                    self.shape(mu),
                    self.shape(logvar),
                    self.shape(eps)
                ),
            ));
        }
        let shape = self.shape(mu).to_vec();
        let z = self.activation_tensor("z".to_string(), &shape);
        Ok(self.push(Op::Reparameterize { mu, logvar, eps, z }))
    }

    /// x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps with t (N) per sample (u32), from `schedule`.
    pub fn q_sample(
        &mut self,
        x0: TensorId,
        eps: TensorId,
        t: TensorId,
        schedule: std::sync::Arc<Schedule>,
    ) -> Result<TensorId, GraphError> {
        let shape = self.shape(x0).to_vec();
        if self.shape(eps) != shape.as_slice()
            || self.shape(t) != [shape[0]]
            || !self.tensor(t).integer
            || schedule.is_empty()
        {
            return Err(shape_error(
                "q_sample",
                "",
                format!(
                    "x0 {shape:?} needs eps of the same shape, integer timesteps ({}) and a non-empty schedule; \
                     got eps {:?}, t {:?}",
                    shape[0],
                    self.shape(eps),
                    self.shape(t)
                ),
            ));
        }
        let y = self.activation_tensor("x_t".to_string(), &shape);
        Ok(self.push(Op::QSample {
            x0,
            eps,
            t,
            y,
            schedule,
        }))
    }

    /// The sinusoidal embedding (N, dim) of integer timesteps t (N); dim even.
    pub fn timestep_embedding(&mut self, t: TensorId, dim: usize) -> Result<TensorId, GraphError> {
        let shape = self.shape(t).to_vec();
        if shape.len() != 1 || !self.tensor(t).integer || dim < 2 || dim % 2 != 0 {
            return Err(shape_error(
                "timestep_embedding",
                "",
                format!("needs integer timesteps (N) and an even width >= 2; got t {shape:?}, width {dim}"),
            ));
        }
        let y = self.activation_tensor("temb".to_string(), &[shape[0], dim]);
        Ok(self.push(Op::TimestepEmbedding { t, y }))
    }

    fn loss_tensor(&mut self, name: &str) -> TensorId {
        self.activation_tensor(name.to_string(), &[1])
    }

    fn same_shape(&self, op: &'static str, a: TensorId, b: TensorId) -> Result<(), GraphError> {
        if self.tensor(a).len() != self.tensor(b).len() || self.shape(a)[0] != self.shape(b)[0] {
            return Err(shape_error(
                op,
                "",
                format!("{:?} against {:?}", self.shape(a), self.shape(b)),
            ));
        }
        Ok(())
    }

    /// Per image: sum of BCE-with-logits over its elements; the loss is the batch mean.
    pub fn bce_with_logits(&mut self, logits: TensorId, target: TensorId) -> Result<TensorId, GraphError> {
        self.same_shape("bce_with_logits", logits, target)?;
        let loss = self.loss_tensor("bce");
        Ok(self.push(Op::BceWithLogits { logits, target, loss }))
    }

    /// Per image: sum of BCE-with-logits of its values against the constant `target` (1 "real", 0 "fake"); the
    /// loss is the batch mean. `name` names the loss tensor (`d_real`, `d_fake`, `g`).
    pub fn bce_with_logits_constant(&mut self, name: &str, logits: TensorId, target: f32) -> TensorId {
        let loss = self.loss_tensor(name);
        self.push(Op::BceWithLogitsConstant { logits, target, loss })
    }

    /// Per image: KL(N(mu, exp(logvar)) || N(0, I)); the loss is the batch mean.
    pub fn gaussian_kl(&mut self, mu: TensorId, logvar: TensorId) -> Result<TensorId, GraphError> {
        self.weighted_gaussian_kl(mu, logvar, 1.0)
    }

    /// Per image: KL(N(mu, exp(logvar)) || N(0, I)); the loss is `weight` times the batch mean.
    pub fn weighted_gaussian_kl(
        &mut self,
        mu: TensorId,
        logvar: TensorId,
        weight: f32,
    ) -> Result<TensorId, GraphError> {
        self.same_shape("gaussian_kl", mu, logvar)?;
        let loss = self.loss_tensor("kl");
        Ok(self.push(Op::GaussianKl {
            mu,
            logvar,
            weight,
            loss,
        }))
    }

    /// Mean over all elements of the squared difference.
    pub fn mean_squared_error(&mut self, prediction: TensorId, target: TensorId) -> Result<TensorId, GraphError> {
        self.same_shape("mse", prediction, target)?;
        let loss = self.loss_tensor("mse");
        Ok(self.push(Op::MeanSquaredError {
            prediction,
            target,
            loss,
        }))
    }

    /// Per image: the sum of squared differences over its elements; the loss is the batch mean.
    pub fn squared_error(&mut self, prediction: TensorId, target: TensorId) -> Result<TensorId, GraphError> {
        self.same_shape("squared_error", prediction, target)?;
        let loss = self.loss_tensor("reconstruction");
        Ok(self.push(Op::SquaredError {
            prediction,
            target,
            loss,
        }))
    }

    /// weight · MMD between codes z (N, D) and prior samples (N, D), N >= 2.
    pub fn mmd(&mut self, z: TensorId, prior: TensorId, weight: f32) -> Result<TensorId, GraphError> {
        let shape = self.shape(z).to_vec();
        if shape.len() != 2 || self.shape(prior) != shape.as_slice() || shape[0] < 2 {
            return Err(shape_error(
                "mmd",
                "",
                format!(
                    "codes {shape:?} and prior samples {:?} must both be (N, D) with N >= 2",
                    self.shape(prior)
                ),
            ));
        }
        let loss = self.loss_tensor("mmd");
        Ok(self.push(Op::Mmd { z, prior, weight, loss }))
    }

    /// Softmax cross-entropy of logits (N, K) against u32 labels (N); the loss is the batch mean.
    pub fn cross_entropy(&mut self, logits: TensorId, labels: TensorId) -> Result<TensorId, GraphError> {
        let shape = self.shape(logits).to_vec();
        if shape.len() != 2 || self.shape(labels) != [shape[0]] || !self.tensor(labels).integer {
            return Err(shape_error(
                "cross_entropy",
                "",
                format!(
                    "logits {shape:?} need integer labels ({}), got {:?}",
                    shape[0],
                    self.shape(labels)
                ),
            ));
        }
        let loss = self.loss_tensor("cross_entropy");
        Ok(self.push(Op::CrossEntropy { logits, labels, loss }))
    }

    /// Number of learned parameters (elements).
    pub fn parameter_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}
