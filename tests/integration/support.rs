//! Shared helpers: example schema, temporary databases, the real `ferry` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry::{Config, Db, Schema};

/// The example schema of the repository (`examples/schema.json5`).
pub fn example_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schema.json5")
}

/// A fresh database on the example schema with `deviceId` = `d1`.
pub fn example_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::from_path(&example_schema_path()).unwrap();
    let db = Db::open(
        dir.path(),
        Config::with_schema(schema).context("deviceId", "d1"),
    )
    .unwrap();
    (dir, db)
}

/// The `ferry` binary built beside this test binary (`cargo xtask test` builds it first).
pub fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("ferry");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin ferry` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Runs `ferry` with `args`, returning status code, stdout and stderr.
pub fn ferry(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(ferry_bin()).args(args).output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}
