//! CPU twin of `shaders/batchnorm.wgsl`: BatchNorm2d on (N, C, H, W), with `inner` = H * W.

/// What the training forward writes.
#[derive(Clone, Debug)]
pub struct ForwardTrain {
    /// (N, C, H, W)
    pub y: Vec<f64>,
    /// (C) batch mean
    pub mean: Vec<f64>,
    /// (C) 1 / sqrt(biased batch variance + eps)
    pub rstd: Vec<f64>,
    /// (C) after the momentum update
    pub running_mean: Vec<f64>,
    /// (C) after the momentum update, with the unbiased variance
    pub running_var: Vec<f64>,
}

/// What the backward writes.
#[derive(Clone, Debug)]
pub struct Backward {
    /// (N, C, H, W)
    pub dx: Vec<f64>,
    /// (C)
    pub dweight: Vec<f64>,
    /// (C)
    pub dbias: Vec<f64>,
}

/// Flat indices of channel `c`'s elements, in the order the shader visits them.
fn channel_elements(c: usize, batch: usize, channels: usize, inner: usize) -> impl Iterator<Item = usize> {
    (0..batch).flat_map(move |n| (0..inner).map(move |hw| (n * channels + c) * inner + hw))
}

/// Training forward: normalise each channel with its batch mean and biased variance, and update the running
/// statistics (the running variance with the unbiased variance).
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f64],
    weight: &[f64],
    bias: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    batch: usize,
    channels: usize,
    inner: usize,
    eps: f64,
    momentum: f64,
) -> ForwardTrain {
    let count = (batch * inner) as f64;
    let mut out = ForwardTrain {
        y: vec![0.0; x.len()],
        mean: vec![0.0; channels],
        rstd: vec![0.0; channels],
        running_mean: vec![0.0; channels],
        running_var: vec![0.0; channels],
    };
    for c in 0..channels {
        let m = channel_elements(c, batch, channels, inner).map(|i| x[i]).sum::<f64>() / count;
        let variance = channel_elements(c, batch, channels, inner)
            .map(|i| (x[i] - m) * (x[i] - m))
            .sum::<f64>()
            / count;
        let r = 1.0 / (variance + eps).sqrt();
        for i in channel_elements(c, batch, channels, inner) {
            out.y[i] = (x[i] - m) * r * weight[c] + bias[c];
        }
        let unbiased = variance * count / (count - 1.0);
        out.mean[c] = m;
        out.rstd[c] = r;
        out.running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * m;
        out.running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased;
    }
    out
}

/// Evaluation forward: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    x: &[f64],
    weight: &[f64],
    bias: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    channels: usize,
    inner: usize,
    eps: f64,
) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner) % channels;
            (v - running_mean[c]) / (running_var[c] + eps).sqrt() * weight[c] + bias[c]
        })
        .collect()
}

/// Training backward through the batch statistics, given the forward's saved mean and rstd.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f64],
    mean: &[f64],
    rstd: &[f64],
    dy: &[f64],
    weight: &[f64],
    batch: usize,
    channels: usize,
    inner: usize,
) -> Backward {
    let count = (batch * inner) as f64;
    let mut out = Backward {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; channels],
        dbias: vec![0.0; channels],
    };
    for c in 0..channels {
        let (m, r) = (mean[c], rstd[c]);
        let xhat = |i: usize| (x[i] - m) * r;
        let db: f64 = channel_elements(c, batch, channels, inner).map(|i| dy[i]).sum();
        let dw: f64 = channel_elements(c, batch, channels, inner)
            .map(|i| dy[i] * xhat(i))
            .sum();
        // dx = weight * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        for i in channel_elements(c, batch, channels, inner) {
            out.dx[i] = weight[c] * r * (dy[i] - db / count - xhat(i) * dw / count);
        }
        out.dweight[c] = dw;
        out.dbias[c] = db;
    }
    out
}
