use std::fmt;

/// Every failure of a module, shared by the core, the plan reader and the
/// shell. The variant says whose fault it is (the shell maps it to an exit
/// code); the message is what the user sees after `error: `. `Json`, `Npy`,
/// `Io` and `Usage` come only from the plan reader and the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Malformed JSON text.
    Json(String),
    /// A plan that breaks format 1 (docs/plan-format.md).
    Plan(String),
    /// Plan, weights and kernels that do not fit together (a broken build).
    Model(String),
    /// Malformed or unsupported `.npy` data.
    Npy(String),
    /// User data that does not match the model (count, dtype, shape, size).
    Input(String),
    /// A file or stream could not be read or written.
    Io(String),
    /// Bad command-line flags.
    Usage(String),
    /// A kernel returned non-zero; carries the message it raised.
    Kernel(String),
}

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::Json(m)
            | Error::Plan(m)
            | Error::Model(m)
            | Error::Npy(m)
            | Error::Input(m)
            | Error::Io(m)
            | Error::Usage(m)
            | Error::Kernel(m) => m,
        }
    }

    /// The same error with `prefix: ` in front of its message.
    pub fn context(self, prefix: &str) -> Error {
        let wrap = |m: String| format!("{prefix}: {m}");
        match self {
            Error::Json(m) => Error::Json(wrap(m)),
            Error::Plan(m) => Error::Plan(wrap(m)),
            Error::Model(m) => Error::Model(wrap(m)),
            Error::Npy(m) => Error::Npy(wrap(m)),
            Error::Input(m) => Error::Input(wrap(m)),
            Error::Io(m) => Error::Io(wrap(m)),
            Error::Usage(m) => Error::Usage(wrap(m)),
            Error::Kernel(m) => Error::Kernel(wrap(m)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}
