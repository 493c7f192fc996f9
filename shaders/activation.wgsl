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
