//! A device application and a cloud service, built against Ferry as a dependency: the
//! service runs a relay over its embedded store, the device syncs through it, and the
//! service sends configuration down in cloud mode with a service token.
//!
//! `cargo xtask test` runs it; it prints `ok` and exits 0 when the configuration reached
//! the device and the device's fault reached the cloud.

use std::sync::Arc;
use std::time::Duration;

use ferry::replication::{Models, Role};
use ferry::service::Service;
use ferry::ws::WsTransport;
use ferry::{Attach, Config, Db, Schema, SyncOptions, UpdateOps};
use ferry_relay::{EmbeddedStore, RelayConfig, Secret};
use serde_json::json;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Fault: {
            pk: { type: 'string', value: 'device#${deviceId}' }, sk: { type: 'string', value: 'fault#${id}' },
            deviceId: { type: 'string', required: true }, id: { type: 'string', generate: 'ulid' },
            code: { type: 'number', required: true },
        },
        Config: {
            pk: { type: 'string', value: 'config#' }, sk: { type: 'string', value: 'config#${name}' },
            name: { type: 'string', required: true }, value: { type: 'string' },
        },
    },
    control: { Fault: { sync: 'up' }, Config: { sync: 'down', scope: '*' } },
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::parse(SCHEMA)?;
    let rt = tokio::runtime::Runtime::new()?;

    // The cloud side: a relay over its own store, for this schema.
    let models = Models::new(schema.cloud_directions(), schema.item_layout());
    let store = EmbeddedStore::open(&dir.path().join("relay"), 30 * 24 * 3_600_000, models)?;
    let secret = Secret::new(vec![7; 32])?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("ws://{}", listener.local_addr()?);
    let config = RelayConfig::new(secret.clone());
    rt.spawn(ferry_relay::serve(listener, store, config, std::future::pending()));

    // The device: a database that syncs through the relay with a device token.
    let device = Db::open(
        &dir.path().join("device"),
        Config::with_schema(schema.clone()).context("deviceId", "pump-7"),
    )?;
    let token = secret.sign("pump-7", Default::default(), 3600)?;
    device.connect(ferry::relay(&url, &token), SyncOptions::default())?;
    device.create("Fault", json!({"code": 17}))?;

    // The service: cloud mode through the same relay with a service token.
    let token = secret.sign_as(Role::Service, "ops", ["*".to_string()].into(), 3600)?;
    let service = rt.block_on(Service::connect(
        WsTransport::new(&url, &token, "ops")?,
        Arc::new(schema),
        "ops",
        None,
    ))?;
    let rate = json!({"name": "rate", "value": "10"});
    rt.block_on(service.update("Config", &rate, &UpdateOps::default(), true))?;

    device.sync(Duration::from_secs(20))?;
    let config = device.get("Config", json!({"name": "rate"}))?;
    assert_eq!(config.map(|c| c["value"].clone()), Some(json!("10")));
    assert_eq!(device.status().pending_changes, 0, "the fault was acknowledged");
    println!("ok");
    Ok(())
}
