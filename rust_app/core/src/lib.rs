//! Core of a wasmforge inference module: what runs inside the `.wasm`.
//!
//! A module is TVM-compiled kernels (`libgraph_wasm32.a`), an execution plan
//! (docs/plan-format.md) and a weight blob (`params.bin`). This crate holds
//! the plan types and their validation, the executor (every tensor resolved
//! to a fixed address once, kernels called in order), the one zero-filled
//! 64-byte aligned buffer type, and the C symbols the kernels import.
//!
//! It knows no file format and no command line: the plan arrives as a
//! [`Plan`] value (Rust statics generated at build time by
//! `wasmforge-plan-json`), the weights as bytes. The shell
//! (`wasmforge-runtime`) adds the CLI, `.npy` and the params file. No
//! dependencies, so the module builds offline.

// Unsafe code is confined to the FFI boundary and aligned buffers; every
// unsafe operation sits in its own block with a SAFETY comment.
#![warn(unsafe_op_in_unsafe_fn)]

pub mod buf;
pub mod executor;
pub mod ffi;
pub mod plan;

mod error;

pub use buf::AlignedBuf;
pub use error::Error;
pub use executor::Executor;
pub use ffi::KernelFn;
pub use plan::{DType, Plan};
