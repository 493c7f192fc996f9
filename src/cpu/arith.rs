//! CPU twin of `shaders/arith.wgsl`.

/// out = a + b
pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// out = alpha * a
pub fn scale(a: &[f64], alpha: f64) -> Vec<f64> {
    a.iter().map(|x| alpha * x).collect()
}

/// out = beta * out + alpha * a
pub fn axpy(out: &[f64], a: &[f64], alpha: f64, beta: f64) -> Vec<f64> {
    out.iter().zip(a).map(|(o, x)| beta * o + alpha * x).collect()
}

/// out (N, C, H, W) = a + bias[c], with `inner` = H * W
pub fn add_channel_bias(a: &[f64], bias: &[f64], channels: usize, inner: usize) -> Vec<f64> {
    a.iter()
        .enumerate()
        .map(|(i, x)| x + bias[(i / inner) % channels])
        .collect()
}

/// out (copies * inner) = a repeated: out[i] = a[i mod inner]
pub fn repeat(a: &[f64], copies: usize) -> Vec<f64> {
    (0..copies * a.len()).map(|i| a[i % a.len()]).collect()
}

/// out (n) = alpha * a[0 .. n] + beta * a[n .. 2n]
pub fn combine_halves(a: &[f64], alpha: f64, beta: f64) -> Vec<f64> {
    let n = a.len() / 2;
    (0..n).map(|i| alpha * a[i] + beta * a[i + n]).collect()
}
