//! tract as a wasm peer for `invoke bench`: load an ONNX file, run it on the
//! given `.npy` inputs `--runs` times (after one warm-up), write the outputs as
//! `.npy` and print one JSON line of timings measured inside the module.
//!
//! `tract-peer --model M.onnx --input I0.npy [--input I1.npy ...]
//!             --output O0.npy [--output ...] --runs N`

use std::time::Instant;

use tract_onnx::prelude::*;

mod npy;

struct Args {
    model: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { model: String::new(), inputs: vec![], outputs: vec![], runs: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => args.model = value,
            "--input" => args.inputs.push(value),
            "--output" => args.outputs.push(value),
            "--runs" => args.runs = value.parse().map_err(|_| format!("--runs: not a count: {value}"))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.model.is_empty() {
        return Err("--model is required".into());
    }
    Ok(args)
}

fn millis(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn run(args: Args) -> TractResult<()> {
    let inputs: Vec<Tensor> = args.inputs.iter().map(|p| npy::read(p)).collect::<TractResult<_>>()?;
    let start = Instant::now();
    let mut model = tract_onnx::onnx().model_for_path(&args.model)?;
    for (i, tensor) in inputs.iter().enumerate() {
        let fact = InferenceFact::dt_shape(tensor.datum_type(), tensor.shape());
        model = model.with_input_fact(i, fact)?;
    }
    let plan = model.into_optimized()?.into_runnable()?;
    let load_ms = millis(start);
    let feed = || inputs.iter().map(|t| t.clone().into_tvalue()).collect::<TVec<_>>();
    let start = Instant::now();
    let mut result = plan.run(feed())?;
    let warmup_ms = millis(start);
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        result = plan.run(feed())?;
        times.push(millis(start));
    }
    for (path, value) in args.outputs.iter().zip(result.iter()) {
        npy::write_f32(path, &*value.cast_to::<f32>()?)?;
    }
    let times: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!(
        "{{\"load_ms\": {load_ms:.4}, \"warmup_ms\": {warmup_ms:.4}, \"times_ms\": [{}]}}",
        times.join(", ")
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(args) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
