// Sums along an axis, reduced deterministically by workgroup trees (shared/reduce.wgsl), never by atomics.
//
// Dimensions: R = rows, C = columns of a row-major (R, C) matrix; n = number of values.
//   sum_rows:   out (C) = sum over r of x (R, C)             a linear layer's bias gradient: dy summed over the batch
//   sum_chunks: out (G) = sums of consecutive chunks of x (n), chunk `cols` values each (the last may be short)
//               - with n = R * C and chunk C it is the sum over columns, out (R);
//               - it is also both stages of the full sum: n values -> G = ceil(n / 1024) partials -> 1.
// One workgroup of 256 threads per output: thread t adds the values t, t + 256, ... of its row or chunk in
// order, then the tree adds the 256 partial sums. The grid folds into 2-D past 65535 workgroups.
// sum_rows_registers, for CPU drivers (where a barrier costs more than the additions it splits): one thread per
// column adds rows 0, 1, ..., R-1 in order; neighbouring threads read neighbouring columns. sum_chunks_serial, for
// them too: sum_chunks' tree walked by one invocation per chunk, with sum_chunks' bits.
//
// include: shared/reduce.wgsl
// include: shared/serial_sum.wgsl

// Keep in sync with `ReduceParams` in src/kernels/reduce.rs.
struct Params {
    rows: u32,  // R for sum_rows; the number of outputs G for sum_chunks
    cols: u32,  // C for sum_rows; the chunk length for sum_chunks
    n: u32,     // number of values in x
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // (C) for sum_rows, (G) for sum_chunks
@group(0) @binding(2) var<storage, read> x: array<f32>;          // (R, C), or (n)

// Index of this workgroup in a grid folded by grid_1d (one workgroup per output).
fn output_index(group: vec3<u32>, groups: vec3<u32>) -> u32 {
    return group.x + group.y * groups.x;
}

@compute @workgroup_size(256)
fn sum_rows(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let col = output_index(group, groups);
    if col >= params.cols { return; }  // the whole workgroup leaves together
    var partial = 0.0;
    for (var row = local; row < params.rows; row = row + WG_REDUCE) {
        partial = partial + x[row * params.cols + col];
    }
    let total = workgroup_sum(local, partial);
    if local == 0u {
        out[col] = total;
    }
}

// Thread t's partial sum of chunk `chunk` in sum_chunks: its values t, t + 256, ... in order.
fn chunk_partial(chunk: u32, t: u32) -> f32 {
    let start = chunk * params.cols;
    let end = min(start + params.cols, params.n);
    var partial = 0.0;
    for (var i = start + t; i < end; i = i + WG_REDUCE) {
        partial = partial + x[i];
    }
    return partial;
}

@compute @workgroup_size(256)
fn sum_chunks(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let chunk = output_index(group, groups);
    if chunk >= params.rows { return; }  // the whole workgroup leaves together
    let total = workgroup_sum(local, chunk_partial(chunk, local));
    if local == 0u {
        out[chunk] = total;
    }
}

@compute @workgroup_size(64)
fn sum_rows_registers(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let col = id.x + id.y * groups.x * 64u;
    if col >= params.cols { return; }
    var total = 0.0;
    for (var row = 0u; row < params.rows; row++) {
        total += x[row * params.cols + col];
    }
    out[col] = total;
}

// sum_chunks for CPU drivers: one invocation per chunk walks workgroup_sum's tree over the 256 thread partials
// (shared/serial_sum.wgsl), so the sums have sum_chunks' bits without its barriers and workgroup memory. The host
// takes it where a chunk's loops (its values and 256 leaves) fit the CPU drivers' loop limit.
@compute @workgroup_size(64)
fn sum_chunks_serial(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let chunk = id.x + id.y * groups.x * 64u;
    if chunk >= params.rows { return; }
    var tree = SerialTree();
    for (var c = 0u; c < WG_REDUCE; c++) {
        tree_push(&tree, c, chunk_partial(chunk, tree_leaf(c)));
    }
    out[chunk] = tree.total;
}
