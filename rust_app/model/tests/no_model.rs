//! The module built without WASMFORGE_GRAPH_DIR (as in native `cargo test`)
//! runs and says that it has no model.

use std::process::{Command, Stdio};

#[test]
fn exits_2_with_one_line_without_a_model() {
    for argv in [&["--info"][..], &["--input", "-", "--output", "-"], &[]] {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmforge-model"))
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{argv:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: no model embedded (build with WASMFORGE_GRAPH_DIR)\n"
        );
        assert!(out.stdout.is_empty());
    }
}
