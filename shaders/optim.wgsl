// Optimizers: parameter updates in place from gradients (PyTorch's torch.optim semantics), the EMA of weights,
// and global-norm gradient clipping (torch.nn.utils.clip_grad_norm_).
//
// Dimensions: n = elements updated by one dispatch (one tensor, or every tensor of a flat allocation);
//             first = index of the first of them in the bound buffers (a tensor carved from a flat allocation);
//             P = partial sums of squares, one per workgroup of grad_norm_partial over all gradient tensors.
//
// Constant hyperparameters live in `params` (written once, when the plan is recorded). Values that change from
// step to step (the learning rate, Adam's bias corrections, AdamW's decay factor) live in `step_values`, a small
// uniform buffer the host rewrites before each submit (src/kernels/optim.rs, `OptimStep`), so the recorded
// dispatches and their bind groups are replayed unchanged.
//
// include: shared/common.wgsl
// include: shared/reduce.wgsl

// include: shared/optim_params.wgsl

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;           // (first + n) weights, in place
@group(0) @binding(2) var<storage, read_write> exp_avg: array<f32>;         // (first + n) Adam m
@group(0) @binding(3) var<storage, read_write> exp_avg_sq: array<f32>;      // (first + n) Adam v
@group(0) @binding(4) var<storage, read_write> momentum_buffer: array<f32>; // (first + n) SGD buf, zero at start
@group(0) @binding(5) var<storage, read_write> ema: array<f32>;             // (first + n) EMA of the weights
@group(0) @binding(6) var<storage, read_write> grad_to_clip: array<f32>;    // (first + n) scaled in place
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;        // (P) sums of squares per workgroup
@group(0) @binding(8) var<storage, read_write> clip: array<f32>;            // (2) [total_norm, scale]
@group(0) @binding(9) var<storage, read> grad: array<f32>;                  // (first + n) dL/dparam
@group(0) @binding(10) var<storage, read> tracked_param: array<f32>;        // (first + n) weights the EMA follows
@group(0) @binding(11) var<storage, read> partial_sums: array<f32>;         // (P) grad_norm_partial's output
@group(0) @binding(12) var<storage, read> clip_scale: array<f32>;           // (2) grad_norm_finish's output
@group(0) @binding(13) var<uniform> step_values: StepValues;

// Adam and AdamW (adam_step, adamw_step): shared/adam.wgsl, one element per invocation.
alias Value = f32;
// include: shared/adam.wgsl

// SGD with momentum (dampening 0): g = grad + weight_decay p;  buf = momentum buf + g;
// p = p - lr * buf, or with Nesterov p = p - lr * (g + momentum buf).
// PyTorch sets buf = g on the first step; with buf zero-initialised, momentum * 0 + g is exactly g.
@compute @workgroup_size(256)
fn sgd_step(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    let p = param[i];
    let g = grad[i] + params.weight_decay * p;
    let buf = params.momentum * momentum_buffer[i] + g;
    momentum_buffer[i] = buf;
    let direction = select(buf, g + params.momentum * buf, params.nesterov != 0u);
    param[i] = p - step_values.lr * direction;
}

// EMA of the weights: ema = decay ema + (1 - decay) p.
@compute @workgroup_size(256)
fn ema_update(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    ema[i] = params.ema_decay * ema[i] + params.one_minus_ema_decay * tracked_param[i];
}

// Gradient clipping, stage 1 of the total norm ||g|| = \sqrt{\sum_tensors \sum_i g_i^2}: each workgroup sums the
// squares of NORM_CHUNK consecutive elements of one tensor (each thread NORM_ITEMS of them, 256 apart, then the
// tree of shared/reduce.wgsl) into partials[partial_offset + workgroup]. The order of additions is fixed.
const NORM_ITEMS: u32 = 16u;
const NORM_CHUNK: u32 = 4096u; // WG_REDUCE * NORM_ITEMS; keep in sync with GRAD_NORM_CHUNK in optim.rs

@compute @workgroup_size(256)
fn grad_norm_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let workgroup = wid.x + wid.y * groups.x;
    let start = workgroup * NORM_CHUNK;
    var sum = 0.0;
    for (var item = 0u; item < NORM_ITEMS; item++) {
        let k = start + item * WG_REDUCE + local;
        if k < params.n {
            let g = grad[params.first + k];
            sum += g * g;
        }
    }
    let total = workgroup_sum(local, sum);
    if local == 0u && start < params.n {
        partials[params.partial_offset + workgroup] = total;
    }
}

// Stage 2: one workgroup adds the params.n partial sums (each thread a strided slice, then the tree) and writes
// clip = [total_norm, scale], scale = min(1, max_norm / (total_norm + 1e-6)) as in clip_grad_norm_.
@compute @workgroup_size(256)
fn grad_norm_finish(@builtin(local_invocation_index) local: u32) {
    var sum = 0.0;
    for (var k = local; k < params.n; k += WG_REDUCE) {
        sum += partial_sums[k];
    }
    let total = workgroup_sum(local, sum);
    if local == 0u {
        let norm = sqrt(total);
        clip[0] = norm;
        clip[1] = min(1.0, params.max_norm / (norm + 1e-6));
    }
}

// Stage 3, once per gradient tensor: g = g * scale (scale 1 leaves it unchanged).
@compute @workgroup_size(256)
fn clip_grad_scale(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    grad_to_clip[i] = grad_to_clip[i] * clip_scale[1];
}
