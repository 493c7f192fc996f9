// The parameters of shaders/optim.wgsl and shaders/optim_vec4.wgsl.

// Keep in sync with `OptimParams` in src/kernels/optim.rs.
struct Params {
    n: u32,
    first: u32,
    partial_offset: u32,      // grad_norm_partial: index of this tensor's first partial sum in `partials`
    nesterov: u32,            // SGD: 1 for Nesterov momentum
    beta1: f32,               // Adam \beta_1
    beta2: f32,               // Adam \beta_2
    one_minus_beta1: f32,     // 1 - \beta_1, rounded once from f64 (as PyTorch's Python float)
    one_minus_beta2: f32,     // 1 - \beta_2
    eps: f32,                 // Adam: added outside the square root
    weight_decay: f32,        // Adam, SGD: L2 term added to the gradient (AdamW's decay is in step_values)
    momentum: f32,            // SGD
    max_norm: f32,            // clipping: the largest total gradient norm kept
    ema_decay: f32,           // EMA: d in ema = d ema + (1 - d) p
    one_minus_ema_decay: f32, // 1 - d, rounded once from f64
    _pad0: u32,
    _pad1: u32,
}

// Keep in sync with `OptimStep` in src/kernels/optim.rs. Rewritten by the host before each submit.
struct StepValues {
    lr: f32,                    // learning rate of this step (constant or scheduled)
    step_size: f32,             // Adam: lr / (1 - \beta_1^t), t = 1, 2, ... the step count
    bias_correction2_sqrt: f32, // Adam: \sqrt{1 - \beta_2^t}
    decay: f32,                 // AdamW: 1 - lr * weight_decay (decoupled); 1 otherwise
}
