// GroupNorm (PyTorch semantics), forward and backward side by side.
//
// Dimensions: N = batch, C = channels, G = groups (C divisible by G), CG = C / G channels per group,
// HW = H * W (inner), M = CG * HW = elements per (sample, group). In NCHW the M elements of (n, g) are
// contiguous, starting at (n * C + g * CG) * HW.
// Forward, per (n, g) over its M elements:
//     mean = sum(x) / M,  var = sum((x - mean)^2) / M  (biased),  rstd = 1 / sqrt(var + eps)
//     y = (x - mean) * rstd * weight[c] + bias[c]
// Backward, with xhat = (x - mean) * rstd and dxhat = dy * weight[c]:
//     dx = rstd * (dxhat - mean_(n,g)(dxhat) - xhat * mean_(n,g)(dxhat * xhat))      (groupnorm_input_backward)
//     dweight[c] = sum over n, hw of dy * xhat,  dbias[c] = sum over n, hw of dy      (groupnorm_weight_backward)
//
// Reducing kernels run one workgroup of 256 threads per (n, g) or per channel (the workgroup grid is folded like
// grid_1d's); workgroup_sum combines the partial sums in a fixed tree: no atomics, bit-identical results.
//
// include: shared/reduce.wgsl
// include: shared/serial_sum.wgsl

// Keep in sync with `GroupNormParams` in src/kernels/groupnorm.rs.
struct Params {
    batch: u32,     // N
    channels: u32,  // C
    groups: u32,    // G
    inner: u32,     // HW
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Outputs.
@group(0) @binding(1) var<storage, read_write> y: array<f32>;        // (N, C, H, W)
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;     // (N, G) saved for backward
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;     // (N, G) 1 / sqrt(var + eps), saved
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;       // (N, C, H, W)
@group(0) @binding(5) var<storage, read_write> dweight: array<f32>;  // (C)
@group(0) @binding(6) var<storage, read_write> dbias: array<f32>;    // (C)
// Saved values and inputs.
@group(0) @binding(7) var<storage, read> x: array<f32>;              // (N, C, H, W) forward input
@group(0) @binding(8) var<storage, read> saved_mean: array<f32>;     // (N, G) from groupnorm_forward
@group(0) @binding(9) var<storage, read> saved_rstd: array<f32>;     // (N, G) from groupnorm_forward
@group(0) @binding(10) var<storage, read> dy: array<f32>;            // (N, C, H, W) upstream gradient
@group(0) @binding(11) var<storage, read> weight: array<f32>;        // (C)
@group(0) @binding(12) var<storage, read> bias: array<f32>;          // (C)

// The M = CG * HW elements of (n, g) = ng: contiguous from base, of channels first_channel .. first_channel + CG.
struct Group {
    base: u32,
    size: u32,
    per_group: u32,
    first_channel: u32,
}

fn group_of(ng: u32) -> Group {
    let per_group = params.channels / params.groups;  // CG
    let size = per_group * params.inner;  // M
    // base = (n * C + g * CG) * HW
    return Group(ng * size, size, per_group, (ng % params.groups) * per_group);
}

// y over the whole group, channel by channel (the serial and rows kernels; the tree kernel's threads write the
// same values by their strided elements).
fn write_normalized(group: Group, m: f32, r: f32) {
    for (var k = 0u; k < group.per_group; k++) {
        let c = group.first_channel + k;
        let scale = r * weight[c];
        let start = group.base + k * params.inner;
        for (var hw = 0u; hw < params.inner; hw++) {
            y[start + hw] = (x[start + hw] - m) * scale + bias[c];
        }
    }
}

// dx over the whole group (as write_normalized).
fn write_input_gradient(group: Group, m: f32, r: f32, mean_dxhat: f32, mean_dxhat_xhat: f32) {
    for (var k = 0u; k < group.per_group; k++) {
        let w = weight[group.first_channel + k];
        let start = group.base + k * params.inner;
        for (var hw = 0u; hw < params.inner; hw++) {
            let dxhat = dy[start + hw] * w;
            let xhat = (x[start + hw] - m) * r;
            dx[start + hw] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
        }
    }
}

// Thread t's partial sums in the tree kernels (a serial kernel folds all 256 threads' in the tree's order):
// forward_partials, x (or (x - m)^2 with `squares`) over the M elements of an (n, g) from `base`;
// input_backward_partials, dxhat and dxhat * xhat over them; weight_backward_partials, dy and dy * xhat over the
// N H W elements of channel c.
fn forward_partials(base: u32, size: u32, t: u32, m: f32, squares: bool) -> f32 {
    var partial = 0.0;
    for (var j = t; j < size; j += WG_REDUCE) {
        if squares {
            let d = x[base + j] - m;
            partial += d * d;
        } else {
            partial += x[base + j];
        }
    }
    return partial;
}

fn input_backward_partials(base: u32, size: u32, first_channel: u32, t: u32, m: f32, r: f32) -> vec2<f32> {
    var sum_dxhat = 0.0;
    var sum_dxhat_xhat = 0.0;
    let step = split(WG_REDUCE);
    var at = split(t);   // j = channel (of the group) * HW + hw
    for (var j = t; j < size; j += WG_REDUCE) {
        let dxhat = dy[base + j] * weight[first_channel + at.q];
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * (x[base + j] - m) * r;
        at = split_next(at, step);
    }
    return vec2<f32>(sum_dxhat, sum_dxhat_xhat);
}

fn weight_backward_partials(c: u32, t: u32) -> vec2<f32> {
    let g = c / (params.channels / params.groups);
    let count = params.batch * params.inner;
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    let step = split(WG_REDUCE);
    var at = split(t);   // j = n * HW + hw
    for (var j = t; j < count; j += WG_REDUCE) {
        let i = (at.q * params.channels + c) * params.inner + at.r;
        let ng = at.q * params.groups + g;
        sum_dy += dy[i];
        sum_dy_xhat += dy[i] * (x[i] - saved_mean[ng]) * saved_rstd[ng];
        at = split_next(at, step);
    }
    return vec2<f32>(sum_dy, sum_dy_xhat);
}

// j as q * HW + r, and carried forward by a step without a division per element (a vector integer division is
// eight scalar ones on lavapipe).
struct Split {
    q: u32,
    r: u32,
}

fn split(j: u32) -> Split {
    let q = j / params.inner;
    return Split(q, j - q * params.inner);
}

fn split_next(at: Split, step: Split) -> Split {
    let r = at.r + step.r;
    let wrap = r >= params.inner;
    return Split(select(at.q + step.q, at.q + step.q + 1u, wrap), select(r, r - params.inner, wrap));
}

// One workgroup per (n, g): statistics, then y.
@compute @workgroup_size(256)
fn groupnorm_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let ng = wg.x + wg.y * groups.x;  // n * G + g
    if ng >= params.batch * params.groups { return; }  // uniform over the workgroup
    let group = group_of(ng);
    let size = group.size;
    let base = group.base;
    let first_channel = group.first_channel;

    let m = workgroup_sum(local, forward_partials(base, size, local, 0.0, false)) / f32(size);
    // Two passes: the variance as the mean of squared deviations, not E[x^2] - mean^2 (which cancels).
    let variance = workgroup_sum(local, forward_partials(base, size, local, m, true)) / f32(size);
    let r = 1.0 / sqrt(variance + params.eps);

    for (var j = local; j < size; j += WG_REDUCE) {
        let c = first_channel + j / params.inner;
        y[base + j] = (x[base + j] - m) * (r * weight[c]) + bias[c];
    }
    if local == 0u {
        mean[ng] = m;
        rstd[ng] = r;
    }
}

// dx, one workgroup per (n, g).
@compute @workgroup_size(256)
fn groupnorm_input_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let ng = wg.x + wg.y * groups.x;
    if ng >= params.batch * params.groups { return; }  // uniform over the workgroup
    let group = group_of(ng);
    let size = group.size;
    let base = group.base;
    let first_channel = group.first_channel;
    let m = saved_mean[ng];
    let r = saved_rstd[ng];

    let partials = input_backward_partials(base, size, first_channel, local, m, r);
    let mean_dxhat = workgroup_sum(local, partials.x) / f32(size);
    let mean_dxhat_xhat = workgroup_sum(local, partials.y) / f32(size);

    for (var j = local; j < size; j += WG_REDUCE) {
        let dxhat = dy[base + j] * weight[first_channel + j / params.inner];
        let xhat = (x[base + j] - m) * r;
        dx[base + j] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

// dweight and dbias, one workgroup per channel, reducing over n and hw.
@compute @workgroup_size(256)
fn groupnorm_weight_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let c = wg.x + wg.y * groups.x;
    if c >= params.channels { return; }  // uniform over the workgroup
    let partials = weight_backward_partials(c, local);
    let db = workgroup_sum(local, partials.x);
    let dw = workgroup_sum(local, partials.y);
    if local == 0u {
        dweight[c] = dw;
        dbias[c] = db;
    }
}

// The same three kernels for CPU drivers, one invocation per (n, g) or per channel: each reduction walks
// workgroup_sum's tree over the partials the 256 threads of the kernels above would hold (shared/serial_sum.wgsl), so every sum, and every output, has the bits of the kernels above, without
// 256-thread workgroups, barriers or workgroup memory. Eight reductions per workgroup.

const WG_SERIAL: u32 = 8u;

fn serial_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * WG_SERIAL;
}

@compute @workgroup_size(8)
fn groupnorm_serial_forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let ng = serial_index(id, groups);
    if ng >= params.batch * params.groups { return; }
    let group = group_of(ng);
    let size = group.size;
    let base = group.base;

    var sums = SerialTree();
    for (var c = 0u; c < WG_REDUCE; c++) {
        tree_push(&sums, c, forward_partials(base, size, tree_leaf(c), 0.0, false));
    }
    let m = sums.total / f32(size);
    var squares = SerialTree();
    for (var c = 0u; c < WG_REDUCE; c++) {
        tree_push(&squares, c, forward_partials(base, size, tree_leaf(c), m, true));
    }
    let variance = squares.total / f32(size);
    let r = 1.0 / sqrt(variance + params.eps);
    write_normalized(group, m, r);
    mean[ng] = m;
    rstd[ng] = r;
}

@compute @workgroup_size(8)
fn groupnorm_serial_input_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let ng = serial_index(id, groups);
    if ng >= params.batch * params.groups { return; }
    let group = group_of(ng);
    let size = group.size;
    let base = group.base;
    let first_channel = group.first_channel;
    let m = saved_mean[ng];
    let r = saved_rstd[ng];

    var sum_dxhat = SerialTree();
    var sum_dxhat_xhat = SerialTree();
    for (var c = 0u; c < WG_REDUCE; c++) {
        let partials = input_backward_partials(base, size, first_channel, tree_leaf(c), m, r);
        tree_push(&sum_dxhat, c, partials.x);
        tree_push(&sum_dxhat_xhat, c, partials.y);
    }
    let mean_dxhat = sum_dxhat.total / f32(size);
    let mean_dxhat_xhat = sum_dxhat_xhat.total / f32(size);
    write_input_gradient(group, m, r, mean_dxhat, mean_dxhat_xhat);
}

@compute @workgroup_size(8)
fn groupnorm_serial_weight_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let c = serial_index(id, groups);
    if c >= params.channels { return; }
    var sum_dy = SerialTree();
    var sum_dy_xhat = SerialTree();
    for (var k = 0u; k < WG_REDUCE; k++) {
        let partials = weight_backward_partials(c, tree_leaf(k));
        tree_push(&sum_dy, k, partials.x);
        tree_push(&sum_dy_xhat, k, partials.y);
    }
    dweight[c] = sum_dy_xhat.total;
    dbias[c] = sum_dy.total;
}

// The same three kernels with one invocation per (n, g) or per channel and a serial loop in index order: no
// workgroup memory, no barriers. The host picks them when the reductions are short (H * W = 1: an MLP's
// GroupNorm over (N, C) feature rows, as the ldm's denoiser has), where a 256-wide tree reduction per row
// costs far more than the row's own arithmetic on a CPU driver (lavapipe: 2.8 ms per forward of 128 rows of
// 256, against a few microseconds of work).

const WG_ROWS: u32 = 32u;

fn rows_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * WG_ROWS;
}

@compute @workgroup_size(32)
fn groupnorm_rows_forward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let ng = rows_index(id, groups);
    if ng >= params.batch * params.groups { return; }
    let group = group_of(ng);
    let size = group.size;
    let base = group.base;

    var total = 0.0;
    for (var j = 0u; j < size; j++) {
        total += x[base + j];
    }
    let m = total / f32(size);
    var squares = 0.0;
    for (var j = 0u; j < size; j++) {
        let d = x[base + j] - m;
        squares += d * d;
    }
    let r = 1.0 / sqrt(squares / f32(size) + params.eps);
    write_normalized(group, m, r);
    mean[ng] = m;
    rstd[ng] = r;
}

@compute @workgroup_size(32)
fn groupnorm_rows_input_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let ng = rows_index(id, groups);
    if ng >= params.batch * params.groups { return; }
    let group = group_of(ng);
    let size = group.size;
    let base = group.base;
    let first_channel = group.first_channel;
    let m = saved_mean[ng];
    let r = saved_rstd[ng];

    var sum_dxhat = 0.0;
    var sum_dxhat_xhat = 0.0;
    for (var j = 0u; j < size; j++) {
        let dxhat = dy[base + j] * weight[first_channel + j / params.inner];
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * (x[base + j] - m) * r;
    }
    let mean_dxhat = sum_dxhat / f32(size);
    let mean_dxhat_xhat = sum_dxhat_xhat / f32(size);
    write_input_gradient(group, m, r, mean_dxhat, mean_dxhat_xhat);
}

@compute @workgroup_size(32)
fn groupnorm_rows_weight_backward(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let c = rows_index(id, groups);
    if c >= params.channels { return; }
    let g = c / (params.channels / params.groups);

    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    for (var n = 0u; n < params.batch; n++) {
        let ng = n * params.groups + g;
        for (var hw = 0u; hw < params.inner; hw++) {
            let i = (n * params.channels + c) * params.inner + hw;
            sum_dy += dy[i];
            sum_dy_xhat += dy[i] * (x[i] - saved_mean[ng]) * saved_rstd[ng];
        }
    }
    dweight[c] = sum_dy_xhat;
    dbias[c] = sum_dy;
}
