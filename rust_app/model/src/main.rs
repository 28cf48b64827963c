//! A wasmforge inference module: TVM kernels, execution plan and weights in
//! one wasm32-wasip1 program. The logic lives in `wasmforge_runtime::cli`.
//!
//! Built with `WASMFORGE_EXTERNAL_PARAMS=1` (see build.rs), the weights stay
//! out of the module: it embeds their size and SHA-256 and reads them from
//! `--params PATH` (`wasmforge_runtime::cli::main_external`).

#[cfg(not(wasmforge_external_params))]
use wasmforge_runtime::cli::{self, Model};

mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Gives embedded bytes 64-byte alignment: TVM kernels assume aligned data.
#[cfg(not(wasmforge_external_params))]
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

#[cfg(not(wasmforge_external_params))]
static PARAMS: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/params.bin")));
static PLAN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plan.json"));

#[cfg(not(wasmforge_external_params))]
fn main() {
    let model = Model { plan_json: PLAN, params: &PARAMS.0, kernels: kernels::KERNELS };
    std::process::exit(cli::main(&model));
}

#[cfg(wasmforge_external_params)]
fn main() {
    use wasmforge_runtime::params::ExternalParams;
    const EXTERNAL: ExternalParams = include!(concat!(env!("OUT_DIR"), "/external_params.rs"));
    std::process::exit(wasmforge_runtime::cli::main_external(PLAN, &EXTERNAL, kernels::KERNELS));
}
