//! CPU twin of `shaders/reparam.wgsl`.

/// z = mu + eps * exp(logvar / 2)
pub fn forward(eps: &[f64], mu: &[f64], logvar: &[f64]) -> Vec<f64> {
    (0..mu.len())
        .map(|i| mu[i] + eps[i] * (0.5 * logvar[i]).exp())
        .collect()
}

/// (dmu, dlogvar) = (dz, dz * eps * exp(logvar / 2) / 2)
pub fn backward(eps: &[f64], logvar: &[f64], dz: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let dlogvar = (0..dz.len())
        .map(|i| dz[i] * eps[i] * 0.5 * (0.5 * logvar[i]).exp())
        .collect();
    (dz.to_vec(), dlogvar)
}
