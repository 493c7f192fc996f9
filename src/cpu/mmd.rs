//! CPU twin of `shaders/mmd.wgsl`: the unbiased MMD between codes z (B, D) and prior samples p (B, D) with the
//! inverse multiquadratic kernel summed over scales, k(a, b) = Σ_s sC / (sC + |a - b|²), its per-sample shares,
//! and its gradient in z.

/// The scale factors s of the kernel's terms (the WAE authors' code).
pub const SCALES: [f64; 7] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Sample i of a (B, D) set.
fn row(values: &[f64], i: usize, dim: usize) -> &[f64] {
    &values[i * dim..(i + 1) * dim]
}

/// k(a, b) = Σ_s sC / (sC + |a - b|²)
pub fn imq(a: &[f64], b: &[f64], c: f64) -> f64 {
    let squared = squared_distance(a, b);
    SCALES.iter().map(|s| s * c / (s * c + squared)).sum()
}

/// -dk/d|a - b|² = Σ_s sC / (sC + |a - b|²)²
fn imq_slope(a: &[f64], b: &[f64], c: f64) -> f64 {
    let squared = squared_distance(a, b);
    SCALES.iter().map(|s| s * c / (s * c + squared).powi(2)).sum()
}

/// per_sample[i] = weight · B · share_i, with
/// share_i = 1/(B(B-1)) Σ_{j≠i} (k(p_i, p_j) + k(z_i, z_j)) - 2/B² Σ_j k(z_i, p_j).
pub fn mmd_per_sample(z: &[f64], prior: &[f64], batch: usize, dim: usize, c: f64, weight: f64) -> Vec<f64> {
    let n = batch as f64;
    let row = |values, i| row(values, i, dim);
    (0..batch)
        .map(|i| {
            let mut share = 0.0;
            for j in 0..batch {
                if j != i {
                    share += (imq(row(prior, i), row(prior, j), c) + imq(row(z, i), row(z, j), c)) / (n * (n - 1.0));
                }
                share -= 2.0 / (n * n) * imq(row(z, i), row(prior, j), c);
            }
            weight * n * share
        })
        .collect()
}

/// weight · MMD: the per-sample values times 1/B, summed.
pub fn mmd(z: &[f64], prior: &[f64], batch: usize, dim: usize, c: f64, weight: f64) -> f64 {
    mmd_per_sample(z, prior, batch, dim, c, weight).iter().sum::<f64>() / batch as f64
}

/// d (weight · MMD) / dz_i = weight · (2/(B(B-1)) Σ_{j≠i} g(z_i, z_j) - 2/B² Σ_j g(z_i, p_j)),
/// g(a, b) = ∂k(a, b)/∂a = -2 (a - b) Σ_s sC / (sC + |a - b|²)².
pub fn mmd_backward(z: &[f64], prior: &[f64], batch: usize, dim: usize, c: f64, weight: f64) -> Vec<f64> {
    let n = batch as f64;
    let mut dz = vec![0.0; batch * dim];
    for i in 0..batch {
        let zi = &z[i * dim..(i + 1) * dim];
        for j in 0..batch {
            let (zj, pj) = (&z[j * dim..(j + 1) * dim], &prior[j * dim..(j + 1) * dim]);
            let slope_zz = imq_slope(zi, zj, c);
            let slope_zp = imq_slope(zi, pj, c);
            for d in 0..dim {
                let mut g = 0.0;
                if j != i {
                    g += 2.0 / (n * (n - 1.0)) * (-2.0 * (zi[d] - zj[d]) * slope_zz);
                }
                g -= 2.0 / (n * n) * (-2.0 * (zi[d] - pj[d]) * slope_zp);
                dz[i * dim + d] += weight * g;
            }
        }
    }
    dz
}
