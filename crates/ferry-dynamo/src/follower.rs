//! The stream follower (docs/design.md section 7, "Writers that do not go through Ferry"): a cloud app
//! that writes the table with a plain SDK or OneTable reaches the devices too.
//!
//! It reads the table's stream (new and old images) and adopts what Ferry did not write:
//! an item put without `_ver`, an item updated in place (its `_ver` unchanged), or a hard
//! delete of a replicated item. Each gets a fresh version, scope and feed position (or a
//! tombstone) by a conditional write that loses to any newer Ferry write, so adopting twice
//! or racing a device is harmless; its own writes change `_ver` and are passed over.
//!
//! Its position (per shard) is kept in the table, in the follower item beside the settings.
//! Without a position (the first run), or when the stream no longer holds it (an outage
//! longer than the stream's 24 h), it reconciles by a scan, which adopts every item
//! without `_ver`; deletes and in-place updates made during such an outage are not in the
//! table to be found, and are not recovered.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{OperationType, Record, ShardIteratorType};
use ferry_journal::{Change, ChangeOp};

use crate::attrs::{AttrMap, from_attrs};
use crate::error::{Error, Failure, Result};
use crate::layout::{DEL, Layout, SCOPE, SEQ, VER};
use crate::table::{Settings, Table};
use crate::writer::Writer;

/// The key value of the follower's position item.
pub const FOLLOWER_KEY: &str = "_ferry:follower";
/// Records per `GetRecords`.
const RECORDS_PER_READ: i32 = 1000;
/// The pause when no shard had records.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// What the follower did with one record, or why it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    /// A foreign put or update now has a version.
    Put(String),
    /// A hard delete is now a tombstone.
    Delete(String),
    /// A foreign write that cannot be adopted, and why.
    Skipped(String),
    /// DynamoDB failed for a while (the network, throttling); the follower retries.
    Retrying(String),
}

/// Where the follower is in the stream: the last sequence number read per shard (kept in
/// the table), and the open iterators (`None`: the shard is closed and read to its end).
struct Position {
    shards: BTreeMap<String, String>,
    iterators: BTreeMap<String, Option<String>>,
    /// A scan is due before the next read.
    reconcile: bool,
}

/// Follows one table's stream.
pub struct Follower {
    writer: Writer,
    streams: aws_sdk_dynamodbstreams::Client,
}

impl Follower {
    /// A follower writing as replica `writer.id`.
    pub fn new(writer: Writer) -> Follower {
        let streams = aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(&writer.dynamo.shared).build(),
        );
        Follower { writer, streams }
    }

    fn table(&self) -> Table<'_> {
        Table {
            dynamo: &self.writer.dynamo,
            name: &self.writer.table,
            schema: &self.writer.schema,
        }
    }

    /// Follows the stream until `stop` says so, telling `report` what it adopted. Network
    /// and server failures are retried with backoff (and reported); the position it has
    /// read to is kept in the table after every batch and at the stop.
    pub async fn run(
        &self,
        stop: &dyn Fn() -> bool,
        report: &mut dyn FnMut(&Adopted),
    ) -> Result<()> {
        let settings = self.table().settings().await?;
        let arn = self.stream_arn().await?;
        let mut state = Position {
            shards: self.load_positions().await?,
            iterators: BTreeMap::new(),
            reconcile: false,
        };
        // Without a position (a first run) the scan adopts what is already there.
        state.reconcile = state.shards.is_empty();
        let mut failures: u32 = 0;
        while !stop() {
            match self.round(&arn, &mut state, settings, report).await {
                Ok(read_any) => {
                    failures = 0;
                    if !read_any {
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
                Err(Error::Call(failure)) if failure.retryable() => {
                    failures = failures.saturating_add(1);
                    report(&Adopted::Retrying(failure.to_string()));
                    let backoff = IDLE_POLL * 2u32.saturating_pow(failures.min(7));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.save_positions(&state.shards).await
    }

    /// Reads every shard once; whether any had records.
    async fn round(
        &self,
        arn: &str,
        state: &mut Position,
        settings: Settings,
        report: &mut dyn FnMut(&Adopted),
    ) -> Result<bool> {
        if state.reconcile {
            self.reconcile(settings, report).await?;
            state.reconcile = false;
        }
        let shards = self.shards(arn).await?;
        let mut read_any = false;
        for (shard, parent) in &shards {
            // A child shard waits until its parent is read to its end.
            let parent_open = parent.as_ref().is_some_and(|p| {
                shards.iter().any(|(s, _)| s == p) && state.iterators.get(p) != Some(&None)
            });
            if parent_open || state.iterators.get(shard) == Some(&None) {
                continue;
            }
            let iterator = match state.iterators.get(shard) {
                Some(Some(iterator)) => iterator.clone(),
                _ => match self.iterator(arn, shard, state.shards.get(shard)).await? {
                    Some(iterator) => iterator,
                    None => {
                        // The stream lost the position: what it held is out of reach. One
                        // scan covers every shard that lost it (at the next round).
                        state.reconcile = true;
                        state.shards.remove(shard);
                        match self.iterator(arn, shard, None).await? {
                            Some(iterator) => iterator,
                            None => continue,
                        }
                    }
                },
            };
            let request = (self.streams.get_records())
                .shard_iterator(iterator)
                .limit(RECORDS_PER_READ)
                .send();
            let output = match request.await {
                Ok(output) => output,
                Err(e) => {
                    let failure = Failure::of("GetRecords", &e);
                    if failure.code == "ExpiredIteratorException" {
                        // Unused for 15 minutes (an outage): take a new one from the position.
                        state.iterators.remove(shard);
                        continue;
                    }
                    return Err(failure.into());
                }
            };
            for record in output.records() {
                if let Some(adopted) = self.adopt_retrying(record, settings).await? {
                    report(&adopted);
                }
                if let Some(seq) = record.dynamodb().and_then(|d| d.sequence_number()) {
                    state.shards.insert(shard.clone(), seq.to_string());
                }
            }
            read_any |= !output.records().is_empty();
            let next = output.next_shard_iterator().map(String::from);
            state.iterators.insert(shard.clone(), next);
        }
        if read_any {
            self.save_positions(&state.shards).await?;
        }
        Ok(read_any)
    }

    async fn stream_arn(&self) -> Result<String> {
        let output = (self.writer.dynamo.client.describe_table())
            .table_name(&self.writer.table)
            .send()
            .await
            .map_err(|e| Failure::of("DescribeTable", &e))?;
        output
            .table()
            .and_then(|t| t.latest_stream_arn())
            .map(String::from)
            .ok_or_else(|| Error::Table {
                table: self.writer.table.clone(),
                reason: "has no stream: `ferry table create` makes tables with one".into(),
            })
    }

    /// The stream's shards and their parents.
    async fn shards(&self, arn: &str) -> Result<Vec<(String, Option<String>)>> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = (self.streams.describe_stream())
                .stream_arn(arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| Failure::of("DescribeStream", &e))?;
            let Some(description) = output.stream_description() else {
                break;
            };
            for shard in description.shards() {
                if let Some(id) = shard.shard_id() {
                    shards.push((id.to_string(), shard.parent_shard_id().map(String::from)));
                }
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_string()),
                None => break,
            }
        }
        Ok(shards)
    }

    /// An iterator after `position`, or from the oldest record; `None` when the stream no
    /// longer holds `position`.
    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        position: Option<&String>,
    ) -> Result<Option<String>> {
        let request = (self.streams.get_shard_iterator())
            .stream_arn(arn)
            .shard_id(shard);
        let request = match position {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(output) => Ok(output.shard_iterator().map(String::from)),
            Err(e) => {
                let failure = Failure::of("GetShardIterator", &e);
                match failure.code.as_str() {
                    "TrimmedDataAccessException" | "ResourceNotFoundException"
                        if position.is_some() =>
                    {
                        Ok(None)
                    }
                    _ => Err(failure.into()),
                }
            }
        }
    }

    /// [`Follower::adopt`], retrying throttling and transient failures with backoff; a
    /// record that cannot be adopted (a model this schema does not know) is reported and
    /// passed over, so that one bad row never stops the stream.
    async fn adopt_retrying(&self, record: &Record, settings: Settings) -> Result<Option<Adopted>> {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(8)
            .with_jitter();
        let attempt = || self.adopt(record, settings);
        let retryable = |e: &Error| matches!(e, Error::Call(failure) if failure.retryable());
        match attempt.retry(backoff).when(retryable).await {
            Err(Error::Call(failure)) if failure.retryable() => Err(Error::Call(failure)),
            // One bad record (a row that does not read, a model this schema lacks) must not
            // stop the stream: it is reported and passed over.
            Err(e) => Ok(Some(Adopted::Skipped(e.to_string()))),
            ok => ok,
        }
    }

    /// Adopts one record's change if Ferry did not write it.
    async fn adopt(&self, record: &Record, settings: Settings) -> Result<Option<Adopted>> {
        let Some(data) = record.dynamodb() else {
            return Ok(None);
        };
        let old: Option<AttrMap> = data.old_image().map(stream_image);
        let new: Option<AttrMap> = data.new_image().map(stream_image);
        let layout = &self.writer.layout;
        match record.event_name() {
            Some(OperationType::Insert | OperationType::Modify) => {
                let Some(new) = new else { return Ok(None) };
                let replaced = old.as_ref().and_then(Layout::version_of);
                // Ferry's own writes raise the version. One that stayed (updated in place)
                // or went back (a stale row written back whole) is foreign; one that only
                // moved the feed position (a renewed `_seq`) is Ferry's.
                let foreign = match Layout::version_of(&new) {
                    None => true,
                    Some(version) => replaced.as_ref().is_some_and(|old| version <= *old),
                };
                if !foreign || self.is_own_item(&new) || only_feed_moved(old.as_ref(), &new) {
                    return Ok(None);
                }
                (self.writer)
                    .adopt(&new, new.get(VER), replaced.as_ref(), settings)
                    .await?;
                Ok(Some(Adopted::Put(describe(layout, &new))))
            }
            Some(OperationType::Remove) => {
                let Some(old) = old else { return Ok(None) };
                // A purged tombstone, or an item that never replicated.
                if old.contains_key(DEL) || !old.contains_key(SCOPE) || self.is_own_item(&old) {
                    return Ok(None);
                }
                self.tombstone(&old, settings).await?;
                Ok(Some(Adopted::Delete(describe(layout, &old))))
            }
            _ => Ok(None),
        }
    }

    /// Ferry's own bookkeeping items (settings, this position) are not data.
    fn is_own_item(&self, item: &AttrMap) -> bool {
        matches!(item.get(&self.writer.layout.item.hash), Some(AttributeValue::S(s)) if s.starts_with("_ferry:"))
    }

    /// Writes a tombstone where a replicated item was hard-deleted, unless the key holds
    /// something again.
    async fn tombstone(&self, old: &AttrMap, settings: Settings) -> Result<()> {
        let layout = &self.writer.layout;
        let item = from_attrs(old)?;
        let text = |name: &str| item.get(name).and_then(|v| v.as_str()).map(String::from);
        let (Some(model), Some(scope)) = (text(&layout.item.type_field), text(SCOPE)) else {
            return Ok(());
        };
        let over = Layout::version_of(old);
        let change = Change {
            model,
            key: layout.key_of(&item)?,
            op: ChangeOp::Delete,
            version: self.writer.fresh_version(over.as_ref().map(|v| v.hlc))?,
            scope,
            item: None,
            base: over,
        };
        self.writer.put_if_absent(&change, settings).await?;
        Ok(())
    }

    /// Adopts every item of the table without `_ver` (a scan).
    pub async fn reconcile(
        &self,
        settings: Settings,
        report: &mut dyn FnMut(&Adopted),
    ) -> Result<usize> {
        let mut adopted = 0;
        let mut start = None;
        loop {
            let output = (self.writer.dynamo.client.scan())
                .table_name(&self.writer.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| Failure::of("Scan", &e))?;
            for item in output.items() {
                if item.contains_key(VER) || self.is_own_item(item) {
                    continue;
                }
                match self.writer.adopt(item, None, None, settings).await {
                    Ok(()) => {
                        adopted += 1;
                        report(&Adopted::Put(describe(&self.writer.layout, item)));
                    }
                    // A network or throttling failure: the whole scan runs again.
                    Err(failure) if failure.retryable() => return Err(failure.into()),
                    // Items of models this schema does not know are not Ferry's business.
                    Err(failure) => report(&Adopted::Skipped(failure.to_string())),
                }
            }
            match output.last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        Ok(adopted)
    }

    async fn load_positions(&self) -> Result<BTreeMap<String, String>> {
        let output = (self.writer.dynamo.client.get_item())
            .table_name(&self.writer.table)
            .set_key(Some(self.position_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Failure::of("GetItem", &e))?;
        let shards = match output.item.as_ref().and_then(|item| item.get("shards")) {
            Some(AttributeValue::M(shards)) => shards.clone(),
            _ => return Ok(BTreeMap::new()),
        };
        Ok((shards.into_iter())
            .filter_map(|(shard, seq)| seq.as_s().ok().map(|seq| (shard, seq.clone())))
            .collect())
    }

    async fn save_positions(&self, positions: &BTreeMap<String, String>) -> Result<()> {
        let shards = (positions.iter())
            .map(|(shard, seq)| (shard.clone(), AttributeValue::S(seq.clone())))
            .collect();
        (self.writer.dynamo.client.put_item())
            .table_name(&self.writer.table)
            .set_item(Some(self.position_key()))
            .item("shards", AttributeValue::M(shards))
            .send()
            .await
            .map_err(|e| Failure::of("PutItem", &e))?;
        Ok(())
    }

    fn position_key(&self) -> AttrMap {
        self.writer.layout.bookkeeping_key(FOLLOWER_KEY)
    }
}

/// A stream image as a table item (the two SDKs have separate attribute types).
fn stream_image(
    image: &std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> AttrMap {
    image
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), stream_attr(v)?)))
        .collect()
}

fn stream_attr(value: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Option<AttributeValue> {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodbstreams::types::AttributeValue as S;
    Some(match value {
        S::S(s) => AttributeValue::S(s.clone()),
        S::N(n) => AttributeValue::N(n.clone()),
        S::B(b) => AttributeValue::B(Blob::new(b.clone().into_inner())),
        S::Bool(b) => AttributeValue::Bool(*b),
        S::Null(b) => AttributeValue::Null(*b),
        S::M(m) => AttributeValue::M(stream_image(m)),
        S::L(l) => AttributeValue::L(l.iter().filter_map(stream_attr).collect()),
        S::Ss(s) => AttributeValue::Ss(s.clone()),
        S::Ns(s) => AttributeValue::Ns(s.clone()),
        S::Bs(s) => AttributeValue::Bs(
            s.iter()
                .map(|b| Blob::new(b.clone().into_inner()))
                .collect(),
        ),
        _ => return None,
    })
}

/// `model key` for the report.
/// Whether `new` is `old` with only its feed position changed (the writer renewed a late
/// landing's `_seq`).
fn only_feed_moved(old: Option<&AttrMap>, new: &AttrMap) -> bool {
    let Some(old) = old else { return false };
    let rest = |row: &AttrMap| -> Vec<(String, AttributeValue)> {
        let mut rest: Vec<_> = (row.iter())
            .filter(|(name, _)| name.as_str() != SEQ)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        rest
    };
    old.get(SEQ) != new.get(SEQ) && rest(old) == rest(new)
}

fn describe(layout: &Layout, item: &AttrMap) -> String {
    let model = match item.get(&layout.item.type_field) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => "?".into(),
    };
    let key = from_attrs(item)
        .ok()
        .and_then(|item| layout.key_of(&item).ok());
    format!("{model} {}", key.map_or("?".into(), |k| k.to_string()))
}
