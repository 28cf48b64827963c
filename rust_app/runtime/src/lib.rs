//! Runtime of a wasmforge inference module.
//!
//! A module is TVM-compiled kernels (`libgraph_wasm32.a`), an execution plan
//! (`plan.json`, see `docs/plan-format.md`) and a weight blob (`params.bin`).
//! This crate parses and validates the plan, resolves every tensor to a fixed
//! address once, calls the kernels in order and provides the C symbols the
//! kernels import. It has no dependencies so the module builds offline.
//! A module built with external weights reads `params.bin` from a file and
//! checks it against the size and SHA-256 it embeds (`params`, `sha256`).

// Unsafe code is confined to the FFI boundary and aligned buffers; every
// unsafe operation sits in its own block with a SAFETY comment.
#![warn(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod executor;
pub mod ffi;
pub mod json;
pub mod npy;
pub mod params;
pub mod plan;
pub mod sha256;

mod error;

pub use error::Error;
pub use executor::Executor;
pub use ffi::KernelFn;
pub use plan::{DType, Plan};
