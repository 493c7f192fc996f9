//! CPU twin of `shaders/matmul.wgsl`.

use crate::kernels::activation::Activation;
use crate::kernels::matmul::{Layout, MatmulShape};

/// C = act(op(A) · op(B) + bias), or C = C + act(...), for every product of the batch, summing over k in
/// order (in f64). Elements of `c` outside the products are left alone.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f64],
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    layout: Layout,
    shape: MatmulShape,
    activation: Option<Activation>,
    accumulate: bool,
) {
    let MatmulShape { m, n, k, .. } = shape;
    for z in 0..shape.batch {
        let (a_base, b_base, c_base) = (z * shape.stride_a, z * shape.stride_b, z * shape.stride_c);
        for row in 0..m {
            for col in 0..n {
                let mut acc = 0.0;
                for kk in 0..k {
                    let a_value = if layout.a_transposed() {
                        a[a_base + kk * m + row] // A (K, M)
                    } else {
                        a[a_base + row * k + kk] // A (M, K)
                    };
                    let b_value = if layout.b_transposed() {
                        b[b_base + col * k + kk] // B (N, K)
                    } else {
                        b[b_base + kk * n + col] // B (K, N)
                    };
                    acc += a_value * b_value;
                }
                let mut v = acc + bias.map_or(0.0, |bias| bias[col]);
                if let Some(activation) = activation {
                    v = crate::cpu::activation::forward(activation, &[v])[0];
                }
                let index = c_base + row * n + col;
                c[index] = if accumulate { c[index] + v } else { v };
            }
        }
    }
}
