//! Hostile input files through a real native process: exit code 2 and
//! exactly one `error:` line on stderr, nothing on stdout.
//!
//! The module binary can only embed a model when built for wasm32, so this
//! test binary (`harness = false`) plays the module: started with
//! `WASMFORGE_FAKE_MODULE=1` it runs `cli::main`, the same entry point as
//! `model/src/main.rs`, with the storage-reuse plan and the fake kernels.
//! Otherwise it runs the cases below against itself.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use wasmforge_runtime::cli::{self, BuildInfo, Model, Weights};
use wasmforge_runtime::{npy, DType};

const CHILD: &str = "WASMFORGE_FAKE_MODULE";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let plan = load_plan("plan_storage_reuse.json");
        let params = reuse_params();
        let model = Model {
            plan: Some(&plan),
            weights: Weights::Embedded(&params.0),
            kernels: &REUSE_KERNELS,
            build: BuildInfo::default(),
        };
        std::process::exit(cli::main(&model));
    }
    let dir = std::env::temp_dir().join(format!("wasmforge-cli-process-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let count = run_cases(&dir);
    fs::remove_dir_all(&dir).unwrap();
    println!("test result: ok. {count} passed; 0 failed (cli_process)");
}

/// A v1 .npy file: `dict` as the header, then `data`.
fn npy_file(dict: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!("{dict}\n");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.extend_from_slice(data);
    b
}

fn good() -> Vec<u8> {
    let mut b = Vec::new();
    npy::write(&mut b, DType::F32, &[2, 3], &f32_bytes(&[1.0, -2.0, 3.0, -4.0, 5.0, -6.0]))
        .unwrap();
    b
}

fn header(shape: &str, descr: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
}

struct Outcome {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

fn module(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Outcome {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .current_dir(dir)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        use std::io::Write;
        // The module may refuse the input before reading all of it.
        let _ = child.stdin.take().unwrap().write_all(bytes);
    }
    let out = child.wait_with_output().unwrap();
    Outcome {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the module on `input` (a file in `dir`) and checks the refusal.
fn refused(dir: &Path, name: &str, input: &Path, fragment: &str) {
    let out_path = dir.join(format!("{name}.out.npy"));
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--output",
        "hidden.npy",
    ];
    let out = module(dir, &args, None);
    check_refusal(name, &out, fragment);
    assert!(!out_path.exists(), "{name}: an output was written");
}

fn check_refusal(name: &str, out: &Outcome, fragment: &str) {
    assert_eq!(out.code, Some(2), "{name}: {}", out.stderr);
    assert!(out.stdout.is_empty(), "{name}: stdout {:?}", out.stdout);
    let lines: Vec<&str> = out.stderr.split_terminator('\n').collect();
    assert_eq!(lines.len(), 1, "{name}: stderr {:?}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{name}: {}", lines[0]);
    assert!(lines[0].contains(fragment), "{name}: {:?} lacks {fragment:?}", lines[0]);
}

fn run_cases(dir: &Path) -> usize {
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    };
    let data = f32_bytes(&[0.0; 6]);
    let mut count = 0;

    // The good file runs, so the refusals below are about the input.
    let input = write("good.npy", &good());
    let out = module(
        dir,
        &["--input", input.to_str().unwrap(), "--output", "-", "--output", "h.npy"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.is_empty());
    count += 1;

    let mut not_utf8 = npy_file(&header("(2, 3)", "<f4"), &data);
    not_utf8[12] = 0xff; // inside 'descr'
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a .npy file (bad magic)"),
        ("bad-magic", b"\x93NUMPX\x01\x00".to_vec(), "not a .npy file (bad magic)"),
        ("truncated-preamble", b"\x93NUMPY\x01".to_vec(), "truncated .npy header"),
        ("version-9", b"\x93NUMPY\x09\x00\x10\x00".to_vec(), "unsupported .npy format version 9.0"),
        (
            "header-len-past-eof",
            b"\x93NUMPY\x01\x00\xff\xff{'descr'".to_vec(),
            "truncated .npy header",
        ),
        ("header-len-4gib", b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec(), "is too long"),
        ("not-a-dict", npy_file("[1, 2, 3]", &data), "malformed header: expected '{'"),
        ("not-utf8", not_utf8, "not UTF-8"),
        (
            "unknown-key",
            npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 'y'}", &data),
            "unexpected key 'x'",
        ),
        (
            "wrong-dtype",
            npy_file(&header("(2, 3)", "<f8"), &[0; 48]),
            "expected float32 [2, 3], got float64 [2, 3]",
        ),
        (
            "wrong-shape",
            npy_file(&header("(3, 2)", "<f4"), &data),
            "expected float32 [2, 3], got float32 [3, 2]",
        ),
        ("big-endian", npy_file(&header("(2, 3)", ">f4"), &data), "big-endian"),
        ("object", npy_file(&header("(2, 3)", "|O"), &data), "object arrays are not supported"),
        (
            "fortran",
            npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", &data),
            "Fortran-order",
        ),
        (
            "2^60-elements",
            npy_file(&header("(1152921504606846976,)", "<f4"), &data),
            "got float32 [1152921504606846976]",
        ),
        (
            "overflowing-shape",
            npy_file(&header("(4294967296, 4294967296, 4294967296)", "<f4"), &data),
            "array too large",
        ),
        (
            "huge-dimension",
            npy_file(&header("(99999999999999999999999,)", "<f4"), &data),
            "array too large (dimension",
        ),
        ("negative-dimension", npy_file(&header("(-2, 3)", "<f4"), &data), "non-negative integers"),
        (
            "short-data",
            npy_file(&header("(2, 3)", "<f4"), &data[..23]),
            "truncated array data: expected 24 bytes, got 23",
        ),
        (
            "trailing-data",
            npy_file(&header("(2, 3)", "<f4"), &[0; 25]),
            "unexpected data after the array",
        ),
        // A control character in the header must not break the one-line rule.
        (
            "newline-in-descr",
            npy_file(&header("(2, 3)", "<f4\nerror: forged"), &data),
            "unsupported dtype '<f4 error: forged'",
        ),
    ];
    for (name, bytes, fragment) in &cases {
        let input = write(&format!("{name}.npy"), bytes);
        refused(dir, name, &input, fragment);
        // The same bytes on stdin.
        let out =
            module(dir, &["--input", "-", "--output", "o.npy", "--output", "h.npy"], Some(bytes));
        check_refusal(name, &out, fragment);
        count += 2;
    }

    // A 1 GiB (sparse) file behind a valid header: refused after reading one
    // byte past the array, not read whole.
    let huge = dir.join("huge.npy");
    let file = File::create(&huge).unwrap();
    use std::io::Write;
    (&file).write_all(&good()).unwrap();
    file.set_len(1 << 30).unwrap();
    refused(dir, "huge-trailing", &huge, "unexpected data after the array");
    // A directory, a missing file, and a bad flag.
    refused(dir, "directory", dir, "read failed");
    refused(dir, "missing", &dir.join("missing.npy"), "cannot open");
    let out = module(dir, &["--input", "-", "--output", "-", "--output", "-"], Some(&good()));
    check_refusal("two-stdout", &out, "only one --output can be '-'");
    let out = module(dir, &["--repeat", "99999999999"], None);
    check_refusal("repeat", &out, "--repeat needs a positive integer");
    count + 5
}
