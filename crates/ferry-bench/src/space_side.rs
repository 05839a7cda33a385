//! Space and write amplification: each store loads the same items in a process of its own,
//! one write per transaction at its default durability, and closes. The process's bytes
//! sent to storage (`write_bytes` of `/proc/self/io`: every thread, counted when a page is
//! dirtied) and the files left after the close are set against the items' own bytes (their
//! JSON text, as the application gives them and as SQLite stores them).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::Subject;
use crate::ferry_side::{Ferry, item};
use crate::sqlite_side::Sqlite;

/// What one store's load left and cost.
pub struct Space {
    pub store: &'static str,
    pub items: u64,
    /// The items' own bytes: their JSON text.
    pub user_bytes: u64,
    /// Bytes of the store's files after it closed.
    pub disk_bytes: u64,
    /// Bytes the loading process sent to storage.
    pub written_bytes: u64,
}

/// Loads `items` into Ferry and into SQLite, each in a child process, under `dir` (on the
/// disk the stores would use: a memory file system counts no writes).
pub fn measure(dir: &Path, items: u64) -> Result<Vec<Space>> {
    let user_bytes: u64 = (0..items)
        .map(|seq| item(seq).to_string().len() as u64)
        .sum();
    let mut out = Vec::new();
    for store in ["ferry", "sqlite"] {
        let path = dir.join(format!("space-{store}-{items}"));
        let child = Command::new(std::env::current_exe()?)
            .args(["load", store])
            .arg(&path)
            .arg(items.to_string())
            .output()?;
        if !child.status.success() {
            bail!(
                "load child failed: {}",
                String::from_utf8_lossy(&child.stderr)
            );
        }
        let written_bytes = String::from_utf8(child.stdout)?
            .trim()
            .parse()
            .context("the load child printed no byte count")?;
        out.push(Space {
            store,
            items,
            user_bytes,
            disk_bytes: bytes_under(&path)?,
            written_bytes,
        });
    }
    Ok(out)
}

/// Child side of [`measure`]: loads `items` into a new `store` at `path`, closes it and
/// prints the bytes this process sent to storage.
pub fn load_child(store: &str, path: &str, items: u64) -> Result<()> {
    let path = Path::new(path);
    let before = written()?;
    match store {
        "ferry" => load(Ferry::open(path)?, items)?,
        "sqlite" => {
            std::fs::create_dir_all(path)?;
            load(Sqlite::open(&path.join("sqlite.db"))?, items)?
        }
        other => bail!("unknown store '{other}': ferry or sqlite"),
    }
    println!("{}", written()? - before);
    Ok(())
}

/// Creates items `0..items` in `subject` and closes it (dropped).
fn load(mut subject: impl Subject, items: u64) -> Result<()> {
    for seq in 0..items {
        subject.create(seq)?;
    }
    Ok(())
}

/// `write_bytes` of this process.
fn written() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .context("no write_bytes in /proc/self/io")
}

/// The bytes of every file under `path`.
fn bytes_under(path: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += match meta.is_dir() {
            true => bytes_under(&entry.path())?,
            false => meta.len(),
        };
    }
    Ok(total)
}

/// Prints the table of [`measure`]'s results.
pub fn print(rows: &[Space]) {
    println!(
        "| items | store | bytes on disk per item | on disk / the items' JSON | bytes written per item during the load | write amplification (written / the items' JSON) |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for row in rows {
        let per_item = |bytes: u64| bytes as f64 / row.items.max(1) as f64;
        let ratio = |bytes: u64| bytes as f64 / row.user_bytes.max(1) as f64;
        println!(
            "| {} | {} | {:.0} | {:.2}x | {:.0} | {:.1}x |",
            row.items,
            row.store,
            per_item(row.disk_bytes),
            ratio(row.disk_bytes),
            per_item(row.written_bytes),
            ratio(row.written_bytes)
        );
    }
}
