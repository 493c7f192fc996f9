// The 8 channels' weights and grads of a register-tiled convolution step on 8-lane subgroups (conv_subgroup.wgsl,
// conv_rows.wgsl): lane l reads channel c0 + l's value and subgroup broadcasts hand it to the other lanes.

// The 8 lanes' own values as the 8 channels' values.
fn share8(mine: f32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u),
            subgroupBroadcast(mine, 3u)),
        vec4<f32>(subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 6u),
            subgroupBroadcast(mine, 7u)),
    );
}

fn channel_weights(rows: Channels, tap: u32) -> array<vec4<f32>, 2> {
    return share8(weight[rows.own + tap]);
}

fn channel_grads(rows: Channels, at: u32) -> array<vec4<f32>, 2> {
    return share8(grad[rows.own + at]);
}
