//! The WebSocket transport (docs/design.md section 8): a device keeps one connection to Ferry's relay
//! and speaks `ferry-protocol`'s frames over it.
//!
//! [`WsTransport::connect`] opens the connection (TCP, TLS for `wss://` with rustls, the
//! WebSocket handshake, then `Hello` with the device token) and answers the relay's
//! `Welcome` as the transport's session. One task per connection then owns the socket:
//! it sends each call's frame, matches answers to calls by id, and hands `Live` frames to
//! [`Transport::live`]. When the connection drops, every call in flight and every later
//! one fails with `Unavailable` until the driver connects again; the sync engine's
//! backoff paces the reconnects.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_cloud::{PullFrom, PullPage, PushResults, Session, Transport, TransportError};
use ferry_journal::Change;
use ferry_protocol::{Frame, decode, encode, ws_config};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// How long opening a connection (TCP, TLS, WebSocket, `Hello`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls waiting for the connection's task at most.
const CALLS_QUEUED_MAX: usize = 64;
/// Batches of live changes waiting for the driver at most, and their frames' bytes; past
/// either a batch is dropped (live changes are an early copy: the pulls bring everything),
/// so a relay that floods a device holds little of its memory.
const LIVE_QUEUED_MAX: usize = 64;
const LIVE_QUEUED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why a relay address or certificate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a `ws://` or `wss://` URL with a host.
    #[error("relay URL '{url}': {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A CA file that cannot be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The transport to one relay, as one device.
pub struct WsTransport {
    url: String,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: String,
    replica: String,
    next_id: AtomicU64,
    connection: Mutex<Option<Connection>>,
    live_tx: mpsc::Sender<Live>,
    live_rx: tokio::sync::Mutex<mpsc::Receiver<Live>>,
    /// The frame bytes of the live batches waiting.
    live_bytes: Arc<std::sync::atomic::AtomicUsize>,
    dialer: Option<Dialer>,
}

/// A batch of live changes and the bytes of the frame it came in.
type Live = (Vec<Change>, usize);

/// Opens the byte stream a connection runs over, in place of TCP to the URL's host: a
/// proxy, a UNIX socket, an in-memory pipe to a relay in the same process.
pub type Dialer = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Socket>>> + Send>,
        > + Send
        + Sync,
>;

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("url", &self.url)
            .finish()
    }
}

/// A live connection's handle: the queue to its task, and why it closed once it has.
#[derive(Clone)]
struct Connection {
    calls: mpsc::Sender<Call>,
    closed: Arc<Mutex<Option<String>>>,
}

/// One call for the connection's task: the encoded frame and where its answer goes.
struct Call {
    id: u64,
    frame: Bytes,
    answer: oneshot::Sender<Frame>,
}

impl WsTransport {
    /// A transport to the relay at `url` (`ws://HOST:PORT` or `wss://HOST[:PORT]`),
    /// presenting `token`, as replica `replica`. `wss` trusts the public web roots; see
    /// [`WsTransport::with_ca_file`] for a private CA.
    pub fn new(url: &str, token: &str, replica: &str) -> Result<WsTransport, ConfigError> {
        let invalid = |reason: &str| ConfigError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let request = url
            .into_client_request()
            .map_err(|e| invalid(&e.to_string()))?;
        let uri = request.uri();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("the scheme must be ws or wss")),
        };
        let host = (uri.host())
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = secure.then(|| tls_config(Vec::new())).transpose()?;
        let (live_tx, live_rx) = mpsc::channel(LIVE_QUEUED_MAX);
        Ok(WsTransport {
            url: url.to_string(),
            host,
            port,
            tls,
            token: token.to_string(),
            replica: replica.to_string(),
            next_id: AtomicU64::new(1),
            connection: Mutex::new(None),
            live_tx,
            live_rx: tokio::sync::Mutex::new(live_rx),
            live_bytes: Arc::default(),
            dialer: None,
        })
    }

    /// The same transport opening its connections with `dialer` instead of TCP (TLS and
    /// the WebSocket handshake still follow the URL).
    pub fn with_dialer(mut self, dialer: Dialer) -> WsTransport {
        self.dialer = Some(dialer);
        self
    }

    /// The same transport trusting, for `wss`, the certificates in the PEM file `path`
    /// too (a relay with a private or self-signed certificate).
    pub fn with_ca_file(mut self, path: &Path) -> Result<WsTransport, ConfigError> {
        let fail = |reason: String| ConfigError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let certs = (CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no certificate in it".into()));
        }
        if self.tls.is_some() {
            self.tls = Some(tls_config(certs)?);
        }
        Ok(self)
    }

    fn current(&self) -> Option<Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends `frame` (built with a fresh id) and waits for the relay's answer to it.
    async fn call(&self, frame: impl FnOnce(u64) -> Frame) -> Result<Frame, TransportError> {
        let connection = self
            .current()
            .ok_or_else(|| TransportError::Unavailable("not connected to the relay".into()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        let call = Call {
            id,
            frame: Bytes::from(encode(&frame(id))),
            answer,
        };
        let closed = || {
            let reason = connection.closed.lock().unwrap_or_else(|p| p.into_inner());
            let reason = reason.as_deref().unwrap_or("the connection closed");
            TransportError::Unavailable(format!("relay connection lost: {reason}"))
        };
        connection.calls.send(call).await.map_err(|_| closed())?;
        match answered.await.map_err(|_| closed())? {
            Frame::Failed { error, .. } => Err(error),
            frame => Ok(frame),
        }
    }

    /// TCP, TLS when `wss`, the WebSocket handshake.
    async fn open(&self) -> Result<WebSocketStream<Box<dyn Socket>>, TransportError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            TransportError::Unavailable(format!("{what} {}: {e}", self.url))
        };
        let tcp: Box<dyn Socket> = match &self.dialer {
            Some(dial) => dial().await.map_err(|e| unavailable("cannot reach", &e))?,
            None => {
                let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| unavailable("cannot reach", &e))?;
                let _ = tcp.set_nodelay(true);
                Box::new(tcp)
            }
        };
        let socket: Box<dyn Socket> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| unavailable("bad TLS name for", &e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unavailable("TLS with", &e))?;
                Box::new(tls)
            }
        };
        let (ws, _) = client_async_with_config(self.url.as_str(), socket, Some(ws_config()))
            .await
            .map_err(|e| unavailable("WebSocket handshake with", &e))?;
        Ok(ws)
    }

    async fn handshake(
        &self,
    ) -> Result<(WebSocketStream<Box<dyn Socket>>, Session), TransportError> {
        let mut ws = self.open().await?;
        let hello = Frame::Hello {
            token: self.token.clone(),
            replica: self.replica.clone(),
        };
        let lost = |e: &dyn std::fmt::Display| {
            TransportError::Unavailable(format!("relay {} during the handshake: {e}", self.url))
        };
        ws.send(Message::Binary(Bytes::from(encode(&hello))))
            .await
            .map_err(|e| lost(&e))?;
        loop {
            let message = ws.next().await.ok_or_else(|| lost(&"closed"))?;
            match message.map_err(|e| lost(&e))? {
                Message::Binary(bytes) => {
                    return match decode(&bytes).map_err(|e| lost(&e))? {
                        Frame::Welcome(session) => Ok((ws, session)),
                        Frame::Refused {
                            reason,
                            credentials: true,
                        } => Err(TransportError::Unauthorized(reason)),
                        Frame::Refused { reason, .. } => Err(lost(&reason)),
                        other => Err(lost(&format!("unexpected frame {}", other.name()))),
                    };
                }
                Message::Close(frame) => {
                    return Err(lost(
                        &frame.map_or("closed".into(), |f| f.reason.to_string()),
                    ));
                }
                _ => {}
            }
        }
    }
}

impl Transport for WsTransport {
    async fn connect(&self) -> Result<Session, TransportError> {
        // A new connection replaces the old one; dropping its handle ends its task.
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (ws, session) = tokio::time::timeout(CONNECT_TIMEOUT, self.handshake())
            .await
            .map_err(|_| TransportError::Timeout(CONNECT_TIMEOUT.as_millis() as u64))??;
        let (calls, queued) = mpsc::channel(CALLS_QUEUED_MAX);
        let closed = Arc::new(Mutex::new(None));
        let live = LiveQueue {
            batches: self.live_tx.clone(),
            bytes: self.live_bytes.clone(),
        };
        tokio::spawn(run(ws, queued, live, closed.clone()));
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Connection { calls, closed });
        Ok(session)
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        match self.call(|id| Frame::Push { id, changes }).await? {
            Frame::Pushed { results, .. } => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    async fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let pull = |id| Frame::Pull {
            id,
            scope: scope.to_string(),
            from,
            limit: limit as u64,
        };
        match self.call(pull).await? {
            Frame::Page { page, .. } => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    async fn get(&self, key: &ferry_types::Key) -> Result<Option<Change>, TransportError> {
        let key = key.clone();
        match self.call(|id| Frame::Get { id, key }).await? {
            Frame::Got { change, .. } => Ok(change),
            other => Err(unexpected(&other)),
        }
    }

    async fn live(&self) -> Result<Vec<Change>, TransportError> {
        // The transport holds a sender, so the queue never ends: while disconnected, this
        // waits (the driver must not spin on a closed stream).
        let mut live = self.live_rx.lock().await;
        let (changes, bytes) = live.recv().await.unwrap_or_default();
        self.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
        Ok(changes)
    }
}

fn unexpected(frame: &Frame) -> TransportError {
    TransportError::Unavailable(format!(
        "relay answered with an unexpected {}",
        frame.name()
    ))
}

/// A byte stream a WebSocket runs over: TCP, TLS over TCP, or what a [`Dialer`] opens.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// Where the connection's task leaves live batches for the driver.
struct LiveQueue {
    batches: mpsc::Sender<Live>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl LiveQueue {
    /// Leaves `changes` (from a frame of `bytes`) unless the queue is full.
    fn offer(&self, changes: Vec<Change>, bytes: usize) {
        let held = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if held + bytes > LIVE_QUEUED_BYTES_MAX || self.batches.try_send((changes, bytes)).is_err()
        {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// The connection's task: sends calls, routes answers by id and live frames to the
/// driver, until the socket fails, the relay closes or the transport drops the handle.
async fn run(
    mut ws: WebSocketStream<Box<dyn Socket>>,
    mut calls: mpsc::Receiver<Call>,
    live: LiveQueue,
    closed: Arc<Mutex<Option<String>>>,
) {
    let mut waiting: HashMap<u64, oneshot::Sender<Frame>> = HashMap::new();
    let reason = loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else {
                    let _ = ws.close(None).await;
                    break "the device closed it".to_string();
                };
                waiting.insert(call.id, call.answer);
                if let Err(e) = ws.send(Message::Binary(call.frame)).await {
                    break e.to_string();
                }
            }
            message = ws.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Close(frame))) => {
                        break frame.map_or("the relay closed it".into(), |f| f.reason.to_string());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break e.to_string(),
                    None => break "the relay closed it".to_string(),
                };
                match decode(&bytes) {
                    Ok(Frame::Live { changes }) => live.offer(changes, bytes.len()),
                    Ok(Frame::Refused { reason, .. }) => break reason,
                    Ok(answer) => {
                        let id = answer.call_id();
                        if let Some(waiter) = id.and_then(|id| waiting.remove(&id)) {
                            let _ = waiter.send(answer);
                        }
                    }
                    Err(e) => break format!("the relay sent a bad frame: {e}"),
                }
            }
        }
    };
    *closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    // Dropping `waiting` fails the calls in flight.
}

/// rustls with the ring provider, trusting the public web roots and `extra`.
fn tls_config(
    extra: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        // A certificate rustls cannot use as a root is left out; the handshake then fails
        // naming the certificate problem.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay that floods a device with live frames holds at most the bounds of its
    /// memory: past 16 MiB of frames, or 64 batches, batches are dropped (the pulls bring
    /// them), and the driver taking one frees its room.
    #[test]
    fn live_batches_past_the_bounds_are_dropped() {
        let transport = WsTransport::new("ws://relay:1", "t", "r").unwrap();
        let live = LiveQueue {
            batches: transport.live_tx.clone(),
            bytes: transport.live_bytes.clone(),
        };
        let frame = LIVE_QUEUED_BYTES_MAX / 2;
        for _ in 0..3 {
            live.offer(Vec::new(), frame);
        }
        assert_eq!(
            live.bytes.load(Ordering::Acquire),
            2 * frame,
            "past the bytes"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(transport.live()).unwrap();
        assert_eq!(
            live.bytes.load(Ordering::Acquire),
            frame,
            "taken: room again"
        );
        runtime.block_on(transport.live()).unwrap();
        for _ in 0..LIVE_QUEUED_MAX + 5 {
            live.offer(Vec::new(), 1);
        }
        assert_eq!(
            live.bytes.load(Ordering::Acquire),
            LIVE_QUEUED_MAX,
            "past the batches, nothing counted"
        );
    }

    #[test]
    fn a_relay_address_that_cannot_work_is_refused_by_name() {
        for (url, why) in [
            ("http://relay:80", "the scheme must be ws or wss"),
            ("ws://", ""),
            ("not a url", ""),
        ] {
            let error = WsTransport::new(url, "token", "r").unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("relay URL '{url}'")) && error.contains(why),
                "{error}"
            );
        }
        let ok = WsTransport::new("wss://relay.example", "token", "r").unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("relay.example", 443));
        let dir = std::env::temp_dir().join(format!("ferry-ws-ca-{}", std::process::id()));
        std::fs::write(&dir, "no certificate here").unwrap();
        let error = ok.with_ca_file(&dir).unwrap_err().to_string();
        assert!(error.contains("no certificate in it"), "{error}");
        let _ = std::fs::remove_file(&dir);
    }
}
