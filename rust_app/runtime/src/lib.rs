//! Shell of a wasmforge inference module: the command line ([`cli`]), the
//! embedding ABI for hosts that hand it memory ([`embed`]), `.npy` reading
//! and writing ([`npy`]), and weights kept in a separate file,
//! checked against the size and SHA-256 the module embeds ([`params`],
//! [`sha256`]).
//!
//! Plan types, validation, the executor and the tvm-ffi symbols are in
//! `wasmforge-core`, re-exported here so a module depends on this one crate.
//! With the `plan-json` feature (model/build.rs only) the build-time plan
//! reader and statics generator are re-exported as [`plan_json`].

#![warn(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod embed;
pub mod npy;
pub mod params;
pub mod profile;
pub mod sha256;

pub use wasmforge_core::{buf, executor, ffi, plan};
pub use wasmforge_core::{AlignedBuf, DType, Error, Executor, KernelFn, Plan};

#[cfg(feature = "plan-json")]
pub use wasmforge_plan_json as plan_json;

/// The exit code of a module failing with this error: 2 for anything the
/// caller can fix (flags and input data), 1 when the module itself fails
/// (a kernel error, or a broken build).
pub trait ExitCode {
    fn exit_code(&self) -> i32;
}

impl ExitCode for Error {
    fn exit_code(&self) -> i32 {
        match self {
            Error::Kernel(_) | Error::Model(_) | Error::Plan(_) | Error::Json(_) => 1,
            Error::Npy(_) | Error::Input(_) | Error::Io(_) | Error::Usage(_) => 2,
        }
    }
}
