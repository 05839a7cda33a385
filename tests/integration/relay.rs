//! The relay as operators run it: the real `ferry relay serve` process on loopback over its
//! embedded store (or a DynamoDB Local table), devices on the WebSocket transport, killed
//! with SIGKILL, refused for bad tokens, scopes and frames.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry::Transport;
use ferry::ws::WsTransport;
use ferry_relay::Secret;

use crate::support::{Killed, ferry_bin};

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
    log: PathBuf,
}

impl RelayProcess {
    /// A relay over an embedded store in a new directory, with `extra` arguments.
    pub fn start(extra: &[&str]) -> RelayProcess {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("embedded:{}", dir.path().join("store").display());
        RelayProcess::start_over(dir, store, extra)
    }

    /// A relay over `store` (`embedded:DIR` or `dynamodb:TABLE`), in `dir`.
    pub fn start_over(dir: tempfile::TempDir, store: String, extra: &[&str]) -> RelayProcess {
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        let log = dir.path().join("relay.log");
        let mut relay = RelayProcess {
            child: None,
            dir,
            port: 0,
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
        };
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
            .args(["relay", "serve", "--listen", &listen, "--store", &self.store])
            .arg("--secret-file")
            .arg(&secret)
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap()).unwrap_or_default();
        let address = (first.strip_prefix("listening on "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the relay did not start: {first:?}; log: {}", self.log_text()));
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
        let pid = child.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        child.0.wait().unwrap().code().unwrap_or(-1)
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
        response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
    }

    /// A metric's value (the sum over its labels that contain `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        (self.metrics().lines())
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter(|(series, _)| {
                series.split('{').next() == Some(name) && series.contains(labels)
            })
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
pub fn connect(rt: &tokio::runtime::Runtime, transport: &WsTransport) -> Result<ferry::replication::Session, ferry::replication::TransportError> {
    rt.block_on(transport.connect())
}
