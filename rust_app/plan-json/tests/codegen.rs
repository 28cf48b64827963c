//! The statics generator on its own (codegen-check compiles its output and
//! compares the values).

use std::path::PathBuf;

use wasmforge_core::plan::Io;
use wasmforge_core::Plan;
use wasmforge_plan_json::codegen::{largest_number, module_source};
use wasmforge_plan_json::parse;

fn load(name: &str) -> Plan {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data").join(name);
    parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn no_model_is_one_none() {
    assert_eq!(
        module_source(None, "::k"),
        "// Generated from plan.json by wasmforge-plan-json. Do not edit.\n\n\
         pub static PLAN: Option<&::k::plan::Plan> = None;\n"
    );
}

#[test]
fn doc_example_source() {
    let s = module_source(Some(&load("plan_doc_example.json")), "::wasmforge_runtime");
    for line in [
        "use ::wasmforge_runtime::plan::{Call, DType, Io, Plan, Tensor, TensorKind};",
        "pub static PLAN: Option<&Plan> = Some(&GRAPH);",
        "    model: Borrowed(\"lenet-digits\"),",
        "    params_size: 123456,",
        "    storages: Borrowed(&[4096]),",
        "static TENSORS: [Tensor; 4] = [",
        "    Tensor { dtype: DType::F32, shape: Borrowed(&[1, 1, 8, 8]), kind: TensorKind::Input { index: 0 } },",
        "    Tensor { dtype: DType::F32, shape: Borrowed(&[1, 6, 8, 8]), kind: TensorKind::Storage { storage: 0, offset: 0 } },",
        "    Tensor { dtype: DType::F32, shape: Borrowed(&[1, 384]), kind: TensorKind::View { of: 2 } },",
        "    Call { kernel: Borrowed(\"fused_conv2d_add_relu\"), args: Borrowed(&[0, 1, 2]), op: Some(Borrowed(\"conv2d\")), flops: Some(7680) },",
        "static OUTPUTS: [Io; 1] = [",
        "    Io { name: Borrowed(\"logits\"), tensor: 3 },",
    ] {
        assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
    }
}

#[test]
fn output_is_deterministic_and_has_no_paths() {
    let plan = load("plan_storage_reuse.json");
    let a = module_source(Some(&plan), "::wasmforge_runtime");
    // The same plan read again, and an owned deep copy: the same text.
    assert_eq!(a, module_source(Some(&load("plan_storage_reuse.json")), "::wasmforge_runtime"));
    assert_eq!(a, module_source(Some(&plan.clone()), "::wasmforge_runtime"));
    let manifest = env!("CARGO_MANIFEST_DIR");
    assert!(!a.contains(manifest) && !a.contains("/tmp") && !a.contains("include!"), "{a}");
}

#[test]
fn names_are_escaped_as_rust_literals() {
    // Names are free text: quotes, backslashes, newlines and braces.
    let mut plan = load("plan_doc_example.json");
    plan.model = "a \"b\" \\ c\n{d}".into();
    plan.outputs = vec![Io { name: "x\u{7f}é".into(), tensor: 3 }].into();
    let s = module_source(Some(&plan), "::k");
    assert!(s.contains(r#"    model: Borrowed("a \"b\" \\ c\n{d}"),"#), "{s}");
    assert!(s.contains(r#"Io { name: Borrowed("x\u{7f}é"), tensor: 3 }"#), "{s}");
}

#[test]
fn largest_number_covers_every_field() {
    let plan = load("plan_doc_example.json");
    assert_eq!(largest_number(&plan), 123456);
    let mut big = plan.clone();
    big.storages = vec![4096, 1 << 33].into();
    assert_eq!(largest_number(&big), 1 << 33);
    let mut big = plan;
    let mut tensors = big.tensors.to_vec();
    tensors[3].shape = vec![0, 5_000_000_000].into();
    big.tensors = tensors.into();
    assert_eq!(largest_number(&big), 5_000_000_000);
}
