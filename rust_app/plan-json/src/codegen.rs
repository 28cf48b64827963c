//! A validated [`Plan`] as Rust source: `static` data the module is
//! compiled with, so it starts without reading or parsing anything.
//!
//! The output is deterministic (plan order, decimal numbers, no paths, no
//! timestamps), so a module build stays bit-for-bit reproducible.

use std::fmt::Write as _;

use wasmforge_core::plan::{Call, Io, Tensor, TensorKind};
use wasmforge_core::Plan;

/// Rust items defining `pub static PLAN: Option<&Plan>`: `Some` of the given
/// plan as statics, or `None` (a module built without a model). `krate` is
/// the path through which wasmforge-core's `plan` module is reached, e.g.
/// `::wasmforge_runtime` (which re-exports it) or `::wasmforge_core`.
///
/// The numbers are written as `usize` literals: on a 32-bit target a value
/// above `u32::MAX` does not compile, so check them first (the model's
/// build.rs does).
pub fn module_source(plan: Option<&Plan>, krate: &str) -> String {
    let mut s =
        String::from("// Generated from plan.json by wasmforge-plan-json. Do not edit.\n\n");
    let Some(plan) = plan else {
        let _ = writeln!(s, "pub static PLAN: Option<&{krate}::plan::Plan> = None;");
        return s;
    };
    let _ = writeln!(s, "#[allow(unused_imports)]");
    let _ = writeln!(s, "use {krate}::plan::{{Call, DType, Io, Plan, Tensor, TensorKind}};");
    s.push_str("use ::std::borrow::Cow::Borrowed;\n\n");
    s.push_str("pub static PLAN: Option<&Plan> = Some(&GRAPH);\n\n");
    s.push_str("static GRAPH: Plan = Plan {\n");
    // Debug formatting of a str is a valid Rust string literal.
    let _ = writeln!(s, "    model: Borrowed({:?}),", plan.model.as_ref());
    let _ = writeln!(s, "    params_size: {},", plan.params_size);
    let _ = writeln!(s, "    storages: Borrowed(&{}),", list(&plan.storages));
    s.push_str(
        "    tensors: Borrowed(&TENSORS),\n    calls: Borrowed(&CALLS),\n    \
         inputs: Borrowed(&INPUTS),\n    outputs: Borrowed(&OUTPUTS),\n};\n",
    );
    items(&mut s, "TENSORS", "Tensor", &plan.tensors, tensor);
    items(&mut s, "CALLS", "Call", &plan.calls, call);
    items(&mut s, "INPUTS", "Io", &plan.inputs, io);
    items(&mut s, "OUTPUTS", "Io", &plan.outputs, io);
    s
}

/// `static NAME: [Type; N] = [ ... ];`, one element a line.
fn items<T>(s: &mut String, name: &str, ty: &str, list: &[T], item: fn(&T) -> String) {
    let _ = writeln!(s, "\nstatic {name}: [{ty}; {}] = [", list.len());
    for x in list {
        let _ = writeln!(s, "    {},", item(x));
    }
    s.push_str("];\n");
}

/// `[1, 2, 3]`.
fn list(values: &[usize]) -> String {
    format!("{values:?}")
}

fn tensor(t: &Tensor) -> String {
    let kind = match t.kind {
        TensorKind::Input { index } => format!("Input {{ index: {index} }}"),
        TensorKind::Param { offset } => format!("Param {{ offset: {offset} }}"),
        TensorKind::Storage { storage, offset } => {
            format!("Storage {{ storage: {storage}, offset: {offset} }}")
        }
        TensorKind::View { of } => format!("View {{ of: {of} }}"),
    };
    // `DType`'s Debug name is its variant name.
    format!(
        "Tensor {{ dtype: DType::{:?}, shape: Borrowed(&{}), kind: TensorKind::{kind} }}",
        t.dtype,
        list(&t.shape)
    )
}

fn call(c: &Call) -> String {
    let op = match &c.op {
        Some(op) => format!("Some(Borrowed({:?}))", op.as_ref()),
        None => "None".to_string(),
    };
    format!(
        "Call {{ kernel: Borrowed({:?}), args: Borrowed(&{}), op: {op}, flops: {:?} }}",
        c.kernel.as_ref(),
        list(&c.args),
        c.flops
    )
}

fn io(io: &Io) -> String {
    format!("Io {{ name: Borrowed({:?}), tensor: {} }}", io.name.as_ref(), io.tensor)
}

/// The largest number the plan's statics hold (sizes, offsets, dimensions,
/// indices): a 32-bit target needs it to fit in its `usize`.
pub fn largest_number(plan: &Plan) -> u64 {
    let tensors = plan.tensors.iter().flat_map(|t| {
        let kind = match t.kind {
            TensorKind::Input { index: n } | TensorKind::Param { offset: n } => n,
            TensorKind::View { of: n } => n,
            TensorKind::Storage { storage, offset } => storage.max(offset),
        };
        t.shape.iter().copied().chain([kind])
    });
    let calls = plan.calls.iter().flat_map(|c| c.args.iter().copied());
    let ios = plan.inputs.iter().chain(plan.outputs.iter()).map(|io| io.tensor);
    [plan.params_size]
        .into_iter()
        .chain(plan.storages.iter().copied())
        .chain(tensors)
        .chain(calls)
        .chain(ios)
        .max()
        .unwrap_or(0) as u64
}
