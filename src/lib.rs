//! latent: latent-variable generative models trained on any GPU through wgpu and hand-written WGSL.
//!
//! Layers, bottom up (see ARCHITECTURE.md):
//! - [`shaders`]: the typed registry of `shaders/*.wgsl`, generated and validated by `build.rs`;
//! - [`gpu`]: the headless context, kernels, buffers and dispatches;
//! - [`kernels`]: typed launchers per shader family, and [`cpu`]: their f64 CPU twins;
//! - [`check`]: GPU-against-twin comparison, for tests and `latent check`;
//! - [`data`]: datasets and batching;
//! - [`profile`] and [`bench`]: per-kernel GPU time of a plan, kernel throughput and training-step time.

pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod commands;
pub mod cpu;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod fid;
pub mod generate;
pub mod gpu;
pub mod graph;
pub mod kernels;
pub mod models;
pub mod optim;
pub mod parallel;
pub mod peak;
pub mod plan;
pub mod profile;
pub mod recipe;
pub mod run;
pub mod shaders;
pub mod swd;
pub mod train;
