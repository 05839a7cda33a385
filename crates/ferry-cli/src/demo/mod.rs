//! `ferry demo`: Ferry's main job on the example schema: a device database at work, then
//! two devices and a cloud syncing (up, down, both and device-only models, an offline
//! period and a conflict), ending with a summary that checks everything converged.

mod cloud;
#[cfg(feature = "relay")]
mod relay;
mod story;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result};
use ferry::{Config, Db, FindOptions, Schema, WriteOptions};
use serde_json::json;

pub use cloud::DemoCloud;

const SCHEMA: &str = include_str!("../../../../examples/schema.json5");
/// Readings written to show throughput.
const READINGS: usize = 2_000;

/// Runs the demo in `keep` (kept afterwards) or a temporary directory, against `cloud`.
pub fn run(keep: Option<&Path>, cloud: DemoCloud) -> Result<()> {
    let temporary;
    let dir: PathBuf = match keep {
        Some(dir) => {
            let used = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if used {
                anyhow::bail!(
                    "{} is not empty: give --keep a new directory",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.to_path_buf()
        }
        None => {
            temporary = tempfile::tempdir().context("creating a temporary directory")?;
            temporary.path().to_path_buf()
        }
    };
    tour(&dir.join("tour"))?;
    story::run(&dir, &cloud)
}

/// The local database on its own: writes, reads, queries, bad input, triggers, expiry,
/// reopening.
fn tour(dir: &Path) -> Result<()> {
    let schema = Schema::parse(SCHEMA)?;
    println!("ferry demo: a device database in {}", dir.display());
    println!(
        "schema: {} models, {} indexes\n",
        schema.models().count(),
        schema.indexes().len()
    );

    let config = Config::with_schema(schema).context("deviceId", "pump-7");
    let db = Db::open(dir, config)?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    db.on_change(Some("Fault"), move |event| {
        if let Ok(mut seen) = seen.lock() {
            seen.push(format!(
                "{:?} {:?}",
                event.op,
                event.new.as_ref().map(|n| &n["code"])
            ));
        }
    })?;

    step("create two users (ids are generated ULIDs; passwords are hidden)");
    let ada = db.create(
        "User",
        json!({"name": "Ada", "email": "ada@example.com", "role": "admin", "password": "s3cret"}),
    )?;
    println!("  {ada}");
    let bob = db.create("User", json!({"name": "Bob", "email": "bob@example.com"}))?;
    println!("  {bob}");

    step("get by id, and find on the gs1 index by role");
    println!(
        "  {}",
        db.get("User", json!({"id": ada["id"]}))?
            .unwrap_or_default()
    );
    let viewers = db.find(
        "User",
        json!({"role": "viewer"}),
        &FindOptions {
            index: Some("gs1".into()),
            ..FindOptions::default()
        },
    )?;
    println!("  viewers: {}", json!(viewers.items));

    step("bad input is refused with a clear error, and nothing is lost");
    for (what, props) in [
        (
            "duplicate email",
            json!({"name": "Eve", "email": "ada@example.com"}),
        ),
        (
            "invalid role",
            json!({"name": "Eve", "email": "eve@example.com", "role": "root"}),
        ),
        ("missing name", json!({"email": "eve@example.com"})),
    ] {
        let error = db
            .create("User", props)
            .err()
            .map(|e| format!("{}: {e}", e.code()))
            .unwrap_or_default();
        println!("  {what}: {error}");
    }
    let error = db
        .put("Config", json!({"name": "rate", "value": {"hz": 10}}))
        .err();
    println!(
        "  write to a cloud-owned model: {}",
        error
            .map(|e| format!("{}: {e}", e.code()))
            .unwrap_or_default()
    );

    step(&format!(
        "write {READINGS} sensor readings, then page through them"
    ));
    let started = Instant::now();
    for i in 0..READINGS {
        db.create(
            "Reading",
            json!({"sensor": "temp", "at": i, "value": 20 + (i % 7)}),
        )?;
    }
    let elapsed = started.elapsed();
    println!(
        "  {READINGS} creates in {:.1} ms ({:.0} per second)",
        elapsed.as_secs_f64() * 1e3,
        READINGS as f64 / elapsed.as_secs_f64()
    );
    let hot = FindOptions {
        condition: Some("${value} >= {26}".into()),
        limit: Some(3),
        ..FindOptions::default()
    };
    let page = db.find("Reading", json!({"sensor": "temp"}), &hot)?;
    println!("  first 3 readings with value >= 26: {}", json!(page.items));
    let rest = db.find(
        "Reading",
        json!({"sensor": "temp"}),
        &FindOptions {
            next: page.next,
            ..hot.clone()
        },
    )?;
    println!("  next page: {}", json!(rest.items));

    step("faults fire triggers after they commit");
    let fault = db.create("Fault", json!({"code": 17, "message": "pressure high"}))?;
    db.update(
        "Fault",
        json!({"id": fault["id"], "acknowledged": true}),
        &WriteOptions::default(),
    )?;
    println!(
        "  trigger saw: {:?}",
        events.lock().map(|e| e.clone()).unwrap_or_default()
    );

    step("a reading with an expiry in the past is invisible at once, then swept");
    db.create(
        "Reading",
        json!({"sensor": "old", "at": 1, "value": 1, "expires": "2020-01-01T00:00:00Z"}),
    )?;
    println!(
        "  find: {}, swept: {}",
        db.find("Reading", json!({"sensor": "old"}), &FindOptions::default())?
            .count,
        db.sweep_expired()?
    );

    step("close and reopen without a schema: the database remembers it and its data");
    drop(db);
    let db = Db::open(dir, Config::default().context("deviceId", "pump-7"))?;
    let count = db
        .find(
            "Reading",
            json!({"sensor": "temp"}),
            &FindOptions {
                count: true,
                ..FindOptions::default()
            },
        )?
        .count;
    println!(
        "  {count} readings after reopen; Ada is {}",
        db.get("User", json!({"id": ada["id"]}))?
            .map(|u| u["role"].clone())
            .unwrap_or_default()
    );
    Ok(())
}

pub(crate) fn step(title: &str) {
    println!("\n== {title}");
}
