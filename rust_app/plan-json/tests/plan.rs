//! Plan reading and validation against the shared example files in
//! runtime/tests/data/ (the Python writer tests against the same files). The
//! JSON-level rules are this crate's; the others are `Plan::validate` of
//! wasmforge-core, the same code the executor runs.

use std::path::PathBuf;

use wasmforge_core::plan::{Call, Io, Plan, TensorKind};
use wasmforge_core::{DType, Error};
use wasmforge_plan_json::parse;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data").join(name)
}

fn load(name: &str) -> Result<Plan, Error> {
    parse(&std::fs::read_to_string(data(name)).unwrap())
}

#[test]
fn doc_example_is_valid() {
    let plan = load("plan_doc_example.json").unwrap();
    assert_eq!(plan.model, "lenet-digits");
    assert_eq!(plan.params_size, 123456);
    assert_eq!(plan.storages, vec![4096]);
    assert_eq!(plan.tensors.len(), 4);
    let t = &plan.tensors[1];
    assert_eq!((t.dtype, &t.shape[..], t.nbytes()), (DType::F32, &[6, 1, 3, 3][..], 216));
    assert_eq!(t.kind, TensorKind::Param { offset: 0 });
    assert_eq!(plan.tensors[0].kind, TensorKind::Input { index: 0 });
    assert_eq!(plan.tensors[2].kind, TensorKind::Storage { storage: 0, offset: 0 });
    assert_eq!(plan.tensors[3].kind, TensorKind::View { of: 2 });
    assert_eq!(plan.tensors[3].nbytes(), 1536);
    assert_eq!(
        plan.calls,
        vec![Call {
            kernel: "fused_conv2d_add_relu".into(),
            args: vec![0, 1, 2].into(),
            op: Some("conv2d".into()),
            flops: Some(7680)
        }]
    );
    assert_eq!(plan.inputs, vec![Io { name: "input".into(), tensor: 0 }]);
    assert_eq!(plan.outputs, vec![Io { name: "logits".into(), tensor: 3 }]);
    assert_eq!(plan.kernel_names(), vec!["fused_conv2d_add_relu"]);
}

#[test]
fn storage_reuse_example_is_valid() {
    let plan = load("plan_storage_reuse.json").unwrap();
    assert_eq!(plan.kernel_names(), vec!["add", "mul", "relu"]);
    assert_eq!(plan.outputs.len(), 2);
}

#[test]
fn every_bad_plan_gives_its_error() {
    let cases = [
        ("bad_format_2.json", "format: unsupported plan format 2 (this runtime reads format 1)"),
        ("bad_format_missing.json", "format: missing required key"),
        ("bad_format_string.json", "format: expected the integer 1, got a string"),
        ("bad_missing_tensors.json", "tensors: missing required key"),
        ("bad_missing_params_size.json", "params_size: missing required key"),
        ("bad_shape_type.json", "tensors[0].shape: expected an array, got a string"),
        ("bad_negative_dim.json", "tensors[0].shape[1]: expected a non-negative integer"),
        ("bad_float_size.json", "storages[0].size: expected a non-negative integer"),
        ("bad_dtype.json", "tensors[1].dtype: unsupported dtype \"complex64\""),
        ("bad_kind.json", "tensors[1].kind: unknown kind \"constant\""),
        ("bad_missing_offset.json", "tensors[1].offset: missing required key"),
        ("bad_call_arg_range.json", "calls[0].args[2]: tensor index 9 out of range (there are 4)"),
        ("bad_kernel_name.json", "calls[0].kernel: kernel name must be non-empty"),
        (
            "bad_storage_index.json",
            "tensors[2].storage: storage index 3 out of range (there are 1)",
        ),
        (
            "bad_storage_overflow.json",
            "1536 bytes at offset 4000 do not fit in storage 0 of 4096 bytes",
        ),
        ("bad_param_unaligned.json", "tensors[1].offset: param offset 32 is not a multiple of 64"),
        ("bad_param_overflow.json", "216 bytes at offset 0 do not fit in params.bin of 128 bytes"),
        ("bad_view_forward.json", "tensors[3].of: a view must refer to an earlier tensor, got 3"),
        ("bad_view_too_big.json", "view of 1540 bytes exceeds the 1536 bytes of tensor 2"),
        ("bad_input_kind.json", "inputs[0].tensor: tensor 2 must have kind \"input\" with index 0"),
        ("bad_input_index.json", "tensors[0].index: input index 1 out of range (there are 1)"),
        ("bad_duplicate_input.json", "tensors[4].index: input 0 is used by two tensors"),
        ("bad_output_range.json", "outputs[0].tensor: tensor index 7 out of range (there are 4)"),
        ("bad_size_overflow.json", "tensors[2].shape: tensor byte size overflows"),
        ("bad_not_object.json", "invalid plan: expected an object"),
        ("bad_flops_negative.json", "calls[0].flops: expected a non-negative integer"),
    ];
    let mut checked = 0;
    for (file, expected) in cases {
        match load(file) {
            Err(Error::Plan(msg)) => {
                assert!(msg.contains(expected), "{file}: {msg:?} lacks {expected:?}")
            }
            other => panic!("{file}: expected a plan error, got {other:?}"),
        }
        checked += 1;
    }
    assert!(matches!(load("bad_json_syntax.json"), Err(Error::Json(_))));
    // Every bad_*.json file in tests/data is covered above.
    let on_disk = std::fs::read_dir(data(""))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("bad_"))
        .count();
    assert_eq!(on_disk, checked + 1);
}

/// The doc example with `edit` applied to its text.
fn doc_with(from: &str, to: &str) -> Result<Plan, Error> {
    let text = std::fs::read_to_string(data("plan_doc_example.json")).unwrap();
    assert!(text.contains(from), "{from:?}");
    parse(&text.replacen(from, to, 1))
}

#[test]
fn unknown_keys_are_ignored() {
    let plan = doc_with("\"format\": 1,", "\"format\": 1, \"future\": {\"x\": [1, 2]},").unwrap();
    assert_eq!(plan, load("plan_doc_example.json").unwrap());
}

#[test]
fn every_dtype_name_parses() {
    for (name, size, code) in [
        ("float16", 2, 2),
        ("float32", 4, 2),
        ("float64", 8, 2),
        ("int8", 1, 0),
        ("int16", 2, 0),
        ("int32", 4, 0),
        ("int64", 8, 0),
        ("uint8", 1, 1),
        ("uint16", 2, 1),
        ("uint32", 4, 1),
        ("uint64", 8, 1),
        ("bool", 1, 6),
    ] {
        let d = DType::from_name(name).unwrap();
        assert_eq!(
            (d.name(), d.itemsize(), d.dl_code(), d.bits()),
            (name, size, code, (size * 8) as u8)
        );
    }
    assert_eq!(DType::from_name("float"), None);
}

#[test]
fn scalars_and_empty_tensors() {
    // A scalar (shape []) has one element; a zero dimension has no bytes.
    let plan = doc_with("[1, 384]", "[]").unwrap();
    assert_eq!(plan.tensors[3].nbytes(), 4);
    let plan = doc_with("[1, 384]", "[0, 384]").unwrap();
    assert_eq!(plan.tensors[3].nbytes(), 0);
}

#[test]
fn views_of_views_are_checked_against_their_base() {
    let last = r#"{"dtype": "float32", "shape": [1, 384],     "kind": "view",    "of": 2}"#;
    // Tensor 4 views tensor 3, itself a view of tensor 2 (1536 bytes).
    let chain = |shape: &str, of: usize| {
        let extra =
            format!(r#"{last}, {{"dtype": "int8", "shape": {shape}, "kind": "view", "of": {of}}}"#);
        doc_with(last, &extra)
    };
    assert!(chain("[1536]", 3).is_ok());
    let e = chain("[1537]", 3).unwrap_err();
    assert!(
        e.message().contains("tensors[4]: view of 1537 bytes exceeds the 1536 bytes of tensor 3"),
        "{e}"
    );
    let e = chain("[1536]", 4).unwrap_err();
    assert!(
        e.message().contains("tensors[4].of: a view must refer to an earlier tensor, got 4"),
        "{e}"
    );
}

#[test]
fn wrong_types_are_named() {
    let e = doc_with("\"model\": \"lenet-digits\"", "\"model\": 3").unwrap_err();
    assert_eq!(e.message(), "invalid plan: model: expected a string, got a number");
    let e = doc_with("\"storages\": [ {\"size\": 4096} ]", "\"storages\": [ 4096 ]").unwrap_err();
    assert_eq!(e.message(), "invalid plan: storages[0]: expected an object, got a number");
    let e = doc_with("\"args\": [0, 1, 2]", "\"args\": [0, 1.0, 2]").unwrap_err();
    assert_eq!(e.message(), "invalid plan: calls[0].args[1]: expected a non-negative integer");
    let e = doc_with("\"op\": \"conv2d\"", "\"op\": 2").unwrap_err();
    assert_eq!(e.message(), "invalid plan: calls[0].op: expected a string, got a number");
    let e = doc_with("\"flops\": 7680", "\"flops\": 1.5").unwrap_err();
    assert_eq!(e.message(), "invalid plan: calls[0].flops: expected a non-negative integer");
}

#[test]
fn op_and_flops_are_optional() {
    // Plans written before they existed (format 1 all the same) still read.
    let plan = doc_with(", \"op\": \"conv2d\", \"flops\": 7680", "").unwrap();
    assert_eq!((plan.calls[0].op.as_deref(), plan.calls[0].flops), (None, None));
    let plan = load("plan_doc_example.json").unwrap();
    assert_eq!((plan.calls[0].op.as_deref(), plan.calls[0].flops), (Some("conv2d"), Some(7680)));
}
