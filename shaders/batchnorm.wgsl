// BatchNorm2d (PyTorch semantics), forward (training and evaluation) and backward side by side.
//
// Dimensions: N = batch, C = channels, HW = H * W (inner), count = N * HW = elements per channel.
// Training forward, per channel c over its count elements x[n, c, hw]:
//     mean = sum(x) / count,  var = sum((x - mean)^2) / count  (biased),  rstd = 1 / sqrt(var + eps)
//     y = (x - mean) * rstd * weight[c] + bias[c]
//     running_mean = (1 - momentum) * running_mean + momentum * mean
//     running_var  = (1 - momentum) * running_var  + momentum * var * count / (count - 1)  (unbiased)
// Evaluation forward: the same y with running_mean and running_var in place of the batch statistics.
// Backward (training), with xhat = (x - mean) * rstd:
//     dbias[c] = sum(dy),  dweight[c] = sum(dy * xhat)
//     dx = weight[c] * rstd * (dy - dbias[c] / count - xhat * dweight[c] / count)
//
// The per-channel kernels run one workgroup of 256 threads per channel (the workgroup grid is folded like
// grid_1d's, so channel = workgroup_id.x + workgroup_id.y * num_workgroups.x); each thread strides over the
// channel's elements and workgroup_sum combines the partial sums in a fixed tree: no atomics, bit-identical
// from run to run.
//
// include: shared/common.wgsl
// include: shared/reduce.wgsl
// include: shared/serial_sum.wgsl

// Keep in sync with `BatchNormParams` in src/kernels/batchnorm.rs.
struct Params {
    batch: u32,     // N
    channels: u32,  // C
    inner: u32,     // HW
    count: u32,     // N * HW
    eps: f32,
    momentum: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Outputs.
@group(0) @binding(1) var<storage, read_write> y: array<f32>;             // (N, C, H, W)
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;          // (C) batch mean, saved for backward
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;          // (C) 1 / sqrt(var + eps), saved
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;  // (C) updated in training
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;   // (C) updated in training
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;            // (N, C, H, W)
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>;       // (C)
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>;         // (C)
// Saved values and inputs.
@group(0) @binding(9) var<storage, read> x: array<f32>;                   // (N, C, H, W) forward input
@group(0) @binding(10) var<storage, read> saved_mean: array<f32>;         // (C) from batchnorm_forward_train
@group(0) @binding(11) var<storage, read> saved_rstd: array<f32>;         // (C) from batchnorm_forward_train
@group(0) @binding(12) var<storage, read> dy: array<f32>;                 // (N, C, H, W) upstream gradient
@group(0) @binding(13) var<storage, read> weight: array<f32>;             // (C)
@group(0) @binding(14) var<storage, read> bias: array<f32>;               // (C)

// Where channel c's elements t, t + 256, ... lie: the flat index of element j = n HW + hw and its hw, advanced
// by 256 elements without a division per element (a vector integer division is eight scalar ones on lavapipe).
struct Walk {
    at: u32,
    hw: u32,
}

// 256 elements on: `flat` more in the flat index and `hw` more pixels, and `wrap` more past the end of a plane.
struct Stride {
    flat: u32,
    hw: u32,
    wrap: u32,
}

fn walk_stride() -> Stride {
    let images = WG_REDUCE / params.inner;
    let pixels = WG_REDUCE % params.inner;
    return Stride(images * params.channels * params.inner + pixels, pixels, (params.channels - 1u) * params.inner);
}

fn walk_start(c: u32, j: u32) -> Walk {
    let n = j / params.inner;
    let hw = j - n * params.inner;
    return Walk((n * params.channels + c) * params.inner + hw, hw);
}

fn walk_next(w: Walk, s: Stride) -> Walk {
    let hw = w.hw + s.hw;
    let wrap = hw >= params.inner;
    return Walk(select(w.at + s.flat, w.at + s.flat + s.wrap, wrap), select(hw, hw - params.inner, wrap));
}

// Thread t's partial sums in the tree kernels (a serial kernel folds all 256 threads' in the tree's order): of x
// (or (x - m)^2 with `squares`) over channel c's elements t, t + 256, ...; and of dy and dy * xhat.
fn forward_partial(c: u32, t: u32, m: f32, squares: bool, s: Stride) -> f32 {
    var partial = 0.0;
    var w = walk_start(c, t);
    for (var j = t; j < params.count; j += WG_REDUCE) {
        if squares {
            let d = x[w.at] - m;
            partial += d * d;
        } else {
            partial += x[w.at];
        }
        w = walk_next(w, s);
    }
    return partial;
}

fn backward_partials(c: u32, t: u32, m: f32, r: f32, s: Stride) -> vec2<f32> {
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    var w = walk_start(c, t);
    for (var j = t; j < params.count; j += WG_REDUCE) {
        let i = w.at;
        sum_dy += dy[i];
        sum_dy_xhat += dy[i] * (x[i] - m) * r;
        w = walk_next(w, s);
    }
    return vec2<f32>(sum_dy, sum_dy_xhat);
}

@compute @workgroup_size(256)
fn batchnorm_forward_train(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let c = wg.x + wg.y * groups.x;
    if c >= params.channels { return; }  // uniform over the workgroup
    let count = f32(params.count);

    let stride = walk_stride();
    let m = workgroup_sum(local, forward_partial(c, local, 0.0, false, stride)) / count;
    // Two passes: the variance as the mean of squared deviations, not E[x^2] - mean^2 (which cancels).
    let variance = workgroup_sum(local, forward_partial(c, local, m, true, stride)) / count;
    let r = 1.0 / sqrt(variance + params.eps);

    let scale = r * weight[c];
    let shift = bias[c];
    var w = walk_start(c, local);
    for (var j = local; j < params.count; j += WG_REDUCE) {
        y[w.at] = (x[w.at] - m) * scale + shift;
        w = walk_next(w, stride);
    }
    if local == 0u {
        save_statistics(c, m, variance, r);
    }
}

// The saved statistics and the running ones' update of channel c.
fn save_statistics(c: u32, m: f32, variance: f32, r: f32) {
    let count = f32(params.count);
    mean[c] = m;
    rstd[c] = r;
    let unbiased = variance * count / (count - 1.0);
    running_mean[c] = (1.0 - params.momentum) * running_mean[c] + params.momentum * m;
    running_var[c] = (1.0 - params.momentum) * running_var[c] + params.momentum * unbiased;
}

// y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, one thread per element.
@compute @workgroup_size(256)
fn batchnorm_forward_eval(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(id, groups);
    if i >= params.batch * params.channels * params.inner { return; }
    let c = (i / params.inner) % params.channels;
    let r = 1.0 / sqrt(running_var[c] + params.eps);
    y[i] = (x[i] - running_mean[c]) * (r * weight[c]) + bias[c];
}

@compute @workgroup_size(256)
fn batchnorm_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let c = wg.x + wg.y * groups.x;
    if c >= params.channels { return; }  // uniform over the workgroup
    let m = saved_mean[c];
    let r = saved_rstd[c];

    let stride = walk_stride();
    let partials = backward_partials(c, local, m, r, stride);
    let db = workgroup_sum(local, partials.x);
    let dw = workgroup_sum(local, partials.y);

    // dx = weight * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    let count = f32(params.count);
    let mean_dy = db / count;
    let mean_dy_xhat = dw / count;
    let scale = weight[c] * r;
    var w = walk_start(c, local);
    for (var j = local; j < params.count; j += WG_REDUCE) {
        let i = w.at;
        let xhat = (x[i] - m) * r;
        dx[i] = scale * (dy[i] - mean_dy - xhat * mean_dy_xhat);
        w = walk_next(w, stride);
    }
    if local == 0u {
        dweight[c] = dw;
        dbias[c] = db;
    }
}

// The training forward and the backward for CPU drivers, one invocation per channel: each reduction walks
// workgroup_sum's tree over the partials the 256 threads of the kernels above would hold (shared/serial_sum.wgsl),
// so every sum and output has their bits, without 256-thread workgroups, barriers or workgroup memory. The host
// takes them where a channel's loops fit the CPU drivers' loop limit. Eight channels per workgroup.
const WG_SERIAL: u32 = 8u;

fn serial_channel(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * WG_SERIAL;
}

// Channel c's batch statistics as the tree kernel takes them: (mean, biased variance, rstd).
fn serial_statistics(c: u32) -> vec3<f32> {
    let count = f32(params.count);
    let stride = walk_stride();
    var sums = SerialTree();
    for (var k = 0u; k < WG_REDUCE; k++) {
        tree_push(&sums, k, forward_partial(c, tree_leaf(k), 0.0, false, stride));
    }
    let m = sums.total / count;
    var squares = SerialTree();
    for (var k = 0u; k < WG_REDUCE; k++) {
        tree_push(&squares, k, forward_partial(c, tree_leaf(k), m, true, stride));
    }
    let variance = squares.total / count;
    return vec3<f32>(m, variance, 1.0 / sqrt(variance + params.eps));
}

// y of channel c from its statistics m and r.
fn serial_normalize(c: u32, m: f32, r: f32) {
    let scale = r * weight[c];
    let shift = bias[c];
    for (var n = 0u; n < params.batch; n++) {
        let start = (n * params.channels + c) * params.inner;
        for (var hw = 0u; hw < params.inner; hw++) {
            y[start + hw] = (x[start + hw] - m) * scale + shift;
        }
    }
}

@compute @workgroup_size(8)
fn batchnorm_serial_forward_train(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let c = serial_channel(id, groups);
    if c >= params.channels { return; }
    let statistics = serial_statistics(c);
    serial_normalize(c, statistics.x, statistics.z);
    save_statistics(c, statistics.x, statistics.y, statistics.z);
}

// The serial training forward in two launches, for channels whose statistics and outputs together would pass the
// CPU drivers' loop limit (the gan's 14 x 14 layer at batch 128): the statistics (saved as the forward saves
// them), then y from the saved mean and rstd, which are the same f32 values: the same bits.
@compute @workgroup_size(8)
fn batchnorm_serial_statistics(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let c = serial_channel(id, groups);
    if c >= params.channels { return; }
    let statistics = serial_statistics(c);
    save_statistics(c, statistics.x, statistics.y, statistics.z);
}

@compute @workgroup_size(8)
fn batchnorm_serial_normalize(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let c = serial_channel(id, groups);
    if c >= params.channels { return; }
    serial_normalize(c, mean[c], rstd[c]);
}

@compute @workgroup_size(8)
fn batchnorm_serial_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let c = serial_channel(id, groups);
    if c >= params.channels { return; }
    let m = saved_mean[c];
    let r = saved_rstd[c];
    let stride = walk_stride();
    var sum_dy = SerialTree();
    var sum_dy_xhat = SerialTree();
    for (var k = 0u; k < WG_REDUCE; k++) {
        let partials = backward_partials(c, tree_leaf(k), m, r, stride);
        tree_push(&sum_dy, k, partials.x);
        tree_push(&sum_dy_xhat, k, partials.y);
    }
    let db = sum_dy.total;
    let dw = sum_dy_xhat.total;

    // dx = weight * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    let count = f32(params.count);
    let mean_dy = db / count;
    let mean_dy_xhat = dw / count;
    let scale = weight[c] * r;
    for (var n = 0u; n < params.batch; n++) {
        let start = (n * params.channels + c) * params.inner;
        for (var hw = 0u; hw < params.inner; hw++) {
            let i = start + hw;
            let xhat = (x[i] - m) * r;
            dx[i] = scale * (dy[i] - mean_dy - xhat * mean_dy_xhat);
        }
    }
    dweight[c] = dw;
    dbias[c] = db;
}
