//! CPU twin of `shaders/resample.wgsl`: max-pool 2x2 stride 2 and nearest upsampling by 2, on (P, H, W) planes
//! (P = N*C), in f64.

/// Row-major index (0..3) of the first maximum of the 2x2 window at (oh, ow) of plane p.
fn window_argmax(x: &[f64], height: usize, width: usize, p: usize, oh: usize, ow: usize) -> usize {
    let top = (p * height + 2 * oh) * width + 2 * ow;
    let values = [x[top], x[top + 1], x[top + width], x[top + width + 1]];
    let mut best = 0;
    for i in 1..4 {
        // Strictly greater: on a tie the earlier element wins (PyTorch's rule).
        if values[i] > values[best] {
            best = i;
        }
    }
    best
}

/// y (P, H/2, W/2) = max over each 2x2 window of x (P, H, W).
pub fn max_pool2d_forward(x: &[f64], planes: usize, height: usize, width: usize) -> Vec<f64> {
    let (ho, wo) = (height / 2, width / 2);
    let mut y = Vec::with_capacity(planes * ho * wo);
    for p in 0..planes {
        for oh in 0..ho {
            for ow in 0..wo {
                let best = window_argmax(x, height, width, p, oh, ow);
                y.push(x[(p * height + 2 * oh + best / 2) * width + 2 * ow + best % 2]);
            }
        }
    }
    y
}

/// dx (P, H, W): dy of the window to its first maximum, 0 elsewhere (and in a dropped odd row or column).
pub fn max_pool2d_backward(x: &[f64], dy: &[f64], planes: usize, height: usize, width: usize) -> Vec<f64> {
    let (ho, wo) = (height / 2, width / 2);
    let mut dx = vec![0.0; planes * height * width];
    for p in 0..planes {
        for ih in 0..height {
            for iw in 0..width {
                let (oh, ow) = (ih / 2, iw / 2);
                if oh < ho && ow < wo && window_argmax(x, height, width, p, oh, ow) == (ih % 2) * 2 + iw % 2 {
                    dx[(p * height + ih) * width + iw] = dy[(p * ho + oh) * wo + ow];
                }
            }
        }
    }
    dx
}

/// y (P, 2H, 2W): y[p, oh, ow] = x[p, oh/2, ow/2].
pub fn upsample_nearest2d_forward(x: &[f64], planes: usize, height: usize, width: usize) -> Vec<f64> {
    let (ho, wo) = (2 * height, 2 * width);
    let mut y = Vec::with_capacity(planes * ho * wo);
    for p in 0..planes {
        for oh in 0..ho {
            for ow in 0..wo {
                y.push(x[(p * height + oh / 2) * width + ow / 2]);
            }
        }
    }
    y
}

/// dx (P, H, W) = sum of dy over each 2x2 block of the (P, 2H, 2W) gradient.
pub fn upsample_nearest2d_backward(dy: &[f64], planes: usize, height: usize, width: usize) -> Vec<f64> {
    let wo = 2 * width;
    let mut dx = Vec::with_capacity(planes * height * width);
    for p in 0..planes {
        for ih in 0..height {
            for iw in 0..width {
                let top = (p * 2 * height + 2 * ih) * wo + 2 * iw;
                dx.push((dy[top] + dy[top + 1]) + (dy[top + wo] + dy[top + wo + 1]));
            }
        }
    }
    dx
}
