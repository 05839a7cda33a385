//! `ferry demo`: the local database at work on the example schema, in a temporary directory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ferry::Attach;
use ferry::{
    Config, Db, FindOptions, MemoryCloud, MemoryTransport, Schema, SyncOptions, WriteOptions,
};
use serde_json::json;

const SCHEMA: &str = include_str!("../../../examples/schema.json5");
/// Readings written to show throughput.
const READINGS: usize = 2_000;

pub fn run() -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let schema = Schema::parse(SCHEMA)?;
    println!("ferry demo: a device database in {}", dir.path().display());
    println!(
        "schema: {} models, {} indexes\n",
        schema.models().count(),
        schema.indexes().len()
    );

    let config = Config::with_schema(schema).context("deviceId", "pump-7");
    let db = Db::open(dir.path(), config)?;
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
    let db = Db::open(dir.path(), Config::default().context("deviceId", "pump-7"))?;
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
    replicate(&db, dir.path())?;
    println!(
        "\nnext: `ferry --db DIR --schema examples/schema.json5 create User '{{\"name\":\"Ann\",\"email\":\"ann@example.com\"}}'`"
    );
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Attaches the device to the in-memory reference cloud, then a second device, and shows
/// changes flowing both ways.
fn replicate(db: &Db, dir: &std::path::Path) -> Result<()> {
    step("replicate: attach to the (in-memory, reference) cloud and sync");
    let mut memory_cloud = MemoryCloud::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    memory_cloud.set_time_ms(now.as_millis() as u64);
    let cloud = Arc::new(Mutex::new(memory_cloud));
    db.attach(MemoryTransport::new(cloud.clone()), SyncOptions::default())?;
    db.sync(Duration::from_secs(30))?;
    let status = db.status();
    let in_cloud = cloud.lock().map(|c| c.len()).unwrap_or(0);
    println!(
        "  {in_cloud} items in the cloud; pending {}; cursors {:?}",
        status.pending_changes, status.cursors
    );

    step("a second device syncs and gets the shared users (sync: 'both'), not pump-7's readings");
    let schema = Schema::parse(SCHEMA)?;
    let other = Db::open(
        dir.join("pump-8"),
        Config::with_schema(schema).context("deviceId", "pump-8"),
    )?;
    other.attach(MemoryTransport::new(cloud), SyncOptions::default())?;
    other.sync(Duration::from_secs(30))?;
    let admins = FindOptions {
        index: Some("gs1".into()),
        ..FindOptions::default()
    };
    let users = other.find("User", json!({"role": "admin"}), &admins)?;
    println!("  pump-8 sees admins: {}", json!(users.items));
    let readings = other.find(
        "Reading",
        json!({"deviceId": "pump-7", "sensor": "temp"}),
        &FindOptions {
            count: true,
            ..FindOptions::default()
        },
    )?;
    println!(
        "  pump-8 sees {} of pump-7's readings (they are scoped to pump-7)",
        readings.count
    );
    let id = users
        .items
        .first()
        .map(|u| u["id"].clone())
        .unwrap_or_default();
    other.update(
        "User",
        json!({"id": id, "role": "operator"}),
        &WriteOptions::default(),
    )?;
    other.sync(Duration::from_secs(30))?;
    db.sync(Duration::from_secs(30))?;
    let ada = db.get("User", json!({"id": id}))?.unwrap_or_default();
    println!(
        "  pump-8 made Ada an operator; pump-7 now has role {}",
        ada["role"]
    );
    Ok(())
}
