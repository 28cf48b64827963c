//! `--profile`: the time of every kernel call of the plan, as JSON.
//!
//! The executor times each call only when asked ([`Executor::run_profiled`]);
//! this module turns those times, over every run, into one JSON document
//! (docs: README "Where the time goes"). FLOPs and the operator kind come
//! from the plan (the compiler estimates them); a plan without them gives
//! `null`.
//!
//! [`Executor::run_profiled`]: crate::executor::Executor::run_profiled

use crate::cli::quote;
use crate::plan::Plan;

/// The version of the profile document; a reader checks it.
pub const PROFILE_FORMAT: u32 = 1;

/// The median of `values` (the mean of the middle two for an even count),
/// 0 for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The profile of `run_ms.len()` runs: `run_ms[r]` is the whole of run `r`,
/// `call_ms[r][i]` the time of plan call `i` in run `r` (milliseconds).
///
/// ```text
/// {"profile": 1, "model": "...", "runs": N, "run_ms": [...], "calls": [
///  {"index": 0, "kernel": "...", "op": "conv2d", "args": [{"dtype": "float32",
///   "shape": [1, 8]}], "flops": 10240, "ms": 0.0123, "gflops": 0.832,
///   "ms_runs": [...]},
///  ...]}
/// ```
/// `ms` is the median over the runs, `gflops` is `flops / ms` (`null` when
/// either is unknown or zero).
pub fn json(plan: &Plan, run_ms: &[f64], call_ms: &[Vec<f64>]) -> String {
    let mut calls = Vec::with_capacity(plan.calls.len());
    for (i, call) in plan.calls.iter().enumerate() {
        let times: Vec<f64> = call_ms.iter().filter_map(|run| run.get(i).copied()).collect();
        let ms = median(&times);
        let args: Vec<String> = call
            .args
            .iter()
            .map(|&t| {
                let t = &plan.tensors[t];
                format!("{{\"dtype\": \"{}\", \"shape\": {:?}}}", t.dtype.name(), t.shape)
            })
            .collect();
        let gflops = match call.flops {
            Some(f) if f > 0 && ms > 0.0 => format!("{:.4}", f as f64 / ms / 1e6),
            _ => "null".to_string(),
        };
        calls.push(format!(
            "  {{\"index\": {i}, \"kernel\": {}, \"op\": {}, \"args\": [{}], \"flops\": {}, \
             \"ms\": {}, \"gflops\": {gflops}, \"ms_runs\": {}}}",
            quote(&call.kernel),
            call.op.as_deref().map_or("null".to_string(), quote),
            args.join(", "),
            call.flops.map_or("null".to_string(), |f| f.to_string()),
            number(ms),
            numbers(&times),
        ));
    }
    format!(
        "{{\"profile\": {PROFILE_FORMAT}, \"model\": {}, \"runs\": {}, \"run_ms\": {}, \"calls\": [\n{}\n]}}\n",
        quote(&plan.model),
        run_ms.len(),
        numbers(run_ms),
        calls.join(",\n")
    )
}

/// Milliseconds to the microsecond's thousandth: enough for a 50 ns kernel.
fn number(ms: f64) -> String {
    format!("{ms:.6}")
}

fn numbers(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|&v| number(v)).collect();
    format!("[{}]", items.join(", "))
}
