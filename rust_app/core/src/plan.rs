//! The execution plan, format 1 (docs/plan-format.md), as Rust values, and
//! its full validation, so that the executor can trust every index and size.
//!
//! Lists and names are `Cow<'static, _>`: a module's plan is `static` data
//! generated at build time (borrowed), a plan read from `plan.json` by
//! `wasmforge-plan-json` owns its lists. Both are the same type and compare
//! equal when they describe the same plan.

use std::borrow::Cow;

use crate::Error;

pub const FORMAT: i64 = 1;
/// Alignment of parameter offsets in `params.bin`, and of every buffer the
/// runtime allocates (TVM assumes 64-byte aligned tensor data).
pub const ALIGN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 12] = [
        DType::F16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// (plan name, DLPack type code, bits, .npy kind character).
    fn row(self) -> (&'static str, u8, u8, char) {
        match self {
            DType::F16 => ("float16", 2, 16, 'f'),
            DType::F32 => ("float32", 2, 32, 'f'),
            DType::F64 => ("float64", 2, 64, 'f'),
            DType::I8 => ("int8", 0, 8, 'i'),
            DType::I16 => ("int16", 0, 16, 'i'),
            DType::I32 => ("int32", 0, 32, 'i'),
            DType::I64 => ("int64", 0, 64, 'i'),
            DType::U8 => ("uint8", 1, 8, 'u'),
            DType::U16 => ("uint16", 1, 16, 'u'),
            DType::U32 => ("uint32", 1, 32, 'u'),
            DType::U64 => ("uint64", 1, 64, 'u'),
            DType::Bool => ("bool", 6, 8, 'b'),
        }
    }

    /// Parses a plan dtype name such as `float32`.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The numpy-style name, as in the plan.
    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// DLPack `DLDataTypeCode`: int 0, uint 1, float 2, bool 6.
    pub fn dl_code(self) -> u8 {
        self.row().1
    }

    pub fn bits(self) -> u8 {
        self.row().2
    }

    /// Bytes per element (`bool` is one byte).
    pub fn itemsize(self) -> usize {
        usize::from(self.bits() / 8)
    }

    /// The .npy type character: `f`, `i`, `u` or `b`.
    pub fn npy_kind(self) -> char {
        self.row().3
    }

    /// The dtype of a .npy kind character and itemsize, if supported.
    pub fn from_npy(kind: char, itemsize: usize) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.npy_kind() == kind && d.itemsize() == itemsize)
    }
}

/// Where a tensor's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Graph input number `index`, in a runtime-owned buffer.
    Input { index: usize },
    /// In `params.bin` at byte `offset`.
    Param { offset: usize },
    /// In storage `storage` at byte `offset`.
    Storage { storage: usize, offset: usize },
    /// The bytes of an earlier tensor `of`, reinterpreted.
    View { of: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Cow<'static, [usize]>,
    pub kind: TensorKind,
}

impl Tensor {
    /// `prod(shape) * itemsize`, `None` on overflow.
    pub fn checked_nbytes(&self) -> Option<usize> {
        self.shape.iter().try_fold(self.dtype.itemsize(), |n, &d| n.checked_mul(d))
    }

    /// `prod(shape) * itemsize`; a validated plan guarantees it does not
    /// overflow (it saturates otherwise).
    pub fn nbytes(&self) -> usize {
        self.checked_nbytes().unwrap_or(usize::MAX)
    }

    /// `float32 [1, 3]`: how errors show a dtype and shape.
    pub fn describe(&self) -> String {
        describe(self.dtype, &self.shape)
    }
}

/// `float32 [1, 3]`: how errors show a dtype and shape.
pub fn describe(dtype: DType, shape: &[usize]) -> String {
    format!("{} {:?}", dtype.name(), shape)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kernel: Cow<'static, str>,
    pub args: Cow<'static, [usize]>,
    /// What kind of operator the kernel computes (`conv2d`, `matmul`, `pool`,
    /// ...), as the compiler derived it; `None` in a plan without it.
    pub op: Option<Cow<'static, str>>,
    /// Floating-point operations of one call, estimated by the compiler from
    /// the kernel's TIR; `None` when unknown. Only `--profile` reads it.
    pub flops: Option<u64>,
}

/// A graph input or output: its ONNX name and its tensor index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Io {
    pub name: Cow<'static, str>,
    pub tensor: usize,
}

/// An execution plan. Build one from statics or with `wasmforge-plan-json`,
/// then [`Plan::validate`] it: the executor does, and refuses an invalid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub model: Cow<'static, str>,
    pub params_size: usize,
    /// Byte size of each storage.
    pub storages: Cow<'static, [usize]>,
    pub tensors: Cow<'static, [Tensor]>,
    pub calls: Cow<'static, [Call]>,
    pub inputs: Cow<'static, [Io]>,
    pub outputs: Cow<'static, [Io]>,
}

impl Plan {
    /// Checks every rule of format 1 that is not about JSON syntax or types:
    /// every index in range, every tensor inside its storage or the params,
    /// aligned params, views of earlier tensors and no larger than them,
    /// printable kernel names, inputs bound one to one. The error names the
    /// first offending field by its path in `plan.json`.
    pub fn validate(&self) -> Result<(), Error> {
        for (i, t) in self.tensors.iter().enumerate() {
            self.check_tensor(i, t)?;
        }
        let n_tensors = self.tensors.len();
        for (i, c) in self.calls.iter().enumerate() {
            let at = format!("calls[{i}]");
            // The name becomes a C symbol: `__tvm_ffi_<kernel>`.
            if c.kernel.is_empty() || !c.kernel.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(plan_err(
                    &format!("{at}.kernel"),
                    "kernel name must be non-empty printable ASCII",
                ));
            }
            for (j, &a) in c.args.iter().enumerate() {
                index(a, &format!("{at}.args[{j}]"), n_tensors, "tensor")?;
            }
        }
        for (i, io) in self.inputs.iter().enumerate() {
            let at = format!("inputs[{i}].tensor");
            index(io.tensor, &at, n_tensors, "tensor")?;
            if self.tensors[io.tensor].kind != (TensorKind::Input { index: i }) {
                let what = format!("tensor {} must have kind \"input\" with index {i}", io.tensor);
                return Err(plan_err(&at, &what));
            }
        }
        for (i, io) in self.outputs.iter().enumerate() {
            index(io.tensor, &format!("outputs[{i}].tensor"), n_tensors, "tensor")?;
        }
        Ok(())
    }

    /// Tensor `i` against the storages, the params and the tensors before it.
    fn check_tensor(&self, i: usize, t: &Tensor) -> Result<(), Error> {
        let at = format!("tensors[{i}]");
        for (j, &d) in t.shape.iter().enumerate() {
            // DLTensor shapes are int64; usize may be wider on some hosts.
            if i64::try_from(d).is_err() {
                return Err(plan_err(&format!("{at}.shape[{j}]"), "dimension too large"));
            }
        }
        let nbytes = t
            .checked_nbytes()
            .ok_or_else(|| plan_err(&format!("{at}.shape"), "tensor byte size overflows"))?;
        match t.kind {
            TensorKind::Input { index: input } => {
                index(input, &format!("{at}.index"), self.inputs.len(), "input")?;
                if self.tensors[..i].iter().any(|e| e.kind == t.kind) {
                    return Err(plan_err(
                        &format!("{at}.index"),
                        &format!("input {input} is used by two tensors"),
                    ));
                }
            }
            TensorKind::Param { offset } => {
                if offset % ALIGN != 0 {
                    return Err(plan_err(
                        &format!("{at}.offset"),
                        &format!("param offset {offset} is not a multiple of {ALIGN}"),
                    ));
                }
                fits(offset, nbytes, self.params_size, &at, "params.bin")?;
            }
            TensorKind::Storage { storage, offset } => {
                index(storage, &format!("{at}.storage"), self.storages.len(), "storage")?;
                let limit = self.storages[storage];
                fits(offset, nbytes, limit, &at, &format!("storage {storage}"))?;
            }
            TensorKind::View { of } => {
                if of >= i {
                    return Err(plan_err(
                        &format!("{at}.of"),
                        &format!("a view must refer to an earlier tensor, got {of}"),
                    ));
                }
                // Earlier tensors are valid, so their size does not overflow.
                let base = self.tensors[of].nbytes();
                if nbytes > base {
                    return Err(plan_err(
                        &at,
                        &format!("view of {nbytes} bytes exceeds the {base} bytes of tensor {of}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The distinct kernel names, sorted.
    pub fn kernel_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.calls.iter().map(|c| c.kernel.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `invalid plan: <at>: <what>`, the message of every validation error.
pub fn plan_err(at: &str, what: &str) -> Error {
    if at.is_empty() {
        Error::Plan(format!("invalid plan: {what}"))
    } else {
        Error::Plan(format!("invalid plan: {at}: {what}"))
    }
}

/// Checks that `i` indexes a list of `len` `what`s.
fn index(i: usize, at: &str, len: usize, what: &str) -> Result<(), Error> {
    if i >= len {
        return Err(plan_err(at, &format!("{what} index {i} out of range (there are {len})")));
    }
    Ok(())
}

/// Checks that `[offset, offset + nbytes)` lies within `limit` bytes.
fn fits(offset: usize, nbytes: usize, limit: usize, at: &str, region: &str) -> Result<(), Error> {
    match offset.checked_add(nbytes) {
        Some(end) if end <= limit => Ok(()),
        _ => Err(plan_err(
            at,
            &format!("{nbytes} bytes at offset {offset} do not fit in {region} of {limit} bytes"),
        )),
    }
}
