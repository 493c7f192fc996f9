// workgroup_sum (shared/reduce.wgsl) computed by one invocation, for CPU drivers, where a 256-thread workgroup's
// barriers and workgroup memory cost far more than the additions. Use:
//     var tree = SerialTree();
//     for (var c = 0u; c < WG_REDUCE; c++) {
//         tree_push(&tree, c, <the partial sum thread tree_leaf(c) of the workgroup kernel holds>);
//     }
//     let total = tree.total;  // workgroup_sum's result, bit for bit
//
// workgroup_sum adds element t + s into element t for s = 128, 64, ..., 1: a binary tree whose node at level k
// (after k steps) is node(i, k) = node(i, k - 1) + node(i + 2^(8 - k), k - 1). Walked depth first, left child
// first, the leaves come in the order t = reverse8(c) for c = 0, 1, ..., 255, and a node's left subtree is
// complete when its right one starts: so one running sum per level (s0 .. s7) holds every pending left value,
// and each leaf is folded in with the tree's additions, in the tree's order.

struct SerialTree {
    s0: f32,
    s1: f32,
    s2: f32,
    s3: f32,
    s4: f32,
    s5: f32,
    s6: f32,
    s7: f32,
    total: f32,
}

// The thread whose partial sum is leaf c (0 .. 255) of the depth-first walk.
fn tree_leaf(c: u32) -> u32 {
    return reverseBits(c) >> 24u;
}

// Folds leaf c (pushed in the order c = 0, 1, ..., 255) into the tree.
fn tree_push(tree: ptr<function, SerialTree>, c: u32, leaf: f32) {
    var v = leaf;
    if (c & 1u) == 0u { (*tree).s0 = v; return; }
    v = (*tree).s0 + v;
    if (c & 2u) == 0u { (*tree).s1 = v; return; }
    v = (*tree).s1 + v;
    if (c & 4u) == 0u { (*tree).s2 = v; return; }
    v = (*tree).s2 + v;
    if (c & 8u) == 0u { (*tree).s3 = v; return; }
    v = (*tree).s3 + v;
    if (c & 16u) == 0u { (*tree).s4 = v; return; }
    v = (*tree).s4 + v;
    if (c & 32u) == 0u { (*tree).s5 = v; return; }
    v = (*tree).s5 + v;
    if (c & 64u) == 0u { (*tree).s6 = v; return; }
    v = (*tree).s6 + v;
    if (c & 128u) == 0u { (*tree).s7 = v; return; }
    (*tree).total = (*tree).s7 + v;
}
