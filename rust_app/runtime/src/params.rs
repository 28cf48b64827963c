//! Weights kept outside the module (`--external-params`): the module embeds
//! only the size and SHA-256 of `params.bin` and reads the file named by
//! `--params PATH` into a 64-byte aligned buffer, refusing a file of another
//! size or hash before any kernel sees it.

use std::fs::File;
use std::io::Read;

use crate::sha256::{self, Sha256};
use crate::{AlignedBuf, Error};

/// What a module built with external weights knows about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalParams {
    /// Size of `params.bin` in bytes (equal to the plan's `params_size`).
    pub size: u64,
    /// SHA-256 of `params.bin`.
    pub sha256: [u8; 32],
}

/// Reads the weights from `path` and checks them against `expected`.
///
/// A missing or unreadable file is an `Io` error, a file of the wrong size or
/// hash an `Input` error: both exit with code 2 and name the file.
pub fn load(path: &str, expected: &ExternalParams) -> Result<AlignedBuf, Error> {
    let context = format!("params file '{path}'");
    let mut file =
        File::open(path).map_err(|e| Error::Io(format!("cannot open {context}: {e}")))?;
    let read_err = |e: std::io::Error| Error::Io(format!("cannot read {context}: {e}"));
    let actual = file.metadata().map_err(read_err)?.len();
    let wrong_size = |actual: u64| {
        Error::Input(format!(
            "{context} has {actual} bytes, this module was built with {} bytes of weights",
            expected.size
        ))
    };
    if actual != expected.size {
        return Err(wrong_size(actual));
    }
    let len = usize::try_from(expected.size).map_err(|_| wrong_size(actual))?;
    let mut buf = AlignedBuf::zeroed(len)?;
    let mut hasher = Sha256::new();
    let mut done = 0;
    // In chunks, hashing as it goes: the weights are read from memory once more.
    while done < len {
        let n = file.read(&mut buf.as_mut_slice()[done..]).map_err(read_err)?;
        if n == 0 {
            return Err(wrong_size(done as u64)); // shrank while being read
        }
        hasher.update(&buf.as_slice()[done..done + n]);
        done += n;
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(read_err)? != 0 {
        return Err(Error::Io(format!("{context} grew while being read")));
    }
    let digest = hasher.finish();
    if digest != expected.sha256 {
        return Err(Error::Input(format!(
            "{context} does not match this module's weights: sha256 {}, expected {}",
            sha256::hex(&digest),
            sha256::hex(&expected.sha256)
        )));
    }
    Ok(buf)
}
