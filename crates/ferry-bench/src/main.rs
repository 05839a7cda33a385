//! Side-by-side benchmarks, run by `cargo xtask bench local` (Ferry against SQLite) and
//! `cargo xtask bench sync` (replicated writes against local-only writes).
//!
//! For `local`, both databases store the same items with the same secondary index, one write per
//! transaction, at their default durability (Ferry: in the OS at commit, fsync within
//! 100 ms; SQLite: WAL with `synchronous=NORMAL`). Each operation runs in rounds; the table
//! gives the median round's rate and the ratio of the medians.

mod blocks_side;
mod cli_side;
mod dynamo_side;
mod ferry_side;
mod format_side;
mod frames_side;
mod relay_side;
mod soak_side;
mod space_side;
mod sqlite_side;
mod sync_side;

use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Rounds per operation; the median is reported.
const ROUNDS: usize = 5;
/// Runs per size of the sync benchmark (each writes every change twice); the median is reported.
const SYNC_ROUNDS: usize = 3;

/// One store under test.
pub trait Subject {
    /// Creates item `seq`.
    fn create(&mut self, seq: u64) -> Result<()>;
    /// Reads item `seq` by key.
    fn get(&mut self, seq: u64) -> Result<()>;
    /// Reads the 100-item page of a device, starting at its first item.
    fn page(&mut self, device: u64) -> Result<usize>;
    /// Updates one attribute of item `seq`.
    fn update(&mut self, seq: u64) -> Result<()>;
}

/// Items per device: a page query returns 100 of them.
pub const ITEMS_PER_DEVICE: u64 = 1000;
/// Items a page query returns.
pub const PAGE_ITEMS: usize = 100;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rss") => {
            let dir = args.get(1).context("rss needs a directory")?;
            let items = args
                .get(2)
                .and_then(|n| n.parse().ok())
                .context("rss needs an item count")?;
            ferry_side::report_rss(dir, items)
        }
        Some("space") => {
            let sizes = parse_sizes(&args, &[100_000, 1_000_000])?;
            let dir = tempfile::tempdir()?;
            let mut rows = Vec::new();
            for &items in &sizes {
                rows.extend(space_side::measure(dir.path(), items)?);
            }
            space_side::print(&rows);
            Ok(())
        }
        Some("load") => {
            let (store, dir) = (args.get(1), args.get(2));
            let (store, dir) = store
                .zip(dir)
                .context("load needs a store and a directory")?;
            let items = (args.get(3))
                .and_then(|n| n.parse().ok())
                .context("load needs an item count")?;
            space_side::load_child(store, dir, items)
        }
        Some("profile") => {
            let op = args.get(1).map(String::as_str).unwrap_or("get");
            let items = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
            profile(op, items)
        }
        Some("cli") => {
            let sizes = parse_sizes(&args, &[1_000_000])?;
            sizes.iter().try_for_each(|&n| cli_side::run(n))
        }
        Some("sqlite-get") => cli_side::sqlite_get(&args),
        Some("frames") => frames_side::run(),
        Some("format") => format_side::run(),
        Some("blocks") => {
            let sizes = parse_sizes(&args, &[1_000_000])?;
            sizes.iter().try_for_each(|&n| blocks_side::run(n))
        }
        Some("relay") => {
            let sizes = parse_sizes(&args, &[100_000])?;
            sizes.iter().try_for_each(|&n| relay_side::run(n))
        }
        Some("soak") => {
            let number = |flag: &str, default: u64| -> Result<u64> {
                match args.iter().position(|a| a == flag) {
                    Some(at) => (args.get(at + 1))
                        .and_then(|n| n.parse().ok())
                        .with_context(|| format!("{flag} takes a number")),
                    None => Ok(default),
                }
            };
            soak_side::run(
                number("--devices", 200)? as usize,
                number("--seconds", 120)?,
            )
        }
        Some("dynamo") => {
            let sizes = parse_sizes(&args, &[10_000])?;
            sizes.iter().try_for_each(|&n| dynamo_side::run(n as usize))
        }
        Some("sync") => {
            let sizes = parse_sizes(&args, &[10_000, 50_000])?;
            sync(&sizes)
        }
        Some("scale") => {
            let sizes = parse_sizes(&args, &[1_000_000, 10_000_000])?;
            scale(&sizes)
        }
        Some("local") | None => {
            let sizes = parse_sizes(&args, &[100_000, 1_000_000])?;
            local(&sizes)
        }
        Some(other) => {
            bail!(
                "unknown benchmark '{other}': try `local`, `scale`, `sync`, `format`, `blocks`, `cli`, `dynamo`, `frames`, `relay` or `soak`"
            )
        }
    }
}

/// Runs one operation on Ferry alone for a while, for a profiler (`perf record`).
fn profile(op: &str, items: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut ferry = ferry_side::Ferry::open(&dir.path().join("ferry"))?;
    for seq in 0..items {
        ferry.create(seq)?;
    }
    let op = match op {
        "get" => Op::Get,
        "page" => Op::Page,
        "update" => Op::Update,
        "create" => return Ok(()),
        other => bail!("unknown operation '{other}': get, page, update or create"),
    };
    let count = match op {
        Op::Page => 2_000,
        _ => 100_000,
    };
    let rate = median_rate(&mut ferry, op, count, items)?;
    eprintln!("{rate:.0} ops/s");
    Ok(())
}

fn parse_sizes(args: &[String], default: &[u64]) -> Result<Vec<u64>> {
    match args.iter().position(|a| a == "--items") {
        Some(at) => args
            .get(at + 1)
            .context("--items needs N[,N...]")?
            .split(',')
            .map(|n| n.trim().parse().context("--items takes whole numbers"))
            .collect(),
        None => Ok(default.to_vec()),
    }
}

/// Replication throughput against local-only writes, side by side.
fn sync(sizes: &[u64]) -> Result<()> {
    let mut rows = Vec::new();
    for &changes in sizes {
        for _ in 0..SYNC_ROUNDS {
            rows.push(sync_side::run(changes)?);
        }
    }
    println!(
        "| changes | replicated (write + sync) changes/s | local-only writes/s | replicated / local | CPU us per change, replicated / local | the writer's CPU us per change, replicated / local | bytes per change |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &changes in sizes {
        let mut runs: Vec<&sync_side::SyncRow> =
            rows.iter().filter(|r| r.changes == changes).collect();
        runs.sort_by(|a, b| a.synced_per_s.total_cmp(&b.synced_per_s));
        let median = runs[runs.len() / 2];
        let cpu = |side: fn(&sync_side::SyncRow) -> f64| {
            let mut us: Vec<f64> = runs.iter().map(|r| side(r)).collect();
            us.sort_by(f64::total_cmp);
            us[us.len() / 2]
        };
        let (synced_cpu, local_cpu) = (cpu(|r| r.synced_cpu_us), cpu(|r| r.local_cpu_us));
        let (synced_writer, local_writer) =
            (cpu(|r| r.synced_writer_us), cpu(|r| r.local_writer_us));
        println!(
            "| {changes} | {:.0} | {:.0} | {:.2}x | {synced_cpu:.1} / {local_cpu:.1} ({:.2}x) | {synced_writer:.1} / {local_writer:.1} | {:.0} |",
            median.synced_per_s,
            median.local_per_s,
            median.synced_per_s / median.local_per_s,
            local_cpu / synced_cpu,
            median.bytes_per_change
        );
    }
    Ok(())
}

/// One row of the results table.
struct Row {
    items: u64,
    op: &'static str,
    ferry: f64,
    sqlite: f64,
}

fn local(sizes: &[u64]) -> Result<()> {
    let mut rows = Vec::new();
    let mut rss = Vec::new();
    let mut alone = Vec::new();
    let mut space = Vec::new();
    for &items in sizes {
        let dir = tempfile::tempdir()?;
        let mut ferry = ferry_side::Ferry::open(&dir.path().join("ferry"))?;
        let mut sqlite = sqlite_side::Sqlite::open(&dir.path().join("sqlite.db"))?;
        eprintln!("loading {items} items into each store...");
        let per_round = items / ROUNDS as u64;
        let ops: [(&str, u64, Op); 4] = [
            ("create", per_round, Op::Create),
            ("get", per_round.min(20_000), Op::Get),
            (
                "find 100-item page",
                (items / ITEMS_PER_DEVICE).clamp(1, 400),
                Op::Page,
            ),
            ("update", per_round.min(20_000), Op::Update),
        ];
        for (name, count, op) in ops {
            let ferry_rate = median_rate(&mut ferry, op, count, items)?;
            let sqlite_rate = median_rate(&mut sqlite, op, count, items)?;
            eprintln!("  {items} {name}: ferry {ferry_rate:.0}/s, sqlite {sqlite_rate:.0}/s");
            rows.push(Row {
                items,
                op: name,
                ferry: ferry_rate,
                sqlite: sqlite_rate,
            });
        }
        let gets = per_round.min(20_000);
        let pages = (items / ITEMS_PER_DEVICE).clamp(1, 400);
        let (typed_get, typed_page) = {
            // The typed model holds the database open: it goes before the RSS child opens it.
            let mut typed = ferry_side::Typed::new(&mut ferry)?;
            let get = median_rate(&mut typed, Op::Get, gets, items)?;
            (get, median_rate(&mut typed, Op::Page, pages, items)?)
        };
        let json_get = median_rate(&mut ferry, Op::Get, gets, items)?;
        let json_page = median_rate(&mut ferry, Op::Page, pages, items)?;
        let (text_get, text_page) = {
            let mut text = ferry_side::Text(&mut ferry);
            let get = median_rate(&mut text, Op::Get, gets, items)?;
            (get, median_rate(&mut text, Op::Page, pages, items)?)
        };
        eprintln!("  {items} typed: get {typed_get:.0}/s page {typed_page:.0}/s");
        let readers = |threads| {
            let mut rates = (0..ROUNDS)
                .map(|_| ferry_side::readers_rate(&ferry, threads, gets, items))
                .collect::<Result<Vec<f64>>>()?;
            rates.sort_by(f64::total_cmp);
            Ok::<_, anyhow::Error>(rates[ROUNDS / 2])
        };
        let (one, two) = (readers(1)?, readers(2)?);
        eprintln!("  {items} readers: one {one:.0}/s two {two:.0}/s");
        alone.push(FerryAlone {
            items,
            typed_get,
            json_get,
            typed_page,
            json_page,
            text_get,
            text_page,
            one,
            two,
        });
        drop(ferry);
        rss.push((
            items,
            ferry_side::measure_rss(&dir.path().join("ferry"), items)?,
        ));
        eprintln!("  {items} space: loading each store in a process of its own...");
        space.extend(space_side::measure(dir.path(), items)?);
    }
    print_table(&rows, &rss);
    print_alone(&alone);
    space_side::print(&space);
    Ok(())
}

/// Ferry alone as one database grows through `sizes` (ascending): get and page rates and
/// resident memory at each size, each rate against the first size's.
fn scale(sizes: &[u64]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ferry");
    let mut rows: Vec<(u64, f64, f64, u64)> = Vec::new();
    let mut loaded = 0;
    for &items in sizes {
        eprintln!("loading to {items} items...");
        let mut ferry = ferry_side::Ferry::open(&path)?;
        for seq in loaded..items {
            ferry.create(seq)?;
        }
        loaded = loaded.max(items);
        let pages = (items / ITEMS_PER_DEVICE).clamp(1, 400);
        let get = median_rate(&mut ferry, Op::Get, 20_000, items)?;
        let page = median_rate(&mut ferry, Op::Page, pages, items)?;
        drop(ferry);
        let rss = ferry_side::measure_rss(&path, items)?;
        eprintln!("  {items}: get {get:.0}/s page {page:.0}/s");
        rows.push((items, get, page, rss));
    }
    let Some(&(_, first_get, first_page, _)) = rows.first() else {
        return Ok(());
    };
    println!("| items | get ops/s | / first | page ops/s | / first | resident memory |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (items, get, page, rss) in rows {
        println!(
            "| {items} | {get:.0} | {:.2}x | {page:.0} | {:.2}x | {:.1} MiB |",
            get / first_get,
            page / first_page,
            rss as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}

/// Ferry's own comparisons: typed against JSON reads, two readers against one.
struct FerryAlone {
    items: u64,
    typed_get: f64,
    json_get: f64,
    typed_page: f64,
    json_page: f64,
    text_get: f64,
    text_page: f64,
    one: f64,
    two: f64,
}

fn print_alone(alone: &[FerryAlone]) {
    println!();
    println!(
        "| items | operation | typed ops/s | JSON ops/s | JSON text ops/s | typed / JSON | text / JSON |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for row in alone {
        for (op, typed, json, text) in [
            ("get", row.typed_get, row.json_get, row.text_get),
            (
                "find 100-item page",
                row.typed_page,
                row.json_page,
                row.text_page,
            ),
        ] {
            println!(
                "| {} | {op} | {typed:.0} | {json:.0} | {text:.0} | {:.2}x | {:.2}x |",
                row.items,
                typed / json,
                text / json
            );
        }
    }
    println!();
    println!("| items | gets/s, 1 reader thread | gets/s, 2 reader threads | 2 / 1 |");
    println!("|---:|---:|---:|---:|");
    for row in alone {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x |",
            row.items,
            row.one,
            row.two,
            row.two / row.one
        );
    }
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Get,
    Page,
    Update,
}

/// Runs `ROUNDS` rounds of `count` operations and returns the median rate (ops/s).
/// Creates continue the sequence so that the last round leaves `items` stored.
fn median_rate(subject: &mut dyn Subject, op: Op, count: u64, items: u64) -> Result<f64> {
    let mut rates = Vec::with_capacity(ROUNDS);
    let mut rng = fastrand_like(items ^ count);
    for round in 0..ROUNDS as u64 {
        let started = Instant::now();
        for i in 0..count {
            match op {
                Op::Create => subject.create(round * count + i)?,
                Op::Get => subject.get(rng() % items)?,
                Op::Update => subject.update(rng() % items)?,
                Op::Page => {
                    let got = subject.page(rng() % (items / ITEMS_PER_DEVICE).max(1))?;
                    if got != PAGE_ITEMS.min(items as usize) {
                        bail!("a page query returned {got} items, expected {PAGE_ITEMS}");
                    }
                }
            }
        }
        rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[ROUNDS / 2])
}

/// A small deterministic generator (xorshift), so both stores see the same keys.
pub fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn print_table(rows: &[Row], rss: &[(u64, u64)]) {
    println!("| items | operation | Ferry ops/s | SQLite ops/s | Ferry / SQLite |");
    println!("|---:|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x |",
            row.items,
            row.op,
            row.ferry,
            row.sqlite,
            row.ferry / row.sqlite
        );
    }
    println!();
    println!("| items stored | Ferry resident memory (open, 20k gets, 400 page queries) |");
    println!("|---:|---:|");
    for (items, bytes) in rss {
        println!("| {items} | {:.1} MiB |", *bytes as f64 / (1024.0 * 1024.0));
    }
}
