//! The embedding ABI: inference on linear memory, for hosts that instantiate
//! the module themselves (a browser, Node, wasmtime's API) instead of running
//! it as a WASI command with files. docs/embedding.md is the contract; this
//! module is its implementation, and [`export_embedding_abi!`] turns a
//! module's [`Model`] into the exported C functions.
//!
//! A [`Session`] owns the executor: every buffer is allocated once, by the
//! first call that needs it, and stays at the same address for the life of
//! the instance. A host writes each input at `wasmforge_input_ptr(i)`, calls
//! `wasmforge_run()` and reads each output at `wasmforge_output_ptr(i)`, as
//! many times as it likes. Nothing here touches a file, the arguments or the
//! environment, and nothing exits the process: failures are a status code
//! and a message.

use crate::cli::{error_line, info_json, Model, Weights};
use crate::executor::Executor;
use crate::Error;

/// `wasmforge_run` (and `wasmforge_init`) succeeded.
pub const STATUS_OK: i32 = 0;
/// The module failed: a kernel error, or a broken build.
pub const STATUS_MODEL: i32 = 1;
/// The caller's fault, or what this module cannot do through the ABI (no
/// model embedded, weights kept in a separate file, out of memory).
pub const STATUS_USAGE: i32 = 2;

/// One instance's state behind the exported functions.
pub struct Session {
    model: Model<'static>,
    info: String,
    executor: Option<Executor<'static>>,
    error: String,
}

impl Session {
    /// Cheap: computes the description, allocates nothing else.
    pub fn new(model: Model<'static>) -> Session {
        let (info, error) = match model.plan {
            Some(plan) => match plan.validate() {
                Ok(()) => {
                    let external = match model.weights {
                        Weights::Embedded(_) => None,
                        Weights::External(e) => Some(e),
                    };
                    (info_json(plan, &model.build, external), String::new())
                }
                Err(e) => (String::new(), message(&e.context("embedded plan"))),
            },
            None => {
                (String::new(), "no model embedded (build with WASMFORGE_GRAPH_DIR)".to_string())
            }
        };
        Session { model, info, executor: None, error }
    }

    /// The module's description as one line of JSON (the same as `--info`),
    /// empty when the module embeds no (valid) model.
    pub fn info(&self) -> &str {
        &self.info
    }

    /// The message of the last failure (empty if nothing failed yet).
    pub fn error(&self) -> &str {
        &self.error
    }

    /// Allocates every buffer, once; later calls return at once.
    pub fn init(&mut self) -> i32 {
        match self.executor() {
            Ok(_) => STATUS_OK,
            Err(status) => status,
        }
    }

    fn executor(&mut self) -> Result<&mut Executor<'static>, i32> {
        if self.executor.is_none() {
            let created = self.create();
            match created {
                Ok(executor) => self.executor = Some(executor),
                Err(e) => return Err(self.fail(&e)),
            }
        }
        Ok(self.executor.as_mut().expect("created above"))
    }

    fn create(&self) -> Result<Executor<'static>, Error> {
        if self.info.is_empty() {
            return Err(Error::Usage(self.error.clone()));
        }
        let plan = self.model.plan.expect("a valid plan: info is not empty");
        let params = match self.model.weights {
            Weights::Embedded(p) => p,
            Weights::External(_) => {
                return Err(Error::Usage(
                    "this module keeps its weights in a separate file (--external-params); \
                     the embedding ABI needs a module that embeds them"
                        .to_string(),
                ))
            }
        };
        Executor::new(plan.clone(), params, self.model.kernels)
    }

    fn fail(&mut self, e: &Error) -> i32 {
        self.error = message(e);
        match e {
            Error::Kernel(_) | Error::Plan(_) | Error::Json(_) => STATUS_MODEL,
            // Out of memory is the host's limit, not a broken model.
            Error::Model(m) if !m.starts_with("cannot allocate") => STATUS_MODEL,
            _ => STATUS_USAGE,
        }
    }

    /// The byte length of graph input `i` (0 if there is none).
    pub fn input_len(&self, i: u32) -> usize {
        self.io_len(i, true)
    }

    /// The byte length of graph output `i` (0 if there is none).
    pub fn output_len(&self, i: u32) -> usize {
        self.io_len(i, false)
    }

    fn io_len(&self, i: u32, input: bool) -> usize {
        if self.info.is_empty() {
            return 0;
        }
        let Some(plan) = self.model.plan else { return 0 };
        let ios = if input { &plan.inputs } else { &plan.outputs };
        ios.get(i as usize).map_or(0, |io| plan.tensors[io.tensor].nbytes())
    }

    /// Where the host writes graph input `i` (64-byte aligned, `input_len(i)`
    /// bytes, the same address for the instance's life); null (and the
    /// message in `error`) if there is no such input or the buffers cannot
    /// be made.
    pub fn input_ptr(&mut self, i: u32) -> *mut u8 {
        let count = self.model.plan.map_or(0, |p| p.inputs.len());
        match self.executor() {
            Ok(executor) => {
                if let Some(buf) = executor.input_buffer(i as usize) {
                    return buf.as_mut_ptr();
                }
            }
            Err(_) => return std::ptr::null_mut(),
        }
        self.fail(&Error::Usage(format!("no input {i}: the model has {count}")));
        std::ptr::null_mut()
    }

    /// Where graph output `i` is after `run` (`output_len(i)` bytes, the same
    /// address for the instance's life; read-only for the host); null if
    /// there is no such output or the buffers cannot be made.
    pub fn output_ptr(&mut self, i: u32) -> *const u8 {
        let outputs = self.model.plan.map(|p| p.outputs.clone()).unwrap_or_default();
        let executor = match self.executor() {
            Ok(executor) => executor,
            Err(_) => return std::ptr::null(),
        };
        if let Some(io) = outputs.get(i as usize) {
            if let Some(bytes) = executor.tensor_bytes(io.tensor) {
                // A zero-size output has no address of its own: any non-null
                // pointer will do, as nothing may be read through it.
                return if bytes.is_empty() {
                    std::ptr::NonNull::dangling().as_ptr()
                } else {
                    bytes.as_ptr()
                };
            }
        }
        self.fail(&Error::Usage(format!("no output {i}: the model has {}", outputs.len())));
        std::ptr::null()
    }

    /// Runs the model on what the input buffers hold now; the outputs are
    /// then in the output buffers. A status, and the message in `error`.
    pub fn run(&mut self) -> i32 {
        let result = match self.executor() {
            Ok(executor) => executor.run_in_place(),
            Err(status) => return status,
        };
        match result {
            Ok(()) => STATUS_OK,
            Err(e) => self.fail(&e),
        }
    }
}

/// The message of `error_line` without its `error: ` prefix: one line.
fn message(e: &Error) -> String {
    error_line(e).trim_start_matches("error: ").to_string()
}

/// Exports the embedding ABI of the module whose [`Model`] `$model` (an
/// expression evaluated once, on the first call) describes. Used once, by
/// the model crate; see docs/embedding.md for the functions.
///
/// The session lives in a thread-local: a wasm32-wasip1 module has one
/// thread, so this is one static per instance, touched by nothing but these
/// functions.
#[macro_export]
macro_rules! export_embedding_abi {
    ($model:expr) => {
        mod wasmforge_embedding_abi {
            use ::std::cell::RefCell;
            use $crate::embed::Session;

            ::std::thread_local! {
                static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
            }

            fn with<R>(f: impl FnOnce(&mut Session) -> R) -> R {
                SESSION.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    let session = slot.get_or_insert_with(|| {
                        call_ctors();
                        Session::new(super::embedded_model())
                    });
                    f(session)
                })
            }

            /// The static constructors, once per instance, as `_start` runs
            /// them for the command: wasm-ld does not wrap these exports in
            /// constructor calls, because wasi-libc's `_start` calls
            /// `__wasm_call_ctors` itself (docs/embedding.md).
            fn call_ctors() {
                #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
                {
                    extern "C" {
                        fn __wasm_call_ctors();
                    }
                    // SAFETY: the linker-made function that runs the
                    // constructors; called once, before anything else here.
                    unsafe { __wasm_call_ctors() };
                }
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_abi_version() -> u32 {
                $crate::cli::ABI_VERSION
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_info_ptr() -> *const u8 {
                with(|s| s.info().as_ptr())
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_info_len() -> usize {
                with(|s| s.info().len())
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_init() -> i32 {
                with(|s| s.init())
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_input_ptr(i: u32) -> *mut u8 {
                with(|s| s.input_ptr(i))
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_input_len(i: u32) -> usize {
                with(|s| s.input_len(i))
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_output_ptr(i: u32) -> *const u8 {
                with(|s| s.output_ptr(i))
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_output_len(i: u32) -> usize {
                with(|s| s.output_len(i))
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_run() -> i32 {
                with(|s| s.run())
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_error_ptr() -> *const u8 {
                with(|s| s.error().as_ptr())
            }

            #[no_mangle]
            pub extern "C" fn wasmforge_error_len() -> usize {
                with(|s| s.error().len())
            }
        }

        fn embedded_model() -> $crate::cli::Model<'static> {
            $model
        }
    };
}
