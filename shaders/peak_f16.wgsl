// The f16 multiply-add ceiling (`latent bench peak` on adapters with SHADER_F16): peak_fma of peak.wgsl in
// vec4<f16>, 64 FLOP per round per invocation. A module of its own because it needs the f16 capability.

enable f16;

const WG: u32 = 256u;

// Keep in sync with `PeakParams` in src/peak.rs.
struct Params {
    iterations: u32,
    count: u32,
    scale: f32,
    offset: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn peak_fma_f16(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.x + id.y * groups.x * WG;
    if i >= params.count { return; }
    let m = vec4<f16>(f16(params.scale));
    let a = vec4<f16>(f16(params.offset));
    let seed = f16(f32(i & 1023u) * 1e-3);
    var a0 = vec4<f16>(seed, seed + 0.1h, seed + 0.2h, seed + 0.3h);
    var a1 = a0 + 0.01h;
    var a2 = a0 + 0.02h;
    var a3 = a0 + 0.03h;
    var a4 = a0 + 0.04h;
    var a5 = a0 + 0.05h;
    var a6 = a0 + 0.06h;
    var a7 = a0 + 0.07h;
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
    out[i] = vec4<f32>(((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)));
}
