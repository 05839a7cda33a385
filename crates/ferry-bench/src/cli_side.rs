//! `cargo xtask bench cli`: `ferry get` as a user runs it, one whole process per read (start,
//! open the database, read one item, print its JSON, exit), on a database of `bench
//! local`'s items. Side by side in the same run: the process floor (`ferry --version`,
//! which opens nothing) and the same read by a process that opens the SQLite twin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{ITEMS_PER_DEVICE, Subject, ferry_side, sqlite_side};

/// Processes per contender; the median and the 90th percentile are reported.
const RUNS: usize = 41;

/// The `ferry` binary next to this one (`cargo xtask bench cli` builds it).
fn ferry_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("ferry");
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p ferry-cli`",
            path.display()
        );
    }
    Ok(path)
}

/// Wall milliseconds of `RUNS` runs of the command `make(seq)` gives, sorted.
fn timed(mut make: impl FnMut(u64) -> Command, items: u64) -> Result<Vec<f64>> {
    let mut next = crate::fastrand_like(items);
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let seq = next() % items;
        let started = Instant::now();
        let out = make(seq).output()?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "a timed process failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        times.push(elapsed);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

pub fn run(items: u64) -> Result<()> {
    let ferry = ferry_binary()?;
    let dir = tempfile::tempdir()?;
    // FERRY_BENCH_KEEP=DIR keeps the databases there (to profile a run by hand).
    let root = std::env::var_os("FERRY_BENCH_KEEP")
        .map_or_else(|| dir.path().to_path_buf(), PathBuf::from);
    let (ferry_dir, sqlite_path) = (root.join("ferry"), root.join("sqlite.db"));
    eprintln!("loading {items} items into each store...");
    {
        let mut db = ferry_side::Ferry::open(&ferry_dir)?;
        let mut sqlite = sqlite_side::Sqlite::open(&sqlite_path)?;
        for seq in 0..items {
            db.create(seq)?;
            sqlite.create(seq)?;
        }
    }
    let me = std::env::current_exe()?;
    let floor = timed(
        |_| {
            let mut command = Command::new(&ferry);
            command.arg("--version");
            command
        },
        items,
    )?;
    let get = timed(
        |seq| {
            let mut command = Command::new(&ferry);
            command
                .arg("--db")
                .arg(&ferry_dir)
                .arg("get")
                .arg("Reading")
                .arg(serde_json::json!({"dev": seq / ITEMS_PER_DEVICE, "seq": seq}).to_string());
            command
        },
        items,
    )?;
    let sqlite = timed(
        |seq| {
            let mut command = Command::new(&me);
            command
                .arg("sqlite-get")
                .arg(&sqlite_path)
                .arg(seq.to_string());
            command
        },
        items,
    )?;
    let quantile = |times: &[f64], q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!("| {items} items, {RUNS} processes each | median ms | p90 ms | / ferry get |");
    println!("|---|---:|---:|---:|");
    let median = quantile(&get, 0.5);
    for (what, times) in [
        ("`ferry get` (start, open, read, print, exit)", &get),
        (
            "a process that opens the SQLite twin and reads the item",
            &sqlite,
        ),
        ("process floor: `ferry --version`", &floor),
    ] {
        println!(
            "| {what} | {:.1} | {:.1} | {:.2}x |",
            quantile(times, 0.5),
            quantile(times, 0.9),
            quantile(times, 0.5) / median
        );
    }
    Ok(())
}

/// The child side of the SQLite contender, `sqlite-get PATH SEQ`: opens the database,
/// reads one item, prints it.
pub fn sqlite_get(args: &[String]) -> Result<()> {
    let path = args.get(1).context("sqlite-get needs a database path")?;
    let seq = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .context("sqlite-get needs an item number")?;
    let json = sqlite_side::Sqlite::open_existing(Path::new(path))?.read(seq)?;
    println!("{json}");
    Ok(())
}
