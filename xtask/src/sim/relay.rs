//! The relay path: devices reach the cloud through the relay's own connection logic, frame
//! codec and embedded store, in process.
//!
//! Each device's `ferry-ws` transport dials an in-memory pipe whose far end the relay
//! serves. The link's faults cut a connection in the middle of a frame: before the relay
//! has the whole request (a dropped call), or once the relay has answered and the device
//! has read part of it (a lost answer). A partitioned link cannot dial. Tokens are minted at
//! the relay's clock with lifetimes of minutes to hours, so they expire mid-session. The
//! relay restarts from what its disk had fsynced, and its wall clock steps like the
//! devices'. One TCP-like connection neither duplicates nor reorders a frame, so the
//! memory path's duplicated and late pushes have no counterpart here.
//!
//! Everything runs on one current-thread tokio runtime that moves only while a device's
//! call waits for its answer, so a seed replays. (Timers of the relay run on real time:
//! the shortest, a token's lifetime, is minutes, far longer than a seed runs; expiry is
//! checked at every frame against the relay's virtual clock.)

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry::replication::{
    Grant, Models, PullFrom, PullPage, PushOutcome, Session, Transport, TransportError,
};
use ferry::types::{Key, Version};
use ferry_journal::Change;
use ferry_relay::{Claims, EmbeddedStore, Relay, RelayConfig, Secret};
use ferry_ws::WsTransport;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::sim::faults::{Link, PushFate, lock};
use crate::sim::model::MINUTE_MS;
use crate::sim::world::{SHARED_SCOPE, copy_dir, scratch_dir};

/// Bytes a pipe buffers each way: a page larger than this crosses in several writes.
const PIPE_BYTES: usize = 256 * 1024;
/// Real time a call may take before the run fails: the relay answers every call at once.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// A token's lifetime, in virtual ms: minutes to hours, so that some expire mid-session.
const TOKEN_LIFETIME_MS: std::ops::RangeInclusive<i64> = 10 * MINUTE_MS..=6 * 60 * MINUTE_MS;

/// The relay process: its runtime and server over its directory, restarted from what the
/// disk held.
pub struct RelayNode {
    running: Mutex<Option<Running>>,
    dir: tempfile::TempDir,
    /// The directory as the last fsync left it: what a restart goes back to (kept only
    /// when the seed has power losses; a restart is otherwise a killed process, whose
    /// writes the OS keeps).
    durable: Option<tempfile::TempDir>,
    secret: Secret,
    models: Models,
    horizon_ms: u64,
    /// The relay's wall clock (epoch ms).
    clock: Arc<AtomicI64>,
    /// Its monotonic clock: virtual time, whatever the wall clock does.
    timer: Arc<AtomicI64>,
}

struct Running {
    runtime: tokio::runtime::Runtime,
    relay: Arc<Relay<EmbeddedStore>>,
}

impl RelayNode {
    /// A relay over an empty store, its clock at `now_ms`.
    pub fn start(
        models: Models,
        horizon_ms: u64,
        now_ms: i64,
        power_losses: bool,
    ) -> Result<RelayNode> {
        let directory =
            || tempfile::tempdir_in(scratch_dir()).context("creating a relay directory");
        let node = RelayNode {
            running: Mutex::new(None),
            dir: directory()?,
            durable: power_losses.then(directory).transpose()?,
            secret: Secret::new((1..=32).collect()).context("the relay's secret")?,
            models,
            horizon_ms,
            clock: Arc::new(AtomicI64::new(now_ms)),
            timer: Arc::new(AtomicI64::new(now_ms)),
        };
        node.boot()?;
        Ok(node)
    }

    fn boot(&self) -> Result<()> {
        // Whatever is in the directory after an fsync is what a power loss leaves.
        let disk = self.durable.as_ref().map(|durable| {
            let (dir, durable) = (self.dir.path().to_path_buf(), durable.path().to_path_buf());
            let disk: ferry::FsyncHook = Arc::new(move || {
                let _ = copy_dir(&dir, &durable);
                Ok(())
            });
            disk
        });
        let read = |clock: &Arc<AtomicI64>| -> ferry_relay::Clock {
            let clock = Arc::clone(clock);
            Arc::new(move || clock.load(Ordering::SeqCst) as u64)
        };
        let (clock, timer) = (read(&self.clock), read(&self.timer));
        let store = EmbeddedStore::open_observed(
            self.dir.path(),
            self.horizon_ms,
            self.models.clone(),
            disk,
        )
        .context("opening the relay's store")?
        .with_clocks(Arc::clone(&clock), timer);
        let mut config = RelayConfig::new(self.secret.clone());
        config.clock = clock;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .context("starting the relay's runtime")?;
        let relay = Arc::new(Relay::new(store, config));
        *lock(&self.running) = Some(Running { runtime, relay });
        Ok(())
    }

    /// The relay's process dies, or its host loses power, and starts again: every
    /// connection ends; after a power loss the directory goes back to the last fsync.
    /// The store reopens from the directory.
    pub fn restart(&self) -> Result<()> {
        // Dropping the runtime drops every task with it: connections, and the last
        // handles of the store.
        drop(lock(&self.running).take());
        if let Some(durable) = &self.durable {
            copy_dir(durable.path(), self.dir.path())?;
        }
        self.boot()
    }

    /// Time moves to `now_ms`; the relay's wall clock reads `relay_skew_ms` off it.
    pub fn set_clocks(&self, now_ms: i64, relay_skew_ms: i64) {
        self.timer.store(now_ms, Ordering::SeqCst);
        self.clock.store(now_ms + relay_skew_ms, Ordering::SeqCst);
    }

    /// The store, for the simulator's own reads and cloud writes.
    pub fn with_store<T>(&self, read: impl FnOnce(&EmbeddedStore) -> T) -> Result<T> {
        let running = lock(&self.running);
        let running = running.as_ref().context("the relay is down")?;
        Ok(read(running.relay.store()))
    }

    /// Runs `call` on the relay's runtime until it answers (every task it wakes, the
    /// relay's included, runs meanwhile).
    fn run<T>(
        &self,
        link: &Link,
        call: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let running = lock(&self.running);
        let running = running.as_ref().ok_or_else(down)?;
        let timed = async { tokio::time::timeout(CALL_LIMIT, call).await };
        match running.runtime.block_on(timed) {
            Ok(answer) => answer,
            Err(_) => {
                let what = "a call through the relay got no answer: a task is stuck";
                lock(link).violations.push(what.into());
                Err(TransportError::Timeout(CALL_LIMIT.as_millis() as u64))
            }
        }
    }

    fn relay(&self) -> Result<Arc<Relay<EmbeddedStore>>, TransportError> {
        let running = lock(&self.running);
        Ok(Arc::clone(&running.as_ref().ok_or_else(down)?.relay))
    }

    /// A token for `device` minted now by the relay's clock, valid for `lifetime_ms`.
    fn token(&self, device: &str, lifetime_ms: i64) -> Result<String, TransportError> {
        let iat = (self.clock.load(Ordering::SeqCst) / 1000) as u64;
        let claims = Claims {
            sub: device.to_string(),
            scopes: [SHARED_SCOPE.to_string(), device.to_string()].into(),
            iat,
            exp: iat + (lifetime_ms / 1000) as u64,
            service: false,
        };
        (self.secret.sign_claims(&claims)).map_err(|e| TransportError::Unauthorized(e.to_string()))
    }
}

/// Only between a restart's stop and start, which no call sees.
fn down() -> TransportError {
    TransportError::Unavailable("the relay is down".into())
}

/// The cloud developer's writes on the relay path: a service writing to the relay's store.
pub fn service() -> Grant {
    Grant::service("cloud", None)
}

/// Where the next cut falls, if the link's dice said so for the call being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Part of the request's frame leaves, then the connection dies.
    Request,
    /// The answer arrives in part, then the connection dies.
    Answer,
}

type Armed = Arc<Mutex<Option<Cut>>>;

/// One device's transport on the relay path: `ferry-ws` over a pipe the link cuts.
pub struct RelayTransport {
    pub node: Arc<RelayNode>,
    pub link: Link,
    pub device: String,
    /// The address the relay sees the device at.
    pub address: IpAddr,
    pub replica: String,
    connection: Mutex<Option<(Arc<WsTransport>, Armed)>>,
}

impl RelayTransport {
    pub fn new(node: Arc<RelayNode>, link: Link, index: usize, replica: String) -> Self {
        RelayTransport {
            node,
            link,
            device: format!("d{index}"),
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1)),
            replica,
            connection: Mutex::new(None),
        }
    }

    /// The connection a call goes over, unless the link is down (which also ends it).
    fn connection(&self) -> Result<(Arc<WsTransport>, Armed), TransportError> {
        let partitioned = lock(&self.link).offline_steps > 0;
        let mut connection = lock(&self.connection);
        if partitioned {
            *connection = None;
            return Err(TransportError::Unavailable("partitioned".into()));
        }
        (connection.clone()).ok_or_else(|| TransportError::Unavailable("not connected".into()))
    }

    /// Makes one call, with the cut the link's dice chose armed for it.
    fn call<T, F>(
        &self,
        cut: Option<Cut>,
        call: impl FnOnce(Arc<WsTransport>) -> F,
    ) -> Result<T, TransportError>
    where
        F: Future<Output = Result<T, TransportError>>,
    {
        let (ws, armed) = self.connection()?;
        *lock(&armed) = cut;
        let answer = self.node.run(&self.link, call(ws));
        *lock(&armed) = None;
        if let Err(e) = &answer {
            lock(&self.link).events.push(format!("call failed: {e}"));
        }
        answer
    }

    fn connect_now(&self) -> Result<Session, TransportError> {
        *lock(&self.connection) = None;
        if lock(&self.link).offline_steps > 0 {
            return Err(TransportError::Unavailable("partitioned".into()));
        }
        let lifetime_ms = lock(&self.link).draw_ms(TOKEN_LIFETIME_MS);
        let token = self.node.token(&self.device, lifetime_ms)?;
        let armed: Armed = Arc::default();
        // Weak: a restarted relay's store must close, whatever transports still exist.
        let relay = Arc::downgrade(&self.node.relay()?);
        let (cut, peer) = (Arc::clone(&armed), SocketAddr::new(self.address, 40000));
        let dialer: ferry_ws::Dialer = Arc::new(move || {
            let Some(relay) = relay.upgrade() else {
                let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "relay restarted");
                return Box::pin(std::future::ready(Err(refused)));
            };
            let (near, far) = tokio::io::duplex(PIPE_BYTES);
            tokio::spawn(relay.serve_connection(Box::new(far), peer));
            let near = CutPipe {
                pipe: Some(near),
                armed: Arc::clone(&cut),
            };
            Box::pin(std::future::ready(Ok(
                Box::new(near) as Box<dyn ferry_ws::Socket>
            )))
        });
        let ws = WsTransport::new("ws://relay.sim", &token, &self.replica)
            .map_err(|e| TransportError::Unavailable(e.to_string()))?
            .with_dialer(dialer);
        let ws = Arc::new(ws);
        let session = self.node.run(&self.link, ws.connect());
        let event = match &session {
            Ok(_) => format!("connected, the token lasts {} min", lifetime_ms / MINUTE_MS),
            Err(e) => format!("connecting failed: {e}"),
        };
        lock(&self.link).events.push(event);
        if session.is_ok() {
            *lock(&self.connection) = Some((ws, armed));
        }
        session
    }

    fn push_now(
        &self,
        changes: Vec<Change>,
    ) -> Result<Vec<(Key, Version, PushOutcome)>, TransportError> {
        let fate = {
            let mut link = lock(&self.link);
            let fate = link.push_fate();
            link.events
                .push(format!("push of {} changes: {fate:?}", changes.len()));
            fate
        };
        let cut = match fate {
            PushFate::Drop => Some(Cut::Request),
            PushFate::LoseAnswer => Some(Cut::Answer),
            PushFate::Deliver | PushFate::Duplicate | PushFate::Delay => None,
        };
        self.call(cut, |ws| async move { ws.push(changes).await })
    }

    fn pull_now(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let (cut, limit) = {
            let mut link = lock(&self.link);
            let rates = link.rates;
            let cut = if link.roll(rates.drop) {
                Some(Cut::Request)
            } else if link.roll(rates.lose_answer) {
                Some(Cut::Answer)
            } else {
                None
            };
            // A smaller page asked for: the relay's answer says there is more.
            let limit = match link.roll(rates.truncate) {
                true => link.draw_ms(1..=(limit.clamp(1, 3) as i64)) as usize,
                false => limit,
            };
            (cut, limit)
        };
        let page = self.call(cut, |ws| async move { ws.pull(scope, from, limit).await });
        if page == Err(TransportError::Expired) {
            let mut link = lock(&self.link);
            link.expired += 1;
            link.events.push(format!("pull of '{scope}': expired"));
        }
        page
    }
}

impl RelayTransport {
    fn get_now(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        let cut = {
            let mut link = lock(&self.link);
            let rates = link.rates;
            match (link.roll(rates.drop), link.roll(rates.lose_answer)) {
                (true, _) => Some(Cut::Request),
                (false, true) => Some(Cut::Answer),
                (false, false) => None,
            }
        };
        self.call(cut, |ws| async move { ws.get(key).await })
    }
}

impl Transport for RelayTransport {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        std::future::ready(self.connect_now())
    }

    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<Vec<(Key, Version, PushOutcome)>, TransportError>> + Send {
        std::future::ready(self.push_now(changes))
    }

    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        std::future::ready(self.pull_now(scope, from, limit))
    }

    fn get(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Change>, TransportError>> + Send {
        std::future::ready(self.get_now(key))
    }
}

/// The device's end of its pipe to the relay; an armed cut lets part of one frame
/// through, then closes the pipe (the relay reads the end of the stream).
struct CutPipe {
    pipe: Option<DuplexStream>,
    armed: Armed,
}

fn cut_off() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the link was cut")
}

impl AsyncWrite for CutPipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let cut = *lock(&self.armed) == Some(Cut::Request) && buf.len() > 1;
        let Some(pipe) = self.pipe.as_mut() else {
            return Poll::Ready(Err(cut_off()));
        };
        let part = if cut { &buf[..buf.len() / 2] } else { buf };
        let written = Pin::new(pipe).poll_write(cx, part);
        if cut && matches!(written, Poll::Ready(Ok(_))) {
            self.pipe = None;
            *lock(&self.armed) = None;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.pipe.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_flush(cx),
            None => Poll::Ready(Err(cut_off())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.pipe.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for CutPipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Poll::Ready(Err(cut_off()));
        };
        let before = buf.filled().len();
        let read = Pin::new(pipe).poll_read(cx, buf);
        let arrived = buf.filled().len() - before;
        if arrived > 0 && *lock(&self.armed) == Some(Cut::Answer) {
            buf.set_filled(before + arrived / 2);
            self.pipe = None;
            *lock(&self.armed) = None;
        }
        read
    }
}
