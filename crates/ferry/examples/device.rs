//! A device application using Ferry's library API: open a database with a schema, write
//! and read through models (as JSON and as a serde type), react to changes with a trigger.
//!
//! Run with `cargo run -p ferry --example device`.

use ferry::{Config, Db, FindOptions, Schema, WriteOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A fault as the application sees it; Ferry maps it to and from stored items.
#[derive(Debug, Serialize, Deserialize)]
struct Fault {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    code: u32,
    message: String,
    #[serde(default)]
    acknowledged: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::from_path(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/schema.json5").as_ref(),
    )?;
    // deviceId is a context property: it fills `deviceId` in every operation.
    let db = Db::open(
        dir.path(),
        Config::with_schema(schema).context("deviceId", "pump-7"),
    )?;

    db.on_change(Some("Fault"), |event| {
        println!(
            "trigger: {:?} fault {}",
            event.op,
            event
                .new
                .as_ref()
                .map_or(json!(null), |f| f["code"].clone())
        );
    })?;

    // Typed access through serde.
    let faults = db.typed::<Fault>("Fault")?;
    let fault = faults.create(&Fault {
        id: None,
        code: 17,
        message: "pressure high".into(),
        acknowledged: false,
    })?;
    println!("created {fault:?}");

    // JSON access, with update operations and a condition.
    let options = WriteOptions {
        condition: Some("${acknowledged} = {false}".into()),
        ..WriteOptions::default()
    };
    db.update(
        "Fault",
        json!({"id": fault.id, "acknowledged": true}),
        &options,
    )?;

    // Sensor readings: find with a sort-key prefix and a where filter, one page at a time.
    for at in 0..10 {
        db.create(
            "Reading",
            json!({"sensor": "temp", "at": at, "value": 20 + at}),
        )?;
    }
    let warm = FindOptions {
        condition: Some("${value} > {25}".into()),
        limit: Some(2),
        ..FindOptions::default()
    };
    let page = db.find("Reading", json!({"sensor": "temp"}), &warm)?;
    println!(
        "warm readings: {:?}, more: {}",
        page.items,
        page.next.is_some()
    );
    Ok(())
}
