// Activations, forward and backward side by side.
//
// Dimensions: n = number of elements (any tensor, flattened).
// Forward:  out (n) = f(x (n))
// Backward: out (n) = dout (n) * f'(x (n)), where x is the forward's input (recomputing f is cheaper than
//           keeping it).
//
// include: shared/common.wgsl
// include: shared/activation.wgsl

alias Value = f32;

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
