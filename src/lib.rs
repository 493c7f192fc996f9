//! latent: latent-variable generative models trained on any GPU through wgpu and hand-written WGSL.

pub mod data;
