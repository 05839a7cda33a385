//! The direct transport: a device (or service) talks to DynamoDB itself. Pushes go through
//! the [`Writer`]; pulls query the sync GSI per scope from its cursor under the feed rules
//! of docs/design.md section 7; there is no live stream, so the driver polls.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_cloud::{
    Grant, Limits, PullFrom, PullPage, PushResults, Session, Transport, TransportError,
};
use ferry_journal::Change;
use ferry_schema::Schema;
use ferry_types::Hlc;
use tokio::sync::OnceCell;

use crate::attrs::AttrMap;
use crate::client::{Dynamo, Endpoint};
use crate::clock::ServerClock;
use crate::error::Failure;
use crate::layout::{Layout, SCOPE, SEQ, SYNC_INDEX, seq_floor_after};
use crate::table::{Settings, Table};
use crate::writer::{CONDITION_SCOPES_MAX, Writer};

/// Changes per push: as many as the writer keeps in flight, so that a push takes one
/// conditional put's time (its retries included), well within a call's timeout.
pub const PUSH_CHANGES_MAX: usize = crate::writer::PUTS_IN_FLIGHT;
/// Bytes per push.
pub const PUSH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Changes per pulled page (a query answers at most 1 MB, whatever the limit).
pub const PAGE_CHANGES_MAX: usize = 500;

/// The direct DynamoDB transport of one table.
///
/// Its client is built at the first connect, on the runtime of the driver that runs it: a
/// client's pooled connections live on the runtime that opened them, and one made on
/// another runtime would wait for that runtime to run.
#[derive(Debug)]
pub struct DynamoTransport {
    endpoint: Endpoint,
    clock: Arc<ServerClock>,
    table: String,
    schema: Arc<Schema>,
    id: String,
    writer: OnceCell<Writer>,
    /// Read at every connect; the defaults until then.
    settings: Mutex<Settings>,
    /// What this transport's own pushes may write.
    grant: Grant,
}

impl DynamoTransport {
    /// A transport for `table` of `schema` at `endpoint`, writing as replica `id` (the
    /// device's own), as a device of every scope (its credentials decide which keys it
    /// reaches).
    pub fn new(endpoint: Endpoint, table: &str, schema: Arc<Schema>, id: &str) -> DynamoTransport {
        DynamoTransport {
            grant: Grant::device(id, None),
            endpoint,
            clock: Arc::new(ServerClock::default()),
            table: table.to_string(),
            schema,
            id: id.to_string(),
            writer: OnceCell::new(),
            settings: Mutex::new(Settings::default()),
        }
    }

    /// The same transport writing as `grant`'s writer (a service, a device of some scopes).
    pub fn with_grant(mut self, grant: Grant) -> DynamoTransport {
        self.grant = grant;
        self
    }

    /// Writes `changes` as `grant`'s writer (the relay, for each device): per-change
    /// outcomes as [`Transport::push`] gives them.
    pub async fn push_as(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<PushResults, TransportError> {
        if let Some(scopes) = grant
            .scopes
            .as_ref()
            .filter(|s| s.len() > CONDITION_SCOPES_MAX)
        {
            return Err(TransportError::Rejected(format!(
                "'{}' is granted {} scopes; a writer to DynamoDB may have at most {CONDITION_SCOPES_MAX} (the operands of one condition)",
                grant.name,
                scopes.len()
            )));
        }
        let count = changes.len();
        let mut results = PushResults::with_capacity(count);
        let mut failures = Vec::new();
        let writer = self.writer().await;
        for (change, result) in writer.put_all(changes, self.settings(), grant).await {
            match result {
                Ok(outcome) => results.push((change.key, change.version, outcome)),
                // Left out of the answer: the change stays pending and goes again.
                Err(failure) => failures.push(failure),
            }
        }
        let denied = |failure: &Failure| failure.code == "AccessDeniedException";
        match failures.first() {
            // Writes a policy denies (these keys) are no reason to drop the link, which the
            // next handshake would only restore: the push fails and the outbox backs off,
            // the changes kept. Expired or wrong credentials still drop it.
            Some(failure) if results.is_empty() && failures.iter().all(denied) => Err(
                TransportError::Rejected(format!("every change of the push was denied: {failure}")),
            ),
            Some(failure) if results.is_empty() && count > 0 => Err(failure.clone().into()),
            _ => Ok(results),
        }
    }

    /// The clock that stamps this transport's `_seq`, disciplined by the server's.
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    async fn writer(&self) -> &Writer {
        let build = || async {
            let dynamo = Dynamo::connect_with_clock(&self.endpoint, self.clock.clone()).await;
            Writer::new(dynamo, &self.table, self.schema.clone(), &self.id)
        };
        self.writer.get_or_init(build).await
    }

    fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One query of the sync GSI: rows of `scope` with `_seq >= floor`, after `start`.
    async fn query(
        &self,
        scope: &str,
        floor: &str,
        start: Option<AttrMap>,
        limit: usize,
    ) -> Result<(Vec<AttrMap>, Option<AttrMap>), TransportError> {
        let writer = self.writer().await;
        let answer = (writer.dynamo.client.query())
            .table_name(&writer.table)
            .index_name(SYNC_INDEX)
            .key_condition_expression("#s = :s AND #q >= :q")
            .expression_attribute_names("#s", SCOPE)
            .expression_attribute_names("#q", SEQ)
            .expression_attribute_values(":s", AttributeValue::S(scope.to_string()))
            .expression_attribute_values(":q", AttributeValue::S(floor.to_string()))
            .set_exclusive_start_key(start)
            .limit(limit.min(i32::MAX as usize) as i32)
            .send();
        let timeout = crate::writer::attempt_timeout(self.settings()) * 2;
        let answer = tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| TransportError::Timeout(timeout.as_millis() as u64))?
            .map_err(|e| TransportError::from(Failure::of("Query", &e)))?;
        Ok((answer.items.unwrap_or_default(), answer.last_evaluated_key))
    }
}

impl Transport for DynamoTransport {
    async fn connect(&self) -> Result<Session, TransportError> {
        let writer = self.writer().await;
        let table = Table {
            dynamo: &writer.dynamo,
            name: &writer.table,
            schema: &writer.schema,
        };
        let settings = table.settings().await?;
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
        Ok(Session {
            server_time_ms: writer.dynamo.clock.at_least_ms(),
            scopes: self.grant.scopes.clone(),
            limits: Limits {
                push_changes_max: PUSH_CHANGES_MAX,
                push_bytes_max: PUSH_BYTES_MAX,
                page_changes_max: PAGE_CHANGES_MAX,
            },
            horizon_ms: settings.horizon_ms,
        })
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        self.push_as(changes, &self.grant).await
    }

    async fn get(&self, key: &ferry_types::Key) -> Result<Option<Change>, TransportError> {
        let writer = self.writer().await;
        let row = writer.read_row(key).await.map_err(TransportError::from)?;
        let held = match row {
            None => None,
            Some(row) => match writer.layout.change_of(&row) {
                Ok((_, change)) => Some(change),
                // Written outside Ferry and not adopted yet: nothing a reader may see.
                Err(_) => {
                    let reason = format!("{key} holds a row Ferry has not adopted");
                    return Err(TransportError::Rejected(reason));
                }
            },
        };
        ferry_cloud::readable(held, &self.grant)
    }

    async fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        self.grant.may_read(scope)?;
        let settings = self.settings();
        // Taken before the read: every write stamped at or before it was visible to it.
        let server_now = self.clock.now_ms();
        let after = match from {
            PullFrom::Since(since) => {
                if since.physical_ms().saturating_add(settings.horizon_ms) < server_now {
                    return Err(TransportError::Expired);
                }
                since
            }
            PullFrom::Snapshot(after) => after,
        };
        let floor = seq_floor_after(after);
        let layout = &self.writer().await.layout;
        let limit = limit.max(1);
        let (rows, mut next) = self.query(scope, &floor, None, limit).await?;
        let mut changes = changes_of(layout, &rows);
        // A page of rows Ferry cannot read would move no cursor: read on to one it can.
        while changes.is_empty() && next.is_some() {
            let (rows, after) = self.query(scope, &floor, next.take(), limit).await?;
            changes = changes_of(layout, &rows);
            next = after;
        }
        let mut more = next.is_some();
        if more {
            // Whole stamps only: the next page starts after the last stamp, so a page that
            // split the rows of one stamp (several writers in one tick) would skip some.
            let last = changes.last().map(|(seq, _)| *seq);
            match changes.iter().rposition(|(seq, _)| Some(*seq) != last) {
                Some(keep) => changes.truncate(keep + 1),
                // One stamp fills the page: read the rest of it.
                None => {
                    while let (Some(start), Some(stamp)) = (next.take(), last) {
                        let (rows, after) = self.query(scope, &floor, Some(start), limit).await?;
                        let rows = changes_of(layout, &rows);
                        let same = rows.iter().take_while(|(seq, _)| *seq == stamp).count();
                        more = after.is_some() || same < rows.len();
                        next = after.filter(|_| same == rows.len());
                        changes.extend(rows.into_iter().take(same));
                    }
                }
            }
        }
        Ok(PullPage {
            changes,
            more,
            safe: Hlc::new(server_now.saturating_sub(settings.window_ms), 0),
        })
    }
}

/// The changes of queried rows; rows that are not Ferry's (copied in by hand, say) cannot
/// become changes and are passed over.
fn changes_of(layout: &Layout, rows: &[AttrMap]) -> Vec<(Hlc, Change)> {
    (rows.iter())
        .filter_map(|row| layout.change_of(row).ok())
        .collect()
}
