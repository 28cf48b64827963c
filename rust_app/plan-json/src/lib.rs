//! `plan.json` (format 1, docs/plan-format.md) at build time: a strict JSON
//! reader ([`json`]), its conversion to a validated [`Plan`] ([`parse`]) and
//! the Rust source of that plan as `static` data ([`codegen`]).
//!
//! `model/build.rs` reads and validates the plan here and writes the statics
//! the module is compiled with, so the `.wasm` holds no JSON text and no JSON
//! parser. The semantic rules live in [`Plan::validate`] (wasmforge-core);
//! this crate checks only what is about JSON: keys, types and names.

use std::borrow::Cow;

use wasmforge_core::plan::{plan_err, Call, Io, Tensor, TensorKind, FORMAT};
use wasmforge_core::{DType, Error, Plan};

pub mod codegen;
pub mod json;

use json::Value;

/// Parses and validates `plan.json` text.
pub fn parse(text: &str) -> Result<Plan, Error> {
    from_json(&json::parse(text)?)
}

/// Converts a parsed plan document and validates the result.
pub fn from_json(doc: &Value) -> Result<Plan, Error> {
    if !doc.is_object() {
        return Err(plan_err("", "expected an object"));
    }
    check_format(req(doc, "", "format")?)?;
    let model = string(req(doc, "", "model")?, "model")?.to_string();
    let params_size = size(req(doc, "", "params_size")?, "params_size")?;
    let mut storages = Vec::new();
    for (at, s) in items(doc, "", "storages")? {
        storages.push(size(req(s, &at, "size")?, &path(&at, "size"))?);
    }
    let mut tensors = Vec::new();
    for (at, t) in items(doc, "", "tensors")? {
        tensors.push(tensor(t, &at)?);
    }
    let mut calls = Vec::new();
    for (at, c) in items(doc, "", "calls")? {
        calls.push(call(c, &at)?);
    }
    let plan = Plan {
        model: model.into(),
        params_size,
        storages: storages.into(),
        tensors: tensors.into(),
        calls: calls.into(),
        inputs: io_list(doc, "inputs")?.into(),
        outputs: io_list(doc, "outputs")?.into(),
    };
    plan.validate()?;
    Ok(plan)
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

/// A non-negative integer that fits in `usize`.
fn size(v: &Value, at: &str) -> Result<usize, Error> {
    match v {
        Value::Int(i) if *i >= 0 => usize::try_from(*i)
            .map_err(|_| plan_err(at, &format!("{i} is too large for this target"))),
        _ => Err(plan_err(at, "expected a non-negative integer")),
    }
}

fn tensor(t: &Value, at: &str) -> Result<Tensor, Error> {
    let name = string(req(t, at, "dtype")?, &path(at, "dtype"))?;
    let dtype = DType::from_name(name)
        .ok_or_else(|| plan_err(&path(at, "dtype"), &format!("unsupported dtype {name:?}")))?;
    let mut shape = Vec::new();
    for (at_dim, d) in items(t, at, "shape")? {
        shape.push(size(d, &at_dim)?);
    }
    let kind_name = string(req(t, at, "kind")?, &path(at, "kind"))?;
    let field = |key: &str| size(req(t, at, key)?, &path(at, key));
    let kind = match kind_name {
        "input" => TensorKind::Input { index: field("index")? },
        "param" => TensorKind::Param { offset: field("offset")? },
        "storage" => TensorKind::Storage { storage: field("storage")?, offset: field("offset")? },
        "view" => TensorKind::View { of: field("of")? },
        other => {
            return Err(plan_err(&path(at, "kind"), &format!("unknown kind {other:?}")));
        }
    };
    Ok(Tensor { dtype, shape: shape.into(), kind })
}

fn call(c: &Value, at: &str) -> Result<Call, Error> {
    let kernel = string(req(c, at, "kernel")?, &path(at, "kernel"))?.to_string();
    let mut args = Vec::new();
    for (at, a) in items(c, at, "args")? {
        args.push(size(a, &at)?);
    }
    // Optional (added within format 1): older plans have neither.
    let op = match c.get("op") {
        None => None,
        Some(v) => Some(Cow::Owned(string(v, &path(at, "op"))?.to_string())),
    };
    let flops = match c.get("flops") {
        None => None,
        Some(Value::Int(i)) if *i >= 0 => Some(*i as u64),
        Some(_) => return Err(plan_err(&path(at, "flops"), "expected a non-negative integer")),
    };
    Ok(Call { kernel: kernel.into(), args: args.into(), op, flops })
}

fn io_list(doc: &Value, key: &str) -> Result<Vec<Io>, Error> {
    let mut list = Vec::new();
    for (at, v) in items(doc, "", key)? {
        let name = string(req(v, &at, "name")?, &path(&at, "name"))?.to_string();
        let tensor = size(req(v, &at, "tensor")?, &path(&at, "tensor"))?;
        list.push(Io { name: Cow::Owned(name), tensor });
    }
    Ok(list)
}
