// The activations of shaders/activation.wgsl (shared/activation.wgsl), four elements per invocation, for
// tensors whose length is a multiple of 4: on CPU drivers (lavapipe) a storage buffer is read one lane at a
// time, and a vec4 load shares that loop over the lanes among 4 values. The same operations per component, so
// the same bits. Here params.n counts vec4s.
//
// include: shared/common.wgsl
// include: shared/activation.wgsl

alias Value = vec4<f32>;
