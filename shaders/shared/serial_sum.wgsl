// workgroup_sum (shared/reduce.wgsl) computed by one invocation, for CPU drivers, where a 256-thread workgroup's
// barriers and workgroup memory cost far more than the additions. The including module defines
//     fn thread_partial(kind: u32, key: u32, t: u32) -> f32
// the partial sum thread t of the workgroup kernel would hold (`kind` and `key` passed through).
//
// workgroup_sum adds element t + s into element t for s = 128, 64, ..., 1: a binary tree whose node at level k
// (after k steps) is node(i, k) = node(i, k - 1) + node(i + 2^(8 - k), k - 1). Walked depth first, left child
// first, the leaves come in the order t = reverse8(c) for c = 0, 1, ..., 255, and a node's left subtree is
// complete when its right one starts: so one running sum per level (s0 .. s7) holds every pending left value,
// and each leaf is folded in with the additions, in the order, of the tree. The same bits as workgroup_sum.
fn serial_workgroup_sum(kind: u32, key: u32) -> f32 {
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    var s4 = 0.0;
    var s5 = 0.0;
    var s6 = 0.0;
    var s7 = 0.0;
    var total = 0.0;
    for (var c = 0u; c < WG_REDUCE; c++) {
        var v = thread_partial(kind, key, reverseBits(c) >> 24u);
        if (c & 1u) == 0u { s0 = v; continue; }
        v = s0 + v;
        if (c & 2u) == 0u { s1 = v; continue; }
        v = s1 + v;
        if (c & 4u) == 0u { s2 = v; continue; }
        v = s2 + v;
        if (c & 8u) == 0u { s3 = v; continue; }
        v = s3 + v;
        if (c & 16u) == 0u { s4 = v; continue; }
        v = s4 + v;
        if (c & 32u) == 0u { s5 = v; continue; }
        v = s5 + v;
        if (c & 64u) == 0u { s6 = v; continue; }
        v = s6 + v;
        if (c & 128u) == 0u { s7 = v; continue; }
        total = s7 + v;
    }
    return total;
}
