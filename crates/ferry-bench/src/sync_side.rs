//! Replication throughput: local writes through the journal, the sync engine and the
//! in-memory transport into the reference cloud, against the same writes kept local.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry::Attach;
use ferry::{Config, Db, MemoryCloud, MemoryTransport, Schema, SyncOptions};
use serde_json::json;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Synced: {
            pk: { type: 'string', value: 'dev#${deviceId}' }, sk: { type: 'string', value: 'r#${seq:12:0}' },
            deviceId: { type: 'string', required: true }, seq: { type: 'number', required: true },
            value: { type: 'number' }, note: { type: 'string' },
        },
        Local: {
            pk: { type: 'string', value: 'loc#${deviceId}' }, sk: { type: 'string', value: 'r#${seq:12:0}' },
            deviceId: { type: 'string', required: true }, seq: { type: 'number', required: true },
            value: { type: 'number' }, note: { type: 'string' },
        },
    },
    control: { Synced: { sync: 'up' } },
}"#;

/// Changes written before the measured ones to size a queued change (uploaded with them).
const PROBE_CHANGES: u64 = 100;

/// One result row: changes per second and CPU time per change for each side, and the
/// encoded bytes per change.
pub struct SyncRow {
    pub changes: u64,
    pub synced_per_s: f64,
    pub local_per_s: f64,
    pub synced_cpu_us: f64,
    pub local_cpu_us: f64,
    /// CPU time of the writing thread alone (the rest is the driver's and the storage's).
    pub synced_writer_us: f64,
    pub local_writer_us: f64,
    pub bytes_per_change: f64,
}

/// Writes `changes` items of each model and measures, per side, write plus `sync()` time.
pub fn run(changes: u64) -> Result<SyncRow> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        ttl_sweep: None,
        ..Config::with_schema(Schema::parse(SCHEMA)?).context("deviceId", "d1")
    };
    let db = Db::open(dir.path(), config)?;
    let item =
        |seq: u64| json!({"seq": seq, "value": seq % 1000, "note": "a reading of moderate length"});
    // The size of a queued change, from a few written before the transport is attached.
    for seq in changes..changes + PROBE_CHANGES {
        db.create("Synced", item(seq))?;
    }
    let probe = db.status();
    let bytes_per_change = probe.pending_bytes as f64 / probe.pending_changes.max(1) as f64;
    let cloud = Arc::new(Mutex::new(MemoryCloud::default()));
    db.attach(MemoryTransport::new(cloud.clone()), SyncOptions::default())?;

    let (started, cpu, writer) = (Instant::now(), process_cpu()?, thread_cpu()?);
    for seq in 0..changes {
        db.create("Local", item(seq))?;
    }
    let (local, local_cpu) = (started.elapsed(), process_cpu()? - cpu);
    let local_writer = thread_cpu()? - writer;

    let (started, cpu, writer) = (Instant::now(), process_cpu()?, thread_cpu()?);
    for seq in 0..changes {
        db.create("Synced", item(seq))?;
    }
    let synced_writer = thread_cpu()? - writer;
    db.sync(Duration::from_secs(600))?;
    let (synced, synced_cpu) = (started.elapsed(), process_cpu()? - cpu);
    let uploaded = cloud.lock().map(|c| c.len()).unwrap_or(0) as u64;
    anyhow::ensure!(
        uploaded == changes + PROBE_CHANGES,
        "the cloud holds {uploaded} of {} changes",
        changes + PROBE_CHANGES
    );
    Ok(SyncRow {
        changes,
        synced_per_s: changes as f64 / synced.as_secs_f64(),
        local_per_s: changes as f64 / local.as_secs_f64(),
        synced_cpu_us: synced_cpu * 1e6 / changes as f64,
        local_cpu_us: local_cpu * 1e6 / changes as f64,
        synced_writer_us: synced_writer * 1e6 / changes as f64,
        local_writer_us: local_writer * 1e6 / changes as f64,
        bytes_per_change,
    })
}

/// Seconds of CPU this process (every thread: the writer, the sync driver, fjall's
/// workers) has used. Other tenants of a shared machine slow the wall clock much more
/// than they change this, so it shows what a change costs where rates are noisy.
fn process_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which ends with the last ')': utime and stime are
    // the 12th and 13th, in clock ticks of 10 ms on Linux.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |at: usize| -> Result<f64> {
        let field = fields
            .get(at)
            .context("/proc/self/stat is shorter than expected")?;
        Ok(field.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_S)
}

/// Seconds of CPU the calling thread has used (the kernel's scheduler statistics, in ns).
fn thread_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let on_cpu_ns: u64 = (stat.split_whitespace().next())
        .context("/proc/thread-self/schedstat is empty")?
        .parse()?;
    Ok(on_cpu_ns as f64 / 1e9)
}

/// `sysconf(_SC_CLK_TCK)`, which is 100 on every Linux the project runs on.
const CLOCK_TICKS_PER_S: f64 = 100.0;
