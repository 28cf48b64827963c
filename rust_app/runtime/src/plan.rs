//! The execution plan, format 1 (docs/plan-format.md): parsing and full
//! validation, so that the executor can trust every index and size.

use crate::json::{self, Value};
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
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    /// `prod(shape) * itemsize`, checked not to overflow.
    pub nbytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kernel: String,
    pub args: Vec<usize>,
}

/// A graph input or output: its ONNX name and its tensor index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Io {
    pub name: String,
    pub tensor: usize,
}

/// A validated plan: every index is in range and every tensor fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub model: String,
    pub params_size: usize,
    /// Byte size of each storage.
    pub storages: Vec<usize>,
    pub tensors: Vec<Tensor>,
    pub calls: Vec<Call>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
}

impl Plan {
    /// Parses and validates `plan.json` text.
    pub fn parse(text: &str) -> Result<Plan, Error> {
        Plan::from_json(&json::parse(text)?)
    }

    /// Validates a parsed plan document.
    pub fn from_json(doc: &Value) -> Result<Plan, Error> {
        if !doc.is_object() {
            return Err(plan_err("", "expected an object"));
        }
        check_format(req(doc, "", "format")?)?;
        let model = string(req(doc, "", "model")?, "model")?.to_string();
        let params_size = size(req(doc, "", "params_size")?, "params_size")?;
        let n_inputs = items(doc, "", "inputs")?.len();

        let mut storages = Vec::new();
        for (at, s) in items(doc, "", "storages")? {
            storages.push(size(req(s, &at, "size")?, &path(&at, "size"))?);
        }
        let mut tensors: Vec<Tensor> = Vec::new();
        for (at, t) in items(doc, "", "tensors")? {
            let t = tensor(t, &at, &tensors, &storages, params_size, n_inputs)?;
            tensors.push(t);
        }
        let mut calls = Vec::new();
        for (at, c) in items(doc, "", "calls")? {
            calls.push(call(c, &at, tensors.len())?);
        }
        let inputs = io_list(doc, "inputs", tensors.len())?;
        for (i, io) in inputs.iter().enumerate() {
            if tensors[io.tensor].kind != (TensorKind::Input { index: i }) {
                let what = format!("tensor {} must have kind \"input\" with index {i}", io.tensor);
                return Err(plan_err(&format!("inputs[{i}].tensor"), &what));
            }
        }
        let outputs = io_list(doc, "outputs", tensors.len())?;
        Ok(Plan { model, params_size, storages, tensors, calls, inputs, outputs })
    }

    /// The distinct kernel names, sorted.
    pub fn kernel_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.calls.iter().map(|c| c.kernel.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn plan_err(at: &str, what: &str) -> Error {
    if at.is_empty() {
        Error::Plan(format!("invalid plan: {what}"))
    } else {
        Error::Plan(format!("invalid plan: {at}: {what}"))
    }
}

fn check_format(format: &Value) -> Result<(), Error> {
    match format {
        Value::Int(FORMAT) => Ok(()),
        Value::Int(i) => {
            let what = format!("unsupported plan format {i} (this runtime reads format {FORMAT})");
            Err(plan_err("format", &what))
        }
        v => {
            let what = format!("expected the integer {FORMAT}, got {}", v.type_name());
            Err(plan_err("format", &what))
        }
    }
}

/// `at.key`, or `key` at the top level.
fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// The elements of the required array member `key`, each with its path.
fn items<'v>(obj: &'v Value, at: &str, key: &str) -> Result<Vec<(String, &'v Value)>, Error> {
    let here = path(at, key);
    let list = array(req(obj, at, key)?, &here)?;
    Ok(list.iter().enumerate().map(|(i, v)| (format!("{here}[{i}]"), v)).collect())
}

/// The required member `key` of object `obj` (located at `at`).
fn req<'v>(obj: &'v Value, at: &str, key: &str) -> Result<&'v Value, Error> {
    if !obj.is_object() {
        return Err(plan_err(at, &format!("expected an object, got {}", obj.type_name())));
    }
    obj.get(key).ok_or_else(|| plan_err(&path(at, key), "missing required key"))
}

fn string<'v>(v: &'v Value, at: &str) -> Result<&'v str, Error> {
    v.as_str().ok_or_else(|| plan_err(at, &format!("expected a string, got {}", v.type_name())))
}

fn array<'v>(v: &'v Value, at: &str) -> Result<&'v [Value], Error> {
    v.as_array().ok_or_else(|| plan_err(at, &format!("expected an array, got {}", v.type_name())))
}

/// A non-negative integer that fits in `usize` (32 bits on wasm32).
fn size(v: &Value, at: &str) -> Result<usize, Error> {
    match v {
        Value::Int(i) if *i >= 0 => usize::try_from(*i)
            .map_err(|_| plan_err(at, &format!("{i} is too large for this target"))),
        _ => Err(plan_err(at, "expected a non-negative integer")),
    }
}

/// An index below `len` into the list of `what`s.
fn index(v: &Value, at: &str, len: usize, what: &str) -> Result<usize, Error> {
    let i = size(v, at)?;
    if i >= len {
        return Err(plan_err(at, &format!("{what} index {i} out of range (there are {len})")));
    }
    Ok(i)
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

fn tensor(
    t: &Value,
    at: &str,
    earlier: &[Tensor],
    storages: &[usize],
    params_size: usize,
    n_inputs: usize,
) -> Result<Tensor, Error> {
    let name = string(req(t, at, "dtype")?, &path(at, "dtype"))?;
    let dtype = DType::from_name(name).ok_or_else(|| {
        plan_err(&path(at, "dtype"), &format!("unsupported dtype {}", json::quote(name)))
    })?;
    let mut shape = Vec::new();
    let mut nbytes = Some(dtype.itemsize());
    for (at_dim, d) in items(t, at, "shape")? {
        let d = size(d, &at_dim)?;
        // DLTensor shapes are int64; usize may be wider on some hosts.
        if i64::try_from(d).is_err() {
            return Err(plan_err(&at_dim, "dimension too large"));
        }
        nbytes = nbytes.and_then(|n| n.checked_mul(d));
        shape.push(d);
    }
    let nbytes =
        nbytes.ok_or_else(|| plan_err(&path(at, "shape"), "tensor byte size overflows"))?;

    let kind_name = string(req(t, at, "kind")?, &path(at, "kind"))?;
    let kind = match kind_name {
        "input" => {
            let index = index(req(t, at, "index")?, &path(at, "index"), n_inputs, "input")?;
            if earlier.iter().any(|e| e.kind == TensorKind::Input { index }) {
                return Err(plan_err(
                    &path(at, "index"),
                    &format!("input {index} is used by two tensors"),
                ));
            }
            TensorKind::Input { index }
        }
        "param" => {
            let offset = size(req(t, at, "offset")?, &path(at, "offset"))?;
            if offset % ALIGN != 0 {
                return Err(plan_err(
                    &path(at, "offset"),
                    &format!("param offset {offset} is not a multiple of {ALIGN}"),
                ));
            }
            fits(offset, nbytes, params_size, at, "params.bin")?;
            TensorKind::Param { offset }
        }
        "storage" => {
            let storage =
                index(req(t, at, "storage")?, &path(at, "storage"), storages.len(), "storage")?;
            let offset = size(req(t, at, "offset")?, &path(at, "offset"))?;
            fits(offset, nbytes, storages[storage], at, &format!("storage {storage}"))?;
            TensorKind::Storage { storage, offset }
        }
        "view" => {
            let of = size(req(t, at, "of")?, &path(at, "of"))?;
            let base = earlier.get(of).ok_or_else(|| {
                plan_err(
                    &path(at, "of"),
                    &format!("a view must refer to an earlier tensor, got {of}"),
                )
            })?;
            if nbytes > base.nbytes {
                return Err(plan_err(
                    at,
                    &format!(
                        "view of {nbytes} bytes exceeds the {} bytes of tensor {of}",
                        base.nbytes
                    ),
                ));
            }
            TensorKind::View { of }
        }
        other => {
            return Err(plan_err(
                &path(at, "kind"),
                &format!("unknown kind {}", json::quote(other)),
            ));
        }
    };
    Ok(Tensor { dtype, shape, kind, nbytes })
}

fn call(c: &Value, at: &str, n_tensors: usize) -> Result<Call, Error> {
    let kernel = string(req(c, at, "kernel")?, &path(at, "kernel"))?;
    // The name becomes a C symbol: `__tvm_ffi_<kernel>`.
    if kernel.is_empty() || !kernel.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(plan_err(&path(at, "kernel"), "kernel name must be non-empty printable ASCII"));
    }
    let mut args = Vec::new();
    for (at, a) in items(c, at, "args")? {
        args.push(index(a, &at, n_tensors, "tensor")?);
    }
    Ok(Call { kernel: kernel.to_string(), args })
}

fn io_list(doc: &Value, key: &str, n_tensors: usize) -> Result<Vec<Io>, Error> {
    let mut list = Vec::new();
    for (at, v) in items(doc, "", key)? {
        let name = string(req(v, &at, "name")?, &path(&at, "name"))?.to_string();
        let tensor = index(req(v, &at, "tensor")?, &path(&at, "tensor"), n_tensors, "tensor")?;
        list.push(Io { name, tensor });
    }
    Ok(list)
}
