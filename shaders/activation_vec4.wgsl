// The activations of shaders/activation.wgsl (shared/activation.wgsl), four elements per invocation, for
// tensors whose length is a multiple of 4: on CPU drivers (lavapipe) a storage buffer is read one lane at a
// time, and a vec4 load shares that loop over the lanes among 4 values. The same operations per component, so
// the same bits. Here params.n counts vec4s.
//
// include: shared/common.wgsl
// include: shared/activation.wgsl

alias Value = vec4<f32>;

// Keep in sync with `ActivationParams` in src/kernels/activation.rs.
struct Params {
    n: u32,
    slope: f32,  // LeakyReLU's negative slope
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<Value>;  // (n) y, or dx for backward
@group(0) @binding(2) var<storage, read> x: array<Value>;          // (n) forward input
@group(0) @binding(3) var<storage, read> dout: array<Value>;       // (n) upstream gradient dy
