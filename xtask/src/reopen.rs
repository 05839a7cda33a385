//! `cargo xtask bench reopen`: what fast reopen (`fjall::Database::flush_all` when a
//! database closes, the patched fjall of vendor/fjall) is worth to a CLI user. Two
//! device-only release builds of the CLI, with the feature and without (crates.io's
//! behaviour: the journal stays, and every later process replays it), each on the same
//! database: `ferry load` of `items` items, one more `ferry load` process of
//! [`WRITES`] items, then [`RUNS`] `ferry get` processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Items the last writer process adds before the reads.
const WRITES: u64 = 20_000;
/// `ferry get` processes per build; the median and the 90th percentile are reported.
const RUNS: usize = 41;
/// Items per device partition, as `bench local` keeps them.
const ITEMS_PER_DEVICE: u64 = 1000;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Reading: {
            pk: { type: 'string', value: 'dev#${dev}' }, sk: { type: 'string', value: 'seq#${seq}' },
            dev: { type: 'number', required: true }, seq: { type: 'number', required: true },
            value: { type: 'number' }, note: { type: 'string' },
        },
    },
}"#;

pub fn run(items: u64) -> Result<()> {
    let builds = crate::target_dir().join("reopen");
    let mut binaries = Vec::new();
    for (label, features) in [("with fast reopen", "fast-reopen"), ("without", "")] {
        let dir = builds.to_string_lossy();
        let mut build = vec!["build", "--release", "--quiet", "-p", "ferry-cli"];
        build.extend(["--no-default-features", "--target-dir", &dir]);
        if !features.is_empty() {
            build.extend(["--features", features]);
        }
        crate::cargo(&build)?;
        // The two builds share the directory's dependencies; each keeps its own binary.
        let binary = builds.join(format!("ferry-{}", label.replace(' ', "-")));
        std::fs::copy(builds.join("release/ferry"), &binary)?;
        binaries.push((label, binary));
    }
    let work = tempfile::tempdir()?;
    let schema = work.path().join("schema.json5");
    std::fs::write(&schema, SCHEMA)?;
    let (base, more) = (work.path().join("base.json"), work.path().join("more.json"));
    write_items(&base, 0..items)?;
    write_items(&more, items..items + WRITES)?;
    println!(
        "| {items} items, then one `ferry load` of {WRITES} | that load process ms | `ferry get` median ms | p90 ms |"
    );
    println!("|---|---:|---:|---:|");
    for (label, ferry) in &binaries {
        let db = work.path().join(label.replace(' ', "-"));
        eprintln!("{label}: loading {items} items...");
        ferry_run(ferry, &db, &schema, &["load", &base.to_string_lossy()])?;
        let started = Instant::now();
        ferry_run(ferry, &db, &schema, &["load", &more.to_string_lossy()])?;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut next = fastrand::Rng::with_seed(items);
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let seq = next.u64(0..items + WRITES);
            let key = serde_json::json!({"dev": seq / ITEMS_PER_DEVICE, "seq": seq}).to_string();
            let started = Instant::now();
            ferry_run(ferry, &db, &schema, &["get", "Reading", &key])?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let quantile = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "| {label} | {load_ms:.0} | {:.1} | {:.1} |",
            quantile(0.5),
            quantile(0.9)
        );
    }
    Ok(())
}

/// `{"Reading": [...]}` of the items numbered `seqs`, as `ferry load` reads it.
fn write_items(path: &Path, seqs: std::ops::Range<u64>) -> Result<()> {
    let items: Vec<serde_json::Value> = seqs
        .map(|seq| {
            serde_json::json!({
                "dev": seq / ITEMS_PER_DEVICE, "seq": seq, "value": seq % 997,
                "note": "a reading of the sensor, with a short note of its own",
            })
        })
        .collect();
    std::fs::write(path, serde_json::json!({ "Reading": items }).to_string())
        .with_context(|| format!("writing {}", path.display()))
}

/// `ferry --db DB --schema SCHEMA ARGS...`, which must succeed and print something.
fn ferry_run(ferry: &PathBuf, db: &Path, schema: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(ferry)
        .arg("--db")
        .arg(db)
        .arg("--schema")
        .arg(schema)
        .args(args)
        .output()?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "ferry {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
