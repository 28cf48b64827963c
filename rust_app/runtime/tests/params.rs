//! Loading external weights (`--external-params` modules): the right file
//! comes back 64-byte aligned and byte for byte; a missing file, a wrong size
//! or a wrong hash is refused with an exit-code-2 error naming the file.

use std::path::PathBuf;

use wasmforge_runtime::params::{load, ExternalParams};
use wasmforge_runtime::sha256::digest;
use wasmforge_runtime::{Error, ExitCode};

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("wasmforge-params-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn weights(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 256) as u8).collect()
}

fn expect(bytes: &[u8]) -> ExternalParams {
    ExternalParams { size: bytes.len() as u64, sha256: digest(bytes) }
}

#[test]
fn loads_the_right_file_aligned() {
    for n in [0, 1, 64, 1000, 200_003] {
        let bytes = weights(n);
        let file = TempFile::new(&format!("ok{n}"), &bytes);
        let buf = load(file.s(), &expect(&bytes)).unwrap();
        assert_eq!(buf.as_slice(), &bytes[..]);
        assert_eq!(buf.as_slice().as_ptr() as usize % 64, 0, "{n} bytes");
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let path = std::env::temp_dir().join("wasmforge-params-does-not-exist.bin");
    let err = load(path.to_str().unwrap(), &expect(b"x")).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    assert!(err.message().contains("does-not-exist.bin"), "{err}");
}

#[test]
fn wrong_size_is_refused() {
    let bytes = weights(1000);
    for (name, other) in
        [("short", &bytes[..999]), ("long", &weights(1001)[..]), ("empty", &[][..])]
    {
        let file = TempFile::new(name, other);
        let err = load(file.s(), &expect(&bytes)).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        let msg = err.message();
        assert!(msg.contains(file.s()) && msg.contains(&format!("{} bytes", other.len())), "{msg}");
        assert!(msg.contains("1000 bytes"), "{msg}");
    }
}

#[test]
fn one_flipped_byte_is_refused() {
    let bytes = weights(5000);
    let mut flipped = bytes.clone();
    flipped[4321] ^= 1;
    let file = TempFile::new("flipped", &flipped);
    let err = load(file.s(), &expect(&bytes)).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let msg = err.message();
    assert!(msg.contains("does not match") && msg.contains(file.s()), "{msg}");
    assert!(msg.contains(&wasmforge_runtime::sha256::hex(&digest(&bytes))), "{msg}");
}

#[test]
fn a_directory_is_an_error_not_a_panic() {
    let err = load(std::env::temp_dir().to_str().unwrap(), &expect(b"abc")).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err:?}");
}
