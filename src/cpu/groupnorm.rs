//! CPU twin of `shaders/groupnorm.wgsl`: GroupNorm(G, C) on (N, C, H, W), with `inner` = H * W.

/// What the forward writes.
#[derive(Clone, Debug)]
pub struct Forward {
    /// (N, C, H, W)
    pub y: Vec<f64>,
    /// (N, G)
    pub mean: Vec<f64>,
    /// (N, G) 1 / sqrt(biased variance + eps)
    pub rstd: Vec<f64>,
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

/// Normalises each (sample, group) of C / G * H * W contiguous values with its mean and biased variance, then
/// scales and shifts per channel.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f64],
    weight: &[f64],
    bias: &[f64],
    batch: usize,
    channels: usize,
    groups: usize,
    inner: usize,
    eps: f64,
) -> Forward {
    let per_group = channels / groups;
    let size = per_group * inner;
    let mut out = Forward {
        y: vec![0.0; x.len()],
        mean: vec![0.0; batch * groups],
        rstd: vec![0.0; batch * groups],
    };
    for ng in 0..batch * groups {
        let base = ng * size;
        let first_channel = (ng % groups) * per_group;
        let values = &x[base..base + size];
        let m = values.iter().sum::<f64>() / size as f64;
        let variance = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / size as f64;
        let r = 1.0 / (variance + eps).sqrt();
        for (j, v) in values.iter().enumerate() {
            let c = first_channel + j / inner;
            out.y[base + j] = (v - m) * r * weight[c] + bias[c];
        }
        out.mean[ng] = m;
        out.rstd[ng] = r;
    }
    out
}

/// Backward through the group statistics, given the forward's saved mean and rstd (N, G).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f64],
    mean: &[f64],
    rstd: &[f64],
    dy: &[f64],
    weight: &[f64],
    batch: usize,
    channels: usize,
    groups: usize,
    inner: usize,
) -> Backward {
    let per_group = channels / groups;
    let size = per_group * inner;
    let mut out = Backward {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; channels],
        dbias: vec![0.0; channels],
    };
    for ng in 0..batch * groups {
        let base = ng * size;
        let first_channel = (ng % groups) * per_group;
        let (m, r) = (mean[ng], rstd[ng]);
        let xhat = |j: usize| (x[base + j] - m) * r;
        let dxhat = |j: usize| dy[base + j] * weight[first_channel + j / inner];
        let mean_dxhat = (0..size).map(dxhat).sum::<f64>() / size as f64;
        let mean_dxhat_xhat = (0..size).map(|j| dxhat(j) * xhat(j)).sum::<f64>() / size as f64;
        for j in 0..size {
            let c = first_channel + j / inner;
            // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            out.dx[base + j] = r * (dxhat(j) - mean_dxhat - xhat(j) * mean_dxhat_xhat);
            out.dweight[c] += dy[base + j] * xhat(j);
            out.dbias[c] += dy[base + j];
        }
    }
    out
}
