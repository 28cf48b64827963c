//! plan.json -> validated Plan -> Rust source -> compiled statics: the same
//! Plan value, runnable by the executor.

use std::path::PathBuf;

use wasmforge_codegen_check::{no_model, FIXTURES};
use wasmforge_core::plan::TensorKind;
use wasmforge_core::Plan;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data").join(name)
}

fn parsed(name: &str) -> Plan {
    wasmforge_plan_json::parse(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

#[test]
fn every_fixture_compiles_to_the_same_plan() {
    assert!(FIXTURES.len() >= 2, "{}", FIXTURES.len());
    for &(name, plan) in FIXTURES {
        let statics = plan.expect(name);
        assert_eq!(statics, &parsed(name), "{name}");
        statics.validate().unwrap();
    }
    assert!(no_model::PLAN.is_none());
}

#[test]
fn statics_borrow_everything() {
    // A plan of statics owns nothing: cloning it for the executor copies no list.
    for &(name, plan) in FIXTURES {
        let plan = plan.unwrap();
        let borrowed = |b: bool| assert!(b, "{name}");
        borrowed(matches!(plan.model, std::borrow::Cow::Borrowed(_)));
        borrowed(matches!(plan.tensors, std::borrow::Cow::Borrowed(_)));
        borrowed(plan.tensors.iter().all(|t| matches!(t.shape, std::borrow::Cow::Borrowed(_))));
        borrowed(matches!(plan.calls, std::borrow::Cow::Borrowed(_)));
    }
}

#[test]
fn doc_example_statics() {
    let plan = FIXTURES.iter().find(|(n, _)| *n == "plan_doc_example.json").unwrap().1.unwrap();
    assert_eq!(plan.model, "lenet-digits");
    assert_eq!(plan.tensors[3].kind, TensorKind::View { of: 2 });
    assert_eq!(plan.tensors[3].nbytes(), 1536);
    assert_eq!(plan.kernel_names(), vec!["fused_conv2d_add_relu"]);
}

#[path = "../../core/tests/common/mod.rs"]
mod common;

#[test]
fn storage_reuse_statics_run() {
    use common::*;
    let plan = FIXTURES.iter().find(|(n, _)| *n == "plan_storage_reuse.json").unwrap().1.unwrap();
    let params = reuse_params();
    let mut ex = wasmforge_core::Executor::new(plan.clone(), &params.0, &REUSE_KERNELS).unwrap();
    let x = f32_bytes(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    let out = ex.run(&[&x]).unwrap();
    assert_eq!(f32s(out[0]), [0.0, 5.0, 0.0, 18.0, 0.0, 39.0]);
    assert_eq!(f32s(out[1]), [0.0, 2.5, 0.0, 4.5, 0.0, 6.5]);
}
