//! Fake kernels written in Rust with the tvm-ffi calling convention, and
//! the weights of runtime/tests/data/plan_storage_reuse.json. Shared by the
//! tests of core, runtime and codegen-check (`#[path]`).
#![allow(dead_code)] // each test crate uses a different part

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;

use wasmforge_core::ffi::{DLTensor, KernelFn, TVMFFIAny, DEVICE_CPU, TYPE_INDEX_DLTENSOR_PTR};
use wasmforge_core::Plan;

// Declared here as the TVM kernels declare it, so the tests go through the
// exported C symbol.
extern "C" {
    fn TVMFFIErrorSetRaisedFromCStrParts(
        kind: *const c_char,
        parts: *const *const c_char,
        num_parts: i32,
    );
}

/// A file of the shared fixtures, rust_app/runtime/tests/data (every crate
/// using this module is a sibling of `runtime`).
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data").join(name)
}

/// A fixture plan, read with the build-time reader.
pub fn load_plan(name: &str) -> Plan {
    wasmforge_plan_json::parse(&std::fs::read_to_string(data_path(name)).unwrap()).unwrap()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// 64-byte aligned storage for a params blob.
#[repr(C, align(64))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// params.bin of plan_storage_reuse.json: bias = 0.5 (x6) at 0, scale = 1..6 at 64.
pub fn reuse_params() -> Box<Aligned<128>> {
    let mut p = Box::new(Aligned([0u8; 128]));
    p.0[..24].copy_from_slice(&f32_bytes(&[0.5; 6]));
    p.0[64..88].copy_from_slice(&f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    p
}

/// Reports `kind: parts...` through the C symbol, as a TVM kernel does.
pub fn raise(kind: &str, parts: &[&str]) -> i32 {
    let kind = std::ffi::CString::new(kind).unwrap();
    let owned: Vec<std::ffi::CString> =
        parts.iter().map(|p| std::ffi::CString::new(*p).unwrap()).collect();
    let mut ptrs: Vec<*const c_char> = owned.iter().map(|p| p.as_ptr()).collect();
    ptrs.insert(1.min(ptrs.len()), std::ptr::null()); // NULL parts are skipped
                                                      // SAFETY: all pointers are C strings or NULL, and `ptrs` has that many.
    unsafe { TVMFFIErrorSetRaisedFromCStrParts(kind.as_ptr(), ptrs.as_ptr(), ptrs.len() as i32) };
    -1
}

/// The `i`-th argument as a float32 tensor, after checking what every
/// kernel may assume. Errors are reported, not panicked: a panic cannot
/// unwind out of an `extern "C"` function.
///
/// # Safety
/// `args` holds at least `i + 1` entries.
unsafe fn arg<'a>(args: *const TVMFFIAny, i: usize) -> Result<&'a DLTensor, String> {
    // SAFETY: in bounds by the caller's contract.
    let any = unsafe { &*args.add(i) };
    if any.type_index != TYPE_INDEX_DLTENSOR_PTR || any.zero_padding != 0 {
        return Err(format!("arg {i}: not a DLTensor*"));
    }
    // SAFETY: type index 7 means the payload is a DLTensor pointer.
    let t = unsafe { &*any.value.v_ptr.cast::<DLTensor>() };
    if t.device.device_type != DEVICE_CPU || t.device.device_id != 0 {
        return Err(format!("arg {i}: not on the CPU"));
    }
    if (t.dtype.code, t.dtype.bits, t.dtype.lanes) != (2, 32, 1) {
        return Err(format!("arg {i}: not float32"));
    }
    if !t.strides.is_null() || t.byte_offset != 0 {
        return Err(format!("arg {i}: not compact"));
    }
    Ok(t)
}

fn numel(t: &DLTensor) -> usize {
    // SAFETY: the runtime gives `ndim` dimensions at `shape`.
    (0..t.ndim as usize).map(|d| unsafe { *t.shape.add(d) } as usize).product()
}

fn read(t: &DLTensor) -> Vec<f32> {
    // SAFETY: a float32 tensor holds numel(t) floats at `data`.
    unsafe { std::slice::from_raw_parts(t.data.cast::<f32>(), numel(t)) }.to_vec()
}

fn write(t: &DLTensor, v: &[f32]) {
    assert_eq!(v.len(), numel(t));
    // SAFETY: as in `read`; kernels own their output for the call.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), t.data.cast::<f32>(), v.len()) };
}

/// Runs `f` on the float32 arguments, turning an `Err` into a raised error.
///
/// # Safety
/// `args` holds `n` entries.
unsafe fn elementwise(
    args: *const TVMFFIAny,
    n: i32,
    arity: usize,
    f: fn(&[Vec<f32>]) -> Vec<f32>,
) -> i32 {
    let run = || -> Result<(), String> {
        if n as usize != arity + 1 {
            return Err(format!("expected {} args, got {n}", arity + 1));
        }
        // SAFETY: `args` holds `n` entries.
        let ts = (0..n as usize).map(|i| unsafe { arg(args, i) }).collect::<Result<Vec<_>, _>>()?;
        let ins: Vec<Vec<f32>> = ts[..arity].iter().map(|t| read(t)).collect();
        if ins.iter().any(|v| v.len() != numel(ts[arity])) {
            return Err("shape mismatch".into());
        }
        write(ts[arity], &f(&ins));
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(msg) => raise("ValueError", &[&msg]),
    }
}

pub unsafe extern "C" fn add(
    _h: *mut c_void,
    args: *const TVMFFIAny,
    n: i32,
    _r: *mut TVMFFIAny,
) -> i32 {
    // SAFETY: the executor passes `n` arguments.
    unsafe { elementwise(args, n, 2, |v| v[0].iter().zip(&v[1]).map(|(a, b)| a + b).collect()) }
}

pub unsafe extern "C" fn mul(
    _h: *mut c_void,
    args: *const TVMFFIAny,
    n: i32,
    _r: *mut TVMFFIAny,
) -> i32 {
    // SAFETY: the executor passes `n` arguments.
    unsafe { elementwise(args, n, 2, |v| v[0].iter().zip(&v[1]).map(|(a, b)| a * b).collect()) }
}

pub unsafe extern "C" fn relu(
    _h: *mut c_void,
    args: *const TVMFFIAny,
    n: i32,
    _r: *mut TVMFFIAny,
) -> i32 {
    // SAFETY: the executor passes `n` arguments.
    unsafe { elementwise(args, n, 1, |v| v[0].iter().map(|a| a.max(0.0)).collect()) }
}

/// Fails the way a TVM kernel does: message parts, then -1.
pub unsafe extern "C" fn fail(
    _h: *mut c_void,
    _a: *const TVMFFIAny,
    _n: i32,
    _r: *mut TVMFFIAny,
) -> i32 {
    raise("ValueError", &["Invalid matmul.shape[0]", ", expected 3"])
}

/// Fails without reporting anything.
pub unsafe extern "C" fn fail_silently(
    _h: *mut c_void,
    _a: *const TVMFFIAny,
    _n: i32,
    _r: *mut TVMFFIAny,
) -> i32 {
    7
}

pub const REUSE_KERNELS: [(&str, KernelFn); 3] = [("add", add), ("mul", mul), ("relu", relu)];

/// What a kernel saw of one call.
#[derive(Debug, Clone)]
pub struct Seen {
    pub handle_null: bool,
    pub result_type_index: i32,
    pub args: Vec<SeenArg>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenArg {
    pub type_index: i32,
    pub data: usize,
    pub device: (i32, i32),
    pub ndim: i32,
    pub dtype: (u8, u8, u16),
    pub shape: Vec<i64>,
    pub strides_null: bool,
    pub byte_offset: u64,
}

thread_local! {
    pub static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// Records every argument's DLTensor fields in `SEEN`.
pub unsafe extern "C" fn record(
    h: *mut c_void,
    args: *const TVMFFIAny,
    n: i32,
    r: *mut TVMFFIAny,
) -> i32 {
    let args = (0..n as usize)
        .map(|i| {
            // SAFETY: the executor passes `n` arguments, each a DLTensor*
            // whose shape has `ndim` entries.
            unsafe {
                let any = &*args.add(i);
                let t = &*any.value.v_ptr.cast::<DLTensor>();
                SeenArg {
                    type_index: any.type_index,
                    data: t.data as usize,
                    device: (t.device.device_type, t.device.device_id),
                    ndim: t.ndim,
                    dtype: (t.dtype.code, t.dtype.bits, t.dtype.lanes),
                    shape: (0..t.ndim as usize).map(|d| *t.shape.add(d)).collect(),
                    strides_null: t.strides.is_null(),
                    byte_offset: t.byte_offset,
                }
            }
        })
        .collect();
    // SAFETY: `result` points to a TVMFFIAny.
    let result_type_index = unsafe { (*r).type_index };
    SEEN.with(|s| s.borrow_mut().push(Seen { handle_null: h.is_null(), result_type_index, args }));
    0
}
