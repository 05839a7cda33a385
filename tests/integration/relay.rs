//! The relay as operators run it: the real `ferry relay serve` process on loopback over its
//! embedded store (or a DynamoDB Local table), devices on the WebSocket transport, killed
//! with SIGKILL, refused for bad tokens, scopes and frames.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry::dynamo::Settings;
use ferry::ws::WsTransport;
use ferry::{Db, Transport};
use ferry_protocol::{Frame, decode, encode};
use ferry_relay::Secret;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::dynamo::{Cloud, SCHEMA, SYNC_TIMEOUT, Via, key, shared_names};
use crate::support::{Killed, ferry, ferry_bin};

/// The secret every test relay signs with.
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

/// A `ferry relay serve` process over an embedded store of its own (or the store its
/// arguments name), restartable on the same port.
pub struct RelayProcess {
    child: Option<Killed>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    store: String,
    extra: Vec<String>,
    /// Environment variables of the process (a preloaded library, say).
    envs: Vec<(String, String)>,
    log: PathBuf,
}

impl RelayProcess {
    /// A relay over an embedded store in a new directory, with `extra` arguments.
    pub fn start(extra: &[&str]) -> RelayProcess {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("embedded:{}", dir.path().join("store").display());
        RelayProcess::start_over(dir, store, extra)
    }

    /// A relay over `store` (`embedded:DIR` or `dynamodb:TABLE`), in `dir`, for the test
    /// schema unless `extra` names another.
    pub fn start_over(dir: tempfile::TempDir, store: String, extra: &[&str]) -> RelayProcess {
        let mut relay = RelayProcess::unstarted(dir, store, extra);
        relay.spawn();
        relay
    }

    fn unstarted(dir: tempfile::TempDir, store: String, extra: &[&str]) -> RelayProcess {
        crate::support::write_secret(&dir.path().join("secret"), SECRET);
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|arg| arg == "--schema") {
            let schema = dir.path().join("relay-schema.json5");
            std::fs::write(&schema, SCHEMA).unwrap();
            extra.extend(["--schema".to_string(), schema.display().to_string()]);
        }
        let log = dir.path().join("relay.log");
        RelayProcess {
            child: None,
            dir,
            port: 0,
            store,
            extra,
            envs: Vec::new(),
            log,
        }
    }

    /// [`RelayProcess::start`], the process with `envs` set.
    pub fn start_with_env(extra: &[&str], envs: &[(&str, String)]) -> RelayProcess {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("embedded:{}", dir.path().join("store").display());
        let mut relay = RelayProcess::unstarted(dir, store, extra);
        relay.envs = (envs.iter())
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        relay.spawn();
        relay
    }

    /// Starts the process (on the port it had, after a restart) and waits until it listens.
    fn spawn(&mut self) {
        let secret = self.dir.path().join("secret");
        let listen = format!("127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(ferry_bin())
            .args([
                "relay",
                "serve",
                "--listen",
                &listen,
                "--store",
                &self.store,
            ])
            .arg("--secret-file")
            .arg(&secret)
            .args(&self.extra)
            .envs(self.envs.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap()).unwrap_or_default();
        let address = (first.strip_prefix("listening on "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!(
                    "the relay did not start: {first:?}; log: {}",
                    self.log_text()
                )
            });
        self.port = address.rsplit(':').next().unwrap().parse().unwrap();
        // Keep reading stdout so that the relay never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(Killed(child));
    }

    /// The relay's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().0.id()
    }

    /// A token for `device`; no scopes: its own and `*`.
    pub fn token(&self, device: &str, scopes: &[&str]) -> String {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        Secret::new(SECRET.to_vec())
            .unwrap()
            .sign(device, scopes, 3600)
            .unwrap()
    }

    /// A token that grants what `grant` says (its role and scopes; none: its own and `*`).
    pub fn token_for(&self, grant: &ferry::replication::Grant) -> String {
        let scopes = grant.scopes.clone().unwrap_or_default();
        Secret::new(SECRET.to_vec())
            .unwrap()
            .sign_as(grant.role, &grant.name, scopes, 3600)
            .unwrap()
    }

    /// The transport of `device` (replica `replica`) to this relay.
    pub fn transport(&self, device: &str, replica: &str) -> WsTransport {
        WsTransport::new(&self.url(), &self.token(device, &[]), replica).unwrap()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// SIGKILL, then the same relay again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, then its exit code.
    pub fn terminate(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        crate::support::terminate(&mut child.0)
    }

    /// `GET /metrics`, the body.
    pub fn metrics(&self) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// A metric's value (the sum over its labels that contain `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        (self.metrics().lines())
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter(|(series, _)| series.split('{').next() == Some(name) && series.contains(labels))
            .map(|(_, value)| value.parse::<f64>().unwrap())
            .sum()
    }

    /// The relay's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// Waits until `ready`, panicking with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime for a test's own calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects a transport, returning the handshake's outcome.
pub fn connect(
    rt: &tokio::runtime::Runtime,
    transport: &WsTransport,
) -> Result<ferry::replication::Session, ferry::replication::TransportError> {
    rt.block_on(transport.connect())
}

/// A library device on the relay whose engine polls only every minute: what reaches it
/// sooner came live.
fn live_only(cloud: &mut Cloud) {
    cloud.engine.poll_interval_ms = 60_000;
}

fn shared_ids(db: &Db) -> usize {
    shared_names(db).len()
}

#[test]
fn changes_reach_other_devices_live_before_any_poll() {
    let mut cloud = Cloud::over(Via::Relay, "live", Settings::default());
    live_only(&mut cloud);
    let (a, _) = cloud.device("a", None);
    let (b, _) = cloud.device("b", None);
    b.sync(SYNC_TIMEOUT).unwrap();
    a.create("Shared", json!({"id": "s1", "name": "live"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    wait_until("b hears of a's write", Duration::from_secs(5), || {
        shared_ids(&b) == 1
    });
    let relay = cloud.relay.as_ref().unwrap();
    assert!(relay.metric("ferry_relay_changes_out_total", "") >= 1.0);
    assert_eq!(relay.metric("ferry_relay_connections", ""), 2.0);
    assert!(relay.metric("ferry_relay_store_seconds_count", "op=\"write\"") >= 1.0);
}

#[test]
fn the_relay_killed_mid_sync_and_restarted_loses_nothing() {
    let mut cloud = Cloud::over(Via::Relay, "relay-kill", Settings::default());
    let (a, _) = cloud.device("a", None);
    for i in 0..100 {
        a.create(
            "Shared",
            json!({"id": format!("s{i:03}"), "name": "before"}),
        )
        .unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    // Acknowledged, then the relay dies; more writes are on their way when it does.
    for i in 100..400 {
        a.create(
            "Shared",
            json!({"id": format!("s{i:03}"), "name": "during"}),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(60));
    cloud.relay.as_mut().unwrap().restart();
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(a.status().pending_changes, 0);
    let (fresh, _) = cloud.device("fresh", None);
    fresh.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        shared_ids(&fresh),
        400,
        "every write survived the relay's death"
    );
}

/// `ferry sync --relay` with `token`: exit code and stderr.
fn sync_with(relay: &RelayProcess, db: &std::path::Path, token: &str) -> (i32, String) {
    let schema = db.parent().unwrap().join("schema.json5");
    std::fs::write(&schema, SCHEMA).unwrap();
    let (dir, schema) = (db.display().to_string(), schema.display().to_string());
    let url = relay.url();
    let args = ["--db", &dir, "--schema", &schema, "--device", "a", "sync"];
    let link = ["--relay", &url, "--token", token, "--timeout", "3"];
    let (code, _, err) = ferry(&[&args[..], &link[..]].concat());
    (code, err)
}

#[test]
fn a_wrong_expired_or_tampered_token_is_refused_and_named() {
    let relay = RelayProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("a");
    let good = relay.token("a", &[]);
    let wrong = (Secret::new(vec![7; 32]).unwrap())
        .sign("a", Default::default(), 3600)
        .unwrap();
    let expired = Secret::new(SECRET.to_vec())
        .unwrap()
        .sign("a", Default::default(), 0)
        .unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = relay.token("someone-else", &[]);
    parts[1] = other.split('.').nth(1).unwrap();
    let tampered = parts.join(".");
    std::thread::sleep(Duration::from_millis(1_100));
    for (token, why) in [
        (&wrong, "signature"),
        (&expired, "expired"),
        (&tampered, "signature"),
        (&"not-a-token".to_string(), "token refused"),
    ] {
        let (code, err) = sync_with(&relay, &db, token);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("refused the credentials: token refused") && err.contains(why),
            "{why}: {err}"
        );
    }
    // Each is refused at every attempt (a device retries after a backoff).
    assert!(relay.metric("ferry_relay_rejects_total", "token") >= 4.0);
    let (code, err) = sync_with(&relay, &db, &good);
    assert_eq!(code, 0, "the right token syncs: {err}");
}

#[test]
fn a_write_outside_the_tokens_scope_is_quarantined_and_shown_in_status() {
    let mut cloud = Cloud::over(Via::Relay, "scope", Settings::default());
    // A token for a's own scope only: not the shared '*'.
    let relay = cloud.relay.as_ref().unwrap();
    let (url, token) = (relay.url(), relay.token("a", &["a"]));
    let (a, _) = cloud.device_via("a", None, |replica| {
        WsTransport::new(&url, &token, replica).unwrap()
    });
    a.create("Note", json!({"id": "n1", "text": "mine"}))
        .unwrap();
    a.create("Shared", json!({"id": "s1", "name": "not mine to share"}))
        .unwrap();
    let refused = a.sync(SYNC_TIMEOUT).unwrap_err().to_string();
    assert!(
        refused.contains("shared#s1"),
        "sync names the refused key: {refused}"
    );
    let status = a.status();
    assert_eq!(
        (status.pending_changes, status.quarantined),
        (0, 1),
        "{status:?}"
    );
    let quarantined = a.quarantine(10).unwrap();
    assert_eq!(quarantined[0].model, "Shared");
    assert!(
        quarantined[0]
            .reason
            .contains("scope '*' is not granted to this writer"),
        "{}",
        quarantined[0].reason
    );
    assert!(
        a.get("Shared", json!({"id": "s1"})).unwrap().is_some(),
        "kept on the device"
    );
    assert!(
        cloud.held(&key("note#a", "note#n1"), "a").is_some(),
        "the granted write went up"
    );
    assert_eq!(cloud.held(&key("shared#", "shared#s1"), "*"), None);
    assert!(
        cloud
            .relay
            .as_ref()
            .unwrap()
            .metric("ferry_relay_rejects_total", "write")
            >= 1.0
    );
}

type RawSession = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A raw WebSocket to the relay, before `Hello`.
async fn raw_ws(relay: &RelayProcess) -> RawSession {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(relay.url(), tcp)
        .await
        .unwrap();
    ws
}

/// A raw WebSocket to the relay, past the handshake.
async fn raw_session(relay: &RelayProcess) -> RawSession {
    raw_session_of(relay, "raw").await
}

/// A raw WebSocket to the relay as device "raw"'s `replica`, past the handshake.
async fn raw_session_of(relay: &RelayProcess, replica: &str) -> RawSession {
    let mut ws = raw_ws(relay).await;
    let hello = Frame::Hello {
        token: relay.token("raw", &[]),
        replica: replica.into(),
    };
    ws.send(Message::Binary(encode(&hello).into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(bytes))) => {
            assert!(matches!(decode(&bytes).unwrap(), Frame::Welcome(_)));
        }
        other => panic!("no welcome: {other:?}"),
    }
    ws
}

/// What the relay says before it closes: its `Refused` reason and the close code.
async fn refusal(ws: &mut RawSession) -> (String, Option<u16>) {
    let mut reason = String::new();
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Binary(bytes)) => {
                if let Ok(Frame::Refused { reason: why, .. }) = decode(&bytes) {
                    reason = why;
                }
            }
            Ok(Message::Close(frame)) => return (reason, frame.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (reason, None)
}

/// A half-open link (a device gone without a FIN, a cellular link dropped) sends nothing,
/// not even the pong a ping asks for: its session ends at the idle timeout instead of
/// holding its place until its token expires. A quiet device that reads answers the
/// pings and stays.
#[test]
fn a_session_that_answers_no_ping_ends_and_a_quiet_one_that_does_stays() {
    let relay = RelayProcess::start(&["--ping-interval", "200ms", "--idle-timeout", "1s"]);
    let rt = runtime();
    rt.block_on(async {
        // Never reads again, so never pongs.
        let _gone = raw_session_of(&relay, "gone").await;
        let mut quiet = raw_session_of(&relay, "quiet").await;
        // Reads (and so pongs) for 2.5 s, sending nothing.
        let listened = tokio::time::timeout(Duration::from_millis(2_500), async {
            while let Some(Ok(message)) = quiet.next().await {
                assert!(matches!(message, Message::Ping(_)), "{message:?}");
            }
        })
        .await;
        assert!(listened.is_err(), "the quiet session stayed open");
        assert_eq!(relay.metric("ferry_relay_rejects_total", "idle"), 1.0);
        assert_eq!(relay.metric("ferry_relay_connections", ""), 1.0);
    });
}

/// A disk that takes its time holds a device's pushes at the relay's bound of pushes being
/// written, where the relay reads no more of the device's frames, its pongs included: that
/// wait is the relay's, not the device's silence, and the session stays until the answers
/// are sent.
#[test]
fn a_slow_disk_holding_a_devices_pushes_does_not_end_its_session_as_idle() {
    // More pushes than the relay writes at once (four): the last ones wait for a place.
    const PUSHES: u64 = 6;
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("fsync-ms");
    let relay = RelayProcess::start_with_env(
        &["--ping-interval", "100ms", "--idle-timeout", "500ms"],
        &[
            ("LD_PRELOAD", slow_fsync_library(dir.path())),
            ("FERRY_TEST_SLOW_FSYNC", slow.display().to_string()),
        ],
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let note = |n: u64| {
        let key = key("note#raw", &format!("note#slow{n}"));
        let mut item = ferry::types::Item::new();
        item.insert("pk".into(), key.hash.clone());
        item.insert("sk".into(), key.sort.clone().unwrap());
        item.insert("_type".into(), ferry::types::Value::S("Note".into()));
        item.insert("deviceId".into(), ferry::types::Value::S("raw".into()));
        item.insert("id".into(), ferry::types::Value::S(format!("slow{n}")));
        ferry::journal::Change {
            model: "Note".into(),
            key,
            op: ferry::journal::ChangeOp::Put,
            version: ferry::types::Version {
                hlc: ferry::types::Hlc::new(now_ms, 0),
                replica: ferry::types::ReplicaId::parse("raw").unwrap(),
            },
            scope: "raw".into(),
            item: Some(item),
            base: None,
        }
    };
    let rt = runtime();
    rt.block_on(async {
        let mut ws = raw_session(&relay).await;
        // Each fsync from now on takes a second, twice the idle timeout.
        std::fs::write(&slow, "1000").unwrap();
        for id in 1..=PUSHES {
            let push = Frame::Push {
                id,
                changes: vec![note(id)],
            };
            ws.send(Message::Binary(encode(&push).into()))
                .await
                .unwrap();
        }
        let mut answered = 0;
        while answered < PUSHES {
            let message = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
            match message {
                Ok(Some(Ok(Message::Binary(bytes)))) => match decode(&bytes).unwrap() {
                    Frame::Pushed { results, .. } => {
                        let applied = (results.iter())
                            .all(|(_, _, o)| matches!(o, ferry::replication::PushOutcome::Applied));
                        assert!(applied, "{results:?}");
                        answered += 1;
                    }
                    other => panic!("after {answered} answers: {other:?}"),
                },
                Ok(Some(Ok(_))) => {} // the relay's pings
                other => panic!("the session ended after {answered} answers: {other:?}"),
            }
        }
    });
    assert_eq!(relay.metric("ferry_relay_rejects_total", "idle"), 0.0);
}

/// `tests/integration/slow_fsync.c` built into `dir`: a preloaded library that makes a
/// process's fsyncs slow while the file `FERRY_TEST_SLOW_FSYNC` names holds milliseconds.
fn slow_fsync_library(dir: &std::path::Path) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/slow_fsync.c");
    let library = dir.join("slow_fsync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("running cc to build the slow-disk library");
    assert!(built.success(), "cc could not build {}", source.display());
    library.display().to_string()
}

/// One token opens sessions without bound no more. A replica holds one session: a new one
/// replaces it (a device back from a lost link gets in at once). Past the bound across
/// the token's replicas, a new session is refused and no one is pushed out.
#[test]
fn a_token_holds_one_session_per_replica_and_at_most_its_bound() {
    let relay = RelayProcess::start(&["--sessions-per-device", "2"]);
    let rt = runtime();
    let (replaced, refused, _held) = rt.block_on(async {
        let mut old = raw_session_of(&relay, "r1").await;
        let new = raw_session_of(&relay, "r1").await;
        let replaced = refusal(&mut old).await;
        let other = raw_session_of(&relay, "r2").await;
        let mut third = raw_ws(&relay).await;
        let hello = Frame::Hello {
            token: relay.token("raw", &[]),
            replica: "r3".into(),
        };
        third
            .send(Message::Binary(encode(&hello).into()))
            .await
            .unwrap();
        (replaced, refusal(&mut third).await, (new, other))
    });
    assert!(
        replaced
            .0
            .contains("a newer session of this device's replica"),
        "{replaced:?}"
    );
    assert!(
        refused.0.contains("holds 2 sessions already"),
        "{refused:?}"
    );
    assert_eq!(relay.metric("ferry_relay_rejects_total", "replaced"), 1.0);
    assert_eq!(relay.metric("ferry_relay_connections", ""), 2.0);
}

/// `/metrics` can leave the devices' port for an address only the operator reaches: the
/// devices' port then answers it 404.
#[test]
fn metrics_on_their_own_address_leave_the_devices_port() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_at = free.local_addr().unwrap();
    drop(free);
    let relay = RelayProcess::start(&["--metrics-listen", &metrics_at.to_string()]);
    let get = |port: u16| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let own = get(metrics_at.port());
    assert!(
        own.starts_with("HTTP/1.1 200") && own.contains("ferry_relay_connections"),
        "{own}"
    );
    let devices = get(relay.port);
    assert!(devices.starts_with("HTTP/1.1 404"), "{devices}");
}

#[test]
fn a_malformed_or_oversize_frame_closes_that_connection_and_the_relay_serves_the_others() {
    let mut cloud = Cloud::over(Via::Relay, "frames", Settings::default());
    let (a, _) = cloud.device("a", None);
    a.create("Shared", json!({"id": "s1", "name": "before"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    let relay = cloud.relay.as_ref().unwrap();
    let rt = runtime();
    let (malformed, oversize, text) = rt.block_on(async {
        let mut ws = raw_session(relay).await;
        ws.send(Message::Binary(
            vec![ferry_protocol::PROTOCOL_VERSION, 99, 1, 2].into(),
        ))
        .await
        .unwrap();
        let malformed = refusal(&mut ws).await;
        let mut ws = raw_session(relay).await;
        let huge = vec![0u8; ferry_protocol::FRAME_BYTES_MAX + 1];
        let _ = ws.send(Message::Binary(huge.into())).await;
        let oversize = refusal(&mut ws).await;
        let mut ws = raw_session(relay).await;
        ws.send(Message::Text("hello".into())).await.unwrap();
        (malformed, oversize, refusal(&mut ws).await)
    });
    assert!(
        malformed.0.starts_with("bad frame: malformed frame"),
        "{malformed:?}"
    );
    assert_eq!(malformed.1, Some(1008), "policy violation");
    assert!(
        oversize.0.contains("bad frame") && oversize.0.contains("limit"),
        "{oversize:?}"
    );
    assert_eq!(oversize.1, Some(1009), "message too big");
    assert!(text.0.contains("frames are binary"), "{text:?}");
    assert_eq!(relay.metric("ferry_relay_rejects_total", "frame"), 3.0);
    // The device connected meanwhile was never disturbed.
    a.create("Shared", json!({"id": "s2", "name": "after"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(a.status().failures, 0, "{:?}", a.status());
    assert!(cloud.held(&key("shared#", "shared#s2"), "*").is_some());
}

#[test]
fn a_thousand_devices_connect_with_bounded_memory() {
    const DEVICES: usize = 1000;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let relay = RelayProcess::start(&[]);
    let rt = runtime();
    let probe = relay.transport("probe", "probe");
    connect(&rt, &probe).unwrap();
    let before = relay.rss_kib();
    let transports: Vec<WsTransport> = (0..DEVICES)
        .map(|i| relay.transport(&format!("d{i}"), &format!("r{i}")))
        .collect();
    rt.block_on(async {
        // From one address, a few handshakes at a time: more would wait past the address's
        // share of pending places (`PENDING_PER_SOURCE_MAX`) and retry.
        for wave in transports.chunks(16) {
            let connects = wave.iter().map(|t| t.connect());
            for session in futures_util::future::join_all(connects).await {
                session.unwrap();
            }
        }
    });
    wait_until("every device counted", Duration::from_secs(10), || {
        relay.metric("ferry_relay_connections", "") == (DEVICES + 1) as f64
    });
    // Every connection is live: one push fans out to all of them.
    let change = crate::dynamo::config_change("fan", Some("out"));
    let service = ferry::replication::Grant::service("cloud", Some(["*".to_string()].into()));
    let cloud = WsTransport::new(&relay.url(), &relay.token_for(&service), "cloud").unwrap();
    rt.block_on(async {
        cloud.connect().await.unwrap();
        cloud.push(vec![change]).await.unwrap();
    });
    wait_until("the change fanned out", Duration::from_secs(10), || {
        relay.metric("ferry_relay_changes_out_total", "") >= (DEVICES + 1) as f64
    });
    let after = relay.rss_kib();
    let per_connection = (after.saturating_sub(before)) as f64 / DEVICES as f64;
    println!(
        "relay RSS: {before} KiB idle, {after} KiB with {DEVICES} connections: {per_connection:.1} KiB per connection"
    );
    assert!(
        per_connection < 64.0,
        "{per_connection:.1} KiB per connection ({before} -> {after} KiB)"
    );
}

#[test]
fn two_relays_over_one_dynamodb_table_deliver_each_others_changes() {
    let table = Cloud::new("two-relays", Settings::default());
    let start = || {
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("schema.json5");
        std::fs::write(&schema, SCHEMA).unwrap();
        let store = format!("dynamodb:{}", table.table);
        let endpoint = crate::dynamo::endpoint().url.unwrap();
        let schema = schema.display().to_string();
        let args = [
            "--schema",
            &schema,
            "--endpoint",
            &endpoint,
            "--poll-interval",
            "200ms",
        ];
        RelayProcess::start_over(dir, store, &args)
    };
    let (one, two) = (start(), start());
    let mut cloud = Cloud::over(Via::Relay, "two-relays-devices", Settings::default());
    live_only(&mut cloud);
    let (a, _) = cloud.device_via("a", None, |replica| one.transport("a", replica));
    let (b, _) = cloud.device_via("b", None, |replica| two.transport("b", replica));
    b.sync(SYNC_TIMEOUT).unwrap();
    a.create("Shared", json!({"id": "s1", "name": "through one"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    // W (the table's window) passes before the other relay's poll may read it.
    wait_until(
        "b, on the other relay, hears of it",
        Duration::from_secs(20),
        || shared_ids(&b) == 1,
    );
    b.create("Shared", json!({"id": "s2", "name": "through two"}))
        .unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    wait_until("and back", Duration::from_secs(20), || shared_ids(&a) == 2);
    let row = table
        .row(&key("shared#", "shared#s2"))
        .expect("in the table");
    assert!(row.contains_key("_seq"), "{row:?}");
}

#[test]
fn wss_with_a_private_certificate_and_a_clean_stop_on_sigterm() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert.display().to_string(), key_file.display().to_string());
    let mut relay = RelayProcess::start(&["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    let url = format!("wss://localhost:{}", relay.port);
    let rt = runtime();
    let token = relay.token("a", &[]);
    let trusted = WsTransport::new(&url, &token, "a")
        .unwrap()
        .with_ca_file(&cert)
        .unwrap();
    let session = connect(&rt, &trusted).unwrap();
    assert!(session.scopes.unwrap().contains("a"));
    let untrusted = WsTransport::new(&url, &token, "a").unwrap();
    let error = connect(&rt, &untrusted).unwrap_err().to_string();
    assert!(
        error.contains("TLS") && error.contains("certificate"),
        "{error}"
    );
    let plain = WsTransport::new(&relay.url(), &token, "a").unwrap();
    assert!(
        connect(&rt, &plain).is_err(),
        "no plain WebSocket on a TLS port"
    );

    assert_eq!(relay.terminate(), 0, "SIGTERM is a clean stop");
    let log = relay.log_text();
    assert!(log.contains("shutting down"), "{log}");
    let pulled = rt.block_on(trusted.pull(
        "a",
        ferry::replication::PullFrom::Since(ferry::types::Hlc::ZERO),
        10,
    ));
    assert!(pulled.is_err(), "the relay closed the session: {pulled:?}");
}

#[test]
fn a_device_that_stops_reading_stalls_no_one_and_its_live_frames_are_dropped() {
    let mut cloud = Cloud::over(Via::Relay, "slow", Settings::default());
    let (a, _) = cloud.device("a", None);
    let (b, _) = cloud.device("b", None);
    let relay = cloud.relay.as_ref().unwrap();
    let rt = runtime();
    // A reader of a's scope that gets past the handshake, then never reads again, through
    // a tiny receive buffer.
    let _stuck = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket
            .connect(([127, 0, 0, 1], relay.port).into())
            .await
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(relay.url(), tcp)
            .await
            .unwrap();
        let hello = Frame::Hello {
            token: relay.token("stuck", &["a"]),
            replica: "stuck".into(),
        };
        ws.send(Message::Binary(encode(&hello).into()))
            .await
            .unwrap();
        ws.next().await.unwrap().unwrap();
        ws
    });
    // About 8 MB of live frames for the stuck reader, far past its budget and buffers.
    let text = "x".repeat(4_000);
    for i in 0..2_000 {
        a.create("Note", json!({"id": format!("n{i:04}"), "text": text}))
            .unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        a.status().pending_changes,
        0,
        "the writer was served in full"
    );
    b.create("Shared", json!({"id": "s1", "name": "meanwhile"}))
        .unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(shared_ids(&a), 1, "and so was everyone else");
    assert!(
        relay.metric("ferry_relay_live_dropped_total", "") >= 1.0,
        "the stuck reader's live frames were dropped, not queued"
    );
    assert_eq!(relay.metric("ferry_relay_connections", ""), 3.0);
}

#[test]
fn connections_past_the_bound_are_turned_away_and_counted() {
    let relay = RelayProcess::start(&["--connections-max", "2"]);
    let rt = runtime();
    let (one, two) = (relay.transport("d1", "r1"), relay.transport("d2", "r2"));
    connect(&rt, &one).unwrap();
    connect(&rt, &two).unwrap();
    let three = relay.transport("d3", "r3");
    let error = connect(&rt, &three).unwrap_err().to_string();
    assert!(error.contains("serves all the sessions it may"), "{error}");
    assert_eq!(relay.metric("ferry_relay_rejects_total", "capacity"), 1.0);
    drop(one);
    // The dropped transport's task closes its connection on the runtime.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    wait_until("a place is free again", Duration::from_secs(5), || {
        relay.metric("ferry_relay_connections", "") == 1.0
    });
    connect(&rt, &three).unwrap();
}

/// A quiet session outlives its token no longer: the relay ends it when the token expires,
/// though the device sends nothing, and the device hears why.
#[test]
fn a_quiet_session_ends_when_its_token_expires() {
    let relay = RelayProcess::start(&[]);
    let token = Secret::new(SECRET.to_vec())
        .unwrap()
        .sign("quiet", Default::default(), 2)
        .unwrap();
    let rt = runtime();
    let quiet = WsTransport::new(&relay.url(), &token, "quiet").unwrap();
    rt.block_on(quiet.connect()).unwrap();
    wait_until("the session counted", Duration::from_secs(5), || {
        relay.metric("ferry_relay_connections", "") == 1.0
    });
    wait_until(
        "the session ended at its expiry",
        Duration::from_secs(6),
        || relay.metric("ferry_relay_connections", "") == 0.0,
    );
    assert!(relay.metric("ferry_relay_rejects_total", "token") >= 1.0);
    let after = rt.block_on(quiet.pull(
        "*",
        ferry::replication::PullFrom::Snapshot(Default::default()),
        10,
    ));
    assert!(after.is_err(), "the session is over: {after:?}");
}

/// `status` remembers the last failure across processes, with its time, until a sync
/// succeeds.
#[test]
fn status_keeps_the_last_failure_until_a_sync_succeeds() {
    let relay = RelayProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("a");
    let wrong = (Secret::new(vec![7; 32]).unwrap())
        .sign("a", Default::default(), 3600)
        .unwrap();
    let (code, err) = sync_with(&relay, &db, &wrong);
    assert_eq!(code, 1, "{err}");
    let dir = db.display().to_string();
    let schema = home.path().join("schema.json5").display().to_string();
    let status = || {
        let (code, out, err) = ferry(&["--db", &dir, "--schema", &schema, "status"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let failed = status();
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("token refused"), "{failed}");
    assert!(
        failed["last_error_at_ms"].as_u64().unwrap_or(0) > 0,
        "{failed}"
    );
    let (code, err) = sync_with(&relay, &db, &relay.token("a", &[]));
    assert_eq!(code, 0, "{err}");
    let synced = status();
    assert_eq!(synced["last_error"], json!(null), "{synced}");
}

/// SIGTERM does not wait for connections that never said who they are: one silent TCP
/// connection and one WebSocket that never sent `Hello` (it waited out their timeouts).
#[test]
fn sigterm_closes_connections_that_never_said_hello_at_once() {
    let mut relay = RelayProcess::start(&[]);
    let silent = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    let rt = runtime();
    let upgraded = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
            .await
            .unwrap();
        tokio_tungstenite::client_async(relay.url(), tcp)
            .await
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(relay.terminate(), 0, "SIGTERM is a clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        started.elapsed()
    );
    drop((silent, upgraded));
}

/// A device's token may grant scopes it does not read (a fleet token, say): the relay's
/// live changes of those scopes are not applied, as its pulls never bring them.
#[test]
fn live_changes_of_a_granted_scope_the_device_does_not_read_are_not_applied() {
    let mut cloud = Cloud::over(Via::Relay, "live-unread", Settings::default());
    live_only(&mut cloud);
    let granted = ["a", "*", "b"].map(String::from).into();
    let wide = ferry::replication::Grant::device("a", Some(granted));
    let (a, _) = cloud.device_via("a", None, cloud.grant_maker(wide));
    let (b, _) = cloud.device("b", None);
    a.sync(SYNC_TIMEOUT).unwrap();
    b.create("Note", json!({"id": "n1", "text": "b's own"}))
        .unwrap();
    b.create("Shared", json!({"id": "s1", "name": "for all"}))
        .unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    wait_until(
        "a hears of b's shared write",
        Duration::from_secs(5),
        || shared_ids(&a) == 1,
    );
    let mut notes = Vec::new();
    a.scan(Some("Note"), false, |_, note| {
        notes.push(note);
        true
    })
    .unwrap();
    assert_eq!(
        notes,
        Vec::<serde_json::Value>::new(),
        "b's note is not a's"
    );
}

/// Before a connection authenticates, the relay reads one small `Hello` and nothing else:
/// a large first message is refused as it arrives, and a first frame of another kind is
/// refused by its kind, without being decoded.
#[test]
fn before_hello_the_relay_reads_one_small_hello_and_nothing_else() {
    let mut cloud = Cloud::over(Via::Relay, "pre-auth", Settings::default());
    let (a, _) = cloud.device("a", None);
    let relay = cloud.relay.as_ref().unwrap();
    let rss_before = relay.rss_kib();
    let rt = runtime();
    let first_frame = |bytes: Vec<u8>| {
        rt.block_on(async {
            let mut ws = raw_ws(relay).await;
            let _ = ws.send(Message::Binary(bytes.into())).await;
            refusal(&mut ws).await
        })
    };
    // A Hello of 8 MiB (a huge token), sent ten times over.
    let huge = Frame::Hello {
        token: "x".repeat(ferry_protocol::FRAME_BYTES_MAX - 64),
        replica: "r".into(),
    };
    for _ in 0..10 {
        let (reason, code) = first_frame(encode(&huge));
        assert_eq!(code, Some(1009), "message too big: {reason}");
    }
    // A push of a million empty changes as the first frame.
    let mut push = vec![ferry_protocol::PROTOCOL_VERSION, 4, 1];
    push.extend([0x80, 0x89, 0x7a]); // a count of 2,000,000
    push.resize(ferry_protocol::HELLO_BYTES_MAX, 0);
    let (reason, _) = first_frame(push);
    assert!(
        reason.contains("Push frame") && reason.contains("before Hello"),
        "{reason}"
    );
    assert!(
        relay.rss_kib() < rss_before + 16 * 1024,
        "the relay buffered none of it: {} KiB, was {rss_before} KiB",
        relay.rss_kib()
    );
    assert!(relay.metric("ferry_relay_rejects_total", "frame") >= 11.0);
    // An honest device never noticed.
    a.create("Shared", json!({"id": "s1", "name": "still here"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(a.status().failures, 0, "{:?}", a.status());
}

/// An application attaches the relay in a line, and a wrong address is refused by name.
#[test]
fn a_device_connects_to_the_relay_in_a_line() {
    use ferry::Attach;
    let relay = RelayProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config =
        ferry::Config::with_schema(crate::support::schema(SCHEMA)).context("deviceId", "a");
    let db = Db::open(dir.path(), config).unwrap();
    db.connect(
        ferry::relay(&relay.url(), &relay.token("a", &[])),
        Default::default(),
    )
    .unwrap();
    db.create("Shared", json!({"id": "s1", "name": "in a line"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Db::open(
        other_dir.path(),
        ferry::Config::with_schema(crate::support::schema(SCHEMA)).context("deviceId", "b"),
    )
    .unwrap();
    let wrong = other.connect(ferry::relay("http://nowhere", "t"), Default::default());
    let error = wrong.unwrap_err().to_string();
    assert!(error.contains("relay URL 'http://nowhere'"), "{error}");
}

/// What a peer sends reaches the relay's log quoted: a newline in it cannot forge a line.
#[test]
fn a_peers_text_cannot_forge_a_line_of_the_relays_log() {
    let relay = RelayProcess::start(&[]);
    let rt = runtime();
    let forged = "FORGED 2026-12-06T00:00:00Z INFO device connected device=admin";
    let (reason, _) = rt.block_on(async {
        let mut ws = raw_ws(&relay).await;
        let hello = Frame::Hello {
            token: relay.token("a", &[]),
            replica: format!("r\n{forged}"),
        };
        ws.send(Message::Binary(encode(&hello).into()))
            .await
            .unwrap();
        refusal(&mut ws).await
    });
    assert!(reason.contains("replica"), "{reason}");
    wait_until("the relay logs the refusal", Duration::from_secs(5), || {
        relay.log_text().contains("connection ended by the relay")
    });
    let log = relay.log_text();
    assert!(
        !log.lines().any(|line| line.starts_with("FORGED")),
        "a forged line: {log}"
    );
}

/// A failure of the relay's own store reaches devices as its kind and an incident number:
/// its text (a table's name, an account's ARN, a path) stays in the relay's log.
#[test]
fn a_store_failure_reaches_devices_without_the_stores_text() {
    let mut cloud = Cloud::over(Via::RelayDynamo, "store-failure", Settings::default());
    let (a, _) = cloud.device("a", None);
    a.sync(SYNC_TIMEOUT).unwrap();
    let delete = (cloud.dynamo.client.delete_table())
        .table_name(&cloud.table)
        .send();
    cloud.rt.block_on(delete).unwrap();
    a.create("Shared", json!({"id": "s1", "name": "nowhere to go"}))
        .unwrap();
    assert!(a.sync(Duration::from_secs(3)).is_err());
    let error = a.status().last_error.unwrap_or_default();
    assert!(
        error.contains("the relay's store failed (incident"),
        "{error}"
    );
    assert!(!error.contains(&cloud.table), "{error}");
    let relay = cloud.relay.as_ref().unwrap();
    wait_until("the relay logs it", Duration::from_secs(5), || {
        relay.log_text().contains("the store failed")
    });
    assert_eq!(
        a.status().pending_changes,
        1,
        "kept, to go when the store is back"
    );
}

/// A push names each key once, and its answer fits a frame: the copies of the cloud's rows
/// that stale changes get back stop at the frame's bound, and the device sends the rest
/// again later.
#[test]
fn a_pushs_answer_fits_a_frame_however_many_stale_changes_it_carries() {
    const ROWS: usize = 30;
    let mut cloud = Cloud::over(Via::Relay, "answer-bound", Settings::default());
    // The rows of device `raw`, whose raw session then sends stale deletes of them.
    let (raw, _) = cloud.device("raw", None);
    for n in 0..ROWS {
        let text = "x".repeat(350 * 1024);
        raw.create("Note", json!({"id": format!("big{n:02}"), "text": text}))
            .unwrap();
    }
    raw.sync(Duration::from_secs(60)).unwrap();
    let relay = cloud.relay.as_ref().unwrap();
    let stale = |n: usize| ferry::journal::Change {
        model: "Note".into(),
        key: key("note#raw", &format!("note#big{n:02}")),
        op: ferry::journal::ChangeOp::Delete,
        version: ferry::types::Version {
            hlc: ferry::types::Hlc::new(1_000, 0),
            replica: ferry::types::ReplicaId::parse("raw").unwrap(),
        },
        scope: "raw".into(),
        item: None,
        base: None,
    };
    let rt = runtime();
    let (twice, answered) = rt.block_on(async {
        let mut ws = raw_session(relay).await;
        let twice = push_raw(&mut ws, vec![stale(0), stale(0)], 1).await;
        let all = push_raw(&mut ws, (0..ROWS).map(stale).collect(), 2).await;
        (twice, all)
    });
    match twice.0 {
        Frame::Failed { error, .. } => {
            assert!(error.to_string().contains("appears twice"), "{error}")
        }
        other => panic!("a key twice: {other:?}"),
    }
    let (answer, size) = answered;
    let Frame::Pushed { results, .. } = answer else {
        panic!("no Pushed: {answer:?}");
    };
    assert!(size <= ferry_protocol::FRAME_BYTES_MAX, "{size} bytes");
    assert!(
        !results.is_empty() && results.len() < ROWS,
        "{} of {ROWS} answered",
        results.len()
    );
    assert!(
        (results.iter())
            .all(|(_, _, o)| matches!(o, ferry::replication::PushOutcome::Superseded { .. })),
        "stale deletes are superseded"
    );
}

/// Sends a push on a raw session; its answer and the answer's size in bytes.
async fn push_raw(
    ws: &mut RawSession,
    changes: Vec<ferry::journal::Change>,
    id: u64,
) -> (Frame, usize) {
    let frame = Frame::Push { id, changes };
    ws.send(Message::Binary(encode(&frame).into()))
        .await
        .unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return (decode(&bytes).unwrap(), bytes.len()),
            Some(Ok(_)) => {}
            other => panic!("no answer: {other:?}"),
        }
    }
}

/// Idle TCP connections from `addresses` (127.0.0.N), `each` from every one.
fn idle_connections(
    rt: &tokio::runtime::Runtime,
    relay: &RelayProcess,
    addresses: std::ops::Range<u8>,
    each: usize,
) -> Vec<tokio::net::TcpStream> {
    rt.block_on(async {
        let mut idle = Vec::new();
        for address in addresses {
            for _ in 0..each {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(([127, 0, 0, address], 0).into()).unwrap();
                if let Ok(tcp) = socket.connect(([127, 0, 0, 1], relay.port).into()).await {
                    idle.push(tcp);
                }
            }
        }
        idle
    })
}

/// Connections that never authenticate hold no session's place and push no device out:
/// 400 idle TCP connections from one address keep at most their address's share of pending
/// places (each newcomer past it closes the oldest), 32 from each of 32 more addresses fill
/// the relay's pending places, and a device on another address syncs at once all the same.
#[test]
fn idle_connections_from_one_address_keep_no_device_out() {
    let relay = RelayProcess::start(&["--connections-max", "200"]);
    let rt = runtime();
    let idle = idle_connections(&rt, &relay, 2..3, 400);
    assert!(!idle.is_empty());
    wait_until(
        "the ones past the address's share turned away",
        Duration::from_secs(5),
        || relay.metric("ferry_relay_rejects_total", "admission") >= 300.0,
    );
    let many = idle_connections(&rt, &relay, 3..35, 32);
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, err) = sync_with(&relay, &home.path().join("d"), &relay.token("d", &[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop((idle, many));
}
