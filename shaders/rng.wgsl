// Random fills from Philox 4x32-10 (shared/philox.wgsl): raw u32 words, uniform [0, 1) floats, standard normals.
//
// Dimensions: n = elements to fill. One thread per Philox block of 4 elements:
//     words = philox4x32_10(counter = (offset + i / 4, stream, step_lo, step_hi), key = (seed_lo, seed_hi))
// and element i takes word i % 4 (normals: Box-Muller on the pairs (words.x, words.y) and (words.z, words.w),
// elements 4b, 4b+1 the cos and sin of the first pair, 4b+2, 4b+3 of the second). Element i's value depends only
// on (seed, step, stream, offset, i): the same on any GPU and for any workgroup size.
//
// include: shared/common.wgsl
// include: shared/philox.wgsl

// Keep in sync with `RngParams` in src/kernels/rng.rs.
struct Params {
    n: u32,
    offset: u32,   // first counter block
    stream: u32,   // which independent sequence (one per use within a step)
    _pad0: u32,
    seed_lo: u32,  // key
    seed_hi: u32,
    step_lo: u32,  // training step (or sampling step), 64 bits
    step_hi: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;       // (n) uniform or normal floats
@group(0) @binding(2) var<storage, read_write> out_bits: array<u32>;  // (n) raw Philox words

// The four words of the thread's block, or nothing past the end.
fn block_words(block: u32) -> vec4<u32> {
    let counter = vec4<u32>(params.offset + block, params.stream, params.step_lo, params.step_hi);
    return philox4x32_10(counter, vec2<u32>(params.seed_lo, params.seed_hi));
}

@compute @workgroup_size(256)
fn philox_bits(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let block = linear_index(id, groups);
    let first = block * 4u;
    if first >= params.n { return; }
    let words = block_words(block);
    for (var k = 0u; k < 4u; k++) {
        if first + k < params.n {
            out_bits[first + k] = words[k];
        }
    }
}

@compute @workgroup_size(256)
fn uniform_fill(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let block = linear_index(id, groups);
    let first = block * 4u;
    if first >= params.n { return; }
    let words = block_words(block);
    for (var k = 0u; k < 4u; k++) {
        if first + k < params.n {
            out[first + k] = uniform_from_bits(words[k]);
        }
    }
}

@compute @workgroup_size(256)
fn normal_fill(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let block = linear_index(id, groups);
    let first = block * 4u;
    if first >= params.n { return; }
    let words = block_words(block);
    let normals = array<vec2<f32>, 2>(box_muller(words.x, words.y), box_muller(words.z, words.w));
    for (var k = 0u; k < 4u; k++) {
        if first + k < params.n {
            out[first + k] = normals[k / 2u][k % 2u];
        }
    }
}
