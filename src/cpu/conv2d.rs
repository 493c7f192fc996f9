//! CPU twin of `shaders/conv2d.wgsl`, in f64: each function computes, element by element, the same sum its
//! shader's implicit GEMM computes.

use crate::kernels::conv2d::Conv2dShape;

/// x[n, ci, ih, iw] with ih, iw possibly outside the image (zero padding).
fn padded(s: &Conv2dShape, x: &[f64], n: usize, ci: usize, ih: isize, iw: isize) -> f64 {
    if ih < 0 || iw < 0 || ih >= s.in_height as isize || iw >= s.in_width as isize {
        return 0.0;
    }
    x[((n * s.in_channels + ci) * s.in_height + ih as usize) * s.in_width + iw as usize]
}

/// The input row (or column) that output row `o` reads through kernel tap `k`: o*S - P + k.
fn input_coordinate(s: &Conv2dShape, o: usize, k: usize) -> isize {
    (o * s.stride + k) as isize - s.padding as isize
}

/// y[n, co, oh, ow] = bias[co] + sum_{ci, kh, kw} x[n, ci, oh*S - P + kh, ow*S - P + kw] * w[co, ci, kh, kw]
pub fn forward(s: &Conv2dShape, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut y = vec![0.0; s.output_len()];
    for n in 0..s.batch {
        for co in 0..s.out_channels {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut sum = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..s.in_channels {
                        for kh in 0..s.kernel_h {
                            for kw in 0..s.kernel_w {
                                let ih = input_coordinate(s, oh, kh);
                                let iw = input_coordinate(s, ow, kw);
                                let weight = w[((co * s.in_channels + ci) * s.kernel_h + kh) * s.kernel_w + kw];
                                sum += padded(s, x, n, ci, ih, iw) * weight;
                            }
                        }
                    }
                    y[((n * s.out_channels + co) * ho + oh) * wo + ow] = sum;
                }
            }
        }
    }
    y
}

/// The output row that reads input row `i` through tap `k`, if any: o = (i + P - k) / S when whole and in range.
fn output_coordinate(i: usize, k: usize, stride: usize, padding: usize, out: usize) -> Option<usize> {
    let t = (i + padding).checked_sub(k)?;
    (t % stride == 0 && t / stride < out).then_some(t / stride)
}

/// dx[n, ci, ih, iw] = sum_{co, kh, kw} dy[n, co, oh, ow] * w[co, ci, kh, kw] over the (oh, ow) with
/// oh*S - P + kh = ih and ow*S - P + kw = iw.
pub fn input_backward(s: &Conv2dShape, w: &[f64], dy: &[f64]) -> Vec<f64> {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut dx = vec![0.0; s.input_len()];
    for n in 0..s.batch {
        for ci in 0..s.in_channels {
            for ih in 0..s.in_height {
                for iw in 0..s.in_width {
                    let mut sum = 0.0;
                    for co in 0..s.out_channels {
                        for kh in 0..s.kernel_h {
                            for kw in 0..s.kernel_w {
                                let oh = output_coordinate(ih, kh, s.stride, s.padding, ho);
                                let ow = output_coordinate(iw, kw, s.stride, s.padding, wo);
                                if let (Some(oh), Some(ow)) = (oh, ow) {
                                    let weight = w[((co * s.in_channels + ci) * s.kernel_h + kh) * s.kernel_w + kw];
                                    sum += dy[((n * s.out_channels + co) * ho + oh) * wo + ow] * weight;
                                }
                            }
                        }
                    }
                    dx[((n * s.in_channels + ci) * s.in_height + ih) * s.in_width + iw] = sum;
                }
            }
        }
    }
    dx
}

/// dw[co, ci, kh, kw] = sum_{n, oh, ow} dy[n, co, oh, ow] * x[n, ci, oh*S - P + kh, ow*S - P + kw]
pub fn weight_backward(s: &Conv2dShape, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut dw = vec![0.0; s.weight_len()];
    for co in 0..s.out_channels {
        for ci in 0..s.in_channels {
            for kh in 0..s.kernel_h {
                for kw in 0..s.kernel_w {
                    let mut sum = 0.0;
                    for n in 0..s.batch {
                        for oh in 0..ho {
                            for ow in 0..wo {
                                let ih = input_coordinate(s, oh, kh);
                                let iw = input_coordinate(s, ow, kw);
                                sum +=
                                    dy[((n * s.out_channels + co) * ho + oh) * wo + ow] * padded(s, x, n, ci, ih, iw);
                            }
                        }
                    }
                    dw[((co * s.in_channels + ci) * s.kernel_h + kh) * s.kernel_w + kw] = sum;
                }
            }
        }
    }
    dw
}

/// dbias[c] = sum_{n, p} dy[n, c, p] over a (N, C, plane) gradient.
pub fn bias_backward(batch: usize, channels: usize, plane: usize, dy: &[f64]) -> Vec<f64> {
    (0..channels)
        .map(|c| {
            (0..batch)
                .map(|n| dy[(n * channels + c) * plane..][..plane].iter().sum::<f64>())
                .sum()
        })
        .collect()
}
