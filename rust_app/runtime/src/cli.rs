//! The command line of a model module. It is a public contract:
//!
//! ```text
//! wasmforge-model --input IN.npy [--input IN2.npy ...] --output OUT.npy [--repeat N] [--profile PATH]
//! wasmforge-model --info
//! ```
//!
//! A module built with external weights also takes `--params PATH`.
//! `-` is stdin / stdout. On failure exactly one line `error: ...` goes to
//! stderr; the exit code is 2 for bad flags or input data, 1 when the model
//! itself fails (a kernel error, or a broken build).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use crate::executor::Executor;
use crate::ffi::KernelFn;
use crate::npy;
use crate::params::{self, ExternalParams};
use crate::plan::{Io, Plan};
use crate::profile;
use crate::sha256;
use crate::{Error, ExitCode};

pub const USAGE: &str = "\
usage: wasmforge-model --input IN.npy [--input IN2.npy ...] --output OUT.npy [--repeat N]
                       [--profile PATH]
       wasmforge-model --info

Runs the embedded model on .npy files ('-' is stdin / stdout).
  --input PATH   one per graph input, in graph order
  --output PATH  one per graph output, in graph order
  --repeat N     run inference N times and print {\"run_ms\": [...]} to stderr
  --profile PATH time every kernel call and write the profile as JSON (median
                 over the --repeat runs); with --profile the --output flags may
                 be left out
  --info         print the inputs and outputs as one line of JSON
";

/// The extra flag of a module whose weights live in a separate file.
pub const USAGE_EXTERNAL_PARAMS: &str = "\
  --params PATH  the weights file (<name>.params.bin beside the .wasm); required
                 to run, checked against the size and sha256 built into the module
";

/// What a module is built with: the plan (generated statics), the weights,
/// the kernel table and what the build knew beyond the plan.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    /// `None` when the module was built without a model.
    pub plan: Option<&'a Plan>,
    pub weights: Weights<'a>,
    pub kernels: &'a [(&'a str, KernelFn)],
    pub build: BuildInfo<'a>,
}

/// What `--info` (and the embedding ABI's `wasmforge_info`) reports beyond
/// the plan, baked in by model/build.rs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildInfo<'a> {
    /// The WebAssembly features (proposals beyond the 1.0 MVP) the engine
    /// must support to compile the module, sorted: those the kernels were
    /// compiled with and those rustc enabled for the runtime.
    pub features: &'a [&'a str],
    /// How to turn raw data into the input tensors (from the model
    /// registry), `None` when unknown.
    pub preprocessing: Option<&'a str>,
}

/// The version of the embedding ABI (docs/embedding.md) a module exports.
pub const ABI_VERSION: u32 = 1;

/// Where a module's weights are.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// `params.bin` linked into the module, 64-byte aligned.
    Embedded(&'a [u8]),
    /// In the file given with `--params PATH`, which must have this size and
    /// SHA-256 (`--external-params` builds).
    External(&'a ExternalParams),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub info: bool,
    pub help: bool,
    /// `None` when `--repeat` was not given: run once and print no timing.
    pub repeat: Option<u32>,
    /// `--params PATH`, known only to a module with external weights.
    pub params: Option<String>,
    /// `--profile PATH`: time every kernel call and write the profile there.
    pub profile: Option<String>,
}

/// Parses the arguments after the program name, once. `--params` is a flag
/// only when `external_params` (a module built with external weights).
pub fn parse_args(args: &[String], external_params: bool) -> Result<Options, Error> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let is_params = external_params && flag == "--params";
        let takes_value =
            is_params || matches!(flag, "--input" | "--output" | "--repeat" | "--profile");
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
        if is_params {
            if opts.params.replace(value).is_some() {
                return Err(Error::Usage("--params given more than once".to_string()));
            }
            continue;
        }
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
            "--profile" => {
                if opts.profile.replace(value).is_some() {
                    return Err(Error::Usage("--profile given more than once".to_string()));
                }
            }
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
    let Some(plan) = model.plan else {
        return Err(Error::Usage("no model embedded (build with WASMFORGE_GRAPH_DIR)".to_string()));
    };
    let external = match model.weights {
        Weights::Embedded(_) => None,
        Weights::External(e) => Some(e),
    };
    let opts = parse_args(args, external.is_some())?;
    let io_err = |e: std::io::Error| Error::Io(format!("write failed: {e}"));
    if opts.help {
        let extra = if external.is_some() { USAGE_EXTERNAL_PARAMS } else { "" };
        return write!(stdout, "{USAGE}{extra}").map_err(io_err);
    }
    // build.rs validated the plan already; this pass is cheap (no parsing)
    // and keeps a hand-made `Model` from indexing out of bounds.
    plan.validate().map_err(|e| e.context("embedded plan"))?;
    if let Some(e) = external {
        if plan.params_size as u64 != e.size {
            return Err(Error::Model(format!(
                "the plan says params_size {} but the module was built for {} bytes of weights",
                plan.params_size, e.size
            )));
        }
    }
    if opts.info {
        return writeln!(stdout, "{}", info_json(plan, &model.build, external)).map_err(io_err);
    }
    // Flags first: a wrong count fails before megabytes of weights are read.
    check_count("--input", &opts.inputs, &plan.inputs)?;
    // A profile may be all a caller wants: then the outputs can be left out.
    if !(opts.profile.is_some() && opts.outputs.is_empty()) {
        check_count("--output", &opts.outputs, &plan.outputs)?;
    }
    if opts.profile.as_deref() == Some("-") && opts.outputs.iter().any(|p| p == "-") {
        return Err(Error::Usage("--profile and --output cannot both be '-'".to_string()));
    }
    let loaded;
    let params = match model.weights {
        Weights::Embedded(p) => p,
        Weights::External(e) => {
            let path = opts.params.as_deref().ok_or_else(|| {
                Error::Usage(
                    "this module keeps its weights in a separate file: give --params PATH \
                     (the <name>.params.bin beside the .wasm)"
                        .to_string(),
                )
            })?;
            loaded = params::load(path, e)?;
            loaded.as_slice()
        }
    };

    let mut data = Vec::with_capacity(plan.inputs.len());
    for (path, io) in opts.inputs.iter().zip(plan.inputs.iter()) {
        data.push(read_input(plan, io, path, stdin)?);
    }
    let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();

    // A plan of statics is borrowed: cloning it copies no list.
    let mut executor = Executor::new(plan.clone(), params, model.kernels)?;
    let repeat = opts.repeat.unwrap_or(1);
    let mut run_ms = Vec::new();
    let mut call_ms: Vec<Vec<f64>> = Vec::new();
    for _ in 0..repeat {
        // Allocated before the clock starts: the run's time is the kernels'.
        let mut times =
            Vec::with_capacity(if opts.profile.is_some() { plan.calls.len() } else { 0 });
        let start = Instant::now();
        if opts.profile.is_some() {
            executor.run_profiled(&inputs, &mut times)?;
            call_ms.push(times);
        } else {
            executor.run(&inputs)?;
        }
        run_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // The outputs of the last run are still in place.
    for (path, io) in opts.outputs.iter().zip(plan.outputs.iter()) {
        let bytes = executor.tensor_bytes(io.tensor).unwrap_or_default();
        write_output(plan, io, path, bytes, stdout)?;
    }
    if let Some(path) = &opts.profile {
        write_profile(path, &profile::json(plan, &run_ms, &call_ms), stdout)?;
    }
    if opts.repeat.is_some() {
        let times: Vec<String> = run_ms.iter().map(|t| format!("{t:.3}")).collect();
        writeln!(stderr, "{{\"run_ms\": [{}]}}", times.join(", ")).map_err(io_err)?;
    }
    Ok(())
}

fn write_profile(path: &str, text: &str, stdout: &mut dyn Write) -> Result<(), Error> {
    let result = if path == "-" {
        stdout.write_all(text.as_bytes())
    } else {
        let mut file = File::create(path)
            .map_err(|e| Error::Io(format!("cannot create '{path}': {e}")).context("profile"))?;
        file.write_all(text.as_bytes())
    };
    result.map_err(|e| Error::Io(format!("write failed: {e}")).context("profile"))
}

/// `{"model": ..., "inputs": [{"name", "dtype", "shape"}], "outputs": [...],
/// "abi": 1}`, then `"features": [...]` and `"preprocessing": "..."` when the
/// build gave them, and `"params": {"external": true, "size": ..., "sha256":
/// ...}` for a module with external weights.
pub fn info_json(plan: &Plan, build: &BuildInfo, external: Option<&ExternalParams>) -> String {
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
    let params = match external {
        None => String::new(),
        Some(e) => format!(
            ", \"params\": {{\"external\": true, \"size\": {}, \"sha256\": \"{}\"}}",
            e.size,
            sha256::hex(&e.sha256)
        ),
    };
    let mut extra = format!(", \"abi\": {ABI_VERSION}");
    if !build.features.is_empty() {
        let names: Vec<String> = build.features.iter().map(|f| quote(f)).collect();
        extra.push_str(&format!(", \"features\": [{}]", names.join(", ")));
    }
    if let Some(text) = build.preprocessing {
        extra.push_str(&format!(", \"preprocessing\": {}", quote(text)));
    }
    format!(
        "{{\"model\": {}, \"inputs\": {}, \"outputs\": {}{extra}{params}}}",
        quote(&plan.model),
        list(&plan.inputs),
        list(&plan.outputs)
    )
}

/// `s` as a JSON string literal, quotes included: all the JSON the module
/// writes is `--info`, `--repeat`'s timings, `--profile` and this.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
