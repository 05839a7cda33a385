//! Write, SIGKILL, reopen, compare: every write that returned before the kill is there,
//! and nothing is torn (each item's index entry and unique claim agree with it).
//!
//! The writer is this test binary re-executed with `FERRY_CRASH_WRITER` set: it writes
//! items in a loop and prints each sequence number after its write returned.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry::{Config, Db, FindOptions, WriteOptions};
use serde_json::json;

use crate::support::example_db;

const WRITER_ENV: &str = "FERRY_CRASH_WRITER";
/// Kills per test run.
const KILLS: usize = 12;

/// Child side: writes until killed. Not a test of its own without the variable.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        return;
    };
    let start: u64 = std::env::var("FERRY_CRASH_START").unwrap().parse().unwrap();
    let db = Db::open(&dir, Config::default().context("deviceId", "d1")).unwrap();
    let mut out = std::io::stdout().lock();
    for seq in start.. {
        // Alternate creates, updates of earlier items and removes, so every kind of batch
        // can be cut.
        let props = json!({"sensor": "s", "at": seq, "value": seq});
        db.create("Reading", props).unwrap();
        if seq % 3 == 0 && seq > start {
            let earlier = json!({"sensor": "s", "at": seq - 1, "value": -1});
            db.update("Reading", earlier, &WriteOptions::default())
                .unwrap();
        }
        use std::io::Write;
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(WRITER_ENV).is_ok() {
        return;
    }
    let (dir, db) = example_db();
    drop(db);
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut next = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, dir.path())
            .env("FERRY_CRASH_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(150 + 37 * round as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let seen = reader.join().unwrap();
        acknowledged.extend(&seen);
        next = seen.last().map_or(next, |s| s + 1) + 1;

        let db = Db::open(dir.path(), Config::default().context("deviceId", "d1")).unwrap();
        for &seq in &acknowledged {
            let item = db
                .get("Reading", json!({"sensor": "s", "at": seq}))
                .unwrap();
            assert!(
                item.is_some(),
                "round {round}: acknowledged write {seq} is missing after SIGKILL"
            );
        }
        let all = db
            .find("Reading", json!({"sensor": "s"}), &FindOptions::default())
            .unwrap();
        for item in &all.items {
            let at = item["at"].as_u64().unwrap();
            let value = &item["value"];
            assert!(
                value == &json!(at) || value == &json!(-1),
                "torn item {item}"
            );
        }
    }
    assert!(
        acknowledged.len() > KILLS,
        "the writer made progress ({} writes)",
        acknowledged.len()
    );
}
