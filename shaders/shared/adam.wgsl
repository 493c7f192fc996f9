// Adam and AdamW, shared by shaders/optim.wgsl (one element per invocation, `alias Value = f32`) and
// shaders/optim_vec4.wgsl (four, `alias Value = vec4<f32>`): the same operations per component, so the same bits.
// The including module declares params, step_values and param, exp_avg, exp_avg_sq, grad as array<Value>, with
// params.first and params.n counted in Values.

// The Adam moments and update for element i with gradient g (the algorithm box of torch.optim.Adam):
//   m = \beta_1 m + (1 - \beta_1) g,   v = \beta_2 v + (1 - \beta_2) g^2
//   p = p - lr * \hat m / (\sqrt{\hat v} + eps),  \hat m = m / (1 - \beta_1^t),  \hat v = v / (1 - \beta_2^t)
// written as PyTorch computes it: p = p - step_size * m / (\sqrt{v} / \sqrt{1 - \beta_2^t} + eps).
fn adam_update(i: u32, p: Value, g: Value) {
    let m = params.beta1 * exp_avg[i] + params.one_minus_beta1 * g;
    let v = params.beta2 * exp_avg_sq[i] + params.one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let denom = sqrt(v) / step_values.bias_correction2_sqrt + params.eps;
    param[i] = p - step_values.step_size * m / denom;
}

// Adam with optional L2 weight decay: g = grad + weight_decay * p before the moments.
@compute @workgroup_size(256)
fn adam_step(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    let p = param[i];
    adam_update(i, p, grad[i] + params.weight_decay * p);
}

// AdamW: the weights decay first, p = p (1 - lr weight_decay), then the Adam step with the raw gradient.
@compute @workgroup_size(256)
fn adamw_step(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    adam_update(i, param[i] * step_values.decay, grad[i]);
}
