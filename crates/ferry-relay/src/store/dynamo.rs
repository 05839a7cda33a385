//! The DynamoDB store: the table of DESIGN.md 7 through `ferry-dynamo`'s transport, written
//! as the relay's own replica. Any number of relays may share the table.

use ferry_dynamo::DynamoTransport;
use ferry_journal::Change;
use ferry_sync::{PullFrom, PullPage, PushResults, Session, Transport, TransportError};

use super::CloudStore;

impl CloudStore for DynamoTransport {
    async fn session(&self) -> Result<Session, TransportError> {
        self.connect().await
    }

    async fn write(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        self.push(changes).await
    }

    async fn read(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        self.pull(scope, from, limit).await
    }

    fn shared(&self) -> bool {
        true
    }
}
