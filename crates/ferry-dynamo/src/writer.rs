//! The cloud writer: one conditional `PutItem` per change (docs/dynamodb.md), many in
//! flight, each decided by the write rule (`ferry_cloud::decide`).
//!
//! The rule's first part (`admit`: the item, the model's direction, the change's scope,
//! the version's bound) runs before the request. Its second part (`against` the held row) is
//! the condition: over a row that exists, an older `_ver`, the same model, for a writer
//! of some scopes only `_scope IN (...)`, and for a model devices download, the change's
//! own `_scope`. A failed condition returns the row (`ALL_OLD`),
//! and the rule tells a lost response (the same version: applied) from a newer change
//! (superseded, with it) from a row of another scope or model (refused, without it); debug
//! builds also read the row a landed write replaced and hold the rule to it. Each attempt stamps a fresh
//! `_seq` from the server-disciplined clock and is abandoned after half the feed window, so
//! a write lands, if ever, while readers still look for it; throttling and transient
//! failures are retried with backoff (the SDK's own retries would resend a stale `_seq`).

use std::time::Duration;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use backon::{ExponentialBuilder, Retryable};
use ferry_cloud::{Decision, Grant, Models, PushOutcome, admit, against, bounded};
use ferry_journal::Change;
use ferry_schema::{Context, Schema};
use ferry_types::limits::ITEM_BYTES_MAX;
use ferry_types::{Hlc, SyncDirection, Value, Version, item_size};
use futures::StreamExt;

use crate::attrs::{AttrMap, from_attrs, to_attrs};
use crate::client::{ATTEMPT_TIMEOUT, Dynamo};
use crate::error::{Failure, FailureKind};
use crate::layout::{BASE, DEL, Layout, SCOPE, SEQ, SRC, TTL, VER};
use crate::table::Settings;

/// Conditional puts in flight at once per push.
pub const PUTS_IN_FLIGHT: usize = 64;
/// Attempts per change before the push reports it unprocessed.
const ATTEMPTS_MAX: usize = 5;
/// Scopes a writer of some scopes may have: DynamoDB's `IN` takes at most 100 operands
/// (`DynamoTransport::push_as` fails a call past it as a whole).
pub const CONDITION_SCOPES_MAX: usize = 100;

/// Writes changes to one table under Ferry's rules.
#[derive(Debug, Clone)]
pub struct Writer {
    pub(crate) dynamo: Dynamo,
    pub(crate) table: String,
    pub(crate) layout: Layout,
    pub(crate) schema: std::sync::Arc<Schema>,
    /// What the write rule knows of the schema.
    pub(crate) models: Models,
    /// The writer's replica id: `_src`, and the tie-breaker of its `_seq` texts.
    pub(crate) id: String,
}

/// How one change's write ended: an outcome, or a failure that outlasted the retries.
pub type PutResult = Result<PushOutcome, Failure>;

impl Writer {
    /// A writer to `table` of `schema` as replica `id`.
    pub fn new(dynamo: Dynamo, table: &str, schema: std::sync::Arc<Schema>, id: &str) -> Writer {
        let layout = Layout::new(&schema);
        Writer {
            models: Models::new(schema.cloud_directions(), layout.item.clone()),
            layout,
            dynamo,
            table: table.to_string(),
            schema,
            id: id.to_string(),
        }
    }

    /// Writes `changes` of `grant`'s writer with up to [`PUTS_IN_FLIGHT`] in flight;
    /// answers in input order.
    pub async fn put_all(
        &self,
        changes: Vec<Change>,
        settings: Settings,
        grant: &Grant,
    ) -> Vec<(Change, PutResult)> {
        let mut results: Vec<(usize, Change, PutResult)> =
            futures::stream::iter(changes.into_iter().enumerate())
                .map(|(i, change)| async move {
                    let result = self.put(&change, settings, grant).await;
                    (i, change, result)
                })
                .buffer_unordered(PUTS_IN_FLIGHT)
                .collect()
                .await;
        results.sort_by_key(|(i, _, _)| *i);
        results.into_iter().map(|(_, c, r)| (c, r)).collect()
    }

    /// Writes one change of `grant`'s writer, retrying throttling and transient failures
    /// with backoff.
    pub async fn put(&self, change: &Change, settings: Settings, grant: &Grant) -> PutResult {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(25))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(ATTEMPTS_MAX - 1)
            .with_jitter();
        (|| self.attempt(change, settings, grant))
            .retry(backoff)
            .when(Failure::retryable)
            .await
    }

    /// One attempt with a fresh `_seq`.
    async fn attempt(&self, change: &Change, settings: Settings, grant: &Grant) -> PutResult {
        if let Err(refusal) = admit(change, grant, &self.models) {
            return Ok(refusal.outcome(grant, change));
        }
        if let Err(ahead) = bounded(change, self.dynamo.clock.at_least_ms()) {
            // A retry of a version that landed is a retry, whatever the clock says now.
            let row = self.read_row(&change.key).await?;
            let held = row.as_ref().and_then(|row| self.layout.change_of(row).ok());
            return Ok(
                match against(held.as_ref().map(|(_, c)| c), change, grant, &self.models) {
                    decision @ (Decision::AlreadyThere | Decision::Refused(_)) => decision
                        .outcome(grant, change)
                        .unwrap_or(PushOutcome::Applied),
                    _ => ahead.outcome(grant, change),
                },
            );
        }
        let seq = format!("{}-{}", self.dynamo.clock.stamp(), self.id);
        let row = match self.layout.row(change, &seq, &self.id, settings.horizon_ms) {
            Ok(row) => row,
            Err(e) => return Ok(rejected(e.to_string())),
        };
        let size = item_size(&row);
        if size > ITEM_BYTES_MAX {
            return Ok(rejected(format!(
                "the item {} is {size} bytes with Ferry's attributes, over DynamoDB's {ITEM_BYTES_MAX}",
                change.key
            )));
        }
        // The rule's `Land` over the held row: newer, of the same model, and of a scope the
        // writer may write.
        let mut condition = vec![
            "(attribute_not_exists(#h) OR #v < :v)".to_string(),
            "(attribute_not_exists(#h) OR #t = :m)".to_string(),
        ];
        let mut request = (self.dynamo.client.put_item())
            .table_name(&self.table)
            .set_item(Some(to_attrs(&row)))
            .expression_attribute_names("#h", &self.layout.item.hash)
            .expression_attribute_names("#v", VER)
            .expression_attribute_names("#t", &self.layout.item.type_field)
            .expression_attribute_values(":v", AttributeValue::S(change.version.to_text()))
            .expression_attribute_values(":m", AttributeValue::S(change.model.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(scopes) = &grant.scopes {
            let names: Vec<String> = (0..scopes.len()).map(|i| format!(":s{i}")).collect();
            condition.push(format!(
                "(attribute_not_exists(#h) OR #scope IN ({}))",
                names.join(", ")
            ));
            for (name, scope) in names.iter().zip(scopes) {
                let value = AttributeValue::S(scope.clone());
                request = request.expression_attribute_values(name, value);
            }
            request = request.expression_attribute_names("#scope", SCOPE);
        }
        // A key of a model devices download stays in its scope (the rule's `Move`).
        if (self.models.direction(&change.model)).is_some_and(SyncDirection::downloads) {
            condition.push("(attribute_not_exists(#h) OR #at = :at)".into());
            request = request
                .expression_attribute_names("#at", SCOPE)
                .expression_attribute_values(":at", AttributeValue::S(change.scope.clone()));
        }
        request = request.condition_expression(condition.join(" AND "));
        // The condition is the rule's `Land`: debug builds (the tests) read the row it
        // replaced and hold the rule to it; release builds do not fetch it back.
        if cfg!(debug_assertions) {
            request = request.return_values(ReturnValue::AllOld);
        }
        let answer = match tokio::time::timeout(attempt_timeout(settings), request.send()).await {
            Ok(answer) => answer,
            Err(_) => return Err(abandoned("PutItem")),
        };
        let error = match answer {
            Ok(landed) => {
                if cfg!(debug_assertions) {
                    let replaced = (landed.attributes.as_ref())
                        .filter(|old| Layout::version_of(old).is_some())
                        .and_then(|old| self.layout.change_of(old).ok());
                    let decision = against(
                        replaced.as_ref().map(|(_, c)| c),
                        change,
                        grant,
                        &self.models,
                    );
                    debug_assert!(
                        matches!(decision, Decision::Land { .. }),
                        "DynamoDB's condition and the write rule disagree: {decision:?}"
                    );
                }
                return Ok(PushOutcome::Applied);
            }
            Err(error) => error,
        };
        let old = match error.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(failed)) => failed.item().cloned(),
            _ => {
                let failure = Failure::of("PutItem", &error);
                return match failure.kind {
                    // Denied or invalid for this item alone (IAM LeadingKeys, a bad value).
                    FailureKind::Rejected => Ok(rejected(failure.to_string())),
                    _ => Err(failure),
                };
            }
        };
        let old = old.unwrap_or_default();
        match Layout::version_of(&old) {
            Some(_) => match self.layout.change_of(&old) {
                Ok((seq, held)) => {
                    match against(Some(&held), change, grant, &self.models).outcome(grant, change) {
                        // Already there, but stamped long ago: maybe an attempt abandoned after
                        // W/2 that landed later, behind readers' cursors. A fresh stamp shows it.
                        Some(PushOutcome::Applied) if self.maybe_unseen(seq, settings) => {
                            // Best effort: the change is there all the same (a policy without
                            // UpdateItem refuses the renewal; a late row then stays unseen).
                            match self.restamp(change, settings).await {
                                Err(failure) if failure.retryable() => Err(failure),
                                _ => Ok(PushOutcome::Applied),
                            }
                        }
                        Some(answer) => Ok(answer),
                        // Older by now (another writer raced us): the next attempt lands.
                        None => Err(raced("PutItem")),
                    }
                }
                Err(e) => Ok(rejected(format!("the cloud's row is unreadable: {e}"))),
            },
            // Written outside Ferry (or with a `_ver` that does not parse): adopt it, then
            // the next attempt compares versions. One that cannot be adopted never will be.
            None => match self.adopt(&old, old.get(VER), None, settings).await {
                Ok(()) => Err(raced("PutItem")),
                Err(failure) if failure.kind == FailureKind::Rejected => Ok(rejected(format!(
                    "the cloud row of {} was written outside Ferry and cannot be adopted: {}",
                    change.key, failure.message
                ))),
                Err(failure) => Err(failure),
            },
        }
    }

    /// Whether a row stamped `seq` may have become visible after readers passed it: a
    /// row visible in time was stamped within W/2 of landing, and one older than that
    /// cannot be told from a late landing.
    fn maybe_unseen(&self, seq: Hlc, settings: Settings) -> bool {
        seq.physical_ms().saturating_add(settings.window_ms / 2) < self.dynamo.clock.now_ms()
    }

    /// Gives the row of `change` a fresh `_seq`, while it still holds `change`'s version
    /// (a newer write has one of its own).
    async fn restamp(&self, change: &Change, settings: Settings) -> Result<(), Failure> {
        let seq = format!("{}-{}", self.dynamo.clock.stamp(), self.id);
        let request = (self.dynamo.client.update_item())
            .table_name(&self.table)
            .set_key(Some(self.layout.key_attrs(&change.key)))
            .update_expression("SET #q = :q")
            .condition_expression("#v = :v")
            .expression_attribute_names("#q", SEQ)
            .expression_attribute_names("#v", VER)
            .expression_attribute_values(":q", AttributeValue::S(seq))
            .expression_attribute_values(":v", AttributeValue::S(change.version.to_text()));
        let answer = match tokio::time::timeout(attempt_timeout(settings), request.send()).await {
            Ok(answer) => answer,
            Err(_) => return Err(abandoned("UpdateItem")),
        };
        match answer {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(Failure::of("UpdateItem", &error)),
            },
        }
    }

    /// Gives a row Ferry did not write (no `_ver`, or updated in place under `expected`,
    /// the version it still carries) a new version, a scope and a feed position, so that
    /// devices receive it (docs/dynamodb.md, writers that do not go through Ferry). Only while
    /// the row is as found: a concurrent adoption or Ferry write wins. The new version is
    /// past `replaced` too, the version of the row the foreign write replaced (from the
    /// stream's old image): devices hold that one, and would ignore anything older.
    pub async fn adopt(
        &self,
        row: &AttrMap,
        expected: Option<&AttributeValue>,
        replaced: Option<&Version>,
        settings: Settings,
    ) -> Result<(), Failure> {
        let item = from_attrs(row).map_err(|e| foreign(e.to_string()))?;
        let model = (item
            .get(&self.layout.item.type_field)
            .and_then(Value::as_str))
        .and_then(|name| self.schema.model(name).ok())
        .ok_or_else(|| {
            foreign(format!(
                "a row written outside Ferry has no model this schema knows in {}",
                self.layout.item.type_field
            ))
        })?;
        let key = self
            .layout
            .key_of(&item)
            .map_err(|e| foreign(e.to_string()))?;
        let scope_of = |item: &ferry_types::Item| model.scope_of(item, &Context::default());
        let scope = scope_of(&item).map_err(foreign)?;
        // The version it carried, if any, is what the foreign write was made over.
        let base = Layout::version_of(row);
        let over = (base.iter().chain(replaced)).map(|v| v.hlc).max();
        let version = self
            .fresh_version(over)
            .map_err(|e| foreign(e.to_string()))?;
        let (set_base, remove_base) = match &base {
            Some(_) => (", #base = :base", ""),
            None => ("", ", #base"),
        };
        let text = |s: String| AttributeValue::S(s);
        // Only Ferry's attributes change: the row keeps whatever a later foreign write put
        // there (a stream image may be older than the row), and a foreign write over a
        // tombstone is an item again.
        let request = (self.dynamo.client.update_item())
            .table_name(&self.table)
            .set_key(Some(self.layout.key_attrs(&key)))
            .update_expression(format!(
                "SET #v = :v, #q = :q, #src = :src, #scope = :scope{set_base} REMOVE #del, #ttl{remove_base}"
            ))
            .expression_attribute_names("#base", BASE)
            .expression_attribute_names("#h", &self.layout.item.hash)
            .expression_attribute_names("#v", VER)
            .expression_attribute_names("#q", SEQ)
            .expression_attribute_names("#src", SRC)
            .expression_attribute_names("#scope", SCOPE)
            .expression_attribute_names("#del", DEL)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":v", text(version.to_text()))
            .expression_attribute_values(
                ":q",
                text(format!("{}-{}", self.dynamo.clock.stamp(), self.id)),
            )
            .expression_attribute_values(":src", text(self.id.clone()))
            .expression_attribute_values(":scope", text(scope.clone()))
            .return_values(ReturnValue::AllNew);
        let request = match &base {
            Some(base) => request.expression_attribute_values(":base", text(base.to_text())),
            None => request,
        };
        let request = match expected {
            None => {
                request.condition_expression("attribute_exists(#h) AND attribute_not_exists(#v)")
            }
            Some(old) => request
                .condition_expression("attribute_exists(#h) AND #v = :old")
                .expression_attribute_values(":old", old.clone()),
        };
        let answer = match tokio::time::timeout(attempt_timeout(settings), request.send()).await {
            Err(_) => return Err(abandoned("UpdateItem")),
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return match e.as_service_error() {
                    // Adopted meanwhile, or written by Ferry: nothing left to adopt.
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(()),
                    _ => Err(Failure::of("UpdateItem", &e)),
                };
            }
        };
        // The row as it is now may render another scope than the image did.
        let now = answer
            .attributes
            .as_ref()
            .and_then(|row| from_attrs(row).ok());
        let Some(now_scope) = now.as_ref().and_then(|item| scope_of(item).ok()) else {
            return Ok(());
        };
        if now_scope == scope {
            return Ok(());
        }
        let fix = (self.dynamo.client.update_item())
            .table_name(&self.table)
            .set_key(Some(self.layout.key_attrs(&key)))
            .update_expression("SET #scope = :scope")
            .condition_expression("#v = :v")
            .expression_attribute_names("#scope", SCOPE)
            .expression_attribute_names("#v", VER)
            .expression_attribute_values(":scope", text(now_scope))
            .expression_attribute_values(":v", text(version.to_text()))
            .send();
        match tokio::time::timeout(attempt_timeout(settings), fix).await {
            Err(_) => Err(abandoned("UpdateItem")),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(Failure::of("UpdateItem", &e)),
            },
        }
    }

    /// The row of `key`, tombstones included (strongly consistent).
    pub async fn read_row(&self, key: &ferry_types::Key) -> Result<Option<AttrMap>, Failure> {
        let answer = (self.dynamo.client.get_item())
            .table_name(&self.table)
            .set_key(Some(self.layout.key_attrs(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Failure::of("GetItem", &e))?;
        Ok(answer.item)
    }

    /// Writes `change` (a tombstone where a hard delete left nothing) only where the key
    /// holds nothing: a write that came back meanwhile wins.
    pub async fn put_if_absent(&self, change: &Change, settings: Settings) -> Result<(), Failure> {
        let seq = format!("{}-{}", self.dynamo.clock.stamp(), self.id);
        let row = (self.layout.row(change, &seq, &self.id, settings.horizon_ms))
            .map_err(|e| foreign(e.to_string()))?;
        let request = (self.dynamo.client.put_item())
            .table_name(&self.table)
            .set_item(Some(to_attrs(&row)))
            .condition_expression("attribute_not_exists(#h)")
            .expression_attribute_names("#h", &self.layout.item.hash)
            .send();
        self.conditional(request, settings).await
    }

    /// A conditional write whose failed condition means someone else got there first.
    async fn conditional<T>(
        &self,
        request: impl std::future::Future<
            Output = Result<
                T,
                aws_sdk_dynamodb::error::SdkError<
                    PutItemError,
                    aws_smithy_runtime_api::http::Response,
                >,
            >,
        >,
        settings: Settings,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(attempt_timeout(settings), request).await {
            Err(_) => Err(abandoned("PutItem")),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(Failure::of("PutItem", &e)),
            },
        }
    }

    /// A new version of this writer, past `over` (the version a row carried).
    pub fn fresh_version(&self, over: Option<ferry_types::Hlc>) -> crate::Result<Version> {
        let mut hlc = self.dynamo.clock.version_stamp();
        if let Some(over) = over.filter(|over| *over >= hlc) {
            hlc = ferry_types::Hlc::from_u64(over.as_u64().saturating_add(1));
        }
        let replica = ferry_types::ReplicaId::parse(&self.id)
            .map_err(|e| crate::Error::Argument(format!("writer id '{}': {e}", self.id)))?;
        Ok(Version { hlc, replica })
    }
}

fn foreign(reason: String) -> Failure {
    Failure {
        kind: FailureKind::Rejected,
        operation: "adopt",
        code: "ForeignRow".into(),
        message: reason,
    }
}

/// Half the feed window, at most the client's attempt timeout (rule 1 of the feed).
pub(crate) fn attempt_timeout(settings: Settings) -> Duration {
    Duration::from_millis(settings.window_ms / 2).clamp(Duration::from_millis(250), ATTEMPT_TIMEOUT)
}

fn rejected(reason: String) -> PushOutcome {
    PushOutcome::Rejected { reason }
}

fn abandoned(operation: &'static str) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        operation,
        code: "Abandoned".into(),
        message: "no answer within half the feed window; retried with a fresh _seq".into(),
    }
}

fn raced(operation: &'static str) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        operation,
        code: "Raced".into(),
        message: "the row changed under the write; retried".into(),
    }
}
