//! Embeds a compiled model into the module. `WASMFORGE_GRAPH_DIR` (an
//! absolute path) holds what scripts/build_graph_lib.py writes: `plan.json`,
//! `params.bin` and `libgraph_wasm32.a`. Without it the module is built
//! empty and says so when run (so native `cargo build`/`cargo test` work).
//!
//! Writes to OUT_DIR: `plan.rs`, the validated plan as Rust statics (the
//! module starts without parsing anything), `params.bin` (embedded by
//! main.rs) and `kernels.rs`, the kernel table.
//!
//! Also `build_info.rs`: what `--info` and the embedding ABI report beyond
//! the plan. `WASMFORGE_KERNEL_FEATURES` (comma-separated, e.g.
//! `simd128,relaxed-simd`) names the wasm features the kernels were compiled
//! with; the features rustc compiles this crate with are added to them, so
//! the list is what an engine must support. `WASMFORGE_PREPROCESSING`, if
//! set, is the model's input preprocessing (from the registry).
//!
//! With `WASMFORGE_EXTERNAL_PARAMS=1` the weights are not embedded: OUT_DIR
//! gets an empty `params.bin` and `external_params.rs` (the size and SHA-256
//! of the real one), and main.rs is compiled with `wasmforge_external_params`
//! set, so the module reads the weights from `--params PATH` and checks them.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use wasmforge_runtime::plan_json::{self, codegen};

const ARCHIVE: &str = "libgraph_wasm32.a";
/// The path through which generated code reaches the plan types.
const CRATE: &str = "::wasmforge_runtime";
const EXTERNAL_ENV: &str = "WASMFORGE_EXTERNAL_PARAMS";
const FEATURES_ENV: &str = "WASMFORGE_KERNEL_FEATURES";
const PREPROCESSING_ENV: &str = "WASMFORGE_PREPROCESSING";

fn main() {
    if let Err(e) = build() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=WASMFORGE_GRAPH_DIR");
    println!("cargo:rerun-if-env-changed={EXTERNAL_ENV}");
    println!("cargo:rerun-if-env-changed={FEATURES_ENV}");
    println!("cargo:rerun-if-env-changed={PREPROCESSING_ENV}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(wasmforge_external_params)");
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let dir = match env::var_os("WASMFORGE_GRAPH_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            write(&out.join("plan.rs"), codegen::module_source(None, CRATE).as_bytes())?;
            write(&out.join("params.bin"), b"")?;
            write(&out.join("build_info.rs"), build_info_rs(&[], None).as_bytes())?;
            return write(&out.join("kernels.rs"), kernels_rs(&[]).as_bytes());
        }
    };
    if !dir.is_absolute() {
        return Err(format!("WASMFORGE_GRAPH_DIR must be an absolute path, got {}", dir.display()));
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "wasm32" {
        return Err(format!(
            "WASMFORGE_GRAPH_DIR is set but the target is {arch}; {ARCHIVE} holds wasm32 code \
             (build with --target wasm32-wasip1)"
        ));
    }
    let (plan_path, params_path, archive) =
        (dir.join("plan.json"), dir.join("params.bin"), dir.join(ARCHIVE));
    for p in [&plan_path, &params_path, &archive] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let text = fs::read_to_string(&plan_path)
        .map_err(|e| format!("cannot read {}: {e}", plan_path.display()))?;
    let plan = plan_json::parse(&text).map_err(|e| format!("{}: {e}", plan_path.display()))?;
    // The statics hold usize literals: each number must fit the target's.
    let width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    let largest = codegen::largest_number(&plan);
    if width == "32" && largest > u64::from(u32::MAX) {
        return Err(format!(
            "{}: the number {largest} does not fit in a 32-bit usize",
            plan_path.display()
        ));
    }
    let params_len = fs::metadata(&params_path)
        .map_err(|e| format!("cannot read {}: {e}", params_path.display()))?
        .len();
    if params_len != plan.params_size as u64 {
        return Err(format!(
            "{} has {params_len} bytes but the plan says params_size {}",
            params_path.display(),
            plan.params_size
        ));
    }
    // Everything must fit in a 32-bit address space on wasm32.
    let total = plan.storages.iter().fold(params_len, |n, &s| n.saturating_add(s as u64));
    if total > u64::from(u32::MAX) {
        return Err(format!(
            "the model needs {total} bytes of memory, more than wasm32 can address"
        ));
    }
    if !archive.is_file() {
        return Err(format!("{} is missing", archive.display()));
    }

    write(&out.join("plan.rs"), codegen::module_source(Some(&plan), CRATE).as_bytes())?;
    if external_params()? {
        let params = fs::read(&params_path)
            .map_err(|e| format!("cannot read {}: {e}", params_path.display()))?;
        let digest = wasmforge_runtime::sha256::digest(&params);
        let bytes: Vec<String> = digest.iter().map(|b| format!("{b:#04x}")).collect();
        let source = format!(
            "// Generated by build.rs from params.bin. Do not edit.\n\
             ::wasmforge_runtime::params::ExternalParams {{\n    size: {},\n    sha256: [{}],\n}}\n",
            params.len(),
            bytes.join(", ")
        );
        write(&out.join("external_params.rs"), source.as_bytes())?;
        write(&out.join("params.bin"), b"")?;
        println!("cargo:rustc-cfg=wasmforge_external_params");
    } else {
        link_or_copy(&params_path, &out.join("params.bin"))?;
    }
    write(&out.join("kernels.rs"), kernels_rs(&plan.kernel_names()).as_bytes())?;
    let preprocessing = env::var(PREPROCESSING_ENV).ok().filter(|t| !t.trim().is_empty());
    write(
        &out.join("build_info.rs"),
        build_info_rs(&features()?, preprocessing.as_deref()).as_bytes(),
    )?;
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=graph_wasm32");
    Ok(())
}

/// Whether `WASMFORGE_EXTERNAL_PARAMS` asks for the weights outside the module.
fn external_params() -> Result<bool, String> {
    match env::var(EXTERNAL_ENV).as_deref() {
        Err(_) | Ok("" | "0") => Ok(false),
        Ok("1") => Ok(true),
        Ok(other) => Err(format!("{EXTERNAL_ENV} must be 0 or 1, got {other:?}")),
    }
}

/// The kernels' features (`WASMFORGE_KERNEL_FEATURES`) and rustc's for this
/// crate, sorted and distinct.
fn features() -> Result<Vec<String>, String> {
    let kernels = env::var(FEATURES_ENV).unwrap_or_default();
    let rustc = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let mut all: Vec<String> = Vec::new();
    for name in kernels.split(',').chain(rustc.split(',')).map(str::trim).filter(|f| !f.is_empty())
    {
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("{FEATURES_ENV}: bad feature name {name:?}"));
        }
        all.push(name.to_string());
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// Rust source of `BUILD`, the module's `BuildInfo`.
fn build_info_rs(features: &[String], preprocessing: Option<&str>) -> String {
    let names: Vec<String> = features.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "// Generated by build.rs. Do not edit.\n\
         pub static BUILD: ::wasmforge_runtime::cli::BuildInfo<'static> = \
         ::wasmforge_runtime::cli::BuildInfo {{\n    features: &[{}],\n    preprocessing: {},\n}};\n",
        names.join(", "),
        match preprocessing {
            Some(text) => format!("Some({text:?})"),
            None => "None".to_string(),
        }
    )
}

/// Rust source declaring each kernel (sorted, distinct) and the name ->
/// function table. Referencing every kernel from the table is what makes the
/// linker keep their archive members.
fn kernels_rs(names: &[&str]) -> String {
    let mut s = String::from("// Generated by build.rs from plan.json. Do not edit.\n\n");
    if !names.is_empty() {
        s.push_str("extern \"C\" {\n");
        for (i, name) in names.iter().enumerate() {
            // Debug formatting of a str is a valid Rust string literal.
            let _ = writeln!(s, "    #[link_name = {:?}]", format!("__tvm_ffi_{name}"));
            let _ = writeln!(
                s,
                "    fn kernel_{i}(handle: *mut ::core::ffi::c_void, args: *const TVMFFIAny, \
                 num_args: i32, result: *mut TVMFFIAny) -> i32;"
            );
        }
        s.push_str("}\n\n");
    }
    s.push_str(
        "#[allow(unused_imports)]\nuse ::wasmforge_runtime::ffi::{KernelFn, TVMFFIAny};\n\n",
    );
    s.push_str("pub static KERNELS: &[(&str, KernelFn)] = &[\n");
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(s, "    ({name:?}, kernel_{i}),");
    }
    s.push_str("];\n");
    s
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    // Leave an unchanged file alone so its timestamp does not force rebuilds.
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The weights can be hundreds of MB and the builder's scratch is a tmpfs counted
/// against its memory limit: a hard link costs nothing, a copy their size again.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), String> {
    let _ = fs::remove_file(to);
    fs::hard_link(from, to).or_else(|_| copy(from, to))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}
