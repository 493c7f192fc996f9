// The elementwise kernels of shaders/arith.wgsl (shared/arith.wgsl: add, scale, axpy, copy, fill), four elements
// per invocation, for tensors whose length is a multiple of 4 (see shaders/activation_vec4.wgsl for why). Here
// params.n counts vec4s.
//
// include: shared/common.wgsl
// include: shared/arith.wgsl

alias Value = vec4<f32>;
