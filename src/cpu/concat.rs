//! CPU twin of `shaders/concat.wgsl`: channel concatenation of NCHW tensors and its backward, in f64.

/// out (N, Ca + Cb, plane) = cat([a (N, Ca, plane), b (N, Cb, plane)], dim 1)
pub fn concat_channels_forward(
    a: &[f64],
    b: &[f64],
    batch: usize,
    channels_a: usize,
    channels_b: usize,
    plane: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(batch * (channels_a + channels_b) * plane);
    for n in 0..batch {
        out.extend_from_slice(&a[n * channels_a * plane..][..channels_a * plane]);
        out.extend_from_slice(&b[n * channels_b * plane..][..channels_b * plane]);
    }
    out
}

/// (da (N, Ca, plane), db (N, Cb, plane)): dout split back along the channels.
pub fn concat_channels_backward(
    dout: &[f64],
    batch: usize,
    channels_a: usize,
    channels_b: usize,
    plane: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut da, mut db) = (Vec::new(), Vec::new());
    for n in 0..batch {
        let image = &dout[n * (channels_a + channels_b) * plane..][..(channels_a + channels_b) * plane];
        da.extend_from_slice(&image[..channels_a * plane]);
        db.extend_from_slice(&image[channels_a * plane..]);
    }
    (da, db)
}
