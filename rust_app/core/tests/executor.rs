//! The executor end to end, with fake kernels written in Rust.

mod common;

use std::ffi::c_void;
use std::mem::{align_of, offset_of, size_of};

use common::*;
use wasmforge_core::ffi::{self, DLTensor, KernelFn, TVMFFIAny, TVMParallelGroupEnv};
use wasmforge_core::plan::{Io, Tensor, TensorKind};
use wasmforge_core::{DType, Error, Executor};

#[test]
fn runs_a_plan_with_storage_reuse_params_and_views() {
    let params = reuse_params();
    let mut ex =
        Executor::new(load_plan("plan_storage_reuse.json"), &params.0, &REUSE_KERNELS).unwrap();
    let x = f32_bytes(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    let out = ex.run(&[&x]).unwrap();
    // hidden = relu(x + 0.5); y = hidden * [1..6], written over x + 0.5.
    assert_eq!(f32s(out[0]), [0.0, 5.0, 0.0, 18.0, 0.0, 39.0]);
    assert_eq!(f32s(out[1]), [0.0, 2.5, 0.0, 4.5, 0.0, 6.5]);
    // A second run sees only its own input.
    let x = f32_bytes(&[1.0; 6]);
    let out = ex.run(&[&x]).unwrap();
    assert_eq!(f32s(out[0]), [1.5, 3.0, 4.5, 6.0, 7.5, 9.0]);
    // Tensor 4 (x + bias) shares storage 0 with tensor 6, which overwrote it.
    assert_eq!(ex.tensor_bytes(4), ex.tensor_bytes(6));
    assert_eq!(ex.tensor_bytes(8), None);
}

#[test]
fn kernels_see_the_dltensors_the_plan_describes() {
    let params = reuse_params();
    let table: [(&str, KernelFn); 3] = [("add", record), ("mul", record), ("relu", record)];
    let mut ex = Executor::new(load_plan("plan_storage_reuse.json"), &params.0, &table).unwrap();
    SEEN.with(|s| s.borrow_mut().clear());
    ex.run(&[&[0u8; 24]]).unwrap();
    ex.run(&[&[0u8; 24]]).unwrap();
    let seen = SEEN.with(|s| s.borrow().clone());
    assert_eq!(seen.len(), 6);
    // The second run passes exactly the same structures: built once.
    assert_eq!(seen[0].args, seen[3].args);
    for call in &seen {
        assert!(call.handle_null);
        assert_eq!(call.result_type_index, ffi::TYPE_INDEX_NONE);
        for a in &call.args {
            assert_eq!(a.type_index, ffi::TYPE_INDEX_DLTENSOR_PTR);
            assert_eq!(a.device, (ffi::DEVICE_CPU, 0));
            assert_eq!((a.ndim, a.shape.as_slice()), (2, &[2i64, 3][..]));
            assert_eq!(a.dtype, (2, 32, 1));
            assert!(a.strides_null);
            assert_eq!(a.byte_offset, 0);
            assert_eq!(a.data % 64, 0, "every tensor here is 64-byte aligned");
        }
    }
    let (add, relu, mul) = (&seen[0].args, &seen[1].args, &seen[2].args);
    assert_eq!((add.len(), relu.len(), mul.len()), (3, 2, 3));
    let params_at = params.0.as_ptr() as usize;
    assert_eq!(add[1].data, params_at, "bias at offset 0");
    assert_eq!(mul[1].data, params_at + 64, "view of the scale param at offset 64");
    assert_eq!(add[2].data, mul[2].data, "tensors 4 and 6 reuse storage 0");
    assert_eq!(relu[0].data, add[2].data);
    assert_eq!(relu[1].data, mul[0].data);
    assert_ne!(relu[1].data, add[2].data);
}

#[test]
fn dtypes_and_scalars_reach_the_kernel() {
    let plan = wasmforge_plan_json::parse(
        r#"{"format": 1, "model": "dtypes", "params_size": 0, "storages": [{"size": 64}],
        "tensors": [
          {"dtype": "bool", "shape": [4], "kind": "storage", "storage": 0, "offset": 0},
          {"dtype": "int64", "shape": [], "kind": "storage", "storage": 0, "offset": 8},
          {"dtype": "float16", "shape": [1, 2], "kind": "storage", "storage": 0, "offset": 16},
          {"dtype": "uint8", "shape": [0], "kind": "storage", "storage": 0, "offset": 64}
        ],
        "calls": [{"kernel": "k", "args": [0, 1, 2, 3]}], "inputs": [], "outputs": [{"name": "s", "tensor": 1}]}"#,
    )
    .unwrap();
    let mut ex = Executor::new(plan, &[], &[("k", record)]).unwrap();
    SEEN.with(|s| s.borrow_mut().clear());
    let out = ex.run(&[]).unwrap();
    assert_eq!(out, [&[0u8; 8][..]], "storages start zero-filled");
    let seen = SEEN.with(|s| s.borrow()[0].args.clone());
    let got: Vec<_> = seen.iter().map(|a| (a.ndim, a.dtype, a.shape.clone())).collect();
    assert_eq!(
        got,
        [
            (1, (6, 8, 1), vec![4]),
            (0, (0, 64, 1), vec![]),
            (2, (2, 16, 1), vec![1, 2]),
            (1, (1, 8, 1), vec![0])
        ]
    );
    assert_eq!(seen[1].data - seen[0].data, 8);
}

#[test]
fn a_failing_kernel_reports_its_message() {
    let params = reuse_params();
    let table: [(&str, KernelFn); 3] = [("add", add), ("mul", mul), ("relu", fail)];
    let mut ex = Executor::new(load_plan("plan_storage_reuse.json"), &params.0, &table).unwrap();
    let err = ex.run(&[&[0u8; 24]]).unwrap_err();
    assert_eq!(
        err,
        Error::Kernel(
            "kernel 'relu' failed (code -1): ValueError: Invalid matmul.shape[0], expected 3"
                .into()
        )
    );

    // No message recorded (and none left over from the previous failure).
    let table: [(&str, KernelFn); 3] = [("add", add), ("mul", fail_silently), ("relu", relu)];
    let mut ex = Executor::new(load_plan("plan_storage_reuse.json"), &params.0, &table).unwrap();
    let err = ex.run(&[&[0u8; 24]]).unwrap_err();
    assert_eq!(err, Error::Kernel("kernel 'mul' failed (code 7): no error message".into()));
}

#[test]
fn fake_kernels_check_their_arguments() {
    // A plan that feeds `add` an int32 tensor: the fake kernel's own check
    // fails and its message comes back through the C error symbol.
    let plan = wasmforge_plan_json::parse(
        r#"{"format": 1, "model": "m", "params_size": 0, "storages": [{"size": 64}],
        "tensors": [{"dtype": "int32", "shape": [2], "kind": "storage", "storage": 0, "offset": 0}],
        "calls": [{"kernel": "add", "args": [0, 0, 0]}], "inputs": [], "outputs": []}"#,
    )
    .unwrap();
    let mut ex = Executor::new(plan, &[], &REUSE_KERNELS).unwrap();
    let err = ex.run(&[]).unwrap_err();
    assert_eq!(err.message(), "kernel 'add' failed (code -1): ValueError: arg 0: not float32");
}

#[test]
fn binding_checks_kernels_and_params() {
    let params = reuse_params();
    let plan = load_plan("plan_storage_reuse.json");
    let only_two: [(&str, KernelFn); 2] = [("add", add), ("relu", relu)];
    let err = Executor::new(plan.clone(), &params.0, &only_two).err().unwrap();
    assert_eq!(err, Error::Model("kernel 'mul' is not linked into this module".into()));

    let err = Executor::new(plan.clone(), &params.0[..64], &REUSE_KERNELS).err().unwrap();
    assert_eq!(err, Error::Model("params.bin has 64 bytes, the plan expects 128".into()));

    let big = Box::new(Aligned([0u8; 192]));
    let err = Executor::new(plan, &big.0[1..129], &REUSE_KERNELS).err().unwrap();
    assert_eq!(err, Error::Model("params are not 64-byte aligned".into()));
}

#[test]
fn an_invalid_plan_value_is_refused_before_any_allocation() {
    // Plans are plain values (statics in a module): the executor validates
    // what it is given instead of trusting it.
    let mut plan = load_plan("plan_storage_reuse.json");
    let mut tensors = plan.tensors.to_vec();
    tensors[4] = Tensor {
        dtype: DType::F32,
        shape: vec![1 << 20].into(),
        kind: TensorKind::Storage { storage: 0, offset: 0 },
    };
    plan.tensors = tensors.into();
    let params = reuse_params();
    let err = Executor::new(plan.clone(), &params.0, &REUSE_KERNELS).err().unwrap();
    assert!(
        err.message().starts_with("invalid plan: tensors[4]: 4194304 bytes at offset 0"),
        "{err}"
    );

    plan.outputs = vec![Io { name: "y".into(), tensor: 99 }].into();
    let err = Executor::new(plan, &params.0, &REUSE_KERNELS).err().unwrap();
    assert!(matches!(err, Error::Plan(_)), "{err:?}");
}

#[test]
fn inputs_must_match_the_plan() {
    let params = reuse_params();
    let mut ex =
        Executor::new(load_plan("plan_storage_reuse.json"), &params.0, &REUSE_KERNELS).unwrap();
    assert_eq!(ex.run(&[]).unwrap_err(), Error::Input("expected 1 inputs, got 0".into()));
    assert_eq!(
        ex.run(&[&[0u8; 20]]).unwrap_err(),
        Error::Input("input 'x': expected 24 bytes (float32 [2, 3]), got 20".into())
    );
}

#[test]
fn abi_layout_matches_c() {
    assert_eq!((size_of::<TVMFFIAny>(), align_of::<TVMFFIAny>()), (16, 8));
    assert_eq!(offset_of!(TVMFFIAny, value), 8);
    let p = size_of::<*mut c_void>();
    assert_eq!(offset_of!(DLTensor, device), p);
    assert_eq!(offset_of!(DLTensor, ndim), p + 8);
    assert_eq!(offset_of!(DLTensor, dtype), p + 12);
    assert_eq!(offset_of!(DLTensor, shape), p + 16);
    assert_eq!(offset_of!(DLTensor, strides), 2 * p + 16);
    assert_eq!(offset_of!(DLTensor, byte_offset), (3 * p + 16).next_multiple_of(8));
    // A DLTensor* argument: type index 7, pointer at offset 8, rest zero.
    let mut t = std::mem::MaybeUninit::<DLTensor>::uninit();
    let any = TVMFFIAny::dltensor(t.as_mut_ptr());
    // SAFETY: TVMFFIAny is 16 plain bytes.
    let bytes: [u8; 16] = unsafe { std::mem::transmute(any) };
    assert_eq!(&bytes[..8], &[7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&bytes[8..8 + p], &(t.as_ptr() as usize).to_le_bytes()[..p]);
    assert!(bytes[8 + p..].iter().all(|&b| b == 0));
}

#[test]
fn workspace_is_aligned_and_freed() {
    for n in [0u64, 1, 63, 64, 1000, 1 << 20] {
        let p = ffi::TVMBackendAllocWorkspace(1, 0, n, 2, 32);
        assert!(!p.is_null());
        assert_eq!(p as usize % 64, 0);
        // SAFETY: the block has n writable bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xAB, n as usize) };
        // SAFETY: `p` is a live workspace block.
        assert_eq!(unsafe { ffi::TVMBackendFreeWorkspace(1, 0, p) }, 0);
    }
    assert!(ffi::TVMBackendAllocWorkspace(1, 0, u64::MAX, 2, 32).is_null());
    // SAFETY: NULL is accepted.
    assert_eq!(unsafe { ffi::TVMBackendFreeWorkspace(1, 0, std::ptr::null_mut()) }, 0);
}

unsafe extern "C" fn count_tasks(
    task_id: i32,
    penv: *mut TVMParallelGroupEnv,
    cdata: *mut c_void,
) -> i32 {
    // SAFETY: `cdata` is the Vec passed below and `penv` is valid for the call.
    unsafe {
        (*cdata.cast::<Vec<(i32, i32)>>()).push((task_id, (*penv).num_task));
        ffi::TVMBackendParallelBarrier(task_id, penv)
    }
}

unsafe extern "C" fn failing_task(_: i32, _: *mut TVMParallelGroupEnv, _: *mut c_void) -> i32 {
    -5
}

#[test]
fn parallel_launch_runs_serially_and_registration_is_a_no_op() {
    let mut calls: Vec<(i32, i32)> = Vec::new();
    let cdata = (&mut calls as *mut Vec<(i32, i32)>).cast();
    // SAFETY: `count_tasks` expects exactly this closure data.
    assert_eq!(unsafe { ffi::TVMBackendParallelLaunch(Some(count_tasks), cdata, 4) }, 0);
    assert_eq!(calls, [(0, 1)], "one task covers the whole job");
    // SAFETY: `failing_task` ignores its closure data.
    assert_eq!(
        unsafe { ffi::TVMBackendParallelLaunch(Some(failing_task), std::ptr::null_mut(), 0) },
        -1
    );
    // SAFETY: a NULL lambda is refused without being called.
    assert_eq!(unsafe { ffi::TVMBackendParallelLaunch(None, std::ptr::null_mut(), 1) }, -1);
    assert_eq!(
        ffi::TVMFFIEnvModRegisterSystemLibSymbol(c"__tvm_ffi_k".as_ptr(), std::ptr::null_mut()),
        0
    );
}

#[test]
fn profiled_runs_give_the_same_outputs_and_one_time_per_call() {
    let params = reuse_params();
    let mut ex =
        Executor::new(load_plan("plan_storage_reuse.json"), &params.0, &REUSE_KERNELS).unwrap();
    let x = f32_bytes(&[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    let plain: Vec<Vec<u8>> = ex.run(&[&x]).unwrap().into_iter().map(<[u8]>::to_vec).collect();
    let mut times = vec![99.0; 7]; // replaced, not appended to
    let profiled: Vec<Vec<u8>> =
        ex.run_profiled(&[&x], &mut times).unwrap().into_iter().map(<[u8]>::to_vec).collect();
    assert_eq!(plain, profiled);
    assert_eq!(times.len(), ex.plan().calls.len());
    assert!(times.iter().all(|&ms| (0.0..99.0).contains(&ms)), "{times:?}");
    // Bad inputs fail the same way.
    assert!(matches!(ex.run_profiled(&[], &mut times), Err(Error::Input(_))));
}
