// The elementwise kernels of shaders/arith.wgsl (shared/arith.wgsl: add, scale, axpy, copy, fill), four elements
// per invocation, for tensors whose length is a multiple of 4 (see shaders/activation_vec4.wgsl for why). Here
// params.n counts vec4s.
//
// include: shared/common.wgsl
// include: shared/arith.wgsl

alias Value = vec4<f32>;

// Keep in sync with `ArithParams` in src/kernels/arith.rs.
struct Params {
    n: u32,
    channels: u32,
    inner: u32,
    _pad: u32,
    alpha: f32,
    beta: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<Value>;  // (n)
@group(0) @binding(2) var<storage, read> a: array<Value>;          // (n)
@group(0) @binding(3) var<storage, read> b: array<Value>;          // (n)
