//! SIGKILL a device while it syncs against a cloud in another process, restart it, and
//! check: nothing it acknowledged locally is lost, nothing reached the cloud twice with a
//! different effect, and the device converges with the cloud.
//!
//! Both sides are this test binary re-executed: with `FERRY_TEST_CLOUD` it serves the
//! reference cloud (`MemoryCloud` on the wall clock) over loopback TCP, one JSON line per
//! request and answer, changes in Ferry's binary codec (base64); with `FERRY_TEST_DEVICE`
//! it is a device that writes, syncs in the background, and prints each sequence number
//! once its writes have returned.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ferry::Attach;
use ferry::journal::{Change, decode_change, encode_change};
use ferry::replication::{
    Grant, Limits, MemoryCloud, PullFrom, PullPage, PushOutcome, PushResults, Session,
    TransportError,
};
use ferry::types::{Hlc, Version};
use ferry::{Config, Db, SyncOptions, WriteOptions};
use serde_json::{Value as Json, json};

use crate::support::{Killed, child, run_and_kill};

const CLOUD_ENV: &str = "FERRY_TEST_CLOUD";
const DEVICE_ENV: &str = "FERRY_TEST_DEVICE";
const ADDR_ENV: &str = "FERRY_TEST_CLOUD_ADDR";
const START_ENV: &str = "FERRY_TEST_START";
/// Device kills per test run.
const KILLS: usize = 6;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: { Reading: {
        pk: { type: 'string', value: 'reading#${deviceId}' }, sk: { type: 'string', value: 'reading#${seq}' },
        deviceId: { type: 'string', required: true }, seq: { type: 'number', required: true },
        value: { type: 'number' },
    } },
    control: { Reading: { sync: 'both' } },
}"#;

fn wall_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    since.as_millis() as u64
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn change_text(change: &Change) -> String {
    let mut bytes = Vec::new();
    encode_change(change, &mut bytes);
    b64().encode(bytes)
}

fn change_of(text: &Json) -> Change {
    let bytes = b64().decode(text.as_str().unwrap()).unwrap();
    decode_change(&bytes).unwrap()
}

// ---- the cloud process ------------------------------------------------------------------

/// Cloud side: serves until killed. Does nothing without the variable.
#[test]
fn sync_crash_cloud_child() {
    let Ok(addr_file) = std::env::var(CLOUD_ENV) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::fs::write(format!("{addr_file}.tmp"), &addr).unwrap();
    std::fs::rename(format!("{addr_file}.tmp"), &addr_file).unwrap();
    let cloud = Arc::new(Mutex::new(MemoryCloud::default()));
    for stream in listener.incoming() {
        let cloud = Arc::clone(&cloud);
        std::thread::spawn(move || serve(stream.unwrap(), &cloud));
    }
}

fn serve(stream: TcpStream, cloud: &Mutex<MemoryCloud>) {
    let mut out = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let request: Json = serde_json::from_str(&line).unwrap();
        let mut cloud = cloud.lock().unwrap();
        cloud.set_time_ms(wall_ms());
        let answer = match request["op"].as_str().unwrap() {
            "connect" => json!({"now": cloud.now_ms(), "horizon": cloud.horizon_ms()}),
            "push" => {
                let changes = request["changes"].as_array().unwrap().iter().map(change_of);
                let device = Grant::device("device", None);
                let outcomes: Vec<Json> = (changes.map(|change| cloud.write_as(change, &device)))
                    .map(|outcome| match outcome {
                        PushOutcome::Applied => json!({"applied": true}),
                        PushOutcome::Superseded { cloud } => {
                            json!({"superseded": change_text(&cloud)})
                        }
                        PushOutcome::Rejected { reason } => json!({"rejected": reason}),
                        PushOutcome::Ahead { server_time_ms } => json!({"ahead": server_time_ms}),
                    })
                    .collect();
                json!({"outcomes": outcomes})
            }
            "pull" => {
                let after = Hlc::from_u64(request["after"].as_u64().unwrap());
                let from = match request["snapshot"].as_bool().unwrap() {
                    true => PullFrom::Snapshot(after),
                    false => PullFrom::Since(after),
                };
                let scope = request["scope"].as_str().unwrap();
                let limit = request["limit"].as_u64().unwrap() as usize;
                match cloud.pull(scope, from, limit) {
                    Ok(page) => json!({
                        "changes": page.changes.iter()
                            .map(|(seq, c)| json!([seq.as_u64(), change_text(c)]))
                            .collect::<Vec<_>>(),
                        "more": page.more,
                        "safe": page.safe.as_u64(),
                    }),
                    Err(_) => json!({"expired": true}),
                }
            }
            other => panic!("unknown request {other}"),
        };
        drop(cloud);
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// A transport to the cloud process: one connection, one request at a time.
struct TcpCloud {
    addr: String,
    link: Mutex<Option<(BufReader<TcpStream>, TcpStream)>>,
}

impl TcpCloud {
    fn call(&self, request: Json) -> Result<Json, TransportError> {
        let down = |e: std::io::Error| TransportError::Unavailable(e.to_string());
        let mut link = self.link.lock().unwrap();
        if link.is_none() {
            let stream = TcpStream::connect(&self.addr).map_err(down)?;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(down)?;
            *link = Some((BufReader::new(stream.try_clone().map_err(down)?), stream));
        }
        let Some((reader, writer)) = link.as_mut() else {
            unreachable!("connected above")
        };
        let mut answer = String::new();
        let sent = writeln!(writer, "{request}").and_then(|()| reader.read_line(&mut answer));
        match sent {
            Ok(n) if n > 0 => Ok(serde_json::from_str(&answer).unwrap()),
            Ok(_) => {
                *link = None;
                Err(TransportError::Unavailable(
                    "the cloud closed the link".into(),
                ))
            }
            Err(e) => {
                *link = None;
                Err(down(e))
            }
        }
    }
}

impl ferry::Transport for TcpCloud {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        let session = self.call(json!({"op": "connect"})).map(|answer| Session {
            server_time_ms: answer["now"].as_u64().unwrap(),
            scopes: None,
            limits: Limits::default(),
            horizon_ms: answer["horizon"].as_u64().unwrap(),
        });
        std::future::ready(session)
    }

    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send {
        let texts: Vec<String> = changes.iter().map(change_text).collect();
        let answer = self.call(json!({"op": "push", "changes": texts}));
        let results = answer.map(|answer| {
            let outcomes = answer["outcomes"].as_array().unwrap().iter();
            (changes.iter().zip(outcomes))
                .map(|(change, outcome)| {
                    let outcome = if let Some(cloud) = outcome.get("superseded") {
                        PushOutcome::Superseded {
                            cloud: Box::new(change_of(cloud)),
                        }
                    } else if let Some(at) = outcome.get("ahead") {
                        let server_time_ms = at.as_u64().unwrap_or_default();
                        PushOutcome::Ahead { server_time_ms }
                    } else if let Some(reason) = outcome.get("rejected") {
                        let reason = reason.as_str().unwrap_or_default().to_string();
                        PushOutcome::Rejected { reason }
                    } else {
                        PushOutcome::Applied
                    };
                    (change.key.clone(), change.version.clone(), outcome)
                })
                .collect()
        });
        std::future::ready(results)
    }

    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        let (after, snapshot) = match from {
            PullFrom::Since(hlc) => (hlc, false),
            PullFrom::Snapshot(hlc) => (hlc, true),
        };
        let request = json!({"op": "pull", "scope": scope, "after": after.as_u64(),
            "snapshot": snapshot, "limit": limit});
        let page = self.call(request).and_then(|answer| {
            if answer.get("expired").is_some() {
                return Err(TransportError::Expired);
            }
            let changes = (answer["changes"].as_array().unwrap().iter())
                .map(|pair| {
                    (
                        Hlc::from_u64(pair[0].as_u64().unwrap()),
                        change_of(&pair[1]),
                    )
                })
                .collect();
            Ok(PullPage {
                changes,
                more: answer["more"].as_bool().unwrap(),
                safe: Hlc::from_u64(answer["safe"].as_u64().unwrap()),
            })
        });
        std::future::ready(page)
    }
}

// ---- the device process -----------------------------------------------------------------

fn device_config(schema: bool) -> Config {
    let config = match schema {
        true => Config::with_schema(crate::support::schema(SCHEMA)),
        false => Config::default(),
    };
    config.context("deviceId", "d1")
}

fn attach(db: &Db, addr: &str) {
    let transport = TcpCloud {
        addr: addr.to_string(),
        link: Mutex::new(None),
    };
    let mut options = SyncOptions::default();
    options.engine.sync_delay_ms = 20; // upload while it writes, so kills land mid-sync
    db.attach(transport, options).unwrap();
}

/// Device side: writes and syncs until killed. Does nothing without the variable. For
/// each sequence number it creates that reading and bumps the previous one, then prints
/// the number once both writes have returned.
#[test]
fn sync_crash_device_child() {
    let Ok(dir) = std::env::var(DEVICE_ENV) else {
        return;
    };
    let addr = std::env::var(ADDR_ENV).unwrap();
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let db = Db::open(&dir, device_config(true)).unwrap();
    attach(&db, &addr);
    let mut out = std::io::stdout().lock();
    for seq in start.. {
        db.create("Reading", json!({"seq": seq, "value": 0}))
            .unwrap();
        if seq > start {
            let bump = json!({"seq": seq - 1, "value": seq});
            db.update("Reading", bump, &WriteOptions::default())
                .unwrap();
        }
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts the cloud process; returns it and its address.
fn start_cloud(dir: &std::path::Path) -> (Killed, String) {
    let addr_file = dir.join("cloud-addr");
    let cloud = Killed(child(
        "sync_crash::sync_crash_cloud_child",
        &[(CLOUD_ENV, addr_file.display().to_string())],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            return (cloud, addr);
        }
        assert!(Instant::now() < deadline, "the cloud process did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the device from `start`, SIGKILLs it after `delay`; returns the numbers it printed.
fn write_and_kill(dir: &std::path::Path, addr: &str, start: u64, delay: Duration) -> Vec<u64> {
    let envs = [
        (DEVICE_ENV, dir.display().to_string()),
        (ADDR_ENV, addr.to_string()),
        (START_ENV, start.to_string()),
    ];
    // SIGKILL, mid-sync.
    run_and_kill("sync_crash::sync_crash_device_child", &envs, delay)
}

#[test]
fn a_device_killed_mid_sync_loses_nothing_and_converges() {
    if std::env::var(CLOUD_ENV).is_ok() || std::env::var(DEVICE_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cloud, addr) = start_cloud(dir.path());
    let device_dir = dir.path().join("device");
    // Acknowledged sequence number -> the first number of its run.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = 0;
    for round in 0..KILLS {
        let delay = Duration::from_millis(300 + 71 * round as u64);
        let seen = write_and_kill(&device_dir, &addr, next, delay);
        acked.extend(seen.iter().map(|&seq| (seq, next)));
        // A write past the last printed one may have landed: skip its number.
        next = seen.last().map_or(next, |seq| seq + 1) + 1;
    }
    assert!(
        acked.len() > KILLS,
        "the device made progress ({} writes)",
        acked.len()
    );

    // The last restart syncs to the end.
    let db = Db::open(&device_dir, device_config(false)).unwrap();
    attach(&db, &addr);
    db.sync(Duration::from_secs(30)).unwrap();
    assert_eq!(db.status().pending_changes, 0);
    assert_eq!(
        db.status().conflicts,
        0,
        "one writer: nothing to conflict with"
    );

    // What the cloud holds, read through the same transport.
    let reader = TcpCloud {
        addr: addr.clone(),
        link: Mutex::new(None),
    };
    let mut after = Hlc::ZERO;
    let mut rows = BTreeMap::new();
    loop {
        let page = crate::support::ready(ferry::Transport::pull(
            &reader,
            "d1",
            PullFrom::Snapshot(after),
            100,
        ))
        .unwrap();
        for (seq, change) in &page.changes {
            rows.insert(change.key.to_string(), change.clone());
            after = *seq;
        }
        if !page.more {
            break;
        }
    }
    drop(cloud);

    for (&seq, &start) in &acked {
        let item = db.get("Reading", json!({"seq": seq})).unwrap();
        let item = item.unwrap_or_else(|| panic!("acknowledged reading {seq} is gone"));
        let bumped = acked.get(&(seq + 1)) == Some(&start);
        if bumped {
            assert_eq!(
                item["value"],
                json!(seq + 1),
                "the acknowledged bump of {seq}"
            );
        }
        let key = format!("reading#d1/reading#{seq}");
        let row = rows
            .get(&key)
            .unwrap_or_else(|| panic!("{key} never reached the cloud"));
        let cloud_value = row.item.as_ref().and_then(|i| i.get("value")).cloned();
        let local = ferry::types::Value::from_json(&item["value"]);
        assert_eq!(
            cloud_value.as_ref(),
            local.as_ref().ok(),
            "{key}: cloud and device differ"
        );
    }
    // Nothing in the cloud that the device does not hold, at the same version.
    for (key, row) in &rows {
        let seq = key.rsplit('#').next().unwrap().parse::<u64>().unwrap();
        let local = db.inspect_key(&row.key).unwrap();
        let ferry::LocalState::Item(item) = local else {
            panic!("the cloud holds {key}, the device does not");
        };
        let version = item
            .get("_ver")
            .and_then(|v| v.as_str())
            .map(Version::parse);
        assert_eq!(
            version.map(Result::unwrap).as_ref(),
            Some(&row.version),
            "{key} (seq {seq})"
        );
    }
}
