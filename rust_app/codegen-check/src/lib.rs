//! Test-only crate: every valid plan fixture compiled as the statics the
//! model's build.rs would generate for it (see build.rs and tests/).

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
