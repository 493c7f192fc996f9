// The adapter's ceilings, each from a kernel that does nothing else (`latent bench peak`, src/peak.rs):
//
//   peak_fma        f32 multiply-adds: 8 independent vec4 accumulators per invocation (no dependency chain
//                   longer than the loop), `iterations` rounds, 64 FLOP per round; one vec4 written at the end.
//   peak_read       storage-buffer reads: each invocation sums READ_SPAN vec4s `count` apart (neighbouring
//                   invocations read neighbouring vec4s), writes one vec4: 1/16 of the traffic.
//   peak_write      storage-buffer writes: one vec4 per invocation.
//   peak_copy       read one vec4, write it elsewhere.
//
// The constants come from the uniform (the compiler cannot fold the loop away), and every result is written.

const WG: u32 = 256u;
const READ_SPAN: u32 = 16u;

// Keep in sync with `PeakParams` in src/peak.rs.
struct Params {
    iterations: u32,
    count: u32,     // invocations that do work (vec4 elements for write and copy, sums for read)
    scale: f32,     // multiplier of the FMA chain, just below 1 so the values stay finite
    offset: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> source: array<vec4<f32>>;

fn index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * WG;
}

@compute @workgroup_size(256)
fn peak_fma(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(id, groups);
    if i >= params.count { return; }
    let m = vec4<f32>(params.scale);
    let a = vec4<f32>(params.offset);
    let seed = f32(i & 1023u) * 1e-3;
    var a0 = vec4<f32>(seed, seed + 0.1, seed + 0.2, seed + 0.3);
    var a1 = a0 + 0.01;
    var a2 = a0 + 0.02;
    var a3 = a0 + 0.03;
    var a4 = a0 + 0.04;
    var a5 = a0 + 0.05;
    var a6 = a0 + 0.06;
    var a7 = a0 + 0.07;
    for (var k = 0u; k < params.iterations; k++) {
        a0 = fma(a0, m, a);
        a1 = fma(a1, m, a);
        a2 = fma(a2, m, a);
        a3 = fma(a3, m, a);
        a4 = fma(a4, m, a);
        a5 = fma(a5, m, a);
        a6 = fma(a6, m, a);
        a7 = fma(a7, m, a);
    }
    out[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}

@compute @workgroup_size(256)
fn peak_read(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(id, groups);
    if i >= params.count { return; }
    var total = vec4<f32>(0.0);
    for (var k = 0u; k < READ_SPAN; k++) {
        total += source[k * params.count + i];
    }
    out[i] = total;
}

@compute @workgroup_size(256)
fn peak_write(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(id, groups);
    if i >= params.count { return; }
    out[i] = vec4<f32>(f32(i) * params.scale + params.offset);
}

@compute @workgroup_size(256)
fn peak_copy(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(id, groups);
    if i >= params.count { return; }
    out[i] = source[i];
}
