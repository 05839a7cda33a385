//! The frames a device and the relay exchange over one WebSocket (docs/design.md section 8), defined
//! once for both sides. Each frame is one binary message: the protocol version, a tag, and
//! its fields in `ferry-types`' codec (varints, length-prefixed texts, items as the store
//! encodes them), changes in `ferry-journal`'s encoding. Decoding checks every length
//! against the bytes that are there, so a malformed or truncated frame is an error that
//! names what is wrong, never a panic or an allocation the frame cannot back.
//!
//! The encoding was chosen against rkyv by `cargo xtask bench frames` (docs/benchmarks.md):
//! 36% fewer bytes per change, at a decode cost far inside the relay's budget.
//!
//! A session: the device sends `Hello` (its token); the relay answers `Welcome` (a
//! transport `Session`) or `Refused` and closes. Then the device sends `Push` and `Pull`
//! with ids, answered by `Pushed`, `Page` or `Failed` with the same id, and the relay sends
//! `Live` whenever other devices' changes of the device's scopes arrive.

use std::collections::BTreeSet;

use ferry_cloud::{Limits, PullFrom, PullPage, PushOutcome, PushResults, Session, TransportError};
use ferry_journal::{Change, decode_change, encode_change};
use ferry_types::codec::{Reader, bytes, encode_value, varint};
use ferry_types::{Hlc, Key, Version};

/// The version every frame starts with; a peer refuses frames of another.
pub const PROTOCOL_VERSION: u8 = 2;
/// The largest frame either side accepts (a push of changes near DynamoDB's item limit).
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The largest `Hello`: a token and a replica id, with room to spare. Before a connection
/// authenticates, nothing larger is read (a token of ten thousand scopes does not fit:
/// such a fleet grants by pattern, not by list).
pub const HELLO_BYTES_MAX: usize = 16 * 1024;
/// Entries reserved ahead from a count on the wire: a count says how many follow, not
/// that they do, and a forged one must not make a reader allocate for them.
const PREALLOCATED_MAX: usize = 1024;

/// The WebSocket configuration both sides use: frames bounded by the protocol, and small
/// buffers, since one relay holds many connections.
pub fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    ws_config_bounded(FRAME_BYTES_MAX)
}

/// The relay's configuration until a connection's `Hello` verifies: messages of at most
/// [`HELLO_BYTES_MAX`], so that one who has not authenticated cannot make it buffer more.
pub fn hello_ws_config() -> tungstenite::protocol::WebSocketConfig {
    ws_config_bounded(HELLO_BYTES_MAX)
}

fn ws_config_bounded(bytes_max: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(bytes_max))
        .max_frame_size(Some(bytes_max))
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
}

/// One message between a device and the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Device -> relay, first: who it is.
    Hello {
        /// The signed device token.
        token: String,
        /// The device's replica id.
        replica: String,
    },
    /// Relay -> device: the handshake's answer.
    Welcome(Session),
    /// Relay -> device: the handshake was refused (a wrong, expired or tampered token), or
    /// the relay closes the connection (a malformed frame, shutting down).
    Refused {
        /// Why, for the device's status.
        reason: String,
        /// The device's credentials were refused: retrying soon will not help (else the
        /// relay could not serve it now, and a reconnect may succeed).
        credentials: bool,
    },
    /// Device -> relay: write these changes.
    Push {
        /// Answered by the `Pushed` or `Failed` with the same id.
        id: u64,
        /// The changes.
        changes: Vec<Change>,
    },
    /// Relay -> device: what became of each pushed change.
    Pushed {
        /// The push's id.
        id: u64,
        /// Per change.
        results: PushResults,
    },
    /// Device -> relay: a page of a scope's feed.
    Pull {
        /// Answered by the `Page` or `Failed` with the same id.
        id: u64,
        /// The scope.
        scope: String,
        /// Where the page starts.
        from: PullFrom,
        /// Most changes in the page.
        limit: u64,
    },
    /// Relay -> device: the page.
    Page {
        /// The pull's id.
        id: u64,
        /// The page.
        page: PullPage,
    },
    /// Relay -> device: the call failed as a whole.
    Failed {
        /// The call's id.
        id: u64,
        /// Why.
        error: TransportError,
    },
    /// Relay -> device: changes other devices made in this device's scopes.
    Live {
        /// The changes.
        changes: Vec<Change>,
    },
    /// Client -> relay: the row the cloud holds for one key (cloud mode reads before it
    /// writes).
    Get {
        /// Answered by the `Got` or `Failed` with the same id.
        id: u64,
        /// The item's primary key.
        key: Key,
    },
    /// Relay -> client: the row's change (a tombstone is a `Delete`), or none.
    Got {
        /// The get's id.
        id: u64,
        /// The change the cloud holds.
        change: Option<Change>,
    },
}

impl Frame {
    /// The frame's kind, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Refused { .. } => "Refused",
            Frame::Push { .. } => "Push",
            Frame::Pushed { .. } => "Pushed",
            Frame::Pull { .. } => "Pull",
            Frame::Page { .. } => "Page",
            Frame::Failed { .. } => "Failed",
            Frame::Live { .. } => "Live",
            Frame::Get { .. } => "Get",
            Frame::Got { .. } => "Got",
        }
    }

    /// The id of the call a request opens or an answer closes.
    pub fn call_id(&self) -> Option<u64> {
        match self {
            Frame::Push { id, .. }
            | Frame::Pushed { id, .. }
            | Frame::Pull { id, .. }
            | Frame::Page { id, .. }
            | Frame::Get { id, .. }
            | Frame::Got { id, .. }
            | Frame::Failed { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is of another protocol version.
    #[error("frame of protocol version {found}, this side speaks {PROTOCOL_VERSION}")]
    Version {
        /// The version the frame has.
        found: u8,
    },
    /// The frame is larger than either side accepts.
    #[error("frame of {size} bytes, over the limit of {FRAME_BYTES_MAX}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The bytes do not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSED: u8 = 3;
const PUSH: u8 = 4;
const PUSHED: u8 = 5;
const PULL: u8 = 6;
const PAGE: u8 = 7;
const FAILED: u8 = 8;
const LIVE: u8 = 9;
const GET: u8 = 10;
const GOT: u8 = 11;

/// The bytes of `frame`.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    let text = |s: &str, out: &mut Vec<u8>| bytes(s.as_bytes(), out);
    match frame {
        Frame::Hello { token, replica } => {
            out.push(HELLO);
            text(token, &mut out);
            text(replica, &mut out);
        }
        Frame::Welcome(session) => {
            out.push(WELCOME);
            varint(session.server_time_ms, &mut out);
            match &session.scopes {
                None => out.push(0),
                Some(scopes) => {
                    out.push(1);
                    varint(scopes.len() as u64, &mut out);
                    scopes.iter().for_each(|s| text(s, &mut out));
                }
            }
            let limits = session.limits;
            for n in [
                limits.push_changes_max,
                limits.push_bytes_max,
                limits.page_changes_max,
            ] {
                varint(n as u64, &mut out);
            }
            varint(session.horizon_ms, &mut out);
        }
        Frame::Refused {
            reason,
            credentials,
        } => {
            out.push(REFUSED);
            text(reason, &mut out);
            out.push(u8::from(*credentials));
        }
        Frame::Push { id, changes } => {
            out.push(PUSH);
            varint(*id, &mut out);
            put_changes(changes, &mut out);
        }
        Frame::Pushed { id, results } => {
            out.push(PUSHED);
            varint(*id, &mut out);
            varint(results.len() as u64, &mut out);
            for (key, version, outcome) in results {
                put_key(key, &mut out);
                text(&version.to_text(), &mut out);
                match outcome {
                    PushOutcome::Applied => out.push(0),
                    PushOutcome::Superseded { cloud } => {
                        out.push(1);
                        put_change(cloud, &mut out);
                    }
                    PushOutcome::Rejected { reason } => {
                        out.push(2);
                        text(reason, &mut out);
                    }
                    PushOutcome::Ahead { server_time_ms } => {
                        out.push(3);
                        varint(*server_time_ms, &mut out);
                    }
                }
            }
        }
        Frame::Pull {
            id,
            scope,
            from,
            limit,
        } => {
            out.push(PULL);
            varint(*id, &mut out);
            text(scope, &mut out);
            let (tag, hlc) = match from {
                PullFrom::Since(hlc) => (0, hlc),
                PullFrom::Snapshot(hlc) => (1, hlc),
            };
            out.push(tag);
            varint(hlc.as_u64(), &mut out);
            varint(*limit, &mut out);
        }
        Frame::Page { id, page } => {
            out.push(PAGE);
            varint(*id, &mut out);
            varint(page.changes.len() as u64, &mut out);
            for (seq, change) in &page.changes {
                varint(seq.as_u64(), &mut out);
                put_change(change, &mut out);
            }
            out.push(u8::from(page.more));
            varint(page.safe.as_u64(), &mut out);
        }
        Frame::Failed { id, error } => {
            out.push(FAILED);
            varint(*id, &mut out);
            match error {
                TransportError::Unavailable(why) => {
                    out.push(0);
                    text(why, &mut out);
                }
                TransportError::Unauthorized(why) => {
                    out.push(1);
                    text(why, &mut out);
                }
                TransportError::Throttled { retry_after_ms } => {
                    out.push(2);
                    varint(
                        retry_after_ms.map_or(0, |ms| ms.saturating_add(1)),
                        &mut out,
                    );
                }
                TransportError::Expired => out.push(3),
                TransportError::Rejected(why) => {
                    out.push(4);
                    text(why, &mut out);
                }
                TransportError::Timeout(ms) => {
                    out.push(5);
                    varint(*ms, &mut out);
                }
                other => {
                    out.push(0);
                    text(&other.to_string(), &mut out);
                }
            }
        }
        Frame::Live { changes } => {
            out.push(LIVE);
            put_changes(changes, &mut out);
        }
        Frame::Get { id, key } => {
            out.push(GET);
            varint(*id, &mut out);
            put_key(key, &mut out);
        }
        Frame::Got { id, change } => {
            out.push(GOT);
            varint(*id, &mut out);
            match change {
                None => out.push(0),
                Some(change) => {
                    out.push(1);
                    put_change(change, &mut out);
                }
            }
        }
    }
    out
}

/// The token and replica of a `Hello` in `bytes`; any other frame is refused by its kind
/// before anything of it is decoded (the first frame is read before authentication).
pub fn decode_hello(bytes: &[u8]) -> Result<(String, String), FrameError> {
    if bytes.len() > HELLO_BYTES_MAX {
        return Err(FrameError::Malformed(format!(
            "a Hello of {} bytes, over the limit of {HELLO_BYTES_MAX}",
            bytes.len()
        )));
    }
    match bytes {
        [PROTOCOL_VERSION, HELLO, ..] => match decode(bytes)? {
            Frame::Hello { token, replica } => Ok((token, replica)),
            other => Err(FrameError::Malformed(format!(
                "{} before Hello",
                other.name()
            ))),
        },
        [PROTOCOL_VERSION, tag, ..] => {
            let names = [
                (WELCOME, "Welcome"),
                (REFUSED, "Refused"),
                (PUSH, "Push"),
                (PUSHED, "Pushed"),
                (PULL, "Pull"),
                (PAGE, "Page"),
                (FAILED, "Failed"),
                (LIVE, "Live"),
                (GET, "Get"),
                (GOT, "Got"),
            ];
            let kind = names
                .iter()
                .find(|(t, _)| t == tag)
                .map_or("unknown", |(_, n)| n);
            Err(FrameError::Malformed(format!(
                "a {kind} frame (kind {tag}) before Hello"
            )))
        }
        [found, ..] => Err(FrameError::Version { found: *found }),
        [] => Err(FrameError::Malformed("an empty frame before Hello".into())),
    }
}

/// The frame in `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { size: bytes.len() });
    }
    let mut r = Reader::new(bytes);
    let version = r.byte().map_err(malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version { found: version });
    }
    let frame = read_frame(&mut r).map_err(malformed)?;
    if !r.rest().is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the frame",
            r.rest().len()
        )));
    }
    Ok(frame)
}

type Read<T> = Result<T, String>;

fn read_frame(r: &mut Reader<'_>) -> Read<Frame> {
    let tag = r.byte().map_err(text_of)?;
    Ok(match tag {
        HELLO => Frame::Hello {
            token: r.text().map_err(text_of)?,
            replica: r.text().map_err(text_of)?,
        },
        WELCOME => {
            let server_time_ms = r.varint().map_err(text_of)?;
            let scopes = match r.byte().map_err(text_of)? {
                0 => None,
                1 => {
                    let n = r.count().map_err(text_of)?;
                    let scopes = (0..n).map(|_| r.text().map_err(text_of));
                    Some(scopes.collect::<Read<BTreeSet<String>>>()?)
                }
                other => return Err(format!("scopes flag {other}")),
            };
            let mut limit = || -> Read<usize> {
                usize::try_from(r.varint().map_err(text_of)?)
                    .map_err(|_| "a limit too large".to_string())
            };
            let limits = Limits {
                push_changes_max: limit()?,
                push_bytes_max: limit()?,
                page_changes_max: limit()?,
            };
            Frame::Welcome(Session {
                server_time_ms,
                scopes,
                limits,
                horizon_ms: r.varint().map_err(text_of)?,
            })
        }
        REFUSED => Frame::Refused {
            reason: r.text().map_err(text_of)?,
            credentials: match r.byte().map_err(text_of)? {
                0 => false,
                1 => true,
                other => return Err(format!("credentials flag {other}")),
            },
        },
        PUSH => Frame::Push {
            id: r.varint().map_err(text_of)?,
            changes: read_changes(r)?,
        },
        PUSHED => {
            let id = r.varint().map_err(text_of)?;
            let n = r.count().map_err(text_of)?;
            let mut results = PushResults::with_capacity(n.min(PREALLOCATED_MAX));
            for _ in 0..n {
                let key = read_key(r)?;
                let version = r.text().map_err(text_of)?;
                let version = Version::parse(&version).map_err(text_of)?;
                let outcome = match r.byte().map_err(text_of)? {
                    0 => PushOutcome::Applied,
                    1 => PushOutcome::Superseded {
                        cloud: Box::new(read_change(r)?),
                    },
                    2 => PushOutcome::Rejected {
                        reason: r.text().map_err(text_of)?,
                    },
                    3 => PushOutcome::Ahead {
                        server_time_ms: r.varint().map_err(text_of)?,
                    },
                    other => return Err(format!("push outcome {other}")),
                };
                results.push((key, version, outcome));
            }
            Frame::Pushed { id, results }
        }
        PULL => {
            let id = r.varint().map_err(text_of)?;
            let scope = r.text().map_err(text_of)?;
            let from = match r.byte().map_err(text_of)? {
                0 => PullFrom::Since(Hlc::from_u64(r.varint().map_err(text_of)?)),
                1 => PullFrom::Snapshot(Hlc::from_u64(r.varint().map_err(text_of)?)),
                other => return Err(format!("pull start {other}")),
            };
            Frame::Pull {
                id,
                scope,
                from,
                limit: r.varint().map_err(text_of)?,
            }
        }
        PAGE => {
            let id = r.varint().map_err(text_of)?;
            let n = r.count().map_err(text_of)?;
            let mut changes = Vec::with_capacity(n.min(PREALLOCATED_MAX));
            for _ in 0..n {
                let seq = Hlc::from_u64(r.varint().map_err(text_of)?);
                changes.push((seq, read_change(r)?));
            }
            let more = match r.byte().map_err(text_of)? {
                0 => false,
                1 => true,
                other => return Err(format!("more flag {other}")),
            };
            let safe = Hlc::from_u64(r.varint().map_err(text_of)?);
            Frame::Page {
                id,
                page: PullPage {
                    changes,
                    more,
                    safe,
                },
            }
        }
        FAILED => {
            let id = r.varint().map_err(text_of)?;
            let error = match r.byte().map_err(text_of)? {
                0 => TransportError::Unavailable(r.text().map_err(text_of)?),
                1 => TransportError::Unauthorized(r.text().map_err(text_of)?),
                2 => TransportError::Throttled {
                    retry_after_ms: r.varint().map_err(text_of)?.checked_sub(1),
                },
                3 => TransportError::Expired,
                4 => TransportError::Rejected(r.text().map_err(text_of)?),
                5 => TransportError::Timeout(r.varint().map_err(text_of)?),
                other => return Err(format!("error kind {other}")),
            };
            Frame::Failed { id, error }
        }
        LIVE => Frame::Live {
            changes: read_changes(r)?,
        },
        GET => Frame::Get {
            id: r.varint().map_err(text_of)?,
            key: read_key(r)?,
        },
        GOT => Frame::Got {
            id: r.varint().map_err(text_of)?,
            change: match r.byte().map_err(text_of)? {
                0 => None,
                1 => Some(read_change(r)?),
                other => return Err(format!("change flag {other}")),
            },
        },
        other => return Err(format!("unknown frame tag {other}")),
    })
}

fn malformed(reason: impl std::fmt::Display) -> FrameError {
    FrameError::Malformed(reason.to_string())
}

fn text_of(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn put_change(change: &Change, out: &mut Vec<u8>) {
    let mut encoded = Vec::new();
    encode_change(change, &mut encoded);
    bytes(&encoded, out);
}

fn put_changes(changes: &[Change], out: &mut Vec<u8>) {
    varint(changes.len() as u64, out);
    changes.iter().for_each(|c| put_change(c, out));
}

fn read_change(r: &mut Reader<'_>) -> Read<Change> {
    decode_change(r.bytes().map_err(text_of)?).map_err(text_of)
}

fn read_changes(r: &mut Reader<'_>) -> Read<Vec<Change>> {
    let n = r.count().map_err(text_of)?;
    (0..n).map(|_| read_change(r)).collect()
}

fn put_key(key: &Key, out: &mut Vec<u8>) {
    encode_value(&key.hash, out);
    match &key.sort {
        None => out.push(0),
        Some(sort) => {
            out.push(1);
            encode_value(sort, out);
        }
    }
}

fn read_key(r: &mut Reader<'_>) -> Read<Key> {
    let hash = r.value().map_err(text_of)?;
    let sort = match r.byte().map_err(text_of)? {
        0 => None,
        1 => Some(r.value().map_err(text_of)?),
        other => return Err(format!("sort key flag {other}")),
    };
    Ok(Key { hash, sort })
}

#[cfg(test)]
mod tests;
