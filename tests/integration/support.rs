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

/// A schema from JSON5 text written in the test.
pub fn schema(text: &str) -> Schema {
    Schema::parse(text).unwrap_or_else(|e| panic!("test schema does not load: {e}"))
}

/// Options for a test database: `deviceId` = `d1`, no background TTL sweeper.
pub fn config(text: &str) -> Config {
    Config {
        ttl_sweep: None,
        ..Config::with_schema(schema(text))
    }
    .context("deviceId", "d1")
}

/// A fresh database on the schema `text` (see [`config`]).
pub fn db(text: &str) -> (tempfile::TempDir, Db) {
    db_with(config(text))
}

/// A fresh database with the given options.
pub fn db_with(config: Config) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), config).unwrap();
    (dir, db)
}

/// The error a call must fail with: its code and message.
#[track_caller]
pub fn fails<T: std::fmt::Debug>(result: ferry::Result<T>) -> (&'static str, String) {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => (e.code(), e.to_string()),
    }
}

/// A wall clock the test moves by hand (epoch milliseconds).
#[derive(Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(ms)))
    }

    /// Moves the clock to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The clock as a [`ferry::Clock`] for [`Config::clock`].
    pub fn clock(&self) -> ferry::Clock {
        let now = self.0.clone();
        std::sync::Arc::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// The output of a future that is ready at once (the test transports' are).
pub fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the future was not ready"),
    }
}

/// This test binary re-executed to run only `test` (a child side that reads its job from
/// `envs`), its stdout piped.
pub fn child(test: &str, envs: &[(&str, String)]) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (name, value) in envs {
        command.env(name, value);
    }
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to `child` and waits for it: its exit code (-1 for a signal's death).
pub fn terminate(child: &mut std::process::Child) -> i32 {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid}");
    child.wait().unwrap().code().unwrap_or(-1)
}

/// A child process that is killed (SIGKILL) and reaped when dropped, a failing test too.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs child `test` for `delay`, then SIGKILLs it; returns the numbers it printed, one a
/// line (what it acknowledged before the kill).
pub fn run_and_kill(test: &str, envs: &[(&str, String)], delay: std::time::Duration) -> Vec<u64> {
    use std::io::{BufRead, BufReader};
    let mut process = Killed(child(test, envs));
    let stdout = process.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let lines = BufReader::new(stdout).lines().map_while(Result::ok);
        lines
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    std::thread::sleep(delay);
    drop(process);
    reader.join().unwrap()
}

/// Writes a relay's signing secret as an operator does: readable by its owner only.
pub fn write_secret(path: &std::path::Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
