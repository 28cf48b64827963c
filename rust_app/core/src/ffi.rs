//! The C side: tvm-ffi / DLPack types as the kernels see them, and the
//! backend symbols the kernels import (tvm/ffi/c_api.h,
//! tvm/ffi/extra/c_env_api.h, tvm/runtime/c_backend_api.h).

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

/// `TVMFFISafeCallType`: the signature of every `__tvm_ffi_<kernel>`.
pub type KernelFn = unsafe extern "C" fn(
    handle: *mut c_void,
    args: *const TVMFFIAny,
    num_args: i32,
    result: *mut TVMFFIAny,
) -> i32;

/// `kTVMFFINone`.
pub const TYPE_INDEX_NONE: i32 = 0;
/// `kTVMFFIDLTensorPtr`.
pub const TYPE_INDEX_DLTENSOR_PTR: i32 = 7;
/// `kDLCPU`.
pub const DEVICE_CPU: i32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

/// DLPack's `DLTensor` (40 bytes on wasm32).
#[repr(C)]
#[derive(Debug)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    /// NULL: compact row-major.
    pub strides: *mut i64,
    pub byte_offset: u64,
}

/// The 8-byte payload of `TVMFFIAny` (a subset of the C union).
#[repr(C)]
#[derive(Clone, Copy)]
pub union TVMFFIValue {
    pub v_int64: i64,
    pub v_ptr: *mut c_void,
}

/// `TVMFFIAny`: 16 bytes, align 8, payload at offset 8.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TVMFFIAny {
    pub type_index: i32,
    pub zero_padding: u32,
    pub value: TVMFFIValue,
}

impl TVMFFIAny {
    /// `None`, all bytes zero: what a kernel's `result` must point to.
    pub fn none() -> TVMFFIAny {
        TVMFFIAny {
            type_index: TYPE_INDEX_NONE,
            zero_padding: 0,
            value: TVMFFIValue { v_int64: 0 },
        }
    }

    /// A `DLTensor*` argument; the payload bytes past the pointer stay zero.
    pub fn dltensor(ptr: *mut DLTensor) -> TVMFFIAny {
        let mut any = TVMFFIAny::none();
        any.type_index = TYPE_INDEX_DLTENSOR_PTR;
        any.value.v_ptr = ptr.cast();
        any
    }
}

thread_local! {
    /// The last error raised by a kernel on this thread. A thread-local
    /// because native tests run kernels on several threads at once; on
    /// wasm32-wasip1 there is a single thread.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| e.borrow_mut().take());
}

pub(crate) fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn lossy(p: *const c_char) -> Option<String> {
    // SAFETY: non-NULL pointers are NUL-terminated strings (caller contract).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Records `kind: part0part1...` for the executor to report; NULL parts are
/// skipped, as in tvm-ffi.
///
/// # Safety
/// `kind` is NULL or a C string; `parts` is NULL or points to `num_parts`
/// pointers, each NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn TVMFFIErrorSetRaisedFromCStrParts(
    kind: *const c_char,
    parts: *const *const c_char,
    num_parts: i32,
) {
    // SAFETY: `kind` is NULL or a C string (caller contract).
    let mut msg = unsafe { lossy(kind) }.unwrap_or_else(|| "Error".to_string());
    msg.push_str(": ");
    if !parts.is_null() {
        for i in 0..usize::try_from(num_parts).unwrap_or(0) {
            // SAFETY: `parts` holds `num_parts` entries, each NULL or a C string.
            if let Some(part) = unsafe { lossy(*parts.add(i)) } {
                msg.push_str(&part);
            }
        }
    }
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(msg));
}

/// Kernels of a system library register themselves at start-up; the
/// runtime calls them directly through the generated table, so there is
/// nothing to record.
#[no_mangle]
pub extern "C" fn TVMFFIEnvModRegisterSystemLibSymbol(
    _name: *const c_char,
    _symbol: *mut c_void,
) -> c_int {
    0
}

/// Workspace blocks carry their size in a 64-byte header in front of the
/// returned pointer, so the free function can rebuild the layout.
const HEADER: usize = 64;

fn workspace_layout(nbytes: usize) -> Option<Layout> {
    Layout::from_size_align(nbytes.checked_add(HEADER)?, HEADER).ok()
}

/// A 64-byte aligned block of `nbytes` bytes, or NULL when out of memory.
#[no_mangle]
pub extern "C" fn TVMBackendAllocWorkspace(
    _device_type: c_int,
    _device_id: c_int,
    nbytes: u64,
    _dtype_code_hint: c_int,
    _dtype_bits_hint: c_int,
) -> *mut c_void {
    let Some(layout) = usize::try_from(nbytes).ok().and_then(workspace_layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size (it includes the header).
    let base = unsafe { alloc::alloc(layout) };
    if base.is_null() {
        return base.cast();
    }
    // SAFETY: the block is at least HEADER bytes long and 64-byte aligned,
    // so both the size slot and `base + HEADER` are in bounds and aligned.
    unsafe {
        base.cast::<usize>().write(layout.size() - HEADER);
        base.add(HEADER).cast()
    }
}

/// Frees a block from `TVMBackendAllocWorkspace`; NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or a live pointer returned by `TVMBackendAllocWorkspace`.
#[no_mangle]
pub unsafe extern "C" fn TVMBackendFreeWorkspace(
    _device_type: c_int,
    _device_id: c_int,
    ptr: *mut c_void,
) -> c_int {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: `ptr` came from TVMBackendAllocWorkspace, so the header with
    // the size sits HEADER bytes before it and the layout rebuilds exactly.
    unsafe {
        let base = ptr.cast::<u8>().sub(HEADER);
        let nbytes = base.cast::<usize>().read();
        match workspace_layout(nbytes) {
            Some(layout) => alloc::dealloc(base, layout),
            None => return -1,
        }
    }
    0
}

/// `TVMParallelGroupEnv`.
#[repr(C)]
pub struct TVMParallelGroupEnv {
    pub sync_handle: *mut c_void,
    pub num_task: i32,
}

/// `FTVMParallelLambda`.
pub type ParallelLambda = unsafe extern "C" fn(
    task_id: c_int,
    penv: *mut TVMParallelGroupEnv,
    cdata: *mut c_void,
) -> c_int;

/// Runs the job as a single task on the calling thread: the lambda splits
/// its work by `penv.num_task`, so one task covers all of it (this is what
/// TVM's own thread pool does with one worker).
///
/// # Safety
/// `flambda` is a valid lambda for `cdata`.
#[no_mangle]
pub unsafe extern "C" fn TVMBackendParallelLaunch(
    flambda: Option<ParallelLambda>,
    cdata: *mut c_void,
    _num_task: c_int,
) -> c_int {
    // `Option` makes a NULL lambda an error instead of undefined behaviour.
    let Some(flambda) = flambda else { return -1 };
    let mut env = TVMParallelGroupEnv { sync_handle: std::ptr::null_mut(), num_task: 1 };
    // SAFETY: the caller passes a lambda and its own closure data.
    let rc = unsafe { flambda(0, &mut env, cdata) };
    if rc == 0 {
        0
    } else {
        -1
    }
}

/// With a single task there is nobody to wait for.
#[no_mangle]
pub extern "C" fn TVMBackendParallelBarrier(
    _task_id: c_int,
    _penv: *mut TVMParallelGroupEnv,
) -> c_int {
    0
}
