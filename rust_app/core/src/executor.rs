//! Runs a plan: every tensor is resolved to a fixed address once, the
//! `DLTensor`s and kernel argument arrays are built once, and `run` only
//! copies inputs in and calls the kernels in order.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ops::Range;
use std::ptr;
use std::time::Instant;

use crate::buf::AlignedBuf;
use crate::ffi::{self, DLDataType, DLDevice, DLTensor, KernelFn, TVMFFIAny, DEVICE_CPU};
use crate::plan::{Plan, TensorKind, ALIGN};
use crate::Error;

struct ResolvedCall {
    kernel: KernelFn,
    /// Index into `Plan::calls`, for error messages.
    call: usize,
    /// Where this call's arguments sit in `Executor::args`.
    args: Range<usize>,
}

/// A plan bound to its weights and kernels, ready to run.
pub struct Executor<'a> {
    plan: Plan,
    /// Tensors point into the borrowed weights; kernels only read them,
    /// although `DLTensor::data` is `*mut`.
    _params: PhantomData<&'a [u8]>,
    /// Backing memory: owned here, pointed to by `tensors`.
    _storages: Vec<AlignedBuf>,
    inputs: Vec<AlignedBuf>,
    /// Each tensor's data address.
    data: Vec<*mut u8>,
    /// Shapes in DLPack form; `tensors[i].shape` points into `shapes[i]`.
    _shapes: Vec<Vec<i64>>,
    tensors: Vec<DLTensor>,
    /// All calls' arguments back to back; each points into `tensors`.
    args: Vec<TVMFFIAny>,
    calls: Vec<ResolvedCall>,
}

impl<'a> Executor<'a> {
    /// Binds `plan` to `params` (the whole `params.bin`, 64-byte aligned) and
    /// to `kernels` (name -> `__tvm_ffi_<name>`), allocating all memory.
    /// The plan is validated first (cheap: no parsing, one pass), so no
    /// plan value can make the executor address memory outside its buffers.
    /// A plan of statics is borrowed, not copied.
    pub fn new(
        plan: Plan,
        params: &'a [u8],
        kernels: &[(&str, KernelFn)],
    ) -> Result<Executor<'a>, Error> {
        plan.validate()?;
        if params.len() != plan.params_size {
            return Err(Error::Model(format!(
                "params.bin has {} bytes, the plan expects {}",
                params.len(),
                plan.params_size
            )));
        }
        if !params.is_empty() && params.as_ptr() as usize % ALIGN != 0 {
            return Err(Error::Model(format!("params are not {ALIGN}-byte aligned")));
        }
        let storages =
            plan.storages.iter().map(|&n| AlignedBuf::zeroed(n)).collect::<Result<Vec<_>, _>>()?;
        let inputs = plan
            .inputs
            .iter()
            .map(|io| AlignedBuf::zeroed(plan.tensors[io.tensor].nbytes()))
            .collect::<Result<Vec<_>, _>>()?;

        // The plan is validated: offsets and sizes fit, views refer to
        // earlier tensors, so every address below stays in its buffer.
        let mut data: Vec<*mut u8> = Vec::with_capacity(plan.tensors.len());
        for t in plan.tensors.iter() {
            let p = match t.kind {
                TensorKind::Input { index } => inputs[index].as_mut_ptr(),
                // `wrapping_add` needs no unsafe; the offset is in bounds.
                TensorKind::Param { offset } => params.as_ptr().cast_mut().wrapping_add(offset),
                TensorKind::Storage { storage, offset } => {
                    storages[storage].as_mut_ptr().wrapping_add(offset)
                }
                TensorKind::View { of } => data[of],
            };
            data.push(p);
        }

        let mut shapes: Vec<Vec<i64>> =
            plan.tensors.iter().map(|t| t.shape.iter().map(|&d| d as i64).collect()).collect();
        let tensors: Vec<DLTensor> = plan
            .tensors
            .iter()
            .zip(&data)
            .zip(shapes.iter_mut())
            .map(|((t, &p), shape)| DLTensor {
                data: p.cast::<c_void>(),
                device: DLDevice { device_type: DEVICE_CPU, device_id: 0 },
                ndim: shape.len() as i32,
                dtype: DLDataType { code: t.dtype.dl_code(), bits: t.dtype.bits(), lanes: 1 },
                shape: shape.as_mut_ptr(),
                strides: ptr::null_mut(),
                byte_offset: 0,
            })
            .collect();

        let mut executor = Executor {
            _params: PhantomData,
            _storages: storages,
            inputs,
            data,
            _shapes: shapes,
            tensors,
            args: Vec::new(),
            calls: Vec::new(),
            plan,
        };
        executor.bind_calls(kernels)?;
        Ok(executor)
    }

    /// Builds the argument arrays and looks up every kernel.
    fn bind_calls(&mut self, kernels: &[(&str, KernelFn)]) -> Result<(), Error> {
        let base = self.tensors.as_mut_ptr();
        for (i, call) in self.plan.calls.iter().enumerate() {
            let kernel = kernels
                .iter()
                .find(|(name, _)| *name == call.kernel)
                .map(|&(_, f)| f)
                .ok_or_else(|| {
                    Error::Model(format!("kernel '{}' is not linked into this module", call.kernel))
                })?;
            if i32::try_from(call.args.len()).is_err() {
                return Err(Error::Model(format!(
                    "kernel '{}' has too many arguments",
                    call.kernel
                )));
            }
            let start = self.args.len();
            // `wrapping_add` stays within `tensors`: the plan checked the index.
            self.args.extend(call.args.iter().map(|&t| TVMFFIAny::dltensor(base.wrapping_add(t))));
            self.calls.push(ResolvedCall { kernel, call: i, args: start..self.args.len() });
        }
        Ok(())
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Copies `inputs` (raw bytes, one per graph input, in plan order) in,
    /// runs every kernel and returns the raw bytes of each graph output.
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<Vec<&[u8]>, Error> {
        self.copy_inputs(inputs)?;
        self.run_in_place()?;
        Ok(self.outputs())
    }

    /// [`Executor::run`], also timing every kernel call: `call_ms[i]` is
    /// set to the milliseconds call `i` of the plan took (`call_ms` is
    /// resized to the number of calls). The clock is read around each call
    /// only here; `run` and `run_in_place` read no clock at all.
    pub fn run_profiled(
        &mut self,
        inputs: &[&[u8]],
        call_ms: &mut Vec<f64>,
    ) -> Result<Vec<&[u8]>, Error> {
        self.copy_inputs(inputs)?;
        call_ms.clear();
        call_ms.reserve(self.calls.len());
        for call in &self.calls {
            let start = Instant::now();
            self.invoke(call)?;
            call_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok(self.outputs())
    }

    fn copy_inputs(&mut self, inputs: &[&[u8]]) -> Result<(), Error> {
        if inputs.len() != self.plan.inputs.len() {
            return Err(Error::Input(format!(
                "expected {} inputs, got {}",
                self.plan.inputs.len(),
                inputs.len()
            )));
        }
        for ((src, buf), io) in inputs.iter().zip(&self.inputs).zip(self.plan.inputs.iter()) {
            let t = &self.plan.tensors[io.tensor];
            if src.len() != buf.len() {
                return Err(Error::Input(format!(
                    "input '{}': expected {} bytes ({}), got {}",
                    io.name,
                    buf.len(),
                    t.describe(),
                    src.len()
                )));
            }
            // SAFETY: the buffer holds `src.len()` bytes (allocated for this
            // tensor) and cannot overlap a caller's slice.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), buf.as_mut_ptr(), src.len()) };
        }
        Ok(())
    }

    fn outputs(&self) -> Vec<&[u8]> {
        self.plan.outputs.iter().map(|io| self.bytes(io.tensor)).collect()
    }

    /// Runs every kernel on what the input buffers hold now (written through
    /// [`Executor::input_buffer`] by an embedding host, or by [`Executor::run`]).
    /// The outputs are then at [`Executor::tensor_bytes`] of each output tensor.
    pub fn run_in_place(&mut self) -> Result<(), Error> {
        for call in &self.calls {
            self.invoke(call)?;
        }
        Ok(())
    }

    /// Calls one kernel with its prepared arguments.
    #[inline(always)]
    fn invoke(&self, call: &ResolvedCall) -> Result<(), Error> {
        let mut result = TVMFFIAny::none();
        let args = &self.args[call.args.clone()];
        ffi::clear_last_error();
        // SAFETY: the kernel gets DLTensors whose data, shape and dtype
        // match what it was compiled for (the plan says so), all pointing
        // to live memory owned by `self`; `args` and `result` are valid.
        let rc = unsafe {
            (call.kernel)(ptr::null_mut(), args.as_ptr(), args.len() as i32, &mut result)
        };
        if rc != 0 {
            let msg = ffi::take_last_error().unwrap_or_else(|| "no error message".to_string());
            let name = &self.plan.calls[call.call].kernel;
            return Err(Error::Kernel(format!("kernel '{name}' failed (code {rc}): {msg}")));
        }
        Ok(())
    }

    /// The buffer of graph input `i` (64-byte aligned, `nbytes` of the input
    /// tensor long, fixed for the executor's life), `None` if there is no such
    /// input. A host writes the input there and calls [`Executor::run_in_place`].
    pub fn input_buffer(&self, i: usize) -> Option<&AlignedBuf> {
        self.inputs.get(i)
    }

    /// The current bytes of tensor `t`, `None` if there is no such tensor.
    pub fn tensor_bytes(&self, t: usize) -> Option<&[u8]> {
        (t < self.data.len()).then(|| self.bytes(t))
    }

    /// The bytes of tensor `t < tensors.len()`.
    fn bytes(&self, t: usize) -> &[u8] {
        let nbytes = self.plan.tensors[t].nbytes();
        if nbytes == 0 {
            return &[];
        }
        // SAFETY: `data[t]` points to `nbytes` initialised bytes inside a
        // buffer owned by `self` or inside the borrowed params (the plan
        // checked that they fit); no kernel runs while the borrow lives.
        unsafe { std::slice::from_raw_parts(self.data[t], nbytes) }
    }
}
