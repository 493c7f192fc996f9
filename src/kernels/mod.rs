//! GPU launchers, one module per shader family: each turns typed arguments into a [`Dispatch`] of the
//! registry's entry points, and owns the `#[repr(C)]` twin of its shader's `Params` struct.
//!
//! Argument order follows llm.c: outputs first, then values saved from the forward pass, then inputs and
//! weights, then sizes. Gradients are named `d<name>`.
//!
//! [`Dispatch`]: crate::gpu::Dispatch

pub mod activation;
pub mod arith;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod conv_registers;
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

use crate::shaders::EntryPoint;

/// Checks that a Rust params struct has the size and member offsets naga gives its WGSL twin.
/// `fields` lists `(name, offset_of)` for every member, in order.
pub fn params_layout_mismatch(entry: &EntryPoint, rust_size: usize, fields: &[(&str, usize)]) -> Option<String> {
    let Some(layout) = entry.params_layout() else {
        return Some(format!("{} has no uniform params binding", entry.qualified_name()));
    };
    let wgsl: Vec<(&str, usize)> = layout.members.iter().map(|(n, o)| (*n, *o as usize)).collect();
    if layout.size as usize != rust_size || wgsl != fields {
        return Some(format!(
            "{}: WGSL struct {} is {} bytes with members {:?}, the Rust twin is {} bytes with {:?}",
            entry.qualified_name(),
            layout.name,
            layout.size,
            wgsl,
            rust_size,
            fields
        ));
    }
    None
}

/// `(name, offset)` pairs of a `#[repr(C)]` struct's fields, for [`params_layout_mismatch`].
#[macro_export]
macro_rules! field_offsets {
    ($ty:ty, [$($field:ident),* $(,)?]) => {
        [$((stringify!($field), std::mem::offset_of!($ty, $field))),*]
    };
}
