//! Ferry under test, through the public JSON API.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use ferry::{Config, Db, FindOptions, Schema, WriteOptions};
use serde_json::json;

use crate::{ITEMS_PER_DEVICE, PAGE_ITEMS, Subject};

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' }, gs1: { hash: 'gs1pk', sort: 'gs1sk' } },
    models: { Reading: {
        pk: { type: 'string', value: 'dev#${dev}' },
        sk: { type: 'string', value: 'r#${seq:12:0}' },
        gs1pk: { type: 'string', value: 'kind#${kind}' },
        gs1sk: { type: 'string', value: '${seq:12:0}' },
        dev: { type: 'number', required: true },
        seq: { type: 'number', required: true },
        kind: { type: 'string', required: true },
        value: { type: 'number' },
        note: { type: 'string' },
    } },
}"#;

/// A Ferry database with the benchmark schema.
pub struct Ferry {
    db: Db,
}

impl Ferry {
    pub fn open(dir: &Path) -> Result<Ferry> {
        let config = Config {
            ttl_sweep: None,
            ..Config::with_schema(Schema::parse(SCHEMA)?)
        };
        Ok(Ferry {
            db: Db::open(dir, config)?,
        })
    }
}

/// The item both stores hold for `seq`.
pub fn item(seq: u64) -> serde_json::Value {
    json!({
        "dev": seq / ITEMS_PER_DEVICE,
        "seq": seq,
        "kind": format!("k{}", seq % 16),
        "value": seq % 1000,
        "note": "a reading of moderate length, like a device would keep",
    })
}

impl Subject for Ferry {
    fn create(&mut self, seq: u64) -> Result<()> {
        self.db.create("Reading", item(seq))?;
        Ok(())
    }

    fn get(&mut self, seq: u64) -> Result<()> {
        let key = json!({"dev": seq / ITEMS_PER_DEVICE, "seq": seq});
        match self.db.get("Reading", key)? {
            Some(_) => Ok(()),
            None => bail!("ferry: item {seq} is missing"),
        }
    }

    fn page(&mut self, device: u64) -> Result<usize> {
        let options = FindOptions {
            limit: Some(PAGE_ITEMS),
            ..FindOptions::default()
        };
        Ok(self
            .db
            .find("Reading", json!({"dev": device}), &options)?
            .items
            .len())
    }

    fn update(&mut self, seq: u64) -> Result<()> {
        let props = json!({"dev": seq / ITEMS_PER_DEVICE, "seq": seq, "value": seq % 997});
        self.db.update("Reading", props, &WriteOptions::default())?;
        Ok(())
    }
}

/// Resident memory of a fresh process that opens the database and reads from it.
pub fn measure_rss(dir: &Path, items: u64) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("rss")
        .arg(dir)
        .arg(items.to_string())
        .output()?;
    if !out.status.success() {
        bail!("rss child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout)?
        .trim()
        .parse()
        .context("rss child printed no number")
}

/// Child side of [`measure_rss`]: opens, reads, prints VmRSS in bytes.
pub fn report_rss(dir: &str, items: u64) -> Result<()> {
    let mut ferry = Ferry::open(Path::new(dir))?;
    let devices = (items / ITEMS_PER_DEVICE).max(1);
    for i in 0..20_000u64 {
        ferry.get((i * 7919) % items)?;
    }
    for d in 0..400u64 {
        ferry.page(d % devices)?;
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    println!("{}", kib * 1024);
    Ok(())
}
