//! The command line of a model module. It is a public contract:
//!
//! ```text
//! wasmforge-model --input IN.npy [--input IN2.npy ...] --output OUT.npy [--repeat N]
//! wasmforge-model --info
//! ```
//!
//! `-` is stdin / stdout. On failure exactly one line `error: ...` goes to
//! stderr; the exit code is 2 for bad flags or input data, 1 when the model
//! itself fails (a kernel error, or a broken build).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use crate::executor::Executor;
use crate::ffi::KernelFn;
use crate::json::quote;
use crate::npy;
use crate::plan::{Io, Plan};
use crate::Error;

pub const USAGE: &str = "\
usage: wasmforge-model --input IN.npy [--input IN2.npy ...] --output OUT.npy [--repeat N]
       wasmforge-model --info

Runs the embedded model on .npy files ('-' is stdin / stdout).
  --input PATH   one per graph input, in graph order
  --output PATH  one per graph output, in graph order
  --repeat N     run inference N times and print {\"run_ms\": [...]} to stderr
  --info         print the inputs and outputs as one line of JSON
";

/// What a module embeds: the plan text, the weights and the kernel table.
pub struct Model<'a> {
    /// `plan.json`; empty when the module was built without a model.
    pub plan_json: &'a [u8],
    /// `params.bin`, 64-byte aligned.
    pub params: &'a [u8],
    pub kernels: &'a [(&'a str, KernelFn)],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub info: bool,
    pub help: bool,
    /// `None` when `--repeat` was not given: run once and print no timing.
    pub repeat: Option<u32>,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Options, Error> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let takes_value = matches!(flag, "--input" | "--output" | "--repeat");
        let value = if takes_value {
            match inline.or_else(|| it.next().cloned()) {
                Some(v) if !v.is_empty() && (v == "-" || !v.starts_with("--")) => v,
                _ => return Err(Error::Usage(format!("{flag} needs a value"))),
            }
        } else if inline.is_some() {
            return Err(Error::Usage(format!("{flag} takes no value")));
        } else {
            String::new()
        };
        match flag {
            "--input" => opts.inputs.push(value),
            "--output" => opts.outputs.push(value),
            "--repeat" => match value.parse::<u32>() {
                Ok(n) if n > 0 => opts.repeat = Some(n),
                _ => {
                    return Err(Error::Usage(format!(
                        "--repeat needs a positive integer, got '{value}'"
                    )))
                }
            },
            "--info" => opts.info = true,
            "--help" | "-h" => opts.help = true,
            _ => return Err(Error::Usage(format!("unknown argument '{arg}' (see --help)"))),
        }
    }
    Ok(opts)
}

/// The module's `main`: runs with the process's arguments and standard
/// streams, prints a failure as one line and returns the exit code.
pub fn main(model: &Model) -> i32 {
    exit_code(os_args().and_then(|args| {
        run(
            model,
            &args,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        )
    }))
}

/// The process arguments after the program name, which must be UTF-8.
fn os_args() -> Result<Vec<String>, Error> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|bad| Error::Usage(format!("argument {bad:?} is not valid UTF-8")))
        })
        .collect()
}

/// 0, or the error's exit code after its one `error:` line on stderr.
fn exit_code(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            e.exit_code()
        }
    }
}

/// `error: <message>` on one line: kernel messages may span lines, but the
/// contract is exactly one line on stderr.
pub fn error_line(e: &Error) -> String {
    let msg: String = e.message().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("error: {msg}")
}

/// Runs the CLI on the given streams. Timings (with `--repeat`) go to `stderr`.
pub fn run(
    model: &Model,
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), Error> {
    if model.plan_json.is_empty() {
        return Err(Error::Usage("no model embedded (build with WASMFORGE_GRAPH_DIR)".to_string()));
    }
    let opts = parse_args(args)?;
    let io_err = |e: std::io::Error| Error::Io(format!("write failed: {e}"));
    if opts.help {
        return stdout.write_all(USAGE.as_bytes()).map_err(io_err);
    }
    let text = std::str::from_utf8(model.plan_json)
        .map_err(|_| Error::Plan("embedded plan is not UTF-8".into()))?;
    let plan = Plan::parse(text).map_err(|e| e.context("embedded plan"))?;
    if opts.info {
        return writeln!(stdout, "{}", info_json(&plan)).map_err(io_err);
    }
    check_count("--input", &opts.inputs, &plan.inputs)?;
    check_count("--output", &opts.outputs, &plan.outputs)?;

    let mut data = Vec::with_capacity(plan.inputs.len());
    for (path, io) in opts.inputs.iter().zip(&plan.inputs) {
        data.push(read_input(&plan, io, path, stdin)?);
    }
    let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();

    let mut executor = Executor::new(plan, model.params, model.kernels)?;
    let repeat = opts.repeat.unwrap_or(1);
    let mut run_ms = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        executor.run(&inputs)?;
        run_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // The outputs of the last run are still in place.
    let plan = executor.plan();
    for (path, io) in opts.outputs.iter().zip(&plan.outputs) {
        let bytes = executor.tensor_bytes(io.tensor).unwrap_or_default();
        write_output(plan, io, path, bytes, stdout)?;
    }
    if opts.repeat.is_some() {
        let times: Vec<String> = run_ms.iter().map(|t| format!("{t:.3}")).collect();
        writeln!(stderr, "{{\"run_ms\": [{}]}}", times.join(", ")).map_err(io_err)?;
    }
    Ok(())
}

/// `{"model": ..., "inputs": [{"name", "dtype", "shape"}], "outputs": [...]}`.
pub fn info_json(plan: &Plan) -> String {
    let list = |ios: &[Io]| {
        let items: Vec<String> = ios
            .iter()
            .map(|io| {
                let t = &plan.tensors[io.tensor];
                format!(
                    "{{\"name\": {}, \"dtype\": \"{}\", \"shape\": {:?}}}",
                    quote(&io.name),
                    t.dtype.name(),
                    t.shape
                )
            })
            .collect();
        format!("[{}]", items.join(", "))
    };
    format!(
        "{{\"model\": {}, \"inputs\": {}, \"outputs\": {}}}",
        quote(&plan.model),
        list(&plan.inputs),
        list(&plan.outputs)
    )
}

fn check_count(flag: &str, paths: &[String], ios: &[Io]) -> Result<(), Error> {
    let names: Vec<String> = ios.iter().map(|io| format!("'{}'", io.name)).collect();
    if paths.len() != ios.len() {
        return Err(Error::Usage(format!(
            "expected {} {flag} (one per graph {}: {}), got {}",
            ios.len(),
            if flag == "--input" { "input" } else { "output" },
            names.join(", "),
            paths.len()
        )));
    }
    if paths.iter().filter(|p| *p == "-").count() > 1 {
        return Err(Error::Usage(format!("only one {flag} can be '-'")));
    }
    Ok(())
}

fn read_input(plan: &Plan, io: &Io, path: &str, stdin: &mut dyn Read) -> Result<Vec<u8>, Error> {
    let t = &plan.tensors[io.tensor];
    let context = format!("input '{}'", io.name);
    let result = if path == "-" {
        npy::read_expected(stdin, t.dtype, &t.shape)
    } else {
        let file = File::open(path)
            .map_err(|e| Error::Io(format!("cannot open '{path}': {e}")).context(&context))?;
        npy::read_expected(&mut BufReader::new(file), t.dtype, &t.shape)
    };
    let shown = if path == "-" { "stdin" } else { path };
    result.map_err(|e| match e {
        Error::Input(_) => e.context(&context),
        _ => e.context(&format!("{context}: {shown}")),
    })
}

fn write_output(
    plan: &Plan,
    io: &Io,
    path: &str,
    bytes: &[u8],
    stdout: &mut dyn Write,
) -> Result<(), Error> {
    let t = &plan.tensors[io.tensor];
    let context = format!("output '{}'", io.name);
    let result = if path == "-" {
        npy::write(stdout, t.dtype, &t.shape, bytes)
    } else {
        let file = File::create(path)
            .map_err(|e| Error::Io(format!("cannot create '{path}': {e}")).context(&context))?;
        npy::write(&mut BufWriter::new(file), t.dtype, &t.shape, bytes)
    };
    result.map_err(|e| e.context(&context))
}

// Modules built with `--external-params`.

use crate::params::{self, ExternalParams};
use crate::sha256;

/// The extra flag of a module whose weights live in a separate file.
pub const USAGE_EXTERNAL_PARAMS: &str = "\
  --params PATH  the weights file (<name>.params.bin beside the .wasm); required
                 to run, checked against the size and sha256 built into the module
";

/// `main` of a module built with external weights: like [`main`], plus
/// `--params PATH`.
pub fn main_external(
    plan_json: &[u8],
    external: &ExternalParams,
    kernels: &[(&str, KernelFn)],
) -> i32 {
    exit_code(os_args().and_then(|args| {
        run_external(
            plan_json,
            external,
            kernels,
            &args,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        )
    }))
}

/// [`run`] for a module whose weights are read from `--params PATH`: the
/// file must have the size and SHA-256 in `external`, or nothing runs
/// (exit code 2). `--info` and `--help` need no weights.
pub fn run_external(
    plan_json: &[u8],
    external: &ExternalParams,
    kernels: &[(&str, KernelFn)],
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), Error> {
    if plan_json.is_empty() {
        return Err(Error::Usage("no model embedded (build with WASMFORGE_GRAPH_DIR)".to_string()));
    }
    let (params_path, rest) = take_params_flag(args)?;
    let opts = parse_args(&rest)?;
    let io_err = |e: std::io::Error| Error::Io(format!("write failed: {e}"));
    if opts.help {
        return write!(stdout, "{USAGE}{USAGE_EXTERNAL_PARAMS}").map_err(io_err);
    }
    let text = std::str::from_utf8(plan_json)
        .map_err(|_| Error::Plan("embedded plan is not UTF-8".into()))?;
    let plan = Plan::parse(text).map_err(|e| e.context("embedded plan"))?;
    if plan.params_size as u64 != external.size {
        return Err(Error::Model(format!(
            "the plan says params_size {} but the module was built for {} bytes of weights",
            plan.params_size, external.size
        )));
    }
    if opts.info {
        let info = info_json(&plan);
        let params = format!(
            "\"params\": {{\"external\": true, \"size\": {}, \"sha256\": \"{}\"}}",
            external.size,
            sha256::hex(&external.sha256)
        );
        // info_json is one JSON object: add the key before its closing brace.
        let body = info.strip_suffix('}').unwrap_or(&info);
        return writeln!(stdout, "{body}, {params}}}").map_err(io_err);
    }
    // Flags first: a wrong count fails before megabytes of weights are read.
    check_count("--input", &opts.inputs, &plan.inputs)?;
    check_count("--output", &opts.outputs, &plan.outputs)?;
    let path = params_path.ok_or_else(|| {
        Error::Usage(
            "this module keeps its weights in a separate file: give --params PATH \
             (the <name>.params.bin beside the .wasm)"
                .to_string(),
        )
    })?;
    let params = params::load(&path, external)?;
    let model = Model { plan_json, params: params.as_slice(), kernels };
    run(&model, &rest, stdin, stdout, stderr)
}

/// Splits `--params PATH` (or `--params=PATH`) off the other arguments.
pub fn take_params_flag(args: &[String]) -> Result<(Option<String>, Vec<String>), Error> {
    let mut path = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = if arg == "--params" {
            match it.next() {
                Some(v) if !v.is_empty() && !v.starts_with("--") => v.clone(),
                _ => return Err(Error::Usage("--params needs a value".to_string())),
            }
        } else if let Some(v) = arg.strip_prefix("--params=") {
            if v.is_empty() {
                return Err(Error::Usage("--params needs a value".to_string()));
            }
            v.to_string()
        } else {
            rest.push(arg.clone());
            continue;
        };
        if path.replace(value).is_some() {
            return Err(Error::Usage("--params given more than once".to_string()));
        }
    }
    Ok((path, rest))
}
