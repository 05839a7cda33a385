//! The replication story: two devices and a cloud, every direction, an offline period and
//! a conflict, status lines as it goes, and a summary that checks it all converged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ferry::{Config, Db, Schema, WriteOptions};
use serde_json::{Value as Json, json};

use super::cloud::{CloudSide, DemoCloud};
use super::{SCHEMA, step};

/// The story's devices: pump-7 and pump-8.
const DEVICES: [&str; 2] = ["pump-7", "pump-8"];
/// Readings pump-7 uploads.
const READINGS: usize = 20;
/// How long a sync may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reopen waits for the closed database's last background step.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// One device: its name (the `deviceId`), its directory and its open database.
struct Device {
    name: &'static str,
    dir: PathBuf,
    db: Db,
}

impl Device {
    fn open(root: &Path, name: &'static str, schema: &Schema, cloud: &CloudSide) -> Result<Device> {
        let dir = root.join(name);
        let db = open(
            &dir,
            Config::with_schema(schema.clone()).context("deviceId", name),
        )?;
        cloud.attach(&db)?;
        Ok(Device { name, dir, db })
    }

    fn sync(&self) -> Result<()> {
        self.db
            .sync(SYNC_TIMEOUT)
            .with_context(|| format!("{} did not sync", self.name))
    }

    fn status(&self) {
        println!(
            "  [{}] {}",
            self.name,
            crate::sync::status_line(&self.db.status())
        );
    }
}

/// Opens a database, waiting out the last background step of a handle just dropped.
fn open(dir: &Path, config: Config) -> Result<Db> {
    let started = Instant::now();
    loop {
        match Db::open(dir, config.clone()) {
            Err(e) if e.is_locked() && started.elapsed() < REOPEN_WAIT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return Ok(other?),
        }
    }
}

pub fn run(root: &Path, cloud: &DemoCloud) -> Result<()> {
    let schema = Schema::parse(SCHEMA)?;
    let cloud = CloudSide::open(cloud, &schema, root, &DEVICES)?;
    step(&format!(
        "two devices, pump-7 and pump-8, sync through {}",
        cloud.describe()
    ));
    let [pump7, pump8] = DEVICES;
    let pump7 = Device::open(root, pump7, &schema, &cloud)?;
    let mut pump8 = Device::open(root, pump8, &schema, &cloud)?;

    step("each side writes: readings and a fault go up, a user both ways, configuration down");
    for at in 0..READINGS {
        pump7.db.create(
            "Reading",
            json!({"sensor": "temp", "at": at, "value": 20 + at % 5}),
        )?;
    }
    pump7
        .db
        .create("Fault", json!({"code": 3, "message": "filter clogged"}))?;
    let note = pump7
        .db
        .create("Note", json!({"text": "calibrated the north sensor"}))?;
    let ada = pump8.db.create(
        "User",
        json!({"name": "Ada", "email": "ada@example.com", "role": "admin"}),
    )?;
    cloud.put(
        &schema,
        "Config",
        &json!({"name": "rate", "value": {"hz": 10}}),
    )?;
    println!("  pump-7: {READINGS} readings (up), a fault (up), a note (device only)");
    println!("  pump-8: user Ada (both); the cloud: config rate (down)");
    pump7.sync()?;
    pump8.sync()?;
    pump7.sync()?;
    pump7.status();
    pump8.status();
    let role = |db: &Db| -> Result<Json> {
        Ok(db
            .get("User", json!({"id": ada["id"]}))?
            .map(|u| u["role"].clone())
            .unwrap_or_default())
    };
    println!(
        "  pump-7 sees Ada as {}, and rate {}",
        role(&pump7.db)?,
        config(&pump7.db)?
    );

    step("both devices go offline for a while, and both change Ada");
    let (dir7, dir8) = (pump7.dir.clone(), pump8.dir.clone());
    drop((pump7, pump8));
    let offline7 = open(&dir7, Config::default())?;
    offline7.update(
        "User",
        json!({"id": ada["id"], "role": "operator"}),
        &WriteOptions::default(),
    )?;
    drop(offline7);
    // Apart by more than the clocks' uncertainty (DynamoDB's `Date` tells whole seconds):
    // closer writes are still ordered, by their versions, but not by the wall clock.
    std::thread::sleep(Duration::from_millis(1_100));
    let offline8 = open(&dir8, Config::default())?;
    offline8.update(
        "User",
        json!({"id": ada["id"], "role": "viewer"}),
        &WriteOptions::default(),
    )?;
    offline8.create("Fault", json!({"code": 9, "message": "written offline"}))?;
    println!(
        "  pump-7 made Ada an operator; a second later pump-8 made her a viewer and logged a fault ({} changes wait)",
        offline8.status().pending_changes
    );
    drop(offline8);

    step("pump-8 comes back first, then pump-7: the newer write wins, the older is logged");
    pump8 = Device::open(root, "pump-8", &schema, &cloud)?;
    pump8.sync()?;
    let pump7 = Device::open(root, "pump-7", &schema, &cloud)?;
    pump7.sync()?;
    pump8.sync()?;
    pump7.status();
    pump8.status();
    println!(
        "  Ada is {} on pump-7 and {} on pump-8",
        role(&pump7.db)?,
        role(&pump8.db)?
    );
    if let Some(conflict) = pump7.db.conflicts(1)?.first() {
        println!(
            "  pump-7's conflict log: {} {} lost to {}",
            conflict.model, conflict.key, conflict.winner
        );
    }

    summary(&schema, &cloud, &pump7, &pump8, &ada, &note)
}

fn config(db: &Db) -> Result<Json> {
    Ok(db
        .get("Config", json!({"name": "rate"}))?
        .map(|c| c["value"].clone())
        .unwrap_or_default())
}

/// Checks that everything converged as each model's direction says; fails naming what did
/// not.
fn summary(
    schema: &Schema,
    cloud: &CloudSide,
    pump7: &Device,
    pump8: &Device,
    ada: &Json,
    note: &Json,
) -> Result<()> {
    step("summary");
    let user = |db: &Db| -> Result<Json> {
        Ok(db
            .get("User", json!({"id": ada["id"]}))?
            .map(|u| u["role"].clone())
            .unwrap_or_default())
    };
    let in_cloud = |model: &str, props: Json| cloud.get(schema, model, &props);
    let readings_in_cloud = (0..READINGS)
        .map(|at| {
            in_cloud(
                "Reading",
                json!({"deviceId": "pump-7", "sensor": "temp", "at": at}),
            )
        })
        .collect::<Result<Vec<_>>>()?
        .iter()
        .filter(|r| r.is_some())
        .count();
    let readings_on_8 = pump8
        .db
        .find(
            "Reading",
            json!({"deviceId": "pump-7", "sensor": "temp"}),
            &ferry::FindOptions::default(),
        )?
        .items
        .len();
    let faults8 = pump8
        .db
        .find("Fault", json!({}), &ferry::FindOptions::default())?
        .items;
    let offline_fault = faults8
        .iter()
        .find(|f| f["code"] == json!(9))
        .map(|f| f["id"].clone());
    let offline_fault_in_cloud = match &offline_fault {
        Some(id) => in_cloud("Fault", json!({"deviceId": "pump-8", "id": id}))?.is_some(),
        None => false,
    };
    let cloud_ada = in_cloud("User", json!({"id": ada["id"]}))?.map(|u| u["role"].clone());
    let conflicts = pump7.db.status().conflicts + pump8.db.status().conflicts;
    let checks = [
        (
            "every change acknowledged",
            pump7.db.status().pending_changes == 0 && pump8.db.status().pending_changes == 0,
        ),
        (
            "Ada is the newer write's viewer everywhere (both)",
            user(&pump7.db)? == json!("viewer")
                && user(&pump8.db)? == json!("viewer")
                && cloud_ada == Some(json!("viewer")),
        ),
        ("the losing write is in a conflict log", conflicts >= 1),
        (
            "the cloud's rate reached both devices (down)",
            config(&pump7.db)? == json!({"hz": 10}) && config(&pump8.db)? == json!({"hz": 10}),
        ),
        (
            "pump-7's readings are in the cloud and not on pump-8 (up, scoped)",
            readings_in_cloud == READINGS && readings_on_8 == 0,
        ),
        (
            "pump-8's offline fault reached the cloud (up)",
            offline_fault_in_cloud,
        ),
        (
            "the note stayed on pump-7 (device only)",
            pump7.db.get("Note", json!({"id": note["id"]}))?.is_some(),
        ),
    ];
    let mut failed = Vec::new();
    for (what, ok) in checks {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failed.push(what);
        }
    }
    if !failed.is_empty() {
        bail!("did not converge: {}", failed.join("; "));
    }
    println!(
        "\neverything converged. Next: `ferry relay serve` and `ferry --db DIR agent --relay URL --token T` (docs/relay.md)"
    );
    Ok(())
}
