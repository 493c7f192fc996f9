// Shared by every shader: the 1-D indexing convention.
//
// 1-D kernels run WG_1D threads per workgroup. The host folds large launches into a 2-D grid
// (src/gpu/dispatch.rs, grid_1d), so a thread's linear index is id.x + id.y * (groups.x * WG_1D).
// Threads past the end return early.

const WG_1D: u32 = 256u;

fn linear_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * WG_1D;
}
