// Losses and their gradients, with PyTorch's semantics, reduced deterministically (workgroup trees, no atomics).
//
// Dimensions: B = batch (samples), P = values per sample (pixels, latent dimensions or classes).
// Every loss comes in three kernels:
//   <loss>_forward:  per_sample (B) = the loss of each sample summed over its P values (one workgroup a sample);
//   loss_mean:       loss[slot] = scale * sum over b of per_sample[b], or loss[slot] += that (one workgroup);
//   <loss>_backward: the gradient of the batch loss (elementwise, or one workgroup a row for cross-entropy),
//                    written into the gradient buffer or added to it (accumulate).
// The batch losses (per image: sum over its values, mean over the batch, except mse):
//   mse:             mean over all B P values of (x - y)²,  scale = 1 / (B P);  d/dx = 2 (x - y) / (B P)
//   bce_with_logits: mean over b of sum over p of max(x, 0) - x y + log(1 + exp(-|x|));  d/dx = (σ(x) - y) / B
//                    (y from a tensor, or one constant for every value: the GAN's targets 1 and 0)
//   kl (x = mu):     mean over b of -0.5 sum over p of (1 + logvar - mu² - exp(logvar));
//                    d/dmu = mu / B,  d/dlogvar = 0.5 (exp(logvar) - 1) / B
//   cross_entropy:   x = logits (B, C), labels (B) in 0 .. C-1; mean over b of logsumexp(x_b) - x_b[label_b];
//                    d/dx = (softmax(x_b) - onehot(label_b)) / B, computed after subtracting the row maximum.
//                    A label >= C gives a NaN loss (PyTorch raises an error) and no one-hot term.
//
// include: shared/common.wgsl
// include: shared/reduce.wgsl
// include: shared/serial_sum.wgsl

// Keep in sync with `LossParams` in src/kernels/loss.rs.
struct Params {
    batch: u32,            // B
    features: u32,         // P (C for cross_entropy)
    scale: f32,            // 1 / B, or 1 / (B P) for mse: the mean, and the gradient's factor
    accumulate: u32,       // 1: add into loss[slot] or the gradient instead of overwriting
    target_value: f32,          // bce_with_logits: the target of every value when constant_target = 1
    constant_target: u32,
    slot: u32,             // loss_mean: which scalar of the loss buffer
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;      // per_sample (B); loss slots; or dx (B, P)
@group(0) @binding(2) var<storage, read_write> dlogvar: array<f32>;  // (B, P) kl_backward's second gradient
@group(0) @binding(3) var<storage, read> x: array<f32>;              // (B, P) predictions, logits or mu;
                                                                      // (B) per_sample for loss_mean
@group(0) @binding(4) var<storage, read> y: array<f32>;              // (B, P) targets, or logvar for the kl
@group(0) @binding(6) var<storage, read> labels: array<u32>;         // (B) class indices

var<workgroup> max_scratch: array<f32, 256>;

const LOWEST: f32 = -3.40282347e38;  // the most negative finite f32

// Like workgroup_sum (shared/reduce.wgsl), for the maximum. Call from uniform control flow.
fn workgroup_max(local: u32, value: f32) -> f32 {
    max_scratch[local] = value;
    workgroupBarrier();
    for (var stride = WG_REDUCE / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            max_scratch[local] = max(max_scratch[local], max_scratch[local + stride]);
        }
        workgroupBarrier();
    }
    let result = max_scratch[0];
    workgroupBarrier();
    return result;
}

// The sample of this workgroup, in a grid folded by grid_1d (one workgroup per sample).
fn sample_index(group: vec3<u32>, groups: vec3<u32>) -> u32 {
    return group.x + group.y * groups.x;
}

fn target_at(i: u32) -> f32 {
    if params.constant_target != 0u {
        return params.target_value;
    }
    return y[i];
}

fn sigmoid(v: f32) -> f32 {
    // Stable for both signs: exp of a non-positive number never overflows.
    if v >= 0.0 {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

// log(1 + exp(-|v|)), accurate also where exp(-|v|) is small (as PyTorch's log1p is).
fn softplus_of_minus_abs(v: f32) -> f32 {
    let u = exp(-abs(v));  // in (0, 1]
    if u > 0.0625 {
        // 1 + u rounds by at most 2^-24, under 2^-20 of log(1 + u) > 0.06.
        return log(1.0 + u);
    }
    // log(1 + u) = u - u²/2 + u³/3 - ...: the first term left out, u⁹/9, is below 2^-35 u. (The textbook
    // log(w) * u / (w - 1) with w = 1 + u does not survive compilers that fold (1 + u) - 1 into u.)
    let tail = 1.0 / 5.0 - u * (1.0 / 6.0 - u * (1.0 / 7.0 - u * (1.0 / 8.0)));
    return u * (1.0 - u * (1.0 / 2.0 - u * (1.0 / 3.0 - u * (1.0 / 4.0 - u * tail))));
}

fn store_gradient(i: u32, g: f32) {
    if params.accumulate != 0u {
        out[i] = out[i] + g;
    } else {
        out[i] = g;
    }
}

fn nan() -> f32 {
    var bits = 0x7fc00000u;  // a var, so that it is not folded into a (rejected) NaN constant
    return bitcast<f32>(bits);
}

// The losses whose per-sample sums share thread_partial, and the serial kernels.
const MSE: u32 = 0u;
const BCE: u32 = 1u;
const KL: u32 = 2u;

// Thread t's partial sum of the per-sample forward kernels: the loss terms of values t, t + 256, ... of the row
// that starts at `row`, in that order.
fn thread_partial(loss: u32, row: u32, t: u32) -> f32 {
    var partial = 0.0;
    for (var p = t; p < params.features; p = p + WG_REDUCE) {
        let i = row + p;
        switch loss {
            case MSE: {
                let d = x[i] - y[i];
                partial = partial + d * d;
            }
            case BCE: {
                let v = x[i];
                partial = partial + max(v, 0.0) - v * target_at(i) + softplus_of_minus_abs(v);
            }
            default: {
                let mu = x[i];
                let lv = y[i];  // logvar
                partial = partial + (1.0 + lv - mu * mu - exp(lv));
            }
        }
    }
    return partial;
}

// loss[slot] = scale * sum over b of per_sample[b] (or += with accumulate). One workgroup.
@compute @workgroup_size(256)
fn loss_mean(@builtin(local_invocation_index) local: u32) {
    var partial = 0.0;
    for (var b = local; b < params.batch; b = b + WG_REDUCE) {
        partial = partial + x[b];
    }
    let total = workgroup_sum(local, partial);
    if local == 0u {
        let value = params.scale * total;
        if params.accumulate != 0u {
            out[params.slot] = out[params.slot] + value;
        } else {
            out[params.slot] = value;
        }
    }
}

// per_sample[b] = sum over p of (x - y)²
@compute @workgroup_size(256)
fn mse_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = sample_index(group, groups);
    if b >= params.batch { return; }  // the whole workgroup leaves together
    let total = workgroup_sum(local, thread_partial(MSE, b * params.features, local));
    if local == 0u {
        out[b] = total;
    }
}

// dx = 2 (x - y) * scale, scale = 1 / (B P)
@compute @workgroup_size(256)
fn mse_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.batch * params.features { return; }
    store_gradient(i, 2.0 * (x[i] - y[i]) * params.scale);
}

// per_sample[b] = sum over p of max(x, 0) - x y + log(1 + exp(-|x|))
@compute @workgroup_size(256)
fn bce_with_logits_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = sample_index(group, groups);
    if b >= params.batch { return; }
    let total = workgroup_sum(local, thread_partial(BCE, b * params.features, local));
    if local == 0u {
        out[b] = total;
    }
}

// dx = (σ(x) - y) * scale, scale = 1 / B
@compute @workgroup_size(256)
fn bce_with_logits_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.batch * params.features { return; }
    store_gradient(i, (sigmoid(x[i]) - target_at(i)) * params.scale);
}

// per_sample[b] = -0.5 * sum over p of (1 + logvar - mu² - exp(logvar)), with mu in x and logvar in y
@compute @workgroup_size(256)
fn kl_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = sample_index(group, groups);
    if b >= params.batch { return; }
    let total = workgroup_sum(local, thread_partial(KL, b * params.features, local));
    if local == 0u {
        out[b] = -0.5 * total;
    }
}

// dmu (in out) = mu * scale, dlogvar = 0.5 (exp(logvar) - 1) * scale, scale = 1 / B, with logvar in y
@compute @workgroup_size(256)
fn kl_backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.batch * params.features { return; }
    store_gradient(i, x[i] * params.scale);
    let g = 0.5 * (exp(y[i]) - 1.0) * params.scale;  // y holds logvar
    if params.accumulate != 0u {
        dlogvar[i] = dlogvar[i] + g;
    } else {
        dlogvar[i] = g;
    }
}

// The row's maximum and sum of exp(x - maximum): every thread of the workgroup gets both.
fn row_max_and_sum(row: u32, local: u32) -> vec2<f32> {
    var partial_max = LOWEST;
    for (var j = local; j < params.features; j = j + WG_REDUCE) {
        partial_max = max(partial_max, x[row + j]);
    }
    let row_max = workgroup_max(local, partial_max);
    var partial_sum = 0.0;
    for (var j = local; j < params.features; j = j + WG_REDUCE) {
        partial_sum = partial_sum + exp(x[row + j] - row_max);
    }
    return vec2<f32>(row_max, workgroup_sum(local, partial_sum));
}

// per_sample[b] = logsumexp(x_b) - x_b[label] = max + log(sum exp(x - max)) - x_b[label]
@compute @workgroup_size(256)
fn cross_entropy_forward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = sample_index(group, groups);
    if b >= params.batch { return; }
    let row = b * params.features;
    let stats = row_max_and_sum(row, local);
    if local == 0u {
        let label = labels[b];
        if label >= params.features {
            out[b] = nan();
        } else {
            out[b] = stats.x + log(stats.y) - x[row + label];
        }
    }
}

// dx_b = (softmax(x_b) - onehot(label_b)) * scale, scale = 1 / B. One workgroup a row.
@compute @workgroup_size(256)
fn cross_entropy_backward(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = sample_index(group, groups);
    if b >= params.batch { return; }
    let row = b * params.features;
    let stats = row_max_and_sum(row, local);
    let label = labels[b];
    for (var j = local; j < params.features; j = j + WG_REDUCE) {
        let softmax = exp(x[row + j] - stats.x) / stats.y;
        let onehot = select(0.0, 1.0, j == label);
        store_gradient(row + j, (softmax - onehot) * params.scale);
    }
}

// The per-sample forwards for CPU drivers: one invocation per sample walks workgroup_sum's tree over the 256
// thread partials itself (shared/serial_sum.wgsl), so the sums, and their bits, are those of mse_forward,
// bce_with_logits_forward and kl_forward, without 256-thread workgroups, barriers or workgroup memory. Eight
// samples per workgroup (one subgroup of a CPU driver's SIMD lanes).
fn serial_sum(loss: u32, row: u32) -> f32 {
    var tree = SerialTree();
    for (var c = 0u; c < WG_REDUCE; c++) {
        tree_push(&tree, c, thread_partial(loss, row, tree_leaf(c)));
    }
    return tree.total;
}
@compute @workgroup_size(8)
fn mse_forward_serial(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = id.x;
    if b >= params.batch { return; }
    out[b] = serial_sum(MSE, b * params.features);
}

@compute @workgroup_size(8)
fn bce_with_logits_forward_serial(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = id.x;
    if b >= params.batch { return; }
    out[b] = serial_sum(BCE, b * params.features);
}

@compute @workgroup_size(8)
fn kl_forward_serial(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = id.x;
    if b >= params.batch { return; }
    out[b] = -0.5 * serial_sum(KL, b * params.features);
}
