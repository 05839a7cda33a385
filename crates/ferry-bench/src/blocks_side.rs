//! `cargo xtask bench blocks`: fjall's table options for Ferry's reads. The items of
//! `bench local`, keyed and encoded as Ferry's store keeps its primary table, are loaded
//! into one fjall keyspace per candidate setting; then, in rounds that visit every setting
//! in turn, each answers random point reads, 100-row range scans and 1-row scans (what
//! setting up an iterator costs, against a point read), each row read as a view as Ferry
//! reads it. The setting Ferry ships is the first row; the store's options
//! (`ferry-store/src/store.rs`) change only where another row wins past the noise.

use std::time::Instant;

use anyhow::Result;
use ferry::types::{ItemRef, Key, Value, codec, keycode};
use fjall::config::{BlockSizePolicy, CompressionPolicy, HashRatioPolicy, PartitioningPolicy};
use fjall::{CompressionType, Database, KeyspaceCreateOptions};

use crate::{ITEMS_PER_DEVICE, PAGE_ITEMS};

/// Ferry's store: a 16 MiB block cache and 4 MiB memtables (`ferry-store`'s defaults),
/// 4 KiB data blocks, lz4 on every level (`SHIPPED`).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// One candidate setting of the primary table.
struct Setting {
    name: &'static str,
    block_bytes: u32,
    /// The in-block hash index's slots per item (0: none, what fjall builds by default).
    hash_ratio: f32,
    /// No filters on the last level: a read that finds its key skips them.
    expect_hits: bool,
    cache_bytes: u64,
    /// The first level whose data blocks are lz4-compressed (`None`: none are).
    lz4_from_level: Option<usize>,
}

const SHIPPED: Setting = Setting {
    name: "4 KiB blocks, lz4 (shipped)",
    block_bytes: 4096,
    hash_ratio: 0.0,
    expect_hits: false,
    cache_bytes: CACHE_BYTES,
    lz4_from_level: Some(0),
};

const SETTINGS: [Setting; 9] = [
    SHIPPED,
    Setting {
        name: "4 KiB blocks, in-block hash index",
        hash_ratio: 0.75,
        ..SHIPPED
    },
    Setting {
        name: "4 KiB blocks, no last-level filters",
        expect_hits: true,
        ..SHIPPED
    },
    Setting {
        name: "4 KiB blocks, 32 MiB cache",
        cache_bytes: 2 * CACHE_BYTES,
        ..SHIPPED
    },
    Setting {
        name: "4 KiB blocks, uncompressed",
        lz4_from_level: None,
        ..SHIPPED
    },
    Setting {
        name: "4 KiB blocks, lz4 from level 2 (fjall's default)",
        lz4_from_level: Some(2),
        ..SHIPPED
    },
    Setting {
        name: "2 KiB blocks",
        block_bytes: 2048,
        ..SHIPPED
    },
    Setting {
        name: "8 KiB blocks",
        block_bytes: 8192,
        ..SHIPPED
    },
    Setting {
        name: "16 KiB blocks",
        block_bytes: 16384,
        ..SHIPPED
    },
];

/// Rounds of each measurement; each round visits every setting in turn, so that the
/// machine's drift falls on all of them alike.
const BLOCK_ROUNDS: usize = 9;

struct Loaded {
    name: &'static str,
    table: fjall::Keyspace,
    _db: Database,
    _dir: tempfile::TempDir,
}

pub fn run(items: u64) -> Result<()> {
    let loaded = (SETTINGS.iter())
        .map(|setting| {
            eprintln!("loading {items} items with {}...", setting.name);
            load(setting, items)
        })
        .collect::<Result<Vec<_>>>()?;
    let devices = (items / ITEMS_PER_DEVICE).max(1);
    let mut gets = vec![Vec::new(); loaded.len()];
    let mut pages = vec![Vec::new(); loaded.len()];
    let mut firsts = vec![Vec::new(); loaded.len()];
    let mut next = crate::fastrand_like(items);
    for _ in 0..BLOCK_ROUNDS {
        for (at, one) in loaded.iter().enumerate() {
            let count = 20_000;
            let started = Instant::now();
            for _ in 0..count {
                let bytes = (one.table.get(key(next() % items))?)
                    .ok_or_else(|| anyhow::anyhow!("item missing from {}", one.name))?;
                std::hint::black_box(ItemRef::decode(&bytes)?.len());
            }
            gets[at].push(count as f64 / started.elapsed().as_secs_f64());
            let count = devices.min(400);
            let started = Instant::now();
            for _ in 0..count {
                let mut prefix = Vec::new();
                keycode::encode(&Value::S(format!("dev#{}", next() % devices)), &mut prefix);
                for guard in one.table.prefix(&prefix).take(PAGE_ITEMS) {
                    let (_, bytes) = guard.into_inner()?;
                    std::hint::black_box(ItemRef::decode(&bytes)?.len());
                }
            }
            pages[at].push(count as f64 / started.elapsed().as_secs_f64());
            let count = 20_000;
            let started = Instant::now();
            for _ in 0..count {
                let from = key(next() % items);
                let guard = (one.table.range(from..).next())
                    .ok_or_else(|| anyhow::anyhow!("item missing from {}", one.name))?;
                let (_, bytes) = guard.into_inner()?;
                std::hint::black_box(ItemRef::decode(&bytes)?.len());
            }
            firsts[at].push(count as f64 / started.elapsed().as_secs_f64());
        }
    }
    let gets: Vec<f64> = gets.iter_mut().map(|rates| median(rates)).collect();
    let pages: Vec<f64> = pages.iter_mut().map(|rates| median(rates)).collect();
    let firsts: Vec<f64> = firsts.iter_mut().map(|rates| median(rates)).collect();
    println!(
        "| {items} items, medians of {BLOCK_ROUNDS} rounds | gets/s | pages/s | 1-row scans/s | gets / shipped | pages / shipped | 1-row scans / gets | bytes on disk per item |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (at, one) in loaded.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x | {:.2}x | {:.0} |",
            one.name,
            gets[at],
            pages[at],
            firsts[at],
            gets[at] / gets[0],
            pages[at] / pages[0],
            firsts[at] / gets[at],
            one.table.disk_space() as f64 / items as f64
        );
    }
    Ok(())
}

fn load(setting: &Setting, items: u64) -> Result<Loaded> {
    let dir = tempfile::tempdir()?;
    let db = Database::builder(dir.path())
        .cache_size(setting.cache_bytes)
        .open()?;
    let compression = match setting.lz4_from_level {
        None => CompressionPolicy::disabled(),
        Some(level) => {
            let mut levels = vec![CompressionType::None; level];
            levels.push(CompressionType::Lz4);
            CompressionPolicy::new(levels)
        }
    };
    let options = || {
        let partitioned = || PartitioningPolicy::new([false, false, true]);
        KeyspaceCreateOptions::default()
            .max_memtable_size(MEMTABLE_BYTES)
            .data_block_compression_policy(compression.clone())
            .index_block_partitioning_policy(partitioned())
            .filter_block_partitioning_policy(partitioned())
            .data_block_size_policy(BlockSizePolicy::all(setting.block_bytes))
            .data_block_hash_ratio_policy(HashRatioPolicy::all(setting.hash_ratio))
            .expect_point_read_hits(setting.expect_hits)
    };
    let table = db.keyspace("items", options)?;
    let mut value = Vec::new();
    for seq in 0..items {
        value.clear();
        codec::encode_item(&crate::format_side::stored(seq), &mut value);
        table.insert(key(seq), &value)?;
    }
    Ok(Loaded {
        name: setting.name,
        table,
        _db: db,
        _dir: dir,
    })
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn key(seq: u64) -> Vec<u8> {
    keycode::key_bytes(&Key {
        hash: Value::S(format!("dev#{}", seq / ITEMS_PER_DEVICE)),
        sort: Some(Value::S(format!("r#{seq:012}"))),
    })
}
