// Deterministic workgroup tree reduction (no float atomics: the summation order is fixed by the tree).
//
// Use from uniform control flow in an entry point with @workgroup_size(256):
//     let total = workgroup_sum(local_index, my_partial_sum);
// Every thread gets the same total. The order of additions depends only on the workgroup size, so results
// are bit-identical from run to run.

const WG_REDUCE: u32 = 256u;

var<workgroup> reduce_scratch: array<f32, 256>;

fn workgroup_sum(local: u32, value: f32) -> f32 {
    reduce_scratch[local] = value;
    workgroupBarrier();
    for (var stride = WG_REDUCE / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            reduce_scratch[local] = reduce_scratch[local] + reduce_scratch[local + stride];
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}
