//! CPU twin of `shaders/conv_transpose2d.wgsl`, in f64. The forward is written as PyTorch defines it (each input
//! pixel scatters its weighted kernel into the output), independently of the shader's gather; the gradients
//! compute, element by element, the sums their shaders compute.

use crate::kernels::conv_transpose2d::ConvTranspose2dShape;

fn weight_index(s: &ConvTranspose2dShape, ci: usize, co: usize, kh: usize, kw: usize) -> usize {
    ((ci * s.out_channels + co) * s.kernel_h + kh) * s.kernel_w + kw
}

/// The output coordinate input coordinate `i` reaches through tap `k` (i*S - P + k), if inside the output.
fn output_coordinate(s: &ConvTranspose2dShape, i: usize, k: usize, out: usize) -> Option<usize> {
    let o = (i * s.stride + k).checked_sub(s.padding)?;
    (o < out).then_some(o)
}

/// y[n, co, i*S - P + kh, j*S - P + kw] += x[n, ci, i, j] * w[ci, co, kh, kw], then + bias[co].
pub fn forward(s: &ConvTranspose2dShape, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut y = vec![0.0; s.output_len()];
    for n in 0..s.batch {
        for ci in 0..s.in_channels {
            for ih in 0..s.in_height {
                for iw in 0..s.in_width {
                    let value = x[((n * s.in_channels + ci) * s.in_height + ih) * s.in_width + iw];
                    for co in 0..s.out_channels {
                        for kh in 0..s.kernel_h {
                            for kw in 0..s.kernel_w {
                                let oh = output_coordinate(s, ih, kh, ho);
                                let ow = output_coordinate(s, iw, kw, wo);
                                if let (Some(oh), Some(ow)) = (oh, ow) {
                                    y[((n * s.out_channels + co) * ho + oh) * wo + ow] +=
                                        value * w[weight_index(s, ci, co, kh, kw)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(bias) = bias {
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[(i / (ho * wo)) % s.out_channels];
        }
    }
    y
}

/// dx[n, ci, ih, iw] = sum_{co, kh, kw} dy[n, co, ih*S - P + kh, iw*S - P + kw] * w[ci, co, kh, kw]
pub fn input_backward(s: &ConvTranspose2dShape, w: &[f64], dy: &[f64]) -> Vec<f64> {
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
                                let oh = output_coordinate(s, ih, kh, ho);
                                let ow = output_coordinate(s, iw, kw, wo);
                                if let (Some(oh), Some(ow)) = (oh, ow) {
                                    sum += dy[((n * s.out_channels + co) * ho + oh) * wo + ow]
                                        * w[weight_index(s, ci, co, kh, kw)];
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

/// dw[ci, co, kh, kw] = sum_{n, ih, iw} x[n, ci, ih, iw] * dy[n, co, ih*S - P + kh, iw*S - P + kw]
pub fn weight_backward(s: &ConvTranspose2dShape, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut dw = vec![0.0; s.weight_len()];
    for ci in 0..s.in_channels {
        for co in 0..s.out_channels {
            for kh in 0..s.kernel_h {
                for kw in 0..s.kernel_w {
                    let mut sum = 0.0;
                    for n in 0..s.batch {
                        for ih in 0..s.in_height {
                            for iw in 0..s.in_width {
                                let oh = output_coordinate(s, ih, kh, ho);
                                let ow = output_coordinate(s, iw, kw, wo);
                                if let (Some(oh), Some(ow)) = (oh, ow) {
                                    sum += x[((n * s.in_channels + ci) * s.in_height + ih) * s.in_width + iw]
                                        * dy[((n * s.out_channels + co) * ho + oh) * wo + ow];
                                }
                            }
                        }
                    }
                    dw[weight_index(s, ci, co, kh, kw)] = sum;
                }
            }
        }
    }
    dw
}
