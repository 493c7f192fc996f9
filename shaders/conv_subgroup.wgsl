// The register-tiled convolutions of shaders/conv_registers.wgsl for CPU drivers whose subgroups are 8 lanes
// wide (lavapipe on 256-bit SIMD), with the loads that are the same in all lanes shared.
//
// In every kernel the 8 lanes of a subgroup (local.x = 0..7, one row of the 8 x 8 workgroup) need the same 8
// channels' weights (the gathers) or grads (the weight gradient) at each step, and lavapipe reads a storage
// buffer one lane at a time: 8 of the 16 loads per step were the same values in every lane. Here lane l reads
// channel c0 + l's value and `subgroupBroadcast` hands it to the others: 9 loads per step instead of 16. The
// values and the order of the sums are those of conv_registers.wgsl, so the results are bit-identical.

// include: shared/conv_registers.wgsl
// include: shared/conv_share.wgsl
