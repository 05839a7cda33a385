//! The relay's server: the accept loop, TLS, the HTTP front (`/metrics`, the upgrade), the
//! connection bound, the feed poller for shared stores, upkeep, and graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_cloud::{PullFrom, TransportError, cursor_after};
use ferry_types::{Hlc, Key, Version};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::admission::{Admission, Pending};
use crate::http::{self, Request};
use crate::hub::Hub;
use crate::metrics::{Metrics, Reject};
use crate::store::CloudStore;
use crate::token::Secret;

/// A byte stream a connection runs over: TCP or TLS over TCP.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// How often a quiet session is pinged: well inside the idle timeouts of NATs and load
/// balancers (60 s and more), and three missed pongs end it.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// The content type of `/metrics`.
const METRICS_KIND: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How the relay runs.
pub struct RelayConfig {
    /// Verifies device tokens.
    pub secret: Secret,
    /// Serve `wss` with this certificate, when given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections served at once; past it a connection gets `503`.
    pub connections_max: usize,
    /// Sessions one token subject holds at once, one per replica (a new session of a
    /// replica replaces its old one); past it, new sessions are refused.
    pub sessions_per_device_max: usize,
    /// Frames waiting for one device at most (answers wait; live frames are dropped).
    pub queue_frames_max: usize,
    /// Bytes of live frames waiting for one device at most; past it they are dropped.
    pub live_bytes_max: usize,
    /// Bytes of answers waiting for one device at most; past it the device's next call
    /// waits (one answer over it still goes, alone).
    pub answer_bytes_max: usize,
    /// How long a device may take to send `Hello`.
    pub handshake_timeout: Duration,
    /// How often a quiet session is pinged.
    pub ping_interval: Duration,
    /// A session that sends nothing (no frame, no pong) for this long is ended: its link
    /// is gone (a half-open cellular link would hold its place until its token expires).
    pub idle_timeout: Duration,
    /// A frame the device does not take within this long, plus its size at
    /// `slowest_link_bytes_per_s`, ends its session.
    pub write_timeout: Duration,
    /// The slowest link a device may take its frames over (a poor cellular one).
    pub slowest_link_bytes_per_s: u64,
    /// How often a relay over a shared store reads the feeds its devices hold, to send
    /// them what other relays wrote.
    pub poll_interval: Duration,
    /// How long shutdown waits for connections to finish what they are doing.
    pub drain_timeout: Duration,
    /// The wall clock tokens expire by.
    pub clock: crate::Clock,
    /// Serve `GET /metrics` here, and not on the devices' port (an address only the
    /// operator's network reaches).
    pub metrics_listener: Option<std::net::TcpListener>,
}

impl RelayConfig {
    /// The defaults with `secret`.
    pub fn new(secret: Secret) -> RelayConfig {
        RelayConfig {
            secret,
            tls: None,
            connections_max: 10_000,
            sessions_per_device_max: 16,
            queue_frames_max: 256,
            live_bytes_max: 1024 * 1024,
            // Two frames of the protocol's largest.
            answer_bytes_max: 2 * ferry_protocol::FRAME_BYTES_MAX,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: PING_INTERVAL,
            idle_timeout: 3 * PING_INTERVAL,
            write_timeout: Duration::from_secs(30),
            slowest_link_bytes_per_s: 16 * 1024,
            poll_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            clock: crate::wall_clock(),
            metrics_listener: None,
        }
    }
}

/// Why TLS cannot be set up from the given files.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {path}: {reason}")]
pub struct TlsError {
    what: &'static str,
    path: String,
    reason: String,
}

/// A rustls server configuration from PEM files of a certificate chain and its key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let fail = |what, path: &Path, reason: String| TlsError {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = (CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail("certificate", cert, e.to_string()))?)
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| fail("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("certificate", cert, "no certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| fail("key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("certificate", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| fail("key", key, e.to_string()))?;
    Ok(Arc::new(config))
}

/// What every connection shares.
pub struct Shared<S> {
    pub(crate) store: S,
    pub(crate) config: RelayConfig,
    pub(crate) hub: Hub,
    pub(crate) metrics: Metrics,
    /// Connections that have not authenticated yet.
    pub(crate) admission: Arc<Admission>,
    /// Places for authenticated sessions (`RelayConfig::connections_max`).
    pub(crate) sessions: Arc<Semaphore>,
    /// Sessions per device (`RelayConfig::sessions_per_device_max`).
    pub(crate) seats: Arc<crate::seats::Seats>,
    /// `/metrics` has a listener of its own: the devices' port answers 404 to it.
    pub(crate) metrics_elsewhere: bool,
}

/// A relay: its store, its configuration and the devices connected to it. [`serve`] runs
/// one on a TCP listener; an application that accepts connections itself (over another
/// listener, or an in-memory pipe) hands each to [`Relay::serve_connection`].
pub struct Relay<S> {
    shared: Arc<Shared<S>>,
    stop: watch::Sender<bool>,
    metrics_listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl<S: CloudStore> Relay<S> {
    /// A relay over `store`, serving no connection yet.
    pub fn new(store: S, mut config: RelayConfig) -> Relay<S> {
        let metrics_listener = config.metrics_listener.take();
        let sessions = Arc::new(Semaphore::new(config.connections_max));
        let shared = Arc::new(Shared {
            store,
            config,
            hub: Hub::default(),
            metrics: Metrics::default(),
            admission: Arc::default(),
            sessions,
            seats: Arc::default(),
            metrics_elsewhere: metrics_listener.is_some(),
        });
        Relay {
            shared,
            stop: watch::channel(false).0,
            metrics_listener: std::sync::Mutex::new(metrics_listener),
        }
    }

    /// Serves `GET /metrics` on `RelayConfig::metrics_listener`, if given, until the relay
    /// shuts down; [`serve`] runs it.
    pub fn serve_metrics(&self) -> impl Future<Output = ()> + Send + 'static {
        let listener = (self.metrics_listener.lock())
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (shared, mut stopped) = (self.shared.clone(), self.stop.subscribe());
        async move {
            let Some(listener) = listener else { return };
            let listener = match listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
            {
                Ok(listener) => listener,
                Err(e) => return tracing::warn!(error = %e, "cannot serve /metrics"),
            };
            let mut answering = JoinSet::new();
            while let Some(accepted) = until_stopped(&mut stopped, listener.accept()).await {
                while answering.try_join_next().is_some() {}
                let Ok((mut tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let shared = shared.clone();
                answering.spawn(async move {
                    let head =
                        tokio::time::timeout(http::HEAD_TIMEOUT, http::read_request(&mut tcp));
                    let metrics = matches!(head.await, Ok(Ok(Request::Metrics)));
                    answer_metrics(&shared, &mut tcp, metrics).await;
                });
            }
        }
    }

    /// The store the relay writes to and reads from.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Serves one accepted byte stream from `peer` (TLS already ended, or none) until it
    /// closes or the relay shuts down: `GET /metrics`, or the upgrade into a device's
    /// session. Past the bounds on connections not yet authenticated, the oldest of its
    /// source (or of the busiest) is closed to make room.
    pub fn serve_connection(
        &self,
        socket: Box<dyn Socket>,
        peer: std::net::SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (pending, evicted) = self.shared.admission.enter(peer.ip());
        if evicted {
            self.shared.metrics.reject(Reject::Admission);
        }
        let (shared, stopped) = (self.shared.clone(), self.stop.subscribe());
        serve_socket(shared, socket, peer.to_string(), pending, stopped)
    }

    /// The relay's upkeep until it shuts down: tombstones purged past the horizon, and
    /// over a shared store the feeds of connected devices read for other relays' writes.
    /// [`serve`] runs it; an application that serves connections itself runs it beside them.
    pub fn upkeep(&self) -> impl Future<Output = ()> + Send + 'static {
        let (shared, stopped) = (self.shared.clone(), self.stop.subscribe());
        async move {
            let feeds = async {
                if shared.store.shared() {
                    poll_feeds(shared.clone(), stopped.clone()).await;
                }
            };
            tokio::join!(upkeep(shared.clone(), stopped.clone()), feeds);
        }
    }

    /// Tells every connection the relay is going: sessions end after the call they are
    /// in (`Refused`, close), connections not yet authenticated at once; connections
    /// handed over later end at once.
    pub fn shut_down(&self) {
        // Kept without receivers too: a connection subscribes later and sees it.
        self.stop.send_replace(true);
    }
}

/// Serves devices on `listener` over `store` until `shutdown` resolves; then stops
/// accepting, tells every device the relay is going (`Refused`, close) after the call it is
/// in, and waits up to the drain timeout for them.
pub async fn serve<S: CloudStore>(
    listener: TcpListener,
    store: S,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) {
    let relay = Relay::new(store, config);
    let shared = relay.shared.clone();
    let mut tasks = JoinSet::new();
    tasks.spawn(relay.upkeep());
    tasks.spawn(relay.serve_metrics());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections as we go, so the set stays the size of what runs.
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = shared.config.tls.clone() else {
            tasks.spawn(relay.serve_connection(Box::new(tcp), peer));
            continue;
        };
        // The TLS handshake counts as a pending connection's, bounded the same way.
        let (pending, evicted) = shared.admission.enter(peer.ip());
        if evicted {
            shared.metrics.reject(Reject::Admission);
        }
        let (shared, mut stopped) = (shared.clone(), relay.stop.subscribe());
        tasks.spawn(async move {
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
            let accept = tokio::time::timeout(shared.config.handshake_timeout, accept);
            let socket: Box<dyn Socket> =
                match until_stopped(&mut stopped, pending.unless_evicted(accept)).await {
                    Some(Some(Ok(Ok(tls)))) => Box::new(tls),
                    Some(Some(Ok(Err(e)))) => {
                        tracing::info!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Some(Some(Err(_))) => {
                        tracing::info!(%peer, "no TLS handshake in time");
                        return;
                    }
                    Some(None) | None => return,
                };
            serve_socket(shared, socket, peer.to_string(), pending, stopped).await;
        });
    }
    tracing::info!("shutting down");
    relay.shut_down();
    drop(listener);
    let drained = tokio::time::timeout(shared.config.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain timeout");
    }
}

/// Resolves once the relay stops (at once if it has).
async fn stop_of(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// `work`, unless the relay stops first (`None`): what a connection does before it is a
/// session (TLS, the HTTP head, the handshake) ends at once at shutdown.
pub(crate) async fn until_stopped<T>(
    stopped: &mut watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        // A relay that stopped serves nothing more, even work that is ready.
        biased;
        _ = stopped.wait_for(|stopped| *stopped) => None,
        done = work => Some(done),
    }
}

/// The HTTP front of one connection: metrics, or the upgrade into a device session.
async fn serve_socket<S: CloudStore>(
    shared: Arc<Shared<S>>,
    mut socket: Box<dyn Socket>,
    peer: String,
    pending: Pending,
    stopped: watch::Receiver<bool>,
) {
    let mut stopped = stopped;
    let head = tokio::time::timeout(http::HEAD_TIMEOUT, http::read_request(&mut socket));
    let request = match until_stopped(&mut stopped, pending.unless_evicted(head)).await {
        Some(Some(Ok(Ok(request)))) => request,
        _ => return,
    };
    let text = "text/plain; charset=utf-8";
    match request {
        Request::Metrics => {
            answer_metrics(&shared, &mut socket, !shared.metrics_elsewhere).await;
        }
        Request::Other(status) => {
            let _ = http::respond(&mut socket, status, text, status).await;
        }
        Request::Upgrade { key, rest } => {
            if http::accept_upgrade(&mut socket, &key).await.is_err() {
                return;
            }
            // Until the Hello verifies (`connection::serve` widens it).
            let config = Some(ferry_protocol::hello_ws_config());
            let ws = WebSocketStream::from_partially_read(socket, rest, Role::Server, config).await;
            crate::connection::serve(shared, ws, peer, pending, stopped).await;
        }
    }
}

/// Answers `GET /metrics` where it is served (`served`), else 404.
async fn answer_metrics<S>(
    shared: &Shared<S>,
    socket: &mut (impl AsyncWrite + Unpin),
    served: bool,
) {
    let _ = match served {
        true => {
            let body = shared.metrics.render();
            http::respond(socket, "200 OK", METRICS_KIND, &body).await
        }
        false => {
            let text = "text/plain; charset=utf-8";
            http::respond(socket, "404 Not Found", text, "404 Not Found").await
        }
    };
}

/// Periodic store upkeep (tombstone purging), a few times per horizon and at least every
/// minute.
async fn upkeep<S: CloudStore>(shared: Arc<Shared<S>>, mut stopped: watch::Receiver<bool>) {
    let horizon_ms = (shared.store.session().await).map_or(u64::MAX, |s| s.horizon_ms);
    let every = Duration::from_millis((horizon_ms / 8).clamp(250, 60_000));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop_of(&mut stopped) => return,
            _ = tick.tick() => shared.store.maintain().await,
        }
    }
}

/// Over a shared store, other relays write too: read the feed of every scope a connected
/// device holds and send what is new live. Each feed is re-read from its cursor (never
/// past `safe`), so a change seen once is remembered until the cursor passes it.
async fn poll_feeds<S: CloudStore>(shared: Arc<Shared<S>>, mut stopped: watch::Receiver<bool>) {
    let mut feeds: BTreeMap<String, Feed> = BTreeMap::new();
    let mut tick = tokio::time::interval(shared.config.poll_interval);
    loop {
        tokio::select! {
            _ = stop_of(&mut stopped) => return,
            _ = tick.tick() => {}
        }
        let scopes = shared.hub.scopes();
        feeds.retain(|scope, _| scopes.contains(scope));
        for scope in scopes {
            let feed = feeds
                .entry(scope.clone())
                .or_insert_with(|| Feed::starting_at((shared.config.clock)()));
            feed.poll(&shared, &scope).await;
        }
    }
}

/// Where the poller stands in one scope's feed.
struct Feed {
    cursor: Hlc,
    /// Changes already sent, by `_seq`, until the cursor passes them.
    seen: BTreeSet<(Hlc, Key, Version)>,
}

/// How far back a feed the poller meets for the first time is read: devices caught up
/// with what came before by their own pulls when they connected.
const FEED_START_BACK_MS: u64 = 30_000;

impl Feed {
    fn starting_at(now_ms: u64) -> Feed {
        Feed {
            cursor: Hlc::new(now_ms.saturating_sub(FEED_START_BACK_MS), 0),
            seen: BTreeSet::new(),
        }
    }

    async fn poll<S: CloudStore>(&mut self, shared: &Shared<S>, scope: &str) {
        let start = self.cursor;
        let mut after = start;
        loop {
            let page = match shared.store.read(scope, PullFrom::Since(after), 500).await {
                Ok(page) => page,
                // The poller was away past the horizon: go on from now.
                Err(TransportError::Expired) => {
                    *self = Feed::starting_at((shared.config.clock)());
                    return;
                }
                Err(e) => {
                    tracing::warn!(scope, error = %e, "polling the feed failed");
                    return;
                }
            };
            let last = page.changes.last().map(|(seq, _)| *seq);
            let mut fresh = Vec::new();
            for (seq, change) in page.changes {
                if self
                    .seen
                    .insert((seq, change.key.clone(), change.version.clone()))
                {
                    fresh.push(change);
                }
            }
            shared.hub.fan_out(None, &fresh, &shared.metrics);
            self.cursor = cursor_after(self.cursor, last, page.more, page.safe);
            match (page.more, last) {
                (true, Some(last)) => after = last,
                _ => break,
            }
        }
        let cursor = self.cursor;
        self.seen.retain(|(seq, _, _)| *seq > cursor);
    }
}

#[cfg(test)]
mod tests {
    use ferry_protocol::Frame;
    use futures_util::{SinkExt, StreamExt};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::{EmbeddedStore, Secret};

    /// Fuzzing on stable (`cargo xtask fuzz` runs it for longer): hostile first frames,
    /// random bytes or a device's `Hello` damaged, sent over a real WebSocket to the
    /// relay's own connection code. Each is answered with `Refused` or a close, the
    /// connection's task never panics, and an honest device connects after them all.
    #[test]
    fn fuzz_hostile_first_frames_are_refused_and_an_honest_device_connects_after() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let models = ferry_cloud::Models::unchecked();
        let store = EmbeddedStore::open(dir.path(), 60_000, models).unwrap();
        let secret = Secret::new((0..32).collect()).unwrap();
        let relay = Relay::new(store, RelayConfig::new(secret.clone()));
        let token = secret
            .sign("dev", ["dev".to_string()].into(), 3_600)
            .unwrap();
        let hello = ferry_protocol::encode(&Frame::Hello {
            token,
            replica: "0000000000000000000000DEV1".into(),
        });
        let damaged =
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6)
                .prop_map({
                    let hello = hello.clone();
                    move |edits| {
                        let mut bytes = hello.clone();
                        for (at, byte, how) in edits {
                            let at = at.index(bytes.len() + 1);
                            match how {
                                0 if at < bytes.len() => bytes[at] ^= byte | 1,
                                1 => bytes.insert(at, byte),
                                _ => bytes.truncate(at),
                            }
                        }
                        bytes
                    }
                });
        let random = prop::collection::vec(any::<u8>(), 0..2_048);
        let persistence = FileFailurePersistence::WithSource("proptest-regressions");
        let config = Config {
            failure_persistence: Some(Box::new(persistence)),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let answered = runner.run(&prop_oneof![random, damaged], |bytes| {
            let answer = runtime.block_on(first_answer(&relay, bytes.clone()));
            let answer = answer.map_err(TestCaseError::fail)?;
            let refused = matches!(answer, None | Some(Frame::Refused { .. }));
            // Welcome exactly when the bytes are a Hello whose token verifies and whose
            // replica is an id (a damaged one can be: base64 leaves a token's last bits free).
            let welcome = matches!(answer, Some(Frame::Welcome(_)));
            let valid = (ferry_protocol::decode_hello(&bytes).ok()).is_some_and(|(token, id)| {
                secret.verify(&token).is_ok() && ferry_types::ReplicaId::parse(&id).is_ok()
            });
            prop_assert!(refused != welcome && welcome == valid, "{answer:?}");
            Ok(())
        });
        answered.unwrap();
        let honest = runtime.block_on(first_answer(&relay, hello)).unwrap();
        assert!(matches!(honest, Some(Frame::Welcome(_))), "{honest:?}");
    }

    /// Opens a WebSocket to `relay` over a pipe, sends `bytes` as the first frame, and
    /// returns the relay's answer (`None`: it closed without one). An error when the
    /// connection's task panicked or the relay did not answer in time.
    async fn first_answer(
        relay: &Relay<EmbeddedStore>,
        bytes: Vec<u8>,
    ) -> Result<Option<Frame>, String> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let peer = "10.0.0.2:4000".parse().unwrap();
        let served = tokio::spawn(relay.serve_connection(Box::new(far), peer));
        let (mut ws, _) = tokio_tungstenite::client_async("ws://relay/", near)
            .await
            .map_err(|e| e.to_string())?;
        let _ = ws.send(Message::Binary(bytes.into())).await;
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => return ferry_protocol::decode(&bytes).ok(),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .map_err(|_| "no answer in 5 s".to_string())?;
        drop(ws);
        match tokio::time::timeout(Duration::from_secs(5), served).await {
            Ok(Ok(())) => Ok(answer),
            Ok(Err(e)) => Err(format!("the connection's task failed: {e}")),
            Err(_) => Err("the connection did not end".into()),
        }
    }

    /// An application that serves connections itself: once shut down, a connection handed
    /// over later gets nothing, also when none was open at the shutdown.
    #[test]
    fn a_relay_shut_down_before_any_connection_serves_none_after() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let models = ferry_cloud::Models::unchecked();
            let store = EmbeddedStore::open(dir.path(), 1_000, models).unwrap();
            let secret = Secret::new((0..32).collect()).unwrap();
            let relay = Relay::new(store, RelayConfig::new(secret));
            relay.shut_down();
            let (mut near, far) = tokio::io::duplex(4096);
            let peer = "10.0.0.1:4000".parse().unwrap();
            let served = tokio::spawn(relay.serve_connection(Box::new(far), peer));
            near.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = near.read_to_end(&mut answer).await;
            served.await.unwrap();
            assert_eq!(String::from_utf8_lossy(&answer), "", "no answer");
        });
    }
}
