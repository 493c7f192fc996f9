//! CPU twin of `shaders/loss.wgsl`. Per-sample losses are sums over a sample's P values; the batch loss is
//! `scale * sum(per_sample)`; gradients are those of the batch loss.

fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// The batch loss from the per-sample ones: scale * sum over b.
pub fn mean(per_sample: &[f64], scale: f64) -> f64 {
    scale * per_sample.iter().sum::<f64>()
}

/// per_sample[b] = sum over p of (x - y)²
pub fn mse_per_sample(x: &[f64], y: &[f64], batch: usize, features: usize) -> Vec<f64> {
    (0..batch)
        .map(|b| {
            (0..features)
                .map(|p| (x[b * features + p] - y[b * features + p]).powi(2))
                .sum()
        })
        .collect()
}

/// Mean over all B P values of (x - y)².
pub fn mse(x: &[f64], y: &[f64], batch: usize, features: usize) -> f64 {
    mean(&mse_per_sample(x, y, batch, features), 1.0 / (batch * features) as f64)
}

/// d mse / dx = 2 (x - y) / (B P)
pub fn mse_backward(x: &[f64], y: &[f64], batch: usize, features: usize) -> Vec<f64> {
    let scale = 1.0 / (batch * features) as f64;
    x.iter().zip(y).map(|(x, y)| 2.0 * (x - y) * scale).collect()
}

/// Squared L2 distance per sample, mean over the batch (the WAE's reconstruction cost).
pub fn squared_error(x: &[f64], y: &[f64], batch: usize, features: usize) -> f64 {
    mean(&mse_per_sample(x, y, batch, features), 1.0 / batch as f64)
}

/// d squared_error / dx = 2 (x - y) / B
pub fn squared_error_backward(x: &[f64], y: &[f64], batch: usize) -> Vec<f64> {
    x.iter().zip(y).map(|(x, y)| 2.0 * (x - y) / batch as f64).collect()
}

/// per_sample[b] = sum over p of max(x, 0) - x y + log(1 + exp(-|x|))
pub fn bce_with_logits_per_sample(x: &[f64], y: &[f64], batch: usize, features: usize) -> Vec<f64> {
    (0..batch)
        .map(|b| {
            (0..features)
                .map(|p| {
                    let (v, t) = (x[b * features + p], y[b * features + p]);
                    v.max(0.0) - v * t + (-v.abs()).exp().ln_1p()
                })
                .sum()
        })
        .collect()
}

/// Sum over a sample's values, mean over the batch.
pub fn bce_with_logits(x: &[f64], y: &[f64], batch: usize, features: usize) -> f64 {
    mean(&bce_with_logits_per_sample(x, y, batch, features), 1.0 / batch as f64)
}

/// d bce / dx = (σ(x) - y) / B
pub fn bce_with_logits_backward(x: &[f64], y: &[f64], batch: usize) -> Vec<f64> {
    x.iter().zip(y).map(|(x, y)| (sigmoid(*x) - y) / batch as f64).collect()
}

/// per_sample[b] = -0.5 * sum over p of (1 + logvar - mu² - exp(logvar))
pub fn kl_per_sample(mu: &[f64], logvar: &[f64], batch: usize, latent: usize) -> Vec<f64> {
    (0..batch)
        .map(|b| {
            let terms: f64 = (0..latent)
                .map(|p| {
                    let (m, lv) = (mu[b * latent + p], logvar[b * latent + p]);
                    1.0 + lv - m * m - lv.exp()
                })
                .sum();
            -0.5 * terms
        })
        .collect()
}

/// KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent, mean over the batch.
pub fn kl(mu: &[f64], logvar: &[f64], batch: usize, latent: usize) -> f64 {
    mean(&kl_per_sample(mu, logvar, batch, latent), 1.0 / batch as f64)
}

/// (d kl / dmu, d kl / dlogvar) = (mu / B, 0.5 (exp(logvar) - 1) / B)
pub fn kl_backward(mu: &[f64], logvar: &[f64], batch: usize) -> (Vec<f64>, Vec<f64>) {
    let scale = 1.0 / batch as f64;
    (
        mu.iter().map(|m| m * scale).collect(),
        logvar.iter().map(|lv| 0.5 * (lv.exp() - 1.0) * scale).collect(),
    )
}

/// The row maximum and sum of exp(x - maximum) of one sample's logits.
fn row_max_and_sum(row: &[f64]) -> (f64, f64) {
    let max = row.iter().copied().fold(f64::MIN, f64::max);
    (max, row.iter().map(|v| (v - max).exp()).sum())
}

/// per_sample[b] = logsumexp(x_b) - x_b[label_b]; NaN for a label out of range.
pub fn cross_entropy_per_sample(logits: &[f64], labels: &[u32], batch: usize, classes: usize) -> Vec<f64> {
    (0..batch)
        .map(|b| {
            let row = &logits[b * classes..(b + 1) * classes];
            let (max, sum) = row_max_and_sum(row);
            match row.get(labels[b] as usize) {
                Some(picked) => max + sum.ln() - picked,
                None => f64::NAN,
            }
        })
        .collect()
}

/// Mean over the batch of the per-sample cross-entropy.
pub fn cross_entropy(logits: &[f64], labels: &[u32], batch: usize, classes: usize) -> f64 {
    mean(
        &cross_entropy_per_sample(logits, labels, batch, classes),
        1.0 / batch as f64,
    )
}

/// d ce / dx_b = (softmax(x_b) - onehot(label_b)) / B
pub fn cross_entropy_backward(logits: &[f64], labels: &[u32], batch: usize, classes: usize) -> Vec<f64> {
    let mut dx = vec![0.0; batch * classes];
    for b in 0..batch {
        let row = &logits[b * classes..(b + 1) * classes];
        let (max, sum) = row_max_and_sum(row);
        for j in 0..classes {
            let onehot = if j == labels[b] as usize { 1.0 } else { 0.0 };
            dx[b * classes + j] = ((row[j] - max).exp() / sum - onehot) / batch as f64;
        }
    }
    dx
}
