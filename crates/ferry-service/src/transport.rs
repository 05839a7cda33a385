//! Cloud mode's rows through a [`Transport`]: a row is read with `Transport::get`, a write
//! is a push answered by the cloud's write rule, and `find` reads scope snapshots
//! (`find.rs`).
//!
//! A device write that lands between the read and the write, with an older version, is
//! replaced (unlike DynamoDB's rows, where a write lands only over the row it read), and
//! its device logs the conflict. A write whose answer was lost is read back: if the row
//! holds it, it landed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_cloud::{PushOutcome, Session, Transport, TransportError};
use ferry_journal::{Change, ChangeOp};
use ferry_schema::{Crypto, KeyQuery, Model, Schema};
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock, Item, Key, ReplicaId, Version};

use crate::{CloudFind, Error, Result, Rows, Seen, Service};

/// The rows of the cloud behind a transport, written as one service replica.
pub struct TransportRows<T> {
    pub(crate) transport: T,
    replica: ReplicaId,
    /// The handshake: the scopes granted and the cloud's time when it answered.
    pub(crate) session: Session,
    /// When the handshake answered, on the monotonic clock: the cloud's time now is the
    /// session's plus the time since (a wall clock that steps is never read).
    connected: Instant,
    /// Stamps this service's versions from the cloud's time.
    clock: Mutex<HlcClock>,
}

impl<T: Transport> Service<TransportRows<T>> {
    /// Connects `transport` for `schema`, writing as replica `replica`; a schema with
    /// crypt fields needs `crypto`.
    pub async fn connect(
        transport: T,
        schema: Arc<Schema>,
        replica: &str,
        crypto: Option<Crypto>,
    ) -> Result<Service<TransportRows<T>>> {
        let replica = ReplicaId::parse(replica)
            .map_err(|e| Error::Argument(format!("replica id '{replica}': {e}")))?;
        let session = transport.connect().await?;
        let rows = TransportRows {
            transport,
            replica,
            session,
            connected: Instant::now(),
            clock: Mutex::new(HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT)),
        };
        Service::new(rows, schema, crypto)
    }
}

impl<T: Transport> Rows for TransportRows<T> {
    type Row = Change;
    type Error = Error;

    async fn read(&self, key: &Key) -> Result<Option<Change>> {
        Ok(self.transport.get(key).await?)
    }

    fn seen(&self, row: &Change) -> Result<Seen> {
        let item = match (&row.op, &row.item) {
            (ChangeOp::Put, Some(item)) => Some(item.clone()),
            (ChangeOp::Delete, _) => None,
            // A malformed answer: neither an item nor its absence.
            (ChangeOp::Put, None) => {
                let what = format!(
                    "the cloud answered a read of {} with a put of no item",
                    row.key
                );
                return Err(Error::Transport(TransportError::Unavailable(what)));
            }
        };
        Ok(Seen {
            version: Some(row.version.clone()),
            model: Some(row.model.clone()),
            scope: Some(row.scope.clone()),
            item,
        })
    }

    async fn write(&self, change: Change, _seen: Option<&Change>) -> Result<()> {
        let (key, version, model) = (
            change.key.clone(),
            change.version.clone(),
            change.model.clone(),
        );
        let answer = match self.transport.push(vec![change]).await {
            Ok(answer) => answer,
            // The answer may be lost after the write landed: the row tells.
            Err(lost @ (TransportError::Unavailable(_) | TransportError::Timeout(_))) => {
                let held = self.transport.get(&key).await.map_err(|_| lost.clone())?;
                return match held.is_some_and(|row| row.version == version) {
                    true => Ok(()),
                    false => Err(Error::Transport(lost)),
                };
            }
            Err(e) => return Err(Error::Transport(e)),
        };
        let mut answer = answer;
        match answer.pop().map(|(_, _, outcome)| outcome) {
            Some(PushOutcome::Applied) => Ok(()),
            Some(PushOutcome::Superseded { .. }) => Err(Error::refused(
                "ConditionalCheckFailed",
                format!("{model} {key} changed meanwhile: read it again and retry"),
            )),
            Some(PushOutcome::Rejected { reason }) => Err(Error::refused("Refused", reason)),
            Some(PushOutcome::Ahead { server_time_ms }) => Err(Error::refused(
                "Refused",
                format!("the cloud's time is {server_time_ms}, behind this service's version"),
            )),
            None => Err(Error::Transport(TransportError::Unavailable(
                "the cloud did not answer the write".into(),
            ))),
        }
    }

    fn version_past(&self, over: Option<&Version>) -> Result<Version> {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let mut hlc = clock.tick(self.now_ms());
        if let Some(over) = over.filter(|over| over.hlc >= hlc) {
            hlc = Hlc::from_u64(over.hlc.as_u64().saturating_add(1));
        }
        Ok(Version {
            hlc,
            replica: self.replica.clone(),
        })
    }

    fn now_ms(&self) -> u64 {
        let elapsed = self.connected.elapsed().as_millis() as u64;
        self.session.server_time_ms.saturating_add(elapsed)
    }

    async fn find(
        &self,
        schema: &Schema,
        model: &Model,
        query: &KeyQuery,
        options: &CloudFind<'_>,
    ) -> Result<(Vec<Item>, Option<String>)> {
        let items = self
            .find_in_snapshots(schema, model, query, options)
            .await?;
        Ok((items, None))
    }
}
