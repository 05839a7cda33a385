//! Write, SIGKILL, reopen, compare: every write that returned before the kill is there,
//! deletes and removed fields stay deleted (Ioto brings them back after a crash), and
//! nothing is torn.
//!
//! The writer is this test binary re-executed with `FERRY_CRASH_WRITER` set: for each
//! sequence number it creates an item and changes earlier items of its own run, then
//! prints the number once every one of those writes has returned.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use ferry::{Config, Db, WriteOptions};
use serde_json::{Value as Json, json};

use crate::support::example_db;

const WRITER_ENV: &str = "FERRY_CRASH_WRITER";
const START_ENV: &str = "FERRY_CRASH_START";
/// Kills per test run.
const KILLS: usize = 12;

/// The writes made for `seq`, on items of the same run only (`seq - k >= start`):
/// `seq - 1` gets value -1 when `seq % 3 == 0`, `seq - 2` is removed when `seq % 5 == 0`,
/// `seq - 3` loses its `expires` field when `seq % 4 == 0`.
fn touches(seq: u64, start: u64) -> Touches {
    let earlier =
        |k: u64, every: u64| (seq.is_multiple_of(every) && seq >= start + k).then(|| seq - k);
    Touches {
        bump: earlier(1, 3),
        remove: earlier(2, 5),
        strip: earlier(3, 4),
    }
}

/// The earlier items one sequence number changes.
#[derive(Clone, Copy)]
struct Touches {
    bump: Option<u64>,
    remove: Option<u64>,
    strip: Option<u64>,
}

fn key(seq: u64) -> Json {
    json!({"sensor": "s", "at": seq})
}

/// Child side: writes until killed. Does nothing without the variable.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let db = Db::open(&dir, Config::default().context("deviceId", "d1")).unwrap();
    let mut out = std::io::stdout().lock();
    let plain = WriteOptions::default();
    for seq in start.. {
        db.create(
            "Reading",
            json!({"sensor": "s", "at": seq, "value": seq, "expires": "2100-01-01T00:00:00Z"}),
        )
        .unwrap();
        let Touches {
            bump,
            remove,
            strip,
        } = touches(seq, start);
        if let Some(s) = bump {
            db.update(
                "Reading",
                json!({"sensor": "s", "at": s, "value": -1}),
                &plain,
            )
            .unwrap();
        }
        if let Some(s) = remove {
            db.remove("Reading", key(s), &plain).unwrap();
        }
        if let Some(s) = strip {
            // The item may have been removed already; an upsert would bring it back.
            let _ = db.update(
                "Reading",
                json!({"sensor": "s", "at": s, "expires": null}),
                &plain,
            );
        }
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
    }
}

/// Runs one writer from `start`, kills it after `delay`, returns the acknowledged numbers.
fn write_and_kill(dir: &std::path::Path, start: u64, delay: Duration) -> Vec<u64> {
    let envs = [
        (WRITER_ENV, dir.display().to_string()),
        (START_ENV, start.to_string()),
    ];
    crate::support::run_and_kill("crash::crash_writer_child", &envs, delay)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(WRITER_ENV).is_ok() {
        return;
    }
    let (dir, db) = example_db();
    drop(db);
    // Acknowledged sequence number -> the first number of its writer's run.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = 0u64;
    for round in 0..KILLS {
        let seen = write_and_kill(
            dir.path(),
            next,
            Duration::from_millis(150 + 37 * round as u64),
        );
        acked.extend(seen.iter().map(|&s| (s, next)));
        // One write past the last acknowledged one may have landed: skip its number.
        next = seen.last().map_or(next, |s| s + 1) + 1;

        let db = Db::open(dir.path(), Config::default().context("deviceId", "d1")).unwrap();
        for (&seq, &start) in &acked {
            check_item(&db, seq, start, &acked, round);
        }
    }
    assert!(
        acked.len() > KILLS,
        "the writer made progress ({} writes)",
        acked.len()
    );
}

/// A killed writer's stamps are never issued again: reopened on a clock an hour behind,
/// the next write's version goes past every version the killed writer left. The clock
/// persists a reservation ahead of its stamps (not each stamp), and starts there.
#[test]
fn a_killed_writers_stamps_are_never_reused_even_on_a_clock_behind() {
    if std::env::var(WRITER_ENV).is_ok() {
        return;
    }
    let (dir, db) = example_db();
    drop(db);
    let newest = |db: &Db| {
        (db.inspect_pending().unwrap().into_iter())
            .map(|p| p.version)
            .max()
    };
    let mut next = 0u64;
    for round in 0..3u64 {
        let seen = write_and_kill(dir.path(), next, Duration::from_millis(200 + 60 * round));
        next = seen.last().map_or(next, |s| s + 1) + 1;
        let mut behind = Config::default().context("deviceId", "d1");
        let wall = behind.clock.clone();
        behind.clock = std::sync::Arc::new(move || wall() - 3_600_000);
        let db = Db::open(dir.path(), behind).unwrap();
        let left = newest(&db).expect("the killed writer queued its writes");
        let probe = json!({"sensor": "probe", "at": round, "value": 0});
        db.create("Reading", probe).unwrap();
        let after = newest(&db).unwrap();
        assert!(after > left, "round {round}: {after} is past {left}");
    }
}

/// What an acknowledged item must look like after reopen.
fn check_item(db: &Db, seq: u64, start: u64, acked: &BTreeMap<u64, u64>, round: usize) {
    let done = |later: u64| acked.get(&later) == Some(&start);
    // The later write that would change this item, and whether it was acknowledged.
    let changed_by = |k: u64, pick: fn(Touches) -> Option<u64>| {
        let later = seq + k;
        (pick(touches(later, start)) == Some(seq)).then_some(done(later))
    };
    let item = db.get("Reading", key(seq)).unwrap();
    match changed_by(2, |t| t.remove) {
        Some(true) => {
            assert!(
                item.is_none(),
                "round {round}: item {seq} was removed (acknowledged) but came back"
            );
            return;
        }
        Some(false) => return, // the remove may or may not have landed
        None => {}
    }
    let item = item.unwrap_or_else(|| panic!("round {round}: acknowledged item {seq} is missing"));
    let value = &item["value"];
    match changed_by(1, |t| t.bump) {
        Some(true) => assert_eq!(
            value,
            &json!(-1),
            "round {round}: acknowledged update of {seq} lost"
        ),
        Some(false) => assert!(
            value == &json!(-1) || value == &json!(seq),
            "torn item {item}"
        ),
        None => assert_eq!(
            value,
            &json!(seq),
            "round {round}: item {seq} changed unexpectedly"
        ),
    }
    if changed_by(3, |t| t.strip) == Some(true) {
        assert!(
            item.get("expires").is_none(),
            "round {round}: removed field of {seq} came back: {item}"
        );
    } else if changed_by(3, |t| t.strip).is_none() {
        assert!(
            item.get("expires").is_some(),
            "round {round}: {seq} lost its expires field: {item}"
        );
    }
}
