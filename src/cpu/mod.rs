//! CPU twins of the kernels, in f64, one module per shader family. Each reads like its shader and is the
//! reference the GPU is compared with; backward twins are themselves checked by finite differences.

pub mod activation;
pub mod arith;
pub mod diffusion;
pub mod optim;
