//! CPU twin of `shaders/optim.wgsl`, in f64 from the same f32 hyperparameters and per-step values.

use std::ops::Range;

use crate::kernels::optim::{OptimParams, OptimStep};

/// Adam's tensors: the weights and the two moments.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub param: Vec<f64>,
    /// m
    pub exp_avg: Vec<f64>,
    /// v
    pub exp_avg_sq: Vec<f64>,
}

impl AdamState {
    /// Weights `param`, moments zero (PyTorch's state before the first step).
    pub fn new(param: Vec<f64>) -> Self {
        let zeros = vec![0.0; param.len()];
        Self {
            param,
            exp_avg: zeros.clone(),
            exp_avg_sq: zeros,
        }
    }
}

/// Adam and AdamW over `range` (adam_step, adamw_step): AdamW first decays the weights by `step.decay`
/// (1 for Adam), Adam adds `weight_decay * p` to the gradient (0 for AdamW), then
/// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p = p - step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps).
pub fn adam_step(state: &mut AdamState, grad: &[f64], params: &OptimParams, step: &OptimStep, range: Range<usize>) {
    let (beta1, beta2) = (params.beta1 as f64, params.beta2 as f64);
    let (one_minus_beta1, one_minus_beta2) = (params.one_minus_beta1 as f64, params.one_minus_beta2 as f64);
    for i in range {
        let p = state.param[i] * step.decay as f64;
        let g = grad[i] + params.weight_decay as f64 * p;
        let m = beta1 * state.exp_avg[i] + one_minus_beta1 * g;
        let v = beta2 * state.exp_avg_sq[i] + one_minus_beta2 * g * g;
        state.exp_avg[i] = m;
        state.exp_avg_sq[i] = v;
        let denom = v.sqrt() / step.bias_correction2_sqrt as f64 + params.eps as f64;
        state.param[i] = p - step.step_size as f64 * m / denom;
    }
}

/// SGD with momentum over `range`: g = grad + wd p, buf = momentum buf + g, p -= lr buf (Nesterov: lr (g + momentum
/// buf)).
pub fn sgd_step(
    param: &mut [f64],
    momentum_buffer: &mut [f64],
    grad: &[f64],
    params: &OptimParams,
    step: &OptimStep,
    range: Range<usize>,
) {
    let momentum = params.momentum as f64;
    for i in range {
        let p = param[i];
        let g = grad[i] + params.weight_decay as f64 * p;
        let buf = momentum * momentum_buffer[i] + g;
        momentum_buffer[i] = buf;
        let direction = if params.nesterov != 0 { g + momentum * buf } else { buf };
        param[i] = p - step.lr as f64 * direction;
    }
}

/// ema = decay ema + (1 - decay) p over `range`.
pub fn ema_update(ema: &mut [f64], param: &[f64], params: &OptimParams, range: Range<usize>) {
    for i in range {
        ema[i] = params.ema_decay as f64 * ema[i] + params.one_minus_ema_decay as f64 * param[i];
    }
}

/// clip_grad_norm_'s total norm over all tensors and its scale: (norm, min(1, max_norm / (norm + 1e-6))).
pub fn grad_norm(grads: &[Vec<f64>], max_norm: f64) -> (f64, f64) {
    let sum_of_squares: f64 = grads.iter().flatten().map(|g| g * g).sum();
    let norm = sum_of_squares.sqrt();
    // The GPU holds max_norm as f32.
    let max_norm = max_norm as f32 as f64;
    (norm, (max_norm / (norm + 1e-6)).min(1.0))
}

/// g = g * scale over `range`.
pub fn clip_grad_scale(grad: &mut [f64], scale: f64, range: Range<usize>) {
    for g in &mut grad[range] {
        *g *= scale;
    }
}
