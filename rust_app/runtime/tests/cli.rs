//! The command line: flag parsing, and whole runs in-process with fake
//! kernels on tests/data/plan_storage_reuse.json.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::io::Cursor;
use std::path::PathBuf;

use common::*;
use wasmforge_plan_json::json::{self, Value};
use wasmforge_runtime::cli::{
    self, error_line, parse_args, quote, BuildInfo, Model, Options, Weights,
};
use wasmforge_runtime::plan::Io;
use wasmforge_runtime::{npy, DType, Error, ExitCode, Plan};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Output of one in-process run: result, stdout, stderr.
struct Outcome {
    result: Result<(), Error>,
    stdout: Vec<u8>,
    stderr: String,
}

fn run_with(plan: Option<&Plan>, argv: &[&str], stdin: &[u8]) -> Outcome {
    let params = reuse_params();
    let model = Model {
        plan,
        weights: Weights::Embedded(&params.0),
        kernels: &REUSE_KERNELS,
        build: BuildInfo::default(),
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = cli::run(&model, &args(argv), &mut Cursor::new(stdin), &mut stdout, &mut stderr);
    Outcome { result, stdout, stderr: String::from_utf8(stderr).unwrap() }
}

fn run(argv: &[&str], stdin: &[u8]) -> Outcome {
    run_with(Some(&load_plan("plan_storage_reuse.json")), argv, stdin)
}

fn x_npy(values: &[f32]) -> Vec<u8> {
    let mut b = Vec::new();
    npy::write(&mut b, DType::F32, &[2, 3], &f32_bytes(values)).unwrap();
    b
}

/// A fresh path in the temp directory, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("wasmforge-cli-{}-{name}", std::process::id())))
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_f32(bytes: &[u8], shape: &[usize]) -> Vec<f32> {
    f32s(&npy::read_expected(&mut Cursor::new(bytes), DType::F32, shape).unwrap())
}

#[test]
fn parses_flags() {
    let o = parse_args(
        &args(&["--input", "a.npy", "--input=-", "--output", "-", "--repeat", "3"]),
        false,
    )
    .unwrap();
    let expected = Options {
        inputs: args(&["a.npy", "-"]),
        outputs: args(&["-"]),
        repeat: Some(3),
        ..Options::default()
    };
    assert_eq!(o, expected);
    assert!(parse_args(&args(&["--info"]), false).unwrap().info);
    assert!(parse_args(&args(&["-h"]), false).unwrap().help);
    assert_eq!(parse_args(&[], false).unwrap(), Options::default());
    // `--params` is a flag of modules with external weights only.
    let o = parse_args(&args(&["--params", "w.bin", "--info"]), true).unwrap();
    assert_eq!((o.params.as_deref(), o.info), (Some("w.bin"), true));
    assert_eq!(parse_args(&args(&["--params=-"]), true).unwrap().params.as_deref(), Some("-"));
    assert!(parse_args(&args(&["--params", "w.bin"]), false).is_err());
}

#[test]
fn bad_flags_are_usage_errors() {
    let cases: [(&[&str], &str); 9] = [
        (&["--input"], "--input needs a value"),
        (&["--input", "--output", "o"], "--input needs a value"),
        (&["--input="], "--input needs a value"),
        (&["--repeat", "0"], "--repeat needs a positive integer, got '0'"),
        (&["--repeat", "x"], "--repeat needs a positive integer, got 'x'"),
        (&["--repeat", "-1"], "--repeat needs a positive integer, got '-1'"),
        (&["--info=yes"], "--info takes no value"),
        (&["--bogus"], "unknown argument '--bogus' (see --help)"),
        (&["in.npy"], "unknown argument 'in.npy' (see --help)"),
    ];
    for (argv, expected) in cases {
        let err = parse_args(&args(argv), false).unwrap_err();
        assert_eq!(err, Error::Usage(expected.into()), "{argv:?}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn info_describes_inputs_and_outputs() {
    let o = run(&["--info"], b"");
    o.result.unwrap();
    let line = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        line,
        "{\"model\": \"storage-reuse\", \
         \"inputs\": [{\"name\": \"x\", \"dtype\": \"float32\", \"shape\": [2, 3]}], \
         \"outputs\": [{\"name\": \"y\", \"dtype\": \"float32\", \"shape\": [6]}, \
         {\"name\": \"hidden\", \"dtype\": \"float32\", \"shape\": [2, 3]}], \"abi\": 1}\n"
    );
    assert!(json::parse(&line).unwrap().is_object());
}

#[test]
fn runs_from_files_and_stdin_to_files_and_stdout() {
    let (input, y) = (TempPath::new("in.npy"), TempPath::new("y.npy"));
    std::fs::write(&input.0, x_npy(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0])).unwrap();
    let o = run(&["--input", input.s(), "--output", y.s(), "--output", "-"], b"");
    o.result.unwrap();
    assert_eq!(o.stderr, "", "no --repeat, no timing line");
    assert_eq!(read_f32(&std::fs::read(&y.0).unwrap(), &[6]), [0.0, 5.0, 0.0, 18.0, 0.0, 39.0]);
    assert_eq!(read_f32(&o.stdout, &[2, 3]), [0.0, 2.5, 0.0, 4.5, 0.0, 6.5]);

    let o = run(&["--input", "-", "--output", "-", "--output", y.s()], &x_npy(&[1.0; 6]));
    o.result.unwrap();
    assert_eq!(read_f32(&o.stdout, &[6]), [1.5, 3.0, 4.5, 6.0, 7.5, 9.0]);
}

#[test]
fn repeat_prints_one_timing_line() {
    let y = TempPath::new("rep.npy");
    let o = run(
        &["--input", "-", "--output", "-", "--output", y.s(), "--repeat", "3"],
        &x_npy(&[1.0; 6]),
    );
    o.result.unwrap();
    assert_eq!(o.stderr.lines().count(), 1);
    let v = json::parse(&o.stderr).unwrap();
    let times = v.get("run_ms").and_then(Value::as_array).unwrap();
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|t| matches!(t, Value::Float(ms) if *ms >= 0.0)));
    assert_eq!(read_f32(&o.stdout, &[6]), [1.5, 3.0, 4.5, 6.0, 7.5, 9.0]);
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let two_out = ["--output", "-", "--output", "/dev/null"];
    let with = |extra: &[&'static str]| [extra, &two_out[..]].concat();
    let mut f64_input = Vec::new();
    npy::write(&mut f64_input, DType::F64, &[1, 8, 8], &[0u8; 512]).unwrap();

    let cases: Vec<(Vec<&str>, Vec<u8>, Error)> = vec![
        (
            with(&["--input", "-"]),
            f64_input,
            Error::Input("input 'x': expected float32 [2, 3], got float64 [1, 8, 8]".into()),
        ),
        (
            with(&["--input", "-"]),
            b"not numpy".to_vec(),
            Error::Npy("input 'x': stdin: not a .npy file (bad magic)".into()),
        ),
        (
            with(&["--input", "/nonexistent/in.npy"]),
            vec![],
            Error::Io("input 'x': cannot open '/nonexistent/in.npy': No such file or directory (os error 2)".into()),
        ),
        (
            with(&[]),
            vec![],
            Error::Usage("expected 1 --input (one per graph input: 'x'), got 0".into()),
        ),
        (
            vec!["--input", "-", "--output", "-"],
            vec![],
            Error::Usage("expected 2 --output (one per graph output: 'y', 'hidden'), got 1".into()),
        ),
        (
            vec!["--input", "-", "--output", "-", "--output", "-"],
            vec![],
            Error::Usage("only one --output can be '-'".into()),
        ),
    ];
    for (argv, stdin, expected) in cases {
        let o = run(&argv, &stdin);
        assert_eq!(o.result.as_ref().unwrap_err(), &expected, "{argv:?}");
        assert_eq!(expected.exit_code(), 2);
        assert!(o.stdout.is_empty() && o.stderr.is_empty());
    }
}

#[test]
fn unwritable_output_is_an_error() {
    let o = run(
        &["--input", "-", "--output", "/nonexistent/y.npy", "--output", "-"],
        &x_npy(&[1.0; 6]),
    );
    let err = o.result.unwrap_err();
    assert!(err.message().starts_with("output 'y': cannot create '/nonexistent/y.npy'"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn kernel_failure_exits_1() {
    let params = reuse_params();
    let plan = load_plan("plan_storage_reuse.json");
    let model = Model {
        plan: Some(&plan),
        weights: Weights::Embedded(&params.0),
        kernels: &[("add", add), ("mul", mul), ("relu", fail)],
        build: BuildInfo::default(),
    };
    let argv = args(&["--input", "-", "--output", "-", "--output", "/dev/null"]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let e = cli::run(&model, &argv, &mut Cursor::new(x_npy(&[1.0; 6])), &mut out, &mut err)
        .unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(out.is_empty(), "no output after a failure");
    assert_eq!(
        error_line(&e),
        "error: kernel 'relu' failed (code -1): ValueError: Invalid matmul.shape[0], expected 3"
    );
}

#[test]
fn error_line_is_one_line() {
    let e = Error::Kernel("Traceback:\n  line 1\r\n  line 2".into());
    assert_eq!(error_line(&e), "error: Traceback:   line 1    line 2");
}

#[test]
fn no_model_and_broken_model() {
    let o = run_with(None, &["--info"], b"");
    let err = o.result.unwrap_err();
    assert_eq!(error_line(&err), "error: no model embedded (build with WASMFORGE_GRAPH_DIR)");
    assert_eq!(err.exit_code(), 2);

    // A plan value that breaks the format (build.rs would have refused it).
    let mut plan = load_plan("plan_storage_reuse.json");
    plan.outputs = vec![Io { name: "y".into(), tensor: 99 }].into();
    let o = run_with(Some(&plan), &["--info"], b"");
    let err = o.result.unwrap_err();
    assert_eq!(
        err.message(),
        "embedded plan: invalid plan: outputs[0].tensor: tensor index 99 out of range (there are 8)"
    );
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn help_goes_to_stdout() {
    let o = run(&["--help"], b"");
    o.result.unwrap();
    assert!(String::from_utf8(o.stdout).unwrap().starts_with("usage: wasmforge-model --input"));
}

// Modules built with `--external-params`: the same runs with the weights read
// from `--params PATH` and checked against the size and sha256 built in.

use wasmforge_runtime::params::ExternalParams;
use wasmforge_runtime::sha256;

fn run_external_with(external: &ExternalParams, argv: &[&str], stdin: &[u8]) -> Outcome {
    let plan = load_plan("plan_storage_reuse.json");
    let model = Model {
        plan: Some(&plan),
        weights: Weights::External(external),
        kernels: &REUSE_KERNELS,
        build: BuildInfo::default(),
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = cli::run(&model, &args(argv), &mut Cursor::new(stdin), &mut stdout, &mut stderr);
    Outcome { result, stdout, stderr: String::from_utf8(stderr).unwrap() }
}

fn reuse_external() -> ExternalParams {
    let params = reuse_params();
    ExternalParams { size: params.0.len() as u64, sha256: sha256::digest(&params.0) }
}

fn run_external(argv: &[&str], stdin: &[u8]) -> Outcome {
    run_external_with(&reuse_external(), argv, stdin)
}

#[test]
fn external_params_run_like_embedded_ones() {
    let params = TempPath::new("ext-ok.params.bin");
    std::fs::write(&params.0, reuse_params().0).unwrap();
    let x = x_npy(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    let y = TempPath::new("ext-y.npy");
    let embedded = run(&["--input", "-", "--output", y.s(), "--output", "-"], &x);
    embedded.result.unwrap();
    let inline = format!("--params={}", params.s());
    for flag in [vec!["--params", params.s()], vec![inline.as_str()]] {
        // Anywhere among the other flags.
        let mut argv = vec!["--input", "-", "--output", y.s(), "--output", "-"];
        argv.splice(2..2, flag);
        let o = run_external(&argv, &x);
        o.result.unwrap();
        assert_eq!(o.stdout, embedded.stdout);
        assert_eq!(read_f32(&std::fs::read(&y.0).unwrap(), &[6]), [0.0, 5.0, 0.0, 18.0, 0.0, 39.0]);
    }
}

#[test]
fn external_params_are_required_and_checked() {
    let x = x_npy(&[1.0; 6]);
    let y = TempPath::new("ext-checked-y.npy");
    let o = run_external(&["--input", "-", "--output", "-", "--output", y.s()], &x);
    let err = o.result.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        error_line(&err).starts_with(
            "error: this module keeps its weights in a separate file: give --params PATH"
        ),
        "{err}"
    );

    let missing = TempPath::new("ext-missing.params.bin");
    let o = run_external(
        &["--params", missing.s(), "--input", "-", "--output", "-", "--output", y.s()],
        &x,
    );
    let err = o.result.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.message().starts_with(&format!("cannot open params file '{}'", missing.s())),
        "{err}"
    );

    let short = TempPath::new("ext-short.params.bin");
    std::fs::write(&short.0, &reuse_params().0[..100]).unwrap();
    let o = run_external(
        &["--params", short.s(), "--input", "-", "--output", "-", "--output", y.s()],
        &x,
    );
    let err = o.result.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.message(),
        format!(
            "params file '{}' has 100 bytes, this module was built with 128 bytes of weights",
            short.s()
        )
    );

    let flipped = TempPath::new("ext-flipped.params.bin");
    let mut bytes = reuse_params().0.to_vec();
    bytes[70] ^= 0x40;
    std::fs::write(&flipped.0, &bytes).unwrap();
    let o = run_external(
        &["--params", flipped.s(), "--input", "-", "--output", "-", "--output", y.s()],
        &x,
    );
    let err = o.result.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.message().contains("does not match this module's weights"), "{err}");
    assert!(o.stdout.is_empty(), "nothing ran");

    // A wrong count of flags fails before any weights are read.
    let o = run_external(&["--params", missing.s(), "--input", "-"], &x);
    assert!(o.result.unwrap_err().message().starts_with("expected 2 --output"));
}

#[test]
fn external_params_flag_errors() {
    for argv in [
        &["--params"][..],
        &["--params", "--info"],
        &["--params="],
        &["--params", "a", "--params", "b"],
    ] {
        let err = run_external(argv, b"").result.unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{argv:?}: {err:?}");
    }
    // A module with embedded weights does not know the flag.
    let err = run(&["--params", "p.bin", "--info"], b"").result.unwrap_err();
    assert_eq!(error_line(&err), "error: unknown argument '--params' (see --help)");
}

#[test]
fn external_params_info_and_help_need_no_weights() {
    let o = run_external(&["--info"], b"");
    o.result.unwrap();
    let line = String::from_utf8(o.stdout).unwrap();
    let value = json::parse(&line).unwrap();
    let params = value.get("params").expect("params key");
    let expected = format!(
        "{{\"external\": true, \"size\": 128, \"sha256\": \"{}\"}}",
        sha256::hex(&reuse_external().sha256)
    );
    assert!(line.ends_with(&format!(", \"params\": {expected}}}\n")), "{line}");
    assert!(matches!(params, Value::Object(_)));

    let o = run_external(&["--help"], b"");
    o.result.unwrap();
    let help = String::from_utf8(o.stdout).unwrap();
    assert!(help.starts_with("usage: wasmforge-model --input") && help.contains("--params PATH"));

    // The size built in must agree with the plan.
    let wrong = ExternalParams { size: 64, ..reuse_external() };
    let err = run_external_with(&wrong, &["--info"], b"").result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn quoting_round_trips() {
    for s in ["plain", "q\"b\\", "line\nbreak\t\u{1}", "ünïcödé 😀"] {
        assert_eq!(json::parse(&quote(s)), Ok(Value::String(s.to_string())));
    }
    assert_eq!(quote("a\u{1f}"), "\"a\\u001f\"");
}

/// A run with `--profile -` (stdout): the outputs go to a file.
fn profiled(plan: &Plan, extra: &[&str]) -> (Value, Vec<u8>, Outcome) {
    let y = TempPath::new(&format!("prof-{}.npy", extra.len()));
    let mut argv = vec!["--input", "-", "--output", y.s(), "--output", "-", "--profile", "-"];
    argv.extend_from_slice(extra);
    // `--output -` and `--profile -` cannot share stdout: hidden goes to a file.
    let hidden = TempPath::new(&format!("prof-h-{}.npy", extra.len()));
    argv[5] = hidden.s();
    let o = run_with(Some(plan), &argv, &x_npy(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    let doc = json::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let y_bytes = std::fs::read(&y.0).unwrap();
    (doc, y_bytes, o)
}

#[test]
fn profile_has_one_record_per_call_and_leaves_outputs_alone() {
    let mut plan = load_plan("plan_storage_reuse.json");
    // Estimated by a compiler: 12 operations for the first call only.
    plan.calls.to_mut()[0].flops = Some(12);
    plan.calls.to_mut()[0].op = Some("add".into());
    let (doc, y, o) = profiled(&plan, &["--repeat", "3"]);
    o.result.unwrap();
    // The same outputs as a run without --profile.
    let plain = TempPath::new("plain-y.npy");
    let p = run_with(
        Some(&plan),
        &["--input", "-", "--output", plain.s(), "--output", "-"],
        &x_npy(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]),
    );
    p.result.unwrap();
    assert_eq!(y, std::fs::read(&plain.0).unwrap());
    assert_eq!(read_f32(&y, &[6]), [0.0, 5.0, 0.0, 18.0, 0.0, 39.0]);

    assert_eq!(doc.get("profile").and_then(Value::as_i64), Some(1));
    assert_eq!(doc.get("model").and_then(Value::as_str), Some("storage-reuse"));
    assert_eq!(doc.get("runs").and_then(Value::as_i64), Some(3));
    assert_eq!(doc.get("run_ms").and_then(Value::as_array).unwrap().len(), 3);
    let calls = doc.get("calls").and_then(Value::as_array).unwrap();
    assert_eq!(calls.len(), plan.calls.len());
    for (i, (record, call)) in calls.iter().zip(plan.calls.iter()).enumerate() {
        assert_eq!(record.get("index").and_then(Value::as_i64), Some(i as i64));
        assert_eq!(record.get("kernel").and_then(Value::as_str), Some(call.kernel.as_ref()));
        let args = record.get("args").and_then(Value::as_array).unwrap();
        assert_eq!(args.len(), call.args.len());
        for (a, &t) in args.iter().zip(call.args.iter()) {
            let shape: Vec<i64> = a
                .get("shape")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            let want: Vec<i64> = plan.tensors[t].shape.iter().map(|&d| d as i64).collect();
            assert_eq!(shape, want);
            assert_eq!(a.get("dtype").and_then(Value::as_str), Some("float32"));
        }
        let runs = record.get("ms_runs").and_then(Value::as_array).unwrap();
        assert_eq!(runs.len(), 3);
        assert!(matches!(record.get("ms"), Some(Value::Float(ms)) if *ms >= 0.0));
    }
    assert_eq!(calls[0].get("flops").and_then(Value::as_i64), Some(12));
    assert_eq!(calls[0].get("op").and_then(Value::as_str), Some("add"));
    // A plan without op / flops (written before they existed): null.
    assert!(matches!(calls[1].get("op"), Some(Value::Null)));
    assert!(matches!(calls[1].get("flops"), Some(Value::Null)));
    assert!(matches!(calls[1].get("gflops"), Some(Value::Null)));
    // With --repeat, the timing line still goes to stderr.
    assert_eq!(o.stderr.lines().count(), 1);
}

#[test]
fn profile_flags() {
    let plan = load_plan("plan_storage_reuse.json");
    // No --output at all: the profile is what the caller wants.
    let o = run_with(Some(&plan), &["--input", "-", "--profile", "-"], &x_npy(&[1.0; 6]));
    o.result.unwrap();
    let doc = json::parse(std::str::from_utf8(&o.stdout).unwrap()).unwrap();
    assert_eq!(doc.get("runs").and_then(Value::as_i64), Some(1));
    assert_eq!(doc.get("calls").and_then(Value::as_array).unwrap().len(), 3);
    // To a file.
    let path = TempPath::new("profile.json");
    let o = run_with(Some(&plan), &["--input", "-", "--profile", path.s()], &x_npy(&[1.0; 6]));
    o.result.unwrap();
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&path.0).unwrap();
    assert!(json::parse(&text).unwrap().is_object());

    let o = run(
        &["--input", "-", "--output", "-", "--output", "h.npy", "--profile", "-"],
        &x_npy(&[1.0; 6]),
    );
    assert_eq!(
        o.result.unwrap_err(),
        Error::Usage("--profile and --output cannot both be '-'".into())
    );
    let e = parse_args(&args(&["--profile", "a", "--profile", "b"]), false).unwrap_err();
    assert_eq!(e, Error::Usage("--profile given more than once".into()));
    let e = parse_args(&args(&["--profile"]), false).unwrap_err();
    assert_eq!(e, Error::Usage("--profile needs a value".into()));
    // Outputs given: all of them, as without --profile.
    let o = run(&["--input", "-", "--output", "-", "--profile", path.s()], &x_npy(&[1.0; 6]));
    assert!(matches!(o.result, Err(Error::Usage(m)) if m.starts_with("expected 2 --output")));
    let o = run(&["--input", "-", "--profile", "/no/such/dir/p.json"], &x_npy(&[1.0; 6]));
    let e = o.result.unwrap_err();
    assert!(e.message().starts_with("profile: cannot create '/no/such/dir/p.json'"), "{e:?}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn median_of_runs() {
    use wasmforge_runtime::profile::median;
    assert_eq!(median(&[]), 0.0);
    assert_eq!(median(&[3.0]), 3.0);
    assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
}
