//! A wasmforge inference module: TVM kernels, execution plan and weights in
//! one wasm32-wasip1 program. The logic lives in `wasmforge_runtime::cli`.

use wasmforge_runtime::cli::{self, Model};

mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Gives embedded bytes 64-byte alignment: TVM kernels assume aligned data.
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

static PARAMS: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/params.bin")));
static PLAN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plan.json"));

fn main() {
    let model = Model { plan_json: PLAN, params: &PARAMS.0, kernels: kernels::KERNELS };
    std::process::exit(cli::main(&model));
}
