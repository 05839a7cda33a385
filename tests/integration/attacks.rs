//! The attacker suite: a hostile client (raw TCP, raw WebSocket, the real frame codec with
//! forged fields) runs each attack on the relay against the real relay process, from its
//! own address (127.0.0.2), while honest devices on 127.0.0.1 go on syncing. After each
//! attack: an honest device's new change reached the other device through the relay
//! (nothing lost, no one stalled), the relay's resident memory is within
//! [`RELAY_RSS_BOUND_KIB`], and `/metrics` counts the attack under its reason.
//!
//! Attacks that need a relay of their own have their tests in `relay.rs`: a slow or
//! silent TLS handshake, SIGTERM with silent connections, answers and pages that would
//! pass a frame, forged log lines, a store's text, a quiet session past its token.

use std::net::SocketAddr;
use std::time::Duration;

use ferry::Db;
use ferry_protocol::{Frame, encode};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::dynamo::{Cloud, SYNC_TIMEOUT};
use crate::relay::RelayProcess;

/// What the relay may hold resident while attacked here: about 33 MiB measured, idle or
/// attacked, since every attack meets a bound (1024 pending connections, 16 KiB before
/// `Hello`, the sessions' queues); twice that, for noise.
const RELAY_RSS_BOUND_KIB: u64 = 64 * 1024;
/// The attacker's address: another source than the honest devices' 127.0.0.1.
const ATTACKER: &str = "127.0.0.2";

/// The relay under attack and two honest devices syncing through it.
struct Siege {
    cloud: Cloud,
    a: Db,
    b: Db,
    rounds: usize,
    rt: tokio::runtime::Runtime,
}

impl Siege {
    fn new() -> Siege {
        let mut cloud = Cloud::over_relay(
            "attacks",
            &[
                "--ping-interval",
                "200ms",
                "--idle-timeout",
                "1s",
                "--sessions-per-device",
                "4",
            ],
        );
        let (a, _) = cloud.device("honest-a", None);
        let (b, _) = cloud.device("honest-b", None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut siege = Siege {
            cloud,
            a,
            b,
            rounds: 0,
            rt,
        };
        siege.honest_round("before any attack");
        siege
    }

    fn relay(&self) -> &RelayProcess {
        self.cloud.relay.as_ref().unwrap()
    }

    /// One honest change goes from device a to device b through the relay.
    fn honest_round(&mut self, after: &str) {
        self.rounds += 1;
        let id = format!("round-{}", self.rounds);
        self.a
            .create("Shared", json!({"id": id, "name": after}))
            .unwrap();
        self.a
            .sync(SYNC_TIMEOUT)
            .unwrap_or_else(|e| panic!("after {after}: device a cannot sync: {e}"));
        self.b
            .sync(SYNC_TIMEOUT)
            .unwrap_or_else(|e| panic!("after {after}: device b cannot sync: {e}"));
        let got = self.b.get("Shared", json!({"id": id})).unwrap();
        assert!(got.is_some(), "after {after}: b lacks a's change {id}");
    }

    /// Runs `attack` (named `name`, counted under `reason`); while it holds what it
    /// returns (its connections), checks that the honest devices sync and the relay's
    /// memory stays bounded; then that the relay counted it.
    fn withstand<H, F: Future<Output = H>>(
        &mut self,
        name: &str,
        reason: &str,
        attack: impl FnOnce(u16) -> F,
    ) {
        let counted = self.relay().metric("ferry_relay_rejects_total", reason);
        let port = self.relay().port;
        let held = self.rt.block_on(attack(port));
        self.honest_round(name);
        let rss = rss_kib(self.relay().pid());
        eprintln!("{name}: the relay's peak so far is {rss} KiB");
        drop(held);
        assert!(
            rss <= RELAY_RSS_BOUND_KIB,
            "after {name}: the relay holds {rss} KiB, over {RELAY_RSS_BOUND_KIB}"
        );
        let now = self.relay().metric("ferry_relay_rejects_total", reason);
        assert!(
            now > counted,
            "{name} is not counted as {reason}: {counted} then {now}"
        );
    }
}

/// The peak resident memory of process `pid` so far, in KiB (the peak: an attack's
/// memory may be freed by the time it is measured).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A TCP connection to the relay from the attacker's address.
async fn tcp(port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{ATTACKER}:0").parse().unwrap())
        .unwrap();
    let relay: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(relay).await.unwrap()
}

/// A WebSocket to the relay from the attacker's address, before `Hello`.
async fn ws(port: u16) -> WebSocketStream<TcpStream> {
    let url = format!("ws://127.0.0.1:{port}");
    let (ws, _) = tokio_tungstenite::client_async(url, tcp(port).await)
        .await
        .unwrap();
    ws
}

/// Reads until the relay closes (its answers and its close frame).
async fn drain(ws: &mut WebSocketStream<TcpStream>) {
    let read = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
}

#[test]
fn the_relay_withstands_each_attack_while_honest_devices_sync() {
    let mut siege = Siege::new();

    // Anyone: hold connections open without a byte, past the bounds on pending ones.
    siege.withstand("1100 silent connections", "admission", |port| async move {
        let mut held = Vec::new();
        for _ in 0..1100 {
            held.push(tcp(port).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        held
    });

    // Anyone: a first frame far over a Hello's 16 KiB, or random bytes.
    siege.withstand("an oversize first frame", "frame", |port| async move {
        let mut ws = ws(port).await;
        let _ = ws.send(Message::Binary(vec![0; 1024 * 1024].into())).await;
        drain(&mut ws).await;
    });
    siege.withstand("a random first frame", "frame", |port| async move {
        let mut ws = ws(port).await;
        let noise: Vec<u8> = (0..4096u32)
            .map(|n| (n.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        ws.send(Message::Binary(noise.into())).await.unwrap();
        drain(&mut ws).await;
    });

    // Anyone: a token signed with another secret.
    siege.withstand("a forged token", "token", |port| async move {
        let mut ws = ws(port).await;
        let forged = ferry_relay::Secret::new(vec![7; 32]).unwrap();
        let hello = Frame::Hello {
            token: forged
                .sign("honest-a", ["honest-a".to_string()].into(), 3600)
                .unwrap(),
            replica: "forger".into(),
        };
        ws.send(Message::Binary(encode(&hello).into()))
            .await
            .unwrap();
        drain(&mut ws).await;
    });

    let port = siege.relay().port;
    let token = siege.relay().token("mallory", &[]);

    // A token holder: a text frame, then a pull of a scope it was not granted, then a
    // write into another device's scope.
    siege.withstand("a text frame in a session", "frame", |_| async {
        let mut ws = hello(port, &token, "m1").await;
        ws.send(Message::Text("hello".into())).await.unwrap();
        drain(&mut ws).await;
    });
    siege.withstand("a pull of another device's scope", "scope", |_| async {
        let mut ws = hello(port, &token, "m2").await;
        let pull = Frame::Pull {
            id: 1,
            scope: "honest-a".into(),
            from: ferry::replication::PullFrom::Since(ferry::types::Hlc::ZERO),
            limit: 10,
        };
        ws.send(Message::Binary(encode(&pull).into()))
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    });
    siege.withstand("a write into another device's scope", "write", |_| async {
        let mut ws = hello(port, &token, "m3").await;
        let fields = json!({"deviceId": "honest-a", "id": "taken", "text": "mine now"});
        let now = crate::dynamo::now_ms();
        let mut change =
            crate::dynamo::cloud_change("Note", "note#honest-a", "note#taken", Some(fields), now);
        change.scope = "honest-a".into();
        change.version.replica = ferry::types::ReplicaId::parse("m3").unwrap();
        let push = Frame::Push {
            id: 1,
            changes: vec![change],
        };
        ws.send(Message::Binary(encode(&push).into()))
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    });

    // A token holder: one replica's session twice (the newer replaces it), then more
    // sessions than its bound (refused).
    siege.withstand("a replica's session opened twice", "replaced", |_| async {
        let mut first = hello(port, &token, "twice").await;
        let second = hello(port, &token, "twice").await;
        drain(&mut first).await;
        second
    });
    siege.withstand("sessions past a token's bound", "capacity", |_| async {
        let mut held = Vec::new();
        for n in 0..8 {
            let replica = format!("s{n}");
            let mut ws = ws(port).await;
            let hello = Frame::Hello {
                token: token.clone(),
                replica,
            };
            ws.send(Message::Binary(encode(&hello).into()))
                .await
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            held.push(ws);
        }
        held
    });

    // A half-open link: a session that never reads, so never answers a ping.
    siege.withstand("a session that never answers a ping", "idle", |_| async {
        let gone = hello(port, &token, "m4").await;
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        gone
    });
    // The attackers' sessions end as the relay notices them gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while siege.relay().metric("ferry_relay_connections", "") > 2.0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        siege.relay().metric("ferry_relay_connections", ""),
        2.0,
        "only the honest devices are left"
    );
}

/// A session with `token` as `replica`, past the handshake.
async fn hello(port: u16, token: &str, replica: &str) -> WebSocketStream<TcpStream> {
    let mut ws = ws(port).await;
    let hello = Frame::Hello {
        token: token.to_string(),
        replica: replica.into(),
    };
    ws.send(Message::Binary(encode(&hello).into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(_))) => ws,
        other => panic!("no welcome: {other:?}"),
    }
}
