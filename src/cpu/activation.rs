//! CPU twin of `shaders/activation.wgsl`.

use crate::kernels::activation::Activation;

fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// y = f(x)
pub fn forward(activation: Activation, x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| match activation {
            Activation::Relu => v.max(0.0),
            Activation::LeakyRelu { slope } => {
                if v > 0.0 {
                    v
                } else {
                    slope as f64 * v
                }
            }
            Activation::Sigmoid => sigmoid(v),
            Activation::Tanh => v.tanh(),
            Activation::Silu => v * sigmoid(v),
        })
        .collect()
}

/// dx = dy * f'(x)
pub fn backward(activation: Activation, x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let derivative = match activation {
                Activation::Relu => {
                    if v > 0.0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                Activation::LeakyRelu { slope } => {
                    if v > 0.0 {
                        1.0
                    } else {
                        slope as f64
                    }
                }
                Activation::Sigmoid => sigmoid(v) * (1.0 - sigmoid(v)),
                Activation::Tanh => 1.0 - v.tanh() * v.tanh(),
                Activation::Silu => sigmoid(v) * (1.0 + v * (1.0 - sigmoid(v))),
            };
            g * derivative
        })
        .collect()
}
