//! The embedding ABI (docs/embedding.md): a `Session` and the exported C
//! functions, with fake kernels on tests/data/plan_storage_reuse.json
//! (x [2, 3] -> hidden = relu(x + 0.5), y = hidden * [1..6]).

#[path = "../../core/tests/common/mod.rs"]
mod common;

use common::*;
use wasmforge_plan_json::json;
use wasmforge_runtime::cli::{BuildInfo, Model, Weights};
use wasmforge_runtime::embed::{Session, STATUS_MODEL, STATUS_OK, STATUS_USAGE};
use wasmforge_runtime::params::ExternalParams;
use wasmforge_runtime::KernelFn;

/// A model with 'static parts, as a module's statics are.
fn model_with(
    kernels: &'static [(&'static str, KernelFn)],
    build: BuildInfo<'static>,
) -> Model<'static> {
    let plan: &'static _ = Box::leak(Box::new(load_plan("plan_storage_reuse.json")));
    let params: &'static _ = Box::leak(reuse_params());
    Model { plan: Some(plan), weights: Weights::Embedded(&params.0), kernels, build }
}

fn model() -> Model<'static> {
    model_with(&REUSE_KERNELS, BuildInfo::default())
}

/// Writes `x` through the input pointer, as a host does.
fn write_input(s: &mut Session, x: &[f32]) {
    let bytes = f32_bytes(x);
    assert_eq!(s.input_len(0), bytes.len());
    let p = s.input_ptr(0);
    assert!(!p.is_null());
    assert_eq!(p as usize % 64, 0, "inputs are 64-byte aligned");
    // SAFETY: the session's input buffer holds input_len(0) bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
}

fn read_output(s: &mut Session, i: u32) -> Vec<f32> {
    let (p, n) = (s.output_ptr(i), s.output_len(i));
    assert!(!p.is_null());
    // SAFETY: the output buffer holds output_len(i) bytes after a run.
    f32s(unsafe { std::slice::from_raw_parts(p, n) })
}

#[test]
fn runs_repeatedly_on_memory_with_fixed_addresses() {
    let mut s = Session::new(model());
    assert_eq!(s.error(), "");
    assert_eq!((s.input_len(0), s.output_len(0), s.output_len(1)), (24, 24, 24));
    assert_eq!(s.init(), STATUS_OK);
    let (input, output) = (s.input_ptr(0), s.output_ptr(0));

    write_input(&mut s, &[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    assert_eq!(s.run(), STATUS_OK);
    assert_eq!(read_output(&mut s, 0), [0.0, 5.0, 0.0, 18.0, 0.0, 39.0]);
    assert_eq!(read_output(&mut s, 1), [0.0, 2.5, 0.0, 4.5, 0.0, 6.5]);

    // Again with other data: same buffers, new results (nothing stale).
    write_input(&mut s, &[1.0; 6]);
    assert_eq!(s.run(), STATUS_OK);
    assert_eq!(read_output(&mut s, 0), [1.5, 3.0, 4.5, 6.0, 7.5, 9.0]);
    assert_eq!((s.input_ptr(0), s.output_ptr(0)), (input, output));
    // The inputs are left as written: running twice gives the same outputs.
    assert_eq!(s.run(), STATUS_OK);
    assert_eq!(read_output(&mut s, 0), [1.5, 3.0, 4.5, 6.0, 7.5, 9.0]);
    assert_eq!(s.init(), STATUS_OK);
    assert_eq!(s.input_ptr(0), input, "init again allocates nothing new");
}

#[test]
fn info_is_the_json_of_dash_dash_info() {
    let build = BuildInfo {
        features: &["relaxed-simd", "simd128"],
        preprocessing: Some("x / 16\n\"8x8\""),
    };
    let s = Session::new(model_with(&REUSE_KERNELS, build));
    let value = json::parse(s.info()).unwrap();
    assert!(
        s.info().ends_with(
            ", \"abi\": 1, \"features\": [\"relaxed-simd\", \"simd128\"], \
         \"preprocessing\": \"x / 16\\n\\\"8x8\\\"\"}"
        ),
        "{}",
        s.info()
    );
    assert!(value.get("inputs").is_some() && value.get("outputs").is_some());
    assert!(!s.info().contains('\n'), "one line");
}

#[test]
fn bad_indexes_give_null_zero_and_a_message() {
    let mut s = Session::new(model());
    assert_eq!((s.input_len(1), s.output_len(2)), (0, 0));
    assert!(s.input_ptr(1).is_null());
    assert_eq!(s.error(), "no input 1: the model has 1");
    assert!(s.output_ptr(2).is_null());
    assert_eq!(s.error(), "no output 2: the model has 2");
    // The session still works.
    write_input(&mut s, &[0.0; 6]);
    assert_eq!(s.run(), STATUS_OK);
}

#[test]
fn kernel_failure_is_status_1_and_the_next_run_can_succeed() {
    static FAILING: [(&str, KernelFn); 3] = [("add", add), ("mul", mul), ("relu", fail)];
    let mut s = Session::new(model_with(&FAILING, BuildInfo::default()));
    write_input(&mut s, &[1.0; 6]);
    assert_eq!(s.run(), STATUS_MODEL);
    assert!(s.error().starts_with("kernel 'relu' failed"), "{}", s.error());
    assert!(!s.error().contains('\n'));
    assert_eq!(s.run(), STATUS_MODEL, "the same failure again, no crash");

    let mut ok = Session::new(model());
    write_input(&mut ok, &[1.0; 6]);
    assert_eq!(ok.run(), STATUS_OK);
}

#[test]
fn no_model_and_external_weights_are_refused() {
    let mut s = Session::new(Model {
        plan: None,
        weights: Weights::Embedded(&[]),
        kernels: &[],
        build: BuildInfo::default(),
    });
    assert_eq!(s.info(), "");
    assert_eq!(s.run(), STATUS_USAGE);
    assert_eq!(s.error(), "no model embedded (build with WASMFORGE_GRAPH_DIR)");
    assert!(s.input_ptr(0).is_null() && s.output_ptr(0).is_null());
    assert_eq!(s.input_len(0), 0);

    static EXTERNAL: ExternalParams = ExternalParams { size: 128, sha256: [0; 32] };
    let plan: &'static _ = Box::leak(Box::new(load_plan("plan_storage_reuse.json")));
    let mut s = Session::new(Model {
        plan: Some(plan),
        weights: Weights::External(&EXTERNAL),
        kernels: &REUSE_KERNELS,
        build: BuildInfo::default(),
    });
    assert!(s.info().contains("\"params\": {\"external\": true"));
    assert_eq!(s.init(), STATUS_USAGE);
    assert!(
        s.error().contains("the embedding ABI needs a module that embeds them"),
        "{}",
        s.error()
    );
}

// The exported C functions, as a module's model crate exports them.
wasmforge_runtime::export_embedding_abi!(model());

#[test]
fn exported_functions_drive_one_session() {
    use wasmforge_embedding_abi::*;

    assert_eq!(wasmforge_abi_version(), 1);
    // SAFETY: the pointers and lengths come from the module, as a host's do.
    let info = unsafe { std::slice::from_raw_parts(wasmforge_info_ptr(), wasmforge_info_len()) };
    assert!(json::parse(std::str::from_utf8(info).unwrap()).unwrap().get("model").is_some());
    assert_eq!(wasmforge_init(), STATUS_OK);
    for round in 0..3 {
        let x: Vec<f32> = (0..6).map(|i| (i + round) as f32).collect();
        let bytes = f32_bytes(&x);
        assert_eq!(wasmforge_input_len(0), bytes.len());
        // SAFETY: input_len(0) bytes at input_ptr(0).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), wasmforge_input_ptr(0), bytes.len())
        };
        assert_eq!(wasmforge_run(), STATUS_OK);
        // SAFETY: output_len(1) bytes at output_ptr(1).
        let hidden = f32s(unsafe {
            std::slice::from_raw_parts(wasmforge_output_ptr(1), wasmforge_output_len(1))
        });
        let want: Vec<f32> = x.iter().map(|v| (v + 0.5).max(0.0)).collect();
        assert_eq!(hidden, want, "round {round}");
    }
    assert!(wasmforge_input_ptr(7).is_null());
    // SAFETY: error_len() bytes at error_ptr().
    let error = unsafe { std::slice::from_raw_parts(wasmforge_error_ptr(), wasmforge_error_len()) };
    assert_eq!(error, b"no input 7: the model has 1");
}
