//! The relay end to end on loopback, in this process (its own runtime, the embedded store):
//! device uploads (commit to acknowledgement) against the same device into the in-memory
//! reference cloud and against the relay store's own ceiling; a new device's catch-up;
//! fan-out latency from one device's commit to another device's trigger; bytes on the wire.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferry::journal::{Change, ChangeOp};
use ferry::replication::{Grant, Models};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version, item_size};
use ferry::ws::WsTransport;
use ferry::{Attach, Config, Db, EngineConfig, MemoryCloud, MemoryTransport, Origin, Schema};
use ferry::{SyncOptions, Transport};
use ferry_protocol::{Frame, encode};
use ferry_relay::{EmbeddedStore, RelayConfig, Secret};
use serde_json::json;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Reading: {
            pk: { type: 'string', value: 'dev#${deviceId}' }, sk: { type: 'string', value: 'r#${seq:12:0}' },
            deviceId: { type: 'string', required: true }, seq: { type: 'number', required: true },
            value: { type: 'number' }, note: { type: 'string' },
        },
    },
    control: { Reading: { sync: 'both', scope: '*' } },
}"#;

/// Fan-out round trips measured per round.
const FAN_OUT_SAMPLES: usize = 300;
/// Rounds; each measure's median is reported.
const ROUNDS: usize = 3;
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
const SECRET: &[u8] = b"the benchmark's secret, 32 bytes or more";

/// A relay serving an embedded store on a loopback port, on a runtime of its own.
struct Relay {
    /// Runs the relay for as long as this lives.
    _rt: tokio::runtime::Runtime,
    url: String,
    secret: Secret,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Result<Relay> {
        let dir = tempfile::tempdir()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let store = EmbeddedStore::open(&dir.path().join("store"), 86_400_000, models())?;
        let secret = Secret::new(SECRET.to_vec())?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("ws://{}", listener.local_addr()?);
        let config = RelayConfig::new(secret.clone());
        rt.spawn(ferry_relay::serve(
            listener,
            store,
            config,
            std::future::pending(),
        ));
        Ok(Relay {
            _rt: rt,
            url,
            secret,
            _dir: dir,
        })
    }

    fn transport(&self, device: &str, replica: &str) -> Result<WsTransport> {
        let token = self.secret.sign(device, Default::default(), 3600)?;
        Ok(WsTransport::new(&self.url, &token, replica)?)
    }
}

/// The benchmark schema's models, as the relay's write rule knows them.
fn models() -> Models {
    let schema = Schema::parse(SCHEMA).unwrap_or_else(|e| panic!("the benchmark schema: {e}"));
    Models::new(schema.cloud_directions(), schema.item_layout())
}

/// A device database on the benchmark schema, attached through `link`.
fn device<T: Transport>(
    dir: &std::path::Path,
    name: &str,
    link: impl FnOnce(&str) -> Result<T>,
    sync_delay_ms: u64,
) -> Result<Db> {
    let config = Config {
        ttl_sweep: None,
        ..Config::with_schema(Schema::parse(SCHEMA)?).context("deviceId", name)
    };
    let db = Db::open(dir.join(name), config)?;
    let engine = EngineConfig {
        sync_delay_ms,
        poll_interval_ms: 60_000,
        ..EngineConfig::default()
    };
    let options = SyncOptions {
        engine,
        ..SyncOptions::default()
    };
    let replica = db.status().replica;
    db.attach(link(&replica)?, options)?;
    Ok(db)
}

fn reading(seq: u64) -> serde_json::Value {
    json!({"seq": seq, "value": seq % 1000, "note": "a reading of moderate length"})
}

/// Writes `changes` readings and syncs; changes per second, commit to acknowledgement.
fn upload(db: &Db, changes: u64) -> Result<f64> {
    let started = Instant::now();
    for seq in 0..changes {
        db.create("Reading", reading(seq))?;
    }
    db.sync(SYNC_TIMEOUT)?;
    ensure!(db.status().pending_changes == 0, "changes left pending");
    Ok(changes as f64 / started.elapsed().as_secs_f64())
}

/// A new device syncs; seconds until it holds the `changes` readings `writer` made.
fn catch_up<T: Transport>(
    dir: &std::path::Path,
    name: &str,
    link: impl FnOnce(&str) -> Result<T>,
    writer: &str,
    changes: u64,
) -> Result<f64> {
    let started = Instant::now();
    let db = device(dir, name, link, 0)?;
    db.sync(SYNC_TIMEOUT)?;
    let seconds = started.elapsed().as_secs_f64();
    for seq in [0, changes / 2, changes - 1] {
        let reading = db.get("Reading", json!({"deviceId": writer, "seq": seq}))?;
        ensure!(reading.is_some(), "{name} lacks reading {seq} of {writer}");
    }
    Ok(seconds)
}

/// The relay store's own ceiling: the same changes written straight into it, 1000 a batch.
fn store_ceiling(store: &EmbeddedStore, changes: u64) -> Result<f64> {
    let replica = ReplicaId::parse("ceiling")?;
    let started = Instant::now();
    for start in (0..changes).step_by(1000) {
        let batch = (start..(start + 1000).min(changes))
            .map(|seq| synthetic(seq, &replica))
            .collect();
        store.write_now(batch, &Grant::device("ceiling", None))?;
    }
    Ok(changes as f64 / started.elapsed().as_secs_f64())
}

/// A change shaped like the device's readings.
fn synthetic(seq: u64, replica: &ReplicaId) -> Change {
    let key = Key {
        hash: Value::S("dev#ceiling".into()),
        sort: Some(Value::S(format!("r#{seq:012}"))),
    };
    let mut item = Item::new();
    item.insert("pk".into(), key.hash.clone());
    item.insert("sk".into(), key.sort.clone().unwrap_or(Value::Null));
    item.insert("_type".into(), Value::S("Reading".into()));
    item.insert("deviceId".into(), Value::S("ceiling".into()));
    item.insert("seq".into(), Value::N((seq as i64).into()));
    item.insert("value".into(), Value::N(((seq % 1000) as i64).into()));
    item.insert(
        "note".into(),
        Value::S("a reading of moderate length".into()),
    );
    Change {
        model: "Reading".into(),
        key,
        op: ChangeOp::Put,
        version: Version {
            hlc: Hlc::new(1_800_000_000_000 + seq, 0),
            replica: replica.clone(),
        },
        scope: "*".into(),
        item: Some(item),
        base: None,
    }
}

/// Latencies (ms) from a's commit to b's trigger, one change at a time.
fn fan_out(a: &Db, b: &Db) -> Result<Vec<f64>> {
    let (heard, hear) = mpsc::channel::<(u64, Instant)>();
    let heard = Mutex::new(heard);
    b.on_change(Some("Reading"), move |event| {
        if event.origin == Origin::Cloud
            && let Some(seq) = event.new.as_ref().and_then(|n| n["seq"].as_u64())
        {
            let _ = heard.lock().map(|h| h.send((seq, Instant::now())));
        }
    })?;
    let mut latencies = Vec::with_capacity(FAN_OUT_SAMPLES);
    for i in 0..FAN_OUT_SAMPLES as u64 {
        let seq = 1_000_000_000 + i;
        let started = Instant::now();
        a.create("Reading", reading(seq))?;
        loop {
            let (got, at) = hear
                .recv_timeout(Duration::from_secs(10))
                .context("b never heard of a's change")?;
            if got == seq {
                latencies.push(at.duration_since(started).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// Bytes on the wire per change (a push of 100, a live frame of 100) and the item's size.
fn wire_bytes() -> Result<(f64, f64, f64)> {
    let replica = ReplicaId::parse("wire")?;
    let changes: Vec<Change> = (0..100).map(|seq| synthetic(seq, &replica)).collect();
    let item = changes[0].item.as_ref().map_or(0, item_size) as f64;
    // A binary WebSocket frame of this size adds a 4-byte header (client frames 4 more
    // for the mask).
    let push = encode(&Frame::Push {
        id: 1,
        changes: changes.clone(),
    })
    .len()
        + 8;
    let live = encode(&Frame::Live { changes }).len() + 4;
    Ok((push as f64 / 100.0, live as f64 / 100.0, item))
}

/// One round's measurements.
struct Round {
    through_relay: f64,
    in_memory: f64,
    ceiling: f64,
    relay_catch_up: f64,
    memory_catch_up: f64,
    latencies: Vec<f64>,
}

/// One round on fresh devices, relay and stores.
fn round(changes: u64) -> Result<Round> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start()?;
    eprintln!("uploading {changes} changes through the relay...");
    let a = device(dir.path(), "a", |r| relay.transport("a", r), 100)?;
    let through_relay = upload(&a, changes)?;
    eprintln!("  {through_relay:.0}/s; the same into the in-memory cloud...");
    let cloud = Arc::new(Mutex::new(MemoryCloud::default()));
    let link = |_: &str| Ok(MemoryTransport::new(cloud.clone()));
    let m = device(dir.path(), "m", link, 100)?;
    let in_memory = upload(&m, changes)?;
    eprintln!("  {in_memory:.0}/s; the relay store's ceiling...");
    let bare = EmbeddedStore::open(&dir.path().join("bare-store"), 86_400_000, models())?;
    let ceiling = store_ceiling(&bare, changes)?;

    eprintln!("catching up {changes} changes on new devices...");
    let link = |r: &str| relay.transport("n", r);
    let relay_catch_up = catch_up(dir.path(), "new-relay", link, "a", changes)?;
    let link = |_: &str| Ok(MemoryTransport::new(cloud.clone()));
    let memory_catch_up = catch_up(dir.path(), "new-memory", link, "m", changes)?;

    eprintln!("fan-out latency over {FAN_OUT_SAMPLES} changes...");
    let sender = device(dir.path(), "sender", |r| relay.transport("s", r), 0)?;
    let receiver = device(dir.path(), "receiver", |r| relay.transport("r", r), 0)?;
    receiver.sync(SYNC_TIMEOUT)?;
    let latencies = fan_out(&sender, &receiver)?;
    Ok(Round {
        through_relay,
        in_memory,
        ceiling,
        relay_catch_up,
        memory_catch_up,
        latencies,
    })
}

/// The whole benchmark: [`ROUNDS`] rounds, the median of each measure, printed as tables.
pub fn run(changes: u64) -> Result<()> {
    let rounds = (0..ROUNDS)
        .map(|_| round(changes))
        .collect::<Result<Vec<_>>>()?;
    let median = |measure: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(measure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let through_relay = median(|r| r.through_relay);
    let in_memory = median(|r| r.in_memory);
    let ceiling = median(|r| r.ceiling);
    let relay_catch_up = median(|r| r.relay_catch_up);
    let memory_catch_up = median(|r| r.memory_catch_up);
    let mut latencies: Vec<f64> = rounds.iter().flat_map(|r| r.latencies.clone()).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let (push, live, item) = wire_bytes()?;

    println!("| {changes} changes, one device, loopback, median of {ROUNDS} | changes/s | ratio |");
    println!("|---|---:|---:|");
    println!(
        "| through the relay (embedded store), commit to acknowledgement | {through_relay:.0} | |"
    );
    println!(
        "| the same device into the in-memory reference cloud | {in_memory:.0} | relay / it: {:.2}x |",
        through_relay / in_memory
    );
    println!(
        "| the relay store's ceiling (batches of 1000 written directly) | {ceiling:.0} | relay / it: {:.2}x |",
        through_relay / ceiling
    );
    println!();
    println!("| a new device catches up {changes} changes | seconds |");
    println!("|---|---:|");
    println!("| through the relay | {relay_catch_up:.2} |");
    println!("| from the in-memory reference cloud | {memory_catch_up:.2} |");
    println!();
    println!(
        "| fan-out, one device's commit to another's trigger ({} changes) | ms |",
        latencies.len()
    );
    println!("|---|---:|");
    println!("| median | {:.2} |", at(0.5));
    println!("| p99 | {:.2} |", at(0.99));
    println!();
    println!("| bytes per change (a {item:.0}-byte item) | bytes | / item |");
    println!("|---|---:|---:|");
    println!("| push of 100 changes | {push:.0} | {:.2}x |", push / item);
    println!(
        "| live frame of 100 changes | {live:.0} | {:.2}x |",
        live / item
    );
    Ok(())
}
