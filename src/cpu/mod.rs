//! CPU twins of the kernels, in f64, one module per shader family. Each reads like its shader and is the
//! reference the GPU is compared with; backward twins are themselves checked by finite differences.

pub mod activation;
pub mod arith;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod diffusion;
pub mod groupnorm;
pub mod loss;
pub mod matmul;
pub mod mmd;
pub mod optim;
pub mod reduce;
pub mod reparam;
pub mod resample;
pub mod rng;
