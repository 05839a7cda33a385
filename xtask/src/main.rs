//! Project automation: `cargo xtask test`, `cargo xtask sim`, `cargo xtask fuzz`,
//! `cargo xtask bench local`, `cargo xtask tidy`.

mod dynamo_local;
mod faketime;
mod reopen;
mod sim;

use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test           the whole test suite (what CI runs): unit and integration tests, the
                 out-of-workspace application examples/app, the simulator over 1000 seeds
  tidy           formatting and lints (cargo fmt --check, cargo clippy -D warnings)
  fuzz           the fuzz cases (property tests named fuzz_: the frame decoder, the item
                 codec, the relay's handshake) run for longer, round after round with fresh
                 seeds, until one fails (proptest saves it under proptest-regressions/, a
                 regression case every later run tries first) or time is up.
                 (release build) options: --minutes N (default 10), --cases N per round
                 (default 20000)
  bench local    Ferry vs SQLite, side by side: create, get, page query, update (release build)
                 options: --items N[,N...] (default 100000,1000000)
  bench space    Ferry vs SQLite: bytes on disk and bytes written per item for the same
                 items, each store loaded in a process of its own (also at the end of
                 bench local). options: --items N[,N...] (100000,1000000)
  bench scale    Ferry alone as one database grows: get, page and resident memory at each
                 size, against the first. options: --items N[,N...] (default 1000000,10000000)
  bench sync     replicated writes (journal + engine + in-memory cloud) vs local-only writes
                 options: --items N[,N...] (default 10000,50000)
  bench cli      `ferry get` as a whole process on a database of N items, beside a SQLite
                 process and the process floor. options: --items N (default 1000000)
  bench reopen   fast reopen's worth: `ferry get` processes after a `ferry load` process, a CLI
                 built with fast reopen beside one without (device-only release builds in
                 target/reopen). options: --items N (default 200000)
  bench blocks   fjall's table options for Ferry's reads: data block sizes, compression, the
                 in-block hash index; gets, 100-row and 1-row scans side by side. --items N
                 (1000000)
  bench format   the on-disk item format: the codec read owned or in place (view) vs rkyv
                 (bytes, one attribute, every attribute to JSON, encode)
  bench frames   the relay's frame encoding: ferry-protocol's codec vs rkyv (bytes, encode,
                 decode, zero-copy scope checks)
  bench relay    the relay on loopback (embedded store): uploads vs the in-memory cloud and the
                 store's ceiling, catch-up, fan-out latency, bytes per change. --items N (100000)
  bench soak     200 devices upload through one relay for two minutes while attackers hold
                 silent connections and send hostile frames, forged tokens and half-open
                 sessions: changes landed, push latency, relay CPU, peak memory.
                 options: --devices N (200), --seconds N (120)
  bench dynamo   uploads to DynamoDB Local (started here): Ferry vs a naive PutItem loop vs
                 the server's ceiling; catch-up; WCU per change. options: --items N (10000)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["test", rest @ ..] => test(rest),
        ["tidy"] => tidy(),
        ["fuzz", rest @ ..] => fuzz(rest),
        ["bench", rest @ ..] => bench(rest),
        ["sim", rest @ ..] => sim::main(rest),
        _ => {
            println!("{USAGE}\n{}", sim::USAGE);
            if args.is_empty() {
                Ok(())
            } else {
                bail!("unknown command: {}", args.join(" "))
            }
        }
    }
}

/// Runs the whole suite: the CLI's smaller builds checked, unit, integration (with the real
/// CLI binary, and DynamoDB Local started for the DynamoDB tests and libfaketime found for
/// the clock-fault tests), doc tests, the out-of-workspace application, then the
/// replication simulator over 1000 seeds (about two minutes on two cores, in this debug
/// build).
fn test(extra: &[&str]) -> Result<()> {
    // The builds ARCHITECTURE.md promises besides the default: device-only, and a device
    // on the relay without the AWS SDK.
    cargo(&["check", "-p", "ferry-cli", "--no-default-features"])?;
    cargo(&[
        "check",
        "-p",
        "ferry-cli",
        "--no-default-features",
        "--features",
        "relay",
    ])?;
    cargo(&["build", "--bin", "ferry"])?;
    let local = dynamo_local::start()?;
    let mut env = dynamo_local::test_env(&local);
    let faketime = faketime::library()?;
    env.push(("FERRY_TEST_FAKETIME", faketime.display().to_string()));
    let mut args = vec!["test", "--workspace"];
    args.extend_from_slice(extra);
    cargo_with(&args, &env)?;
    drop(local);
    example_app()?;
    eprintln!("$ cargo xtask sim --seeds 1000");
    sim::main(&["--seeds", "1000"])
}

/// Builds and runs `examples/app`, an application outside the workspace that depends on
/// Ferry by path with no `[patch]`: what an application builds (crates.io's fjall among
/// them). It starts from the workspace's lockfile, so it resolves the same versions, and
/// shares the target directory.
fn example_app() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let app = root.join("examples/app");
    std::fs::copy(root.join("Cargo.lock"), app.join("Cargo.lock"))
        .context("copying the lockfile for examples/app")?;
    let target = target_dir();
    let manifest = app.join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let target = target.to_string_lossy();
    let run = [
        "run",
        "--quiet",
        "--manifest-path",
        &manifest,
        "--target-dir",
        &target,
    ];
    cargo(&run)
}

/// The workspace's target directory, where the test command also caches what it installs.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// `cargo xtask fuzz`: the suite's fuzz cases, many more of them, until time is up.
fn fuzz(args: &[&str]) -> Result<()> {
    let (mut minutes, mut cases) = (10u64, 20_000u64);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a number"))?;
        let number: u64 =
            (value.parse()).with_context(|| format!("{arg} {value}: not a number"))?;
        match *arg {
            "--minutes" => minutes = number,
            "--cases" => cases = number,
            other => bail!("fuzz: unknown option {other}"),
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(minutes * 60);
    let env = [("PROPTEST_CASES", cases.to_string())];
    let test = [
        "test",
        "--release",
        "-p",
        "ferry-types",
        "-p",
        "ferry-protocol",
        "-p",
        "ferry-relay",
        "--lib",
        "fuzz_",
    ];
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        cargo_with(&test, &env)?;
        rounds += 1;
    }
    eprintln!("fuzz: {rounds} rounds of {cases} cases per test, no failure");
    Ok(())
}

fn tidy() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

fn bench(args: &[&str]) -> Result<()> {
    let mut cargo_args = vec!["run", "--release", "--quiet", "-p", "ferry-bench", "--"];
    cargo_args.extend_from_slice(args);
    if args.first() == Some(&"cli") {
        cargo(&["build", "--release", "--quiet", "-p", "ferry-cli"])?;
    }
    if let ["reopen", rest @ ..] = args {
        let items = match rest {
            ["--items", n] => n.parse().context("--items takes a number")?,
            _ => 200_000,
        };
        return reopen::run(items);
    }
    if args.first() == Some(&"dynamo") {
        cargo(&["build", "--release", "--quiet", "-p", "ferry-bench"])?;
        let local = dynamo_local::start()?;
        let mut env = dynamo_local::test_env(&local);
        env.push(("FERRY_BENCH_DYNAMODB", local.endpoint.clone()));
        return cargo_with(&cargo_args, &env);
    }
    cargo(&cargo_args)
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with(args, &[])
}

fn cargo_with(args: &[&str], env: &[(&str, String)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
