// Adam and AdamW of shaders/optim.wgsl (shared/adam.wgsl), four elements per invocation, for tensors whose length
// is a multiple of 4: on CPU drivers (lavapipe) a storage buffer is read one lane at a time, and a vec4 load shares
// that loop over the lanes among 4 values. The same operations per component, so the same bits. Here params.first
// and params.n count vec4s.
//
// include: shared/common.wgsl
// include: shared/optim_params.wgsl
// include: shared/adam.wgsl

alias Value = vec4<f32>;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<Value>;       // (first + n) weights, in place
@group(0) @binding(2) var<storage, read_write> exp_avg: array<Value>;     // (first + n) Adam m
@group(0) @binding(3) var<storage, read_write> exp_avg_sq: array<Value>;  // (first + n) Adam v
@group(0) @binding(9) var<storage, read> grad: array<Value>;              // (first + n) dL/dparam
@group(0) @binding(13) var<uniform> step_values: StepValues;
