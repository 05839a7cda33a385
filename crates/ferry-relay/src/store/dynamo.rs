//! The DynamoDB store: the table (docs/dynamodb.md) through `ferry-dynamo`'s transport,
//! written as the relay's own replica with each device's grant. Any number of relays may
//! share the table.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_cloud::{Grant, PullFrom, PullPage, PushResults, Session, Transport, TransportError};
use ferry_dynamo::DynamoTransport;
use ferry_journal::Change;
use ferry_types::Key;

use super::CloudStore;

/// How long the table's settings read at a handshake serve later ones: devices that
/// reconnect together (after a relay restart) cost one read, not one each.
const SETTINGS_FRESH: Duration = Duration::from_secs(60);

/// A DynamoDB table as the relay's store.
pub struct DynamoStore {
    table: DynamoTransport,
    /// The last handshake with the table, and when it was made.
    session: Mutex<Option<(Instant, Session)>>,
}

impl DynamoStore {
    /// The store over `table`'s transport (made with the relay's own replica id).
    pub fn new(table: DynamoTransport) -> DynamoStore {
        DynamoStore {
            table,
            session: Mutex::new(None),
        }
    }
}

impl CloudStore for DynamoStore {
    async fn session(&self) -> Result<Session, TransportError> {
        let cached = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let fresh = cached.filter(|(at, _)| at.elapsed() < SETTINGS_FRESH);
        if let Some((_, mut session)) = fresh {
            // The settings keep; the time is the server's now.
            session.server_time_ms = self.table.clock().at_least_ms();
            return Ok(session);
        }
        let session = self.table.connect().await?;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), session.clone()));
        Ok(session)
    }

    async fn write(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<PushResults, TransportError> {
        self.table.push_as(changes, grant).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        self.table.get(key).await
    }

    async fn read(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        self.table.pull(scope, from, limit).await
    }

    fn shared(&self) -> bool {
        true
    }
}
