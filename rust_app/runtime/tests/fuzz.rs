//! Deterministic mutation fuzzing of what a module reads: `.npy` input, a
//! whole CLI run on it, and the plan parser.
//!
//! No dependencies (the workspace builds offline with no registry), so this is
//! a plain test: a xorshift PRNG mutates valid seed inputs for a fixed number
//! of iterations per target, every outcome must be an `Err` (never a panic),
//! and a counting global allocator checks that no input makes a reader
//! allocate more than its bound: a header claiming 2^60 elements must be
//! refused without allocating them.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};

use common::*;
use wasmforge_runtime::cli::{self, error_line, BuildInfo, Model, Weights};
use wasmforge_runtime::npy::{self, MAX_HEADER_LEN};
use wasmforge_runtime::{DType, Error, ExitCode};

const ITERATIONS: usize = 20_000;

// --- the largest single allocation, per thread (tests run in parallel) ------

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local is gone while its thread exits.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method forwards to `System` unchanged; it only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `f()` and the largest single allocation it made.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// --- the mutator ------------------------------------------------------------

/// xorshift64*: small, fast and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to the npy header or JSON grammars, and sizes
/// at the edges of 32 and 64 bits.
#[rustfmt::skip]
const TOKENS: &[&[u8]] = &[
    b"0", b"1", b"-1", b"65536", b"4294967295", b"4294967296", b"1152921504606846976",
    b"18446744073709551615", b"18446744073709551616", b"99999999999999999999999", b"1e999",
    b"-0", b"0.5", b"(", b")", b",", b"{", b"}", b"[", b"]", b"'", b"\"", b":", b" ", b"\n",
    b"True", b"False", b"None", b"null", b"true", b"'<f4'", b"'>f4'", b"'|b1'", b"'<c8'",
    b"'O'", b"'<U8'", b"'shape'", b"'descr'", b"'fortran_order'", b"(1152921504606846976,)",
    b"(4294967296, 4294967296)", b"\\u0000", b"\\ud800", b"\\", b"\x00", b"\xff", b"\xc3",
    b"\x93NUMPY", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", b"\"kind\": \"view\"", b"\"of\": 0",
];

fn mutate(rng: &mut Rng, seed: &[u8], header_bias: usize) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        // Some edits go to the first bytes: magic, version and header length.
        let pos = |rng: &mut Rng, len: usize| {
            if header_bias > 0 && rng.below(4) == 0 {
                rng.below(header_bias.min(len + 1))
            } else {
                rng.below(len + 1)
            }
        };
        let at = pos(rng, d.len());
        match rng.below(7) {
            0 if at < d.len() => d[at] ^= 1 << rng.below(8),
            1 if at < d.len() => d[at] = rng.next() as u8,
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + 1 + rng.below(16)).min(d.len());
                d.drain(at.min(end)..end);
            }
            4 if !d.is_empty() => {
                let start = rng.below(d.len());
                let end = (start + 1 + rng.below(64)).min(d.len());
                let piece = d[start..end].to_vec();
                d.splice(at..at, piece);
            }
            5 => d.truncate(at),
            _ => {
                // Replace a run of digits (a size, a length, an index) by a token.
                if let Some(start) = (at..d.len()).find(|&i| d[i].is_ascii_digit()) {
                    let end = (start..d.len()).find(|&i| !d[i].is_ascii_digit()).unwrap_or(d.len());
                    let token = TOKENS[rng.below(12)];
                    d.splice(start..end, token.iter().copied());
                }
            }
        }
    }
    d
}

/// Runs `f`; a panic fails the test and shows the input that caused it.
fn no_panic<T>(input: &[u8], f: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("panicked on input {:?}", String::from_utf8_lossy(input)),
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    err: usize,
    largest: usize,
}

impl Tally {
    fn add<T, E>(&mut self, result: &Result<T, E>, largest: usize) {
        if result.is_ok() {
            self.ok += 1;
        } else {
            self.err += 1;
        }
        self.largest = self.largest.max(largest);
    }
}

fn npy_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = ["f32_2x3_v1.npy", "f32_2x3_v2.npy", "f32_2x3_v3.npy"]
        .iter()
        .map(|n| std::fs::read(data_path("npy").join(n)).unwrap())
        .collect();
    let mut f64_file = Vec::new();
    npy::write(&mut f64_file, DType::F64, &[2, 3], &[0u8; 48]).unwrap();
    seeds.push(f64_file);
    seeds
}

// --- targets ----------------------------------------------------------------

/// The header reader allocates the header (at most MAX_HEADER_LEN bytes) and
/// the shape (at most one dimension per two header bytes): never the data.
const NPY_ALLOC_BOUND: usize = 8 * MAX_HEADER_LEN;

#[test]
fn fuzz_npy_reader() {
    let seeds = npy_seeds();
    let mut rng = Rng(0x6e70_795f_6675_7a7a);
    let (mut header, mut expected) = (Tally::default(), Tally::default());
    for _ in 0..ITERATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, 16);
        let (result, largest) =
            measured(|| no_panic(&input, || npy::read_header(&mut Cursor::new(&input))));
        if let Ok(h) = &result {
            // A header is only accepted if its byte size is computable.
            assert!(h
                .shape
                .iter()
                .try_fold(h.dtype.itemsize(), |n, &d| n.checked_mul(d))
                .is_some());
        }
        header.add(&result, largest);
        assert!(
            largest <= NPY_ALLOC_BOUND,
            "{largest} bytes for {:?}",
            String::from_utf8_lossy(&input)
        );

        let (result, largest) = measured(|| {
            no_panic(&input, || npy::read_expected(&mut Cursor::new(&input), DType::F32, &[2, 3]))
        });
        match &result {
            Ok(data) => assert_eq!(data.len(), 24),
            Err(Error::Npy(_) | Error::Input(_)) => {}
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
        expected.add(&result, largest);
        assert!(
            largest <= NPY_ALLOC_BOUND,
            "{largest} bytes for {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    eprintln!("npy read_header: {header:?}\nnpy read_expected(f32 [2, 3]): {expected:?}");
    // Both paths are exercised: some inputs stay valid, most are refused.
    assert!(
        header.err > ITERATIONS / 2 && expected.ok > ITERATIONS / 100,
        "{header:?} {expected:?}"
    );
}

#[test]
fn fuzz_cli_run_on_stdin() {
    let plan = load_plan("plan_storage_reuse.json");
    let params = reuse_params();
    let model = Model {
        plan: Some(&plan),
        weights: Weights::Embedded(&params.0),
        kernels: &REUSE_KERNELS,
        build: BuildInfo::default(),
    };
    let hidden = std::env::temp_dir().join(format!("wasmforge-fuzz-{}.npy", std::process::id()));
    let argv: Vec<String> = ["--input", "-", "--output", "-", "--output", hidden.to_str().unwrap()]
        .map(String::from)
        .into();
    let seeds = npy_seeds();
    let mut rng = Rng(0x636c_695f_7275_6e21);
    let mut tally = Tally::default();
    for _ in 0..ITERATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, 16);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (result, largest) = measured(|| {
            no_panic(&input, || {
                cli::run(&model, &argv, &mut Cursor::new(&input), &mut stdout, &mut stderr)
            })
        });
        if let Err(e) = &result {
            // Bad input is the caller's fault (2), on exactly one line.
            assert_eq!(e.exit_code(), 2, "{e:?}");
            assert!(!error_line(e).contains('\n'));
            assert!(stdout.is_empty());
        }
        tally.add(&result, largest);
        // The executor's own buffers are small here (the plan's storages).
        assert!(
            largest <= NPY_ALLOC_BOUND,
            "{largest} bytes for {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    let _ = std::fs::remove_file(&hidden);
    eprintln!("cli::run on stdin: {tally:?}");
    assert!(tally.err > ITERATIONS / 2 && tally.ok > ITERATIONS / 100, "{tally:?}");
}

#[test]
fn fuzz_plan_parser() {
    let seeds: Vec<Vec<u8>> = ["plan_storage_reuse.json", "plan_doc_example.json"]
        .iter()
        .map(|n| std::fs::read(data_path(n)).unwrap())
        .collect();
    let mut rng = Rng(0x706c_616e_6a73_6f6e);
    let mut tally = Tally::default();
    for _ in 0..ITERATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, 0);
        let (result, largest) = measured(|| {
            no_panic(&input, || match std::str::from_utf8(&input) {
                Ok(text) => wasmforge_plan_json::parse(text),
                Err(_) => Err(Error::Json("not UTF-8".into())),
            })
        });
        match &result {
            Ok(plan) => {
                // What the executor relies on: every index in range.
                assert!(plan
                    .inputs
                    .iter()
                    .chain(plan.outputs.iter())
                    .all(|io| io.tensor < plan.tensors.len()));
                assert!(plan
                    .calls
                    .iter()
                    .flat_map(|c| c.args.iter())
                    .all(|&a| a < plan.tensors.len()));
            }
            Err(Error::Json(_) | Error::Plan(_)) => {}
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
        tally.add(&result, largest);
        // Parsing is linear: a JSON value per two bytes of text at most.
        let bound = 64 * input.len() + 4096;
        assert!(largest <= bound, "{largest} bytes for {:?}", String::from_utf8_lossy(&input));
    }
    eprintln!("plan_json::parse: {tally:?}");
    assert!(tally.err > ITERATIONS / 2 && tally.ok > ITERATIONS / 100, "{tally:?}");
}

// --- the absurd sizes, one by one -------------------------------------------

fn header_with(shape: &str) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b
}

#[test]
fn absurd_sizes_are_refused_without_allocating_them() {
    let cases: [(Vec<u8>, &str); 5] = [
        // 2^60 elements: a valid header (on 64 bits), refused against the plan.
        (
            header_with("(1152921504606846976,)"),
            "expected float32 [2, 3], got float32 [1152921504606846976]",
        ),
        (header_with("(4294967296, 4294967296, 4294967296)"), "array too large"),
        (
            header_with("(99999999999999999999999,)"),
            "array too large (dimension 99999999999999999999999)",
        ),
        // A v2 header claiming a 4 GiB header dict.
        (b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec(), "header of 4294967295 bytes is too long"),
        // A v1 header claiming 64 KiB, then the file ends.
        (b"\x93NUMPY\x01\x00\xff\xff{'descr'".to_vec(), "truncated .npy header"),
    ];
    for (input, fragment) in cases {
        let (result, largest) =
            measured(|| npy::read_expected(&mut Cursor::new(&input), DType::F32, &[2, 3]));
        let message = result.unwrap_err().to_string();
        assert!(message.contains(fragment), "{message}");
        assert!(largest <= NPY_ALLOC_BOUND, "{largest} bytes for {fragment}");
    }
}
