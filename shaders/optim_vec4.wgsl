// Adam and AdamW of shaders/optim.wgsl, four elements per invocation, for tensors whose length is a multiple of 4:
// on CPU drivers (lavapipe) a storage buffer is read one lane at a time, and a vec4 load shares that loop over
// the lanes among 4 values. The arithmetic is optim.wgsl's, component by component, so the bits are the same.
// Here params.first and params.n count vec4s.
//
// include: shared/common.wgsl
// include: shared/optim_params.wgsl

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<vec4<f32>>;       // (first + n) weights, in place
@group(0) @binding(2) var<storage, read_write> exp_avg: array<vec4<f32>>;     // (first + n) Adam m
@group(0) @binding(3) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;  // (first + n) Adam v
@group(0) @binding(9) var<storage, read> grad: array<vec4<f32>>;              // (first + n) dL/dparam
@group(0) @binding(13) var<uniform> step_values: StepValues;

// optim.wgsl's adam_update on four elements.
fn adam_update(i: u32, p: vec4<f32>, g: vec4<f32>) {
    let m = params.beta1 * exp_avg[i] + params.one_minus_beta1 * g;
    let v = params.beta2 * exp_avg_sq[i] + params.one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let denom = sqrt(v) / step_values.bias_correction2_sqrt + params.eps;
    param[i] = p - step_values.step_size * m / denom;
}

@compute @workgroup_size(256)
fn adam_step_vec4(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    let p = param[i];
    adam_update(i, p, grad[i] + params.weight_decay * p);
}

@compute @workgroup_size(256)
fn adamw_step_vec4(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = linear_index(id, groups);
    if k >= params.n { return; }
    let i = params.first + k;
    adam_update(i, param[i] * step_values.decay, grad[i]);
}
