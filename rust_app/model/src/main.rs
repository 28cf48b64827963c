//! A wasmforge inference module: TVM kernels, execution plan and weights in
//! one wasm32-wasip1 program. The logic lives in `wasmforge_runtime::cli`
//! (the WASI command, `_start`) and `wasmforge_runtime::embed` (the embedding
//! ABI exported beside it, docs/embedding.md).
//!
//! The plan is Rust statics that build.rs generated from the validated
//! plan.json: nothing is parsed at start-up. Built with
//! `WASMFORGE_EXTERNAL_PARAMS=1` (see build.rs), the weights stay out of the
//! module: it embeds their size and SHA-256 and reads them from
//! `--params PATH`.

use wasmforge_runtime::cli::{self, BuildInfo, Model, Weights};

mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

mod graph {
    include!(concat!(env!("OUT_DIR"), "/plan.rs"));
}

/// `BUILD`: the features and preprocessing build.rs was given.
mod build_info {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// Gives embedded bytes 64-byte alignment: TVM kernels assume aligned data.
#[cfg(not(wasmforge_external_params))]
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

#[cfg(not(wasmforge_external_params))]
static PARAMS: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/params.bin")));

#[cfg(not(wasmforge_external_params))]
fn weights() -> Weights<'static> {
    Weights::Embedded(&PARAMS.0)
}

#[cfg(wasmforge_external_params)]
fn weights() -> Weights<'static> {
    use wasmforge_runtime::params::ExternalParams;
    static EXTERNAL: ExternalParams = include!(concat!(env!("OUT_DIR"), "/external_params.rs"));
    Weights::External(&EXTERNAL)
}

fn model() -> Model<'static> {
    let build: BuildInfo<'static> = build_info::BUILD;
    Model { plan: graph::PLAN, weights: weights(), kernels: kernels::KERNELS, build }
}

wasmforge_runtime::export_embedding_abi!(model());

fn main() {
    std::process::exit(cli::main(&model()));
}
