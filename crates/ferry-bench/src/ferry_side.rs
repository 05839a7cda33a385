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

/// The benchmark's item as a serde type, for the typed API.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    dev: u64,
    seq: u64,
    kind: String,
    value: Option<u64>,
    note: Option<String>,
}

/// Ferry through the typed API (`Db::typed::<Reading>`): gets and pages deserialize
/// straight from the stored bytes. Writes go through the JSON API.
pub struct Typed<'f> {
    ferry: &'f mut Ferry,
    model: ferry::TypedModel<Reading>,
}

impl Typed<'_> {
    pub fn new(ferry: &mut Ferry) -> Result<Typed<'_>> {
        let model = ferry.db.typed::<Reading>("Reading")?;
        Ok(Typed { ferry, model })
    }
}

impl Subject for Typed<'_> {
    fn create(&mut self, seq: u64) -> Result<()> {
        self.ferry.create(seq)
    }

    fn get(&mut self, seq: u64) -> Result<()> {
        let key = json!({"dev": seq / ITEMS_PER_DEVICE, "seq": seq});
        match self.model.get(&key)? {
            Some(reading) if reading.seq == seq => Ok(()),
            _ => bail!("ferry typed: item {seq} is missing"),
        }
    }

    fn page(&mut self, device: u64) -> Result<usize> {
        let options = FindOptions {
            limit: Some(PAGE_ITEMS),
            ..FindOptions::default()
        };
        Ok(self.model.find(&json!({"dev": device}), &options)?.0.len())
    }

    fn update(&mut self, seq: u64) -> Result<()> {
        self.ferry.update(seq)
    }
}

/// Ferry's JSON text reads (`Db::get_text`, `Db::find_text`): what the CLI and the agent
/// socket hand on, written from the stored bytes. Writes go through the JSON API.
pub struct Text<'f>(pub &'f mut Ferry);

impl Subject for Text<'_> {
    fn create(&mut self, seq: u64) -> Result<()> {
        self.0.create(seq)
    }

    fn get(&mut self, seq: u64) -> Result<()> {
        let key = json!({"dev": seq / ITEMS_PER_DEVICE, "seq": seq});
        match self
            .0
            .db
            .get_text("Reading", key, &FindOptions::default())?
        {
            Some(_) => Ok(()),
            None => bail!("ferry text: item {seq} is missing"),
        }
    }

    fn page(&mut self, device: u64) -> Result<usize> {
        let options = FindOptions {
            limit: Some(PAGE_ITEMS),
            ..FindOptions::default()
        };
        let page = (self.0.db).find_text("Reading", json!({"dev": device}), &options)?;
        Ok(page.items.len())
    }

    fn update(&mut self, seq: u64) -> Result<()> {
        self.0.update(seq)
    }
}

/// Gets per second of `threads` readers sharing one database, each doing `gets`.
pub fn readers_rate(ferry: &Ferry, threads: u64, gets: u64, items: u64) -> Result<f64> {
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..threads)
            .map(|t| {
                let mut reader = Ferry {
                    db: ferry.db.clone(),
                };
                scope.spawn(move || -> Result<()> {
                    let mut next = crate::fastrand_like(items ^ (t + 1));
                    (0..gets).try_for_each(|_| reader.get(next() % items))
                })
            })
            .collect();
        readers
            .into_iter()
            .try_for_each(|r| r.join().map_err(|_| anyhow::anyhow!("a reader panicked"))?)
    })?;
    Ok((threads * gets) as f64 / started.elapsed().as_secs_f64())
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
