//! The soak: many devices upload continuously through one relay (the embedded store, on
//! loopback, in this process) while attackers from another address (127.0.0.2) hold
//! silent connections, send hostile first frames and forged tokens, and leave half-open
//! sessions. Reports the changes that landed (all of them, checked by reading each
//! device's scope back), push latency (p50, p99), the relay's CPU and the process's peak
//! memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferry::Transport;
use ferry::journal::{Change, ChangeOp};
use ferry::replication::{Models, PullFrom, PushOutcome};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use ferry::ws::WsTransport;
use ferry_protocol::{Frame, encode};
use ferry_relay::{EmbeddedStore, RelayConfig, Secret};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Reading: {
            pk: { type: 'string', value: 'dev#${deviceId}' }, sk: { type: 'string', value: 'r#${seq}' },
            deviceId: { type: 'string', required: true }, seq: { type: 'number', required: true },
            value: { type: 'number' },
        },
    },
    control: { Reading: { sync: 'up' } },
}"#;
const SECRET: &[u8] = b"the soak's secret, thirty-two bytes or more";
/// Changes per push, and the pause between a device's pushes.
const BATCH: u64 = 4;
const PAUSE: Duration = Duration::from_millis(500);
/// Silent connections the attackers hold open at once, and open anew every round.
const SILENT: usize = 300;
const SILENT_PER_ROUND: usize = 30;

/// Runs `devices` devices for `seconds`.
pub fn run(devices: usize, seconds: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = ferry::Schema::parse(SCHEMA)?;
    let models = Models::new(schema.cloud_directions(), schema.item_layout());
    let store = EmbeddedStore::open(&dir.path().join("store"), 86_400_000, models)?;
    let secret = Secret::new(SECRET.to_vec())?;
    // The relay's runtime: one worker, as on a small host; its threads are named so that
    // their CPU can be told from the devices'.
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("soak-relay")
        .enable_all()
        .build()?;
    let listener = relay_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let mut config = RelayConfig::new(secret.clone());
    config.ping_interval = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(5);
    relay_rt.spawn(ferry_relay::serve(
        listener,
        store,
        config,
        std::future::pending(),
    ));
    let devices_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let attacks = devices_rt.spawn(attack(address, secret.clone(), stop.clone()));
    let cpu_before = relay_cpu_ms()?;
    let started = Instant::now();
    let mut runs = Vec::new();
    for n in 0..devices {
        let device = Device::new(n, address, &secret)?;
        runs.push(devices_rt.spawn(device.upload_until(deadline)));
    }
    let mut latencies = Vec::new();
    let mut landed = Vec::new();
    for run in runs {
        let (device, mut pushes) = devices_rt.block_on(run)??;
        latencies.append(&mut pushes);
        landed.push(device);
    }
    let elapsed = started.elapsed();
    // Threads that ended took their time with them: a floor, not the whole.
    let cpu_ms = relay_cpu_ms()?.saturating_sub(cpu_before);
    stop.store(true, Ordering::Relaxed);
    let attacked = devices_rt.block_on(attacks)?;
    // Every acknowledged change is in its device's scope.
    let mut total = 0;
    for device in &landed {
        let held = devices_rt.block_on(device.count_scope())?;
        ensure!(
            held == device.applied,
            "{}: {} changes acknowledged, {held} in the relay",
            device.name,
            device.applied
        );
        total += held;
    }
    let metrics = devices_rt.block_on(get_metrics(address))?;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "soak: {devices} devices for {} s through one relay (embedded store, loopback, one worker thread)",
        elapsed.as_secs()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| changes acknowledged and read back (all landed) | {total} |");
    println!(
        "| changes per second | {:.0} |",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("| pushes | {} |", latencies.len());
    println!(
        "| push latency p50 | {:.1} ms |",
        at(0.50).as_secs_f64() * 1000.0
    );
    println!(
        "| push latency p99 | {:.1} ms |",
        at(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "| the relay runtime's CPU | {:.0} % of a core |",
        cpu_ms as f64 / elapsed.as_millis() as f64 * 100.0
    );
    println!(
        "| peak resident memory (relay and the {devices} clients, one process) | {} MiB |",
        peak_rss_kib()? / 1024
    );
    println!("| attacks sent | {attacked} |");
    // `ferry_relay_rejects_total{reason="idle"} 50`: the reason and the count.
    let rejects = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_relay_rejects_total"));
    for line in rejects {
        let reason = line.split('"').nth(1).unwrap_or("?");
        let count = line.rsplit(' ').next().unwrap_or("?");
        println!("| attacks the relay refused as `{reason}` | {count} |");
    }
    Ok(())
}

/// One device: its transport and what the relay acknowledged.
struct Device {
    name: String,
    replica: ReplicaId,
    transport: WsTransport,
    applied: u64,
}

impl Device {
    fn new(n: usize, relay: SocketAddr, secret: &Secret) -> Result<Device> {
        let name = format!("d{n}");
        let replica = ReplicaId::from_random(n as u128 + 1);
        let token = secret.sign(&name, Default::default(), 3_600)?;
        let url = format!("ws://{relay}");
        // Each device from an address of its own, as a fleet's are (the relay bounds the
        // connections not yet authenticated per address).
        let source: std::net::IpAddr = format!("127.0.1.{}", n % 250 + 1).parse()?;
        let dialer: ferry::ws::Dialer = Arc::new(move || {
            Box::pin(async move {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                let tcp = socket.connect(relay).await?;
                Ok(Box::new(tcp) as Box<dyn ferry::ws::Socket>)
            })
        });
        let transport = WsTransport::new(&url, &token, replica.as_str())?.with_dialer(dialer);
        Ok(Device {
            name,
            replica,
            transport,
            applied: 0,
        })
    }

    /// Pushes a batch every [`PAUSE`] until `deadline`; the latency of each push.
    async fn upload_until(mut self, deadline: Instant) -> Result<(Device, Vec<Duration>)> {
        // Connect as the engine would, again after a refusal (the relay under attack may
        // evict a pending connection).
        let mut attempts = 0;
        while let Err(e) = self.transport.connect().await {
            attempts += 1;
            ensure!(attempts < 20, "{}: cannot connect: {e}", self.name);
            tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
        }
        let mut latencies = Vec::new();
        let mut seq = 0;
        while Instant::now() < deadline {
            let changes: Vec<Change> = (0..BATCH).map(|i| self.change(seq + i)).collect();
            let sent = Instant::now();
            let results = self.transport.push(changes).await.context("pushing")?;
            latencies.push(sent.elapsed());
            let applied = results
                .iter()
                .filter(|(_, _, o)| *o == PushOutcome::Applied)
                .count();
            ensure!(applied == BATCH as usize, "{}: {results:?}", self.name);
            self.applied += BATCH;
            seq += BATCH;
            tokio::time::sleep(PAUSE).await;
        }
        Ok((self, latencies))
    }

    fn change(&self, seq: u64) -> Change {
        let key = Key {
            hash: Value::S(format!("dev#{}", self.name)),
            sort: Some(Value::S(format!("r#{seq}"))),
        };
        let item = Item::from([
            ("pk".to_string(), key.hash.clone()),
            ("sk".to_string(), key.sort.clone().unwrap_or(Value::Null)),
            ("_type".to_string(), Value::S("Reading".into())),
            ("deviceId".to_string(), Value::S(self.name.clone())),
            ("seq".to_string(), Value::int(seq as i64)),
            ("value".to_string(), Value::int((seq % 1000) as i64)),
        ]);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Change {
            model: "Reading".into(),
            key,
            op: ChangeOp::Put,
            version: Version {
                hlc: Hlc::new(now_ms, (seq % 60_000) as u16),
                replica: self.replica.clone(),
            },
            scope: self.name.clone(),
            item: Some(item),
            base: None,
        }
    }

    /// The rows of this device's scope, read back through its transport.
    async fn count_scope(&self) -> Result<u64> {
        let (mut after, mut count) = (Hlc::ZERO, 0);
        loop {
            let from = PullFrom::Snapshot(after);
            let page = self.transport.pull(&self.name, from, 1_000).await?;
            count += page.changes.len() as u64;
            match (page.more, page.changes.last()) {
                (true, Some((seq, _))) => after = *seq,
                _ => return Ok(count),
            }
        }
    }
}

/// The attackers, from 127.0.0.2 until `stop`: silent connections held open, random first
/// frames, forged tokens, sessions that never read. Returns how many attacks it sent.
async fn attack(relay: SocketAddr, secret: Secret, stop: Arc<AtomicBool>) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let mut silent = std::collections::VecDeque::new();
    let mut half_open = std::collections::VecDeque::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        // New silent connections every round, the oldest let go: the relay's pending
        // places churn under the flood.
        for _ in 0..SILENT_PER_ROUND {
            if let Some(tcp) = tcp(relay).await {
                silent.push_back(tcp);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        while silent.len() > SILENT {
            silent.pop_front();
        }
        let noise: Vec<u8> = (0..4096u64)
            .map(|n| (n.wrapping_mul(round | 1) >> 3) as u8)
            .collect();
        if first_frame(relay, noise).await {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        let forged = Secret::new(vec![7; 32])
            .ok()
            .and_then(|s| s.sign("d0", Default::default(), 60).ok());
        let hello = |token: String, replica: &str| {
            encode(&Frame::Hello {
                token,
                replica: replica.into(),
            })
        };
        if first_frame(relay, hello(forged.unwrap_or_default(), "forger")).await {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        if round.is_multiple_of(20) {
            // A session that never reads: it answers no ping.
            let token = secret
                .sign("mallory", Default::default(), 3_600)
                .unwrap_or_default();
            if let Some(mut ws) = open_ws(relay).await {
                let _ = ws
                    .send(Message::Binary(hello(token, &format!("m{round}")).into()))
                    .await;
                half_open.push_back(ws);
                // The newest stay: the relay ended the oldest already.
                if half_open.len() > 50 {
                    half_open.pop_front();
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent.load(Ordering::Relaxed)
}

/// A TCP connection to the relay from the attackers' address.
async fn tcp(relay: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind("127.0.0.2:0".parse().ok()?).ok()?;
    socket.connect(relay).await.ok()
}

async fn open_ws(
    relay: SocketAddr,
) -> Option<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let tcp = tcp(relay).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{relay}"), tcp)
        .await
        .ok()?;
    Some(ws)
}

/// Sends `bytes` as a first frame and reads until the relay closes; false when no
/// connection opened.
async fn first_frame(relay: SocketAddr, bytes: Vec<u8>) -> bool {
    let Some(mut ws) = open_ws(relay).await else {
        return false;
    };
    let _ = ws.send(Message::Binary(bytes.into())).await;
    let read = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    true
}

/// The relay's `/metrics`.
async fn get_metrics(relay: SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(relay).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    Ok(text)
}

/// CPU time (user and system) of this process's threads named `soak-relay`, in ms.
fn relay_cpu_ms() -> Result<u64> {
    let tick_ms = 1000 / 100; // USER_HZ is 100 on Linux.
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.starts_with("soak-relay") {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime are 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        total += ticks * tick_ms;
    }
    Ok(total)
}

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = (status.lines().find(|l| l.starts_with("VmHWM:"))).context("no VmHWM")?;
    line.split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()
        .context("VmHWM")
}
