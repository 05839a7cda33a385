//! One device's connection: the handshake (its token), then its calls (pushes checked
//! against its scopes, several written at once; pulls served from the store, in order),
//! with its outgoing frames (answers and live changes) on a bounded queue that a writer
//! task drains.
//!
//! A malformed, oversize or unexpected frame ends this connection with a `Refused` frame
//! that says why, and nothing else: the relay goes on serving every other device.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_cloud::{Grant, PullFrom, PullPage, PushOutcome, Session, TransportError};
use ferry_journal::Change;
use ferry_protocol::{FRAME_BYTES_MAX, Frame, HELLO_BYTES_MAX, decode, encode};
use ferry_types::{Key, Version};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::hub::Member;
use crate::metrics::Reject;
use crate::server::{Shared, Socket};
use crate::store::CloudStore;

/// Pushes of one connection being written at once; past it the relay reads no more of its
/// frames until one is answered. A device's own default (the engine's
/// `in_flight_batches_max`): each holds a decoded frame, so the bound is on memory too.
const PUSHES_IN_FLIGHT_MAX: usize = 4;
/// Room a page's frame keeps for everything but its changes.
const PAGE_FRAME_SLACK: usize = 64 * 1024;
/// What a change's answer takes beside its encoding and key: lengths, tags and a version
/// (about 80 bytes), rounded up.
const CHANGE_FRAME_OVERHEAD_BYTES: usize = 128;

/// Why the relay ends a connection: what the device is told, the close code, and what
/// the metrics count it as.
struct Ended {
    reason: String,
    code: CloseCode,
    reject: Option<Reject>,
}

impl Ended {
    /// A malformed, unexpected or text frame (a policy violation).
    fn frame(reason: &str) -> Ended {
        Ended {
            reason: format!("bad frame: {reason}"),
            code: CloseCode::Policy,
            reject: Some(Reject::Frame),
        }
    }

    /// A session that sent nothing (not even a pong), or read nothing, for `quiet`.
    fn idle(quiet: Duration) -> Ended {
        Ended {
            reason: format!(
                "nothing heard or taken for {} s: the link is gone",
                quiet.as_secs()
            ),
            code: CloseCode::Away,
            reject: Some(Reject::Idle),
        }
    }

    /// A token that does not (or no longer) verify.
    fn token(reason: impl std::fmt::Display) -> Ended {
        Ended {
            reason: format!("token refused: {reason}"),
            code: CloseCode::Policy,
            reject: Some(Reject::Token),
        }
    }

    /// Counts and logs the ending; the device's last two messages: the reason as a
    /// `Refused` frame, then the close (whose reason holds at most 123 bytes).
    fn messages<S>(self, shared: &Shared<S>, peer: &str) -> [Message; 2] {
        if let Some(reject) = self.reject {
            shared.metrics.reject(reject);
        }
        // Debug-quoted: a reason may echo what the peer sent, newlines included.
        tracing::info!(%peer, reason = ?self.reason, "connection ended by the relay");
        let mut end = self.reason.len().min(120);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        let close = CloseFrame {
            code: self.code,
            reason: self.reason[..end].to_string().into(),
        };
        let refused = binary(&Frame::Refused {
            reason: self.reason,
            credentials: matches!(self.reject, Some(Reject::Token)),
        });
        [refused, Message::Close(Some(close))]
    }
}

/// Serves one upgraded connection until it closes, fails or the relay shuts down.
pub async fn serve<S: CloudStore>(
    shared: Arc<Shared<S>>,
    mut ws: WebSocketStream<Box<dyn Socket>>,
    peer: String,
    pending: crate::admission::Pending,
    mut shutdown: watch::Receiver<bool>,
) {
    let hello = pending.unless_evicted(handshake(&shared, &mut ws));
    let said_hello = crate::server::until_stopped(&mut shutdown, hello);
    let (grant, replica, expires_s) = match said_hello.await {
        Some(Some(Ok(who))) => who,
        Some(Some(Err(ended))) => return refuse(&mut ws, ended.messages(&shared, &peer)).await,
        // Shutting down, or evicted, before the device said who it is: nothing to drain.
        Some(None) | None => return,
    };
    // Authenticated: no longer pending; a session's place is taken now, or refused.
    drop(pending);
    let Ok(place) = shared.sessions.clone().try_acquire_owned() else {
        let ended = Ended {
            reason: "the relay serves all the sessions it may: try again later".into(),
            code: CloseCode::Again,
            reject: Some(Reject::Capacity),
        };
        return refuse(&mut ws, ended.messages(&shared, &peer)).await;
    };
    // One session per replica (a new one replaces the old), a bounded number per token.
    let max = shared.config.sessions_per_device_max;
    let Some(mut seat) = shared.seats.take(&grant.name, &replica, max) else {
        let ended = Ended {
            reason: format!("this token holds {max} sessions already: try again later"),
            code: CloseCode::Again,
            reject: Some(Reject::Capacity),
        };
        return refuse(&mut ws, ended.messages(&shared, &peer)).await;
    };
    // Authenticated: frames up to the protocol's bound from now on. The protocol has a
    // device send nothing after `Hello` until `Welcome` (docs/relay.md), so no bytes the
    // small stream read ahead are left behind.
    let liveness = crate::liveness::Liveness::new();
    let mut ws = WebSocketStream::from_raw_socket(
        liveness.watch(ws.into_inner()),
        Role::Server,
        Some(ferry_protocol::ws_config()),
    )
    .await;
    let mut session = match shared.store.session().await {
        Ok(session) => session,
        Err(e) => {
            let ended = Ended {
                reason: store_failure(e, &grant.name).to_string(),
                code: CloseCode::Again,
                reject: None,
            };
            return refuse(&mut ws, ended.messages(&shared, &peer)).await;
        }
    };
    let scopes = grant.scopes.clone().unwrap_or_default();
    session.scopes = Some(scopes.clone());
    if ws
        .send(binary(&Frame::Welcome(session.clone())))
        .await
        .is_err()
    {
        return;
    }
    let device = grant.name.clone();
    tracing::info!(%peer, %device, %replica, role = ?grant.role, scopes = ?scopes, "device connected");
    let (sink, mut stream) = ws.split();
    let config = &shared.config;
    let (queue, queued) = crate::queue::queue(crate::queue::Bounds {
        frames_max: config.queue_frames_max,
        live_bytes_max: config.live_bytes_max,
        answer_bytes_max: config.answer_bytes_max,
    });
    let pace = Pace {
        timeout: config.write_timeout,
        slowest_bytes_per_s: config.slowest_link_bytes_per_s,
    };
    let writer = tokio::spawn(write_out(sink, queued, pace));
    let member = Member {
        scopes: scopes.clone(),
        replica,
        queue: queue.clone(),
    };
    let membership = Membership::join(&shared, member);
    let id = membership.id;
    let device = Device { id, grant, session };
    let now_ms = || (shared.config.clock)();
    let expired = || now_ms() / 1000 >= expires_s;
    // The session ends when its token does, also when the device sends nothing: timed on
    // the monotonic clock from the handshake, so a wall clock that steps cannot stretch it.
    let lifetime_ms = (expires_s.saturating_mul(1000)).saturating_sub(now_ms());
    let expiry = tokio::time::sleep(Duration::from_millis(lifetime_ms));
    tokio::pin!(expiry);
    // A quiet session is pinged; one that sends nothing, not even a pong, is gone.
    let every = config.ping_interval.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prefetched = None;
    // Pushes being written: a device may send several before the first is answered, and
    // pushes that commit together share one fsync (the store's group commit).
    let mut pushes = FuturesUnordered::new();
    let ended = loop {
        let message = tokio::select! {
            _ = shutdown.changed() => break Some(Ended {
                reason: "the relay is shutting down".into(),
                code: CloseCode::Restart,
                reject: None,
            }),
            _ = &mut expiry => break Some(Ended::token(crate::TokenError::Expired)),
            _ = &mut seat.ended => break Some(Ended {
                reason: "a newer session of this device's replica took its place".into(),
                code: CloseCode::Policy,
                reject: Some(Reject::Replaced),
            }),
            _ = ping.tick() => {
                // While its pushes are being written the device waits on the relay (which
                // reads no more of its frames at the bound): that is not its silence.
                if pushes.is_empty() && liveness.quiet() >= config.idle_timeout {
                    break Some(Ended::idle(config.idle_timeout));
                }
                if queue.send(Message::Ping(Bytes::new())).await.is_err() {
                    // The writer gave up: the device stopped reading.
                    break Some(Ended::idle(config.write_timeout));
                }
                continue;
            }
            Some(answer) = pushes.next(), if !pushes.is_empty() => {
                if queue.send(binary(&answer)).await.is_err() {
                    break None;
                }
                liveness.note();
                continue;
            }
            // At the bound, the device's next frame waits (and so does the device).
            message = stream.next(), if pushes.len() < PUSHES_IN_FLIGHT_MAX => message,
        };
        let bytes = match message {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(_))) | None => break None,
            Some(Ok(Message::Text(_))) => {
                break Some(Ended::frame("text message: frames are binary"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break socket_error(e),
        };
        let frame = match decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => break Some(Ended::frame(&e.to_string())),
        };
        // A token is good for the session it opened only while it lasts.
        if expired() {
            break Some(Ended::token(crate::TokenError::Expired));
        }
        let answer = match frame {
            Frame::Push { id, changes } => {
                pushes.push(push(&shared, &device, id, changes));
                continue;
            }
            Frame::Pull {
                id,
                scope,
                from,
                limit,
            } => {
                let limit = limit as usize;
                pull(&shared, &mut prefetched, &device, id, &scope, from, limit).await
            }
            Frame::Get { id, key } => get(&shared, &device, id, &key).await,
            other => break Some(Ended::frame(&format!("unexpected {} frame", other.name()))),
        };
        if queue.send(binary(&answer)).await.is_err() {
            break None;
        }
        // The device waited while the relay served it: that was not its silence.
        liveness.note();
    };
    // The session is over: its places go now, not once its last frames are taken. Pushes
    // still being written are not answered: the device sends them again.
    drop(pushes);
    drop((membership, seat, place));
    if let Some(next) = prefetched {
        next.page.abort();
    }
    match ended {
        Some(ended) => {
            for message in ended.messages(&shared, &peer) {
                let _ = queue.send(message).await;
            }
        }
        None => tracing::info!(%peer, device = %device.grant.name, "device disconnected"),
    }
    drop(queue);
    let _ = writer.await;
}

/// A device's place in the hub and the connection count, given up when dropped: also when
/// the session's task unwinds, so that no stale member is left to fan out to.
struct Membership<'s, S> {
    shared: &'s Shared<S>,
    id: u64,
}

impl<'s, S> Membership<'s, S> {
    fn join(shared: &'s Shared<S>, member: Member) -> Membership<'s, S> {
        let id = shared.hub.join(member);
        shared.metrics.connections.inc();
        Membership { shared, id }
    }
}

impl<S> Drop for Membership<'_, S> {
    fn drop(&mut self) {
        self.shared.hub.leave(self.id);
        self.shared.metrics.connections.dec();
    }
}

/// Who is connected: what its token grants, and its session.
struct Device {
    id: u64,
    grant: Grant,
    session: Session,
}

/// The first frame must be a `Hello` whose token verifies; returns what the token grants,
/// the replica, and when the token expires.
async fn handshake<S: CloudStore>(
    shared: &Shared<S>,
    ws: &mut WebSocketStream<Box<dyn Socket>>,
) -> Result<(Grant, String, u64), Ended> {
    let first = tokio::time::timeout(shared.config.handshake_timeout, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(_)) | None => return Err(Ended::frame("no Hello frame")),
                Some(Err(WsError::Capacity(e))) => {
                    return Err(Ended {
                        reason: format!(
                            "bad frame: {e} (a Hello has at most {HELLO_BYTES_MAX} bytes)"
                        ),
                        code: CloseCode::Size,
                        reject: Some(Reject::Frame),
                    });
                }
                Some(Err(e)) => return Err(Ended::frame(&e.to_string())),
            }
        }
    })
    .await
    .map_err(|_| Ended::frame("no Hello frame in time"))??;
    let (token, replica) =
        ferry_protocol::decode_hello(&first).map_err(|e| Ended::frame(&e.to_string()))?;
    let now_s = (shared.config.clock)() / 1000;
    let claims = (shared.config.secret.verify_at(&token, now_s)).map_err(Ended::token)?;
    // The session writes only versions of the replica it names.
    let id = ferry_types::ReplicaId::parse(&replica)
        .map_err(|e| Ended::frame(&format!("Hello names no replica id: {e}")))?;
    Ok((claims.grant().as_replica(id), replica, claims.exp))
}

/// Writes the changes as the write rule decides with the device's grant, answers in the
/// push's order, and fans out what landed.
async fn push<S: CloudStore>(
    shared: &Shared<S>,
    device: &Device,
    id: u64,
    changes: Vec<Change>,
) -> Frame {
    let limits = device.session.limits;
    if changes.len() > limits.push_changes_max {
        let reason = format!(
            "a push of {} changes, over the limit of {}",
            changes.len(),
            limits.push_changes_max
        );
        let error = TransportError::Rejected(reason);
        return Frame::Failed { id, error };
    }
    // Each key once: the engine never sends one twice, and an answer carries a copy of
    // the cloud's row for each superseded change (a thousand of one large row would not
    // fit a frame).
    let mut keys = BTreeSet::new();
    if let Some(twice) = changes.iter().find(|change| !keys.insert(&change.key)) {
        let reason = format!("a push lists each key once; {} appears twice", twice.key);
        let error = TransportError::Rejected(reason);
        return Frame::Failed { id, error };
    }
    drop(keys);
    // Kept for the fan-out, when some other device could hear of them.
    let kept = match shared.hub.len() > 1 {
        true => changes.clone(),
        false => Vec::new(),
    };
    let started = Instant::now();
    let written = shared.store.write(changes, &device.grant).await;
    shared
        .metrics
        .store_call("write", started.elapsed().as_secs_f64());
    let mut results = match written {
        Ok(results) => results,
        Err(error) => {
            let error = store_failure(error, &device.grant.name);
            return Frame::Failed { id, error };
        }
    };
    // Copies of the cloud's rows within one frame: the superseded changes past it are left
    // out of the answer, and the device sends them again later.
    let (mut copies, mut scratch) = (0, Vec::new());
    results.retain(|(_, _, outcome)| match outcome {
        PushOutcome::Superseded { cloud } => {
            copies += change_bytes(cloud, &mut scratch);
            copies <= FRAME_BYTES_MAX - PAGE_FRAME_SLACK
        }
        _ => true,
    });
    let refused = (results.iter())
        .filter(|(_, _, outcome)| matches!(outcome, PushOutcome::Rejected { .. }))
        .count();
    for _ in 0..refused {
        shared.metrics.reject(Reject::Write);
    }
    let applied: BTreeSet<(&Key, &Version)> = (results.iter())
        .filter(|(_, _, outcome)| *outcome == PushOutcome::Applied)
        .map(|(key, version, _)| (key, version))
        .collect();
    let landed: Vec<Change> = (kept.into_iter())
        .filter(|change| applied.contains(&(&change.key, &change.version)))
        .collect();
    shared.metrics.changes_in.inc_by(landed.len() as u64);
    shared
        .hub
        .fan_out(Some(device.id), &landed, &shared.metrics);
    Frame::Pushed { id, results }
}

/// The row of one key, if the holder may read its scope.
async fn get<S: CloudStore>(shared: &Shared<S>, device: &Device, id: u64, key: &Key) -> Frame {
    let started = Instant::now();
    let held = (shared.store.get(key).await).map_err(|e| store_failure(e, &device.grant.name));
    shared
        .metrics
        .store_call("read", started.elapsed().as_secs_f64());
    match held.and_then(|held| ferry_cloud::readable(held, &device.grant)) {
        Ok(change) => Frame::Got { id, change },
        Err(error) => {
            if matches!(error, TransportError::Rejected(_)) {
                shared.metrics.reject(Reject::Scope);
            }
            Frame::Failed { id, error }
        }
    }
}

/// One page of a granted scope, cut to fit a frame.
async fn pull<S: CloudStore>(
    shared: &Arc<Shared<S>>,
    prefetched: &mut Option<Prefetch>,
    device: &Device,
    id: u64,
    scope: &str,
    from: PullFrom,
    limit: usize,
) -> Frame {
    if let Err(error) = device.grant.may_read(scope) {
        shared.metrics.reject(Reject::Scope);
        return Frame::Failed { id, error };
    }
    let limit = limit.clamp(1, device.session.limits.page_changes_max);
    let answer = match prefetched.take() {
        Some(next) if (next.scope.as_str(), next.from, next.limit) == (scope, from, limit) => {
            (next.page.await).unwrap_or_else(|e| Err(TransportError::Unavailable(e.to_string())))
        }
        other => {
            other.inspect(|next| next.page.abort());
            read(shared.clone(), scope.to_string(), from, limit).await
        }
    };
    match answer {
        Ok(page) => {
            let page = fit(page, FRAME_BYTES_MAX - PAGE_FRAME_SLACK);
            shared
                .metrics
                .changes_pulled
                .inc_by(page.changes.len() as u64);
            // A catch-up asks for the page after this one next: read it while the device
            // applies this one.
            if let (true, Some((last, _))) = (page.more, page.changes.last()) {
                let from = match from {
                    PullFrom::Since(_) => PullFrom::Since(*last),
                    PullFrom::Snapshot(_) => PullFrom::Snapshot(*last),
                };
                let scope = scope.to_string();
                let page = tokio::spawn(read(shared.clone(), scope.clone(), from, limit));
                *prefetched = Some(Prefetch {
                    scope,
                    from,
                    limit,
                    page,
                });
            }
            Frame::Page { id, page }
        }
        Err(error) => {
            let error = store_failure(error, &device.grant.name);
            Frame::Failed { id, error }
        }
    }
}

/// What a device hears of a failure of the relay's store: its kind, not its text (a path,
/// an account or a role's ARN), which the relay logs under an incident number it names.
fn store_failure(error: TransportError, device: &str) -> TransportError {
    static INCIDENTS: AtomicU64 = AtomicU64::new(1);
    // Told apart across restarts and relays: this process's start, then a count.
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let process = *PROCESS.get_or_init(|| crate::wall_ms() % 0x1_0000_0000);
    let incident = match &error {
        TransportError::Unavailable(_)
        | TransportError::Unauthorized(_)
        | TransportError::Rejected(_) => {
            format!(
                "{process:08x}-{}",
                INCIDENTS.fetch_add(1, Ordering::Relaxed)
            )
        }
        // No text of the store's: the device acts on the kind.
        _ => return error,
    };
    tracing::warn!(device = ?device, %incident, error = ?error.to_string(), "the store failed");
    let told = format!("the relay's store failed (incident {incident} in the relay's log)");
    match error {
        TransportError::Rejected(_) => TransportError::Rejected(told),
        // The relay's own credentials are at fault, not the device's: it retries later.
        _ => TransportError::Unavailable(told),
    }
}

/// The next page of a scope's catch-up, being read before the device asks for it.
struct Prefetch {
    scope: String,
    from: PullFrom,
    limit: usize,
    page: tokio::task::JoinHandle<Result<PullPage, TransportError>>,
}

/// One timed read of the store.
async fn read<S: CloudStore>(
    shared: Arc<Shared<S>>,
    scope: String,
    from: PullFrom,
    limit: usize,
) -> Result<PullPage, TransportError> {
    let started = Instant::now();
    let read = shared.store.read(&scope, from, limit).await;
    shared
        .metrics
        .store_call("read", started.elapsed().as_secs_f64());
    read
}

/// The page cut, at a stamp boundary, to at most `budget` bytes of items: a full page of
/// large items would not fit one frame. The first stamp always stays, so a page moves on.
fn fit(mut page: PullPage, budget: usize) -> PullPage {
    let (mut used, mut scratch) = (0, Vec::new());
    let mut cut = None;
    for (i, (seq, change)) in page.changes.iter().enumerate() {
        used += change_bytes(change, &mut scratch);
        if used > budget && i > 0 {
            // Back to the start of this stamp, keeping stamps whole.
            let start = (page.changes[..i].iter()).rposition(|(s, _)| s != seq);
            cut = Some(start.map_or(i, |p| p + 1));
            break;
        }
    }
    if let Some(cut) = cut.filter(|&c| c > 0) {
        page.changes.truncate(cut);
        page.more = true;
    }
    page
}

/// What `change` takes in a frame, at most: its encoding (the frame's own, written into
/// `scratch`, which the caller reuses), and room for an answer's key and version.
fn change_bytes(change: &Change, scratch: &mut Vec<u8>) -> usize {
    scratch.clear();
    ferry_journal::encode_change(change, scratch);
    // A key counted twice its DynamoDB size covers its text (numbers spelled out).
    let key = ferry_types::size::value_size(&change.key.hash)
        + (change.key.sort.as_ref()).map_or(0, ferry_types::size::value_size);
    scratch.len() + 2 * key + CHANGE_FRAME_OVERHEAD_BYTES
}

/// How long a device may take a frame: `timeout`, plus the frame's size at the slowest
/// link's rate (a large frame on a poor cellular link takes longer).
#[derive(Debug, Clone, Copy)]
struct Pace {
    timeout: Duration,
    slowest_bytes_per_s: u64,
}

impl Pace {
    fn for_bytes(self, bytes: usize) -> Duration {
        let slow_ms = (bytes as u64).saturating_mul(1000) / self.slowest_bytes_per_s.max(1);
        self.timeout + Duration::from_millis(slow_ms)
    }
}

/// Sends queued frames in order until the queue closes, then closes the socket. A frame
/// the device does not take at `pace` (it stopped reading, or its link is gone) ends the
/// connection.
async fn write_out<W>(mut sink: W, mut queued: crate::queue::Drain, pace: Pace)
where
    W: futures_util::Sink<Message> + Unpin,
{
    while let Some(message) = queued.next().await {
        let closing = matches!(message, Message::Close(_));
        let timeout = pace.for_bytes(message.len());
        let sent = tokio::time::timeout(timeout, sink.send(message)).await;
        if !matches!(sent, Ok(Ok(()))) || closing {
            break;
        }
    }
    let _ = tokio::time::timeout(pace.timeout, sink.close()).await;
}

/// Ends a connection that never got past the handshake with `messages`.
async fn refuse(ws: &mut WebSocketStream<Box<dyn Socket>>, messages: [Message; 2]) {
    for message in messages {
        if ws.send(message).await.is_err() {
            return;
        }
    }
}

/// A failed read: a device that went away is no error; a frame too large for the
/// protocol or broken WebSocket framing is.
fn socket_error(error: WsError) -> Option<Ended> {
    match error {
        WsError::Capacity(e) => Some(Ended {
            reason: format!("bad frame: {e} (the limit is {FRAME_BYTES_MAX} bytes)"),
            code: CloseCode::Size,
            reject: Some(Reject::Frame),
        }),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::Io(_)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => None,
        other => Some(Ended::frame(&other.to_string())),
    }
}

fn binary(frame: &Frame) -> Message {
    Message::Binary(Bytes::from(encode(frame)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that stops reading (or whose link is gone) holds its connection for the
    /// write timeout, not for good: the writer gives up on the frame it cannot deliver.
    #[test]
    fn a_frame_the_device_does_not_take_ends_the_writer_at_its_pace() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_device, relay) = tokio::io::duplex(64 * 1024);
            let relay: Box<dyn Socket> = Box::new(relay);
            let ws = WebSocketStream::from_raw_socket(relay, Role::Server, None).await;
            let (sink, _stream) = ws.split();
            let (queue, queued) = crate::queue::queue(crate::queue::Bounds {
                frames_max: 4,
                live_bytes_max: 1024,
                answer_bytes_max: 4 * 1024 * 1024,
            });
            // A frame larger than what the pipe buffers, which the device never reads.
            queue
                .send(Message::Binary(Bytes::from(vec![0; 1024 * 1024])))
                .await
                .unwrap();
            let pace = Pace {
                timeout: Duration::from_millis(100),
                slowest_bytes_per_s: 1024 * 1024 * 1024,
            };
            let started = Instant::now();
            let ended = tokio::time::timeout(Duration::from_secs(5), write_out(sink, queued, pace));
            assert!(ended.await.is_ok(), "the writer gave up");
            assert!(started.elapsed() >= Duration::from_millis(100));
            assert!(
                queue.send(Message::Ping(Bytes::new())).await.is_err(),
                "and said so"
            );
        });
    }

    #[test]
    fn a_session_that_unwinds_leaves_the_hub() {
        let secret = crate::Secret::new((0..32).collect()).unwrap();
        let shared = Shared {
            store: (),
            config: crate::RelayConfig::new(secret),
            hub: crate::hub::Hub::default(),
            metrics: crate::metrics::Metrics::default(),
            admission: Default::default(),
            sessions: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            seats: Default::default(),
            metrics_elsewhere: false,
        };
        let (queue, _drain) = crate::queue::queue(crate::queue::Bounds {
            frames_max: 4,
            live_bytes_max: 1024,
            answer_bytes_max: 1024,
        });
        let member = || Member {
            scopes: ["*".to_string()].into(),
            replica: "r1".into(),
            queue: queue.clone(),
        };
        let kept = Membership::join(&shared, member());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _membership = Membership::join(&shared, member());
            panic!("a bug in a session");
        }));
        assert!(unwound.is_err());
        assert_eq!(shared.hub.len(), 1, "only the live session is a member");
        drop(kept);
        assert_eq!(shared.hub.len(), 0);
    }
}
