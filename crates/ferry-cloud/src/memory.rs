//! `MemoryCloud`: the reference cloud, and `MemoryTransport` over it.
//!
//! This is the semantics every cloud backend must match (the DynamoDB layout of
//! docs/dynamodb.md implements the same rules with a conditional write and the sync GSI):
//!
//! 1. **One row per key** (the table's primary key): the latest change of the item, either
//!    a put with its item or a tombstone (`_del`), with its version (`_ver`), its scope
//!    (`_scope`) and its feed position (`_seq`). The table is strongly consistent.
//! 2. **The write rule** ([`crate::decide`]) decides every write: conditional last writer
//!    wins (a change lands iff there is no row or the row's version is older; an older one
//!    is `Superseded` with the row's change), scope ownership, the model's direction and
//!    the bound on versions ahead of the cloud's time.
//! 3. **Writers stamp `_seq`** from their own clocks ([`MemoryCloud::write_at`]); no
//!    sequencer orders them, and a skewed writer stamps in the past or the future. The
//!    cloud's own writer ([`MemoryCloud::write`]) stamps from the cloud's clock.
//! 4. **Retries are harmless**: a change whose version equals the row's is a retry whose
//!    answer was lost: `Applied`, and nothing changes (no new `_seq`).
//! 5. **Tombstones are rows**: a delete beats older puts (rule 2) and loses to newer ones.
//! 6. **Refusals** are the rule's: a put without an item, an item over DynamoDB's 400 KiB,
//!    a model or scope the writer may not write, a version too far ahead.
//! 7. **Change feed** (the sync GSI, eventually consistent): a landed change becomes visible
//!    in its scope's feed up to `lag_ms_max` later ([`MemoryCloud::with_lag`]), so it can
//!    appear after a change stamped later. `pull` returns the visible rows of a scope with
//!    `_seq` after the start, in `_seq` order, at most `limit` (at least one), and `more`
//!    when further rows exist. A key appears once, at its latest visible `_seq`; a row whose
//!    scope changes leaves the old scope's feed. Every page carries `safe`: the cloud's time
//!    minus the window W; every write stamped at or before it is visible (writers' skew and
//!    the lag stay within W), so a reader's cursor never moves past it.
//! 8. **Horizon**: a tombstone is purged once its `_seq` time + horizon <= now (DynamoDB's
//!    TTL on `_ttl`). A catch-up pull from a cursor before a purged tombstone of the scope is
//!    `Expired`; a snapshot pull never is, whatever the age of the rows.
//! 9. **Time** is the cloud's wall clock, set by the caller with
//!    [`MemoryCloud::set_time_ms`]; it never goes backwards. A cloud whose time is never
//!    set (an application's, a benchmark's) follows the system's clock: its transports
//!    bring it to the wall's time at each call. Left at zero, it would refuse every honest
//!    version as ahead of its time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_journal::{Change, ChangeOp};
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock, Key, KeyMap};

use crate::defaults::{CATCHUP_WINDOW_MS, HORIZON_MS};
use crate::jitter::Jitter;
use crate::rule::{Decision, Grant, Models, decide};
use crate::store::CloudStore;
use crate::transport::{
    Limits, PullFrom, PullPage, PushOutcome, PushResults, Session, Transport, TransportError,
};

/// One stored row: the item's latest change and its feed position.
#[derive(Debug, Clone)]
struct Row {
    /// Shared with the feed: a change is held once however many places show it.
    change: Arc<Change>,
    seq: Hlc,
}

/// A landed change on its way into the feed (rule 7).
#[derive(Debug, Clone)]
struct Arrival {
    row: Row,
    visible_ms: u64,
}

/// The reference cloud: the rules in the module documentation, in memory.
#[derive(Debug)]
pub struct MemoryCloud {
    /// The cloud's own writer (rule 3).
    clock: HlcClock,
    now_ms: u64,
    /// The caller sets the time ([`MemoryCloud::set_time_ms`]); else it follows the wall.
    driven: bool,
    horizon_ms: u64,
    window_ms: u64,
    lag_ms_max: u64,
    /// Draws each arrival's lag; seeded, so a simulation replays.
    lag_rng: Jitter,
    rows: KeyMap<Row>,
    /// The rows that are tombstones, oldest `_seq` first: what a purge looks at (a scan
    /// of every row at each tick of the clock would cost each call the whole cloud).
    tombstones: BTreeSet<(Hlc, Key)>,
    /// The sync GSI as readers see it: (`_scope`, `_seq`) -> the changes stamped there
    /// (writers may tie), and where each key stands in it.
    feed: BTreeMap<(String, Hlc), Vec<Arc<Change>>>,
    feed_of: KeyMap<(String, Hlc)>,
    /// Landed changes not visible yet, per key in landing order. Ordered by key: arrivals
    /// due at once reach the feed in key order, the same in every replay.
    arriving: BTreeMap<Key, Vec<Arrival>>,
    /// Per scope, the highest `_seq` of a purged tombstone.
    purged: BTreeMap<String, Hlc>,
    /// What the write rule knows of the schema.
    models: Models,
}

impl Default for MemoryCloud {
    fn default() -> MemoryCloud {
        MemoryCloud::new(HORIZON_MS)
    }
}

impl MemoryCloud {
    /// An empty cloud at time 0 whose tombstones live `horizon_ms`, whose feed shows every
    /// change at once, with the default window W.
    pub fn new(horizon_ms: u64) -> MemoryCloud {
        MemoryCloud {
            clock: HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT),
            now_ms: 0,
            driven: false,
            horizon_ms,
            window_ms: CATCHUP_WINDOW_MS,
            lag_ms_max: 0,
            lag_rng: Jitter::new(0),
            rows: KeyMap::default(),
            tombstones: BTreeSet::new(),
            feed: BTreeMap::new(),
            feed_of: KeyMap::default(),
            arriving: BTreeMap::new(),
            purged: BTreeMap::new(),
            models: Models::unchecked(),
        }
    }

    /// The same cloud with its schema's models: the write rule checks each change's
    /// direction against them (without, every model is writable by either role).
    pub fn with_models(mut self, models: Models) -> MemoryCloud {
        self.models = models;
        self
    }

    /// The same cloud whose feed shows a landed change up to `lag_ms_max` later (at most
    /// half the window W, as DynamoDB's GSIs usually are within a second), the lags drawn
    /// from `seed`.
    pub fn with_lag(mut self, lag_ms_max: u64, seed: u64) -> MemoryCloud {
        self.lag_ms_max = lag_ms_max.min(self.window_ms / 2);
        self.lag_rng = Jitter::new(seed);
        self
    }

    /// Sets the cloud's wall clock (ignored if it would go backwards): late changes become
    /// visible and tombstones past the horizon are purged.
    pub fn set_time_ms(&mut self, now_ms: u64) {
        self.driven = true;
        self.advance_to(now_ms);
    }

    fn advance_to(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.reveal();
        self.purge();
    }

    /// Brings a cloud whose time nobody sets to the system's clock.
    fn keep_up_with_the_wall(&mut self) {
        if self.driven {
            return;
        }
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        self.advance_to(wall.map_or(0, |d| d.as_millis() as u64));
    }

    /// The cloud's wall clock.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The tombstone horizon.
    pub fn horizon_ms(&self) -> u64 {
        self.horizon_ms
    }

    /// Writes one change as a cloud service with every scope, stamped by the cloud's own
    /// clock: how a cloud developer writes.
    pub fn write(&mut self, change: Change) -> PushOutcome {
        self.write_as(change, &Grant::service("cloud", None))
    }

    /// Writes one change as `grant`'s writer, stamped by the cloud's own clock.
    pub fn write_as(&mut self, change: Change, grant: &Grant) -> PushOutcome {
        let seq = self.clock.tick(self.now_ms);
        self.write_at(change, seq, grant)
    }

    /// Writes one change of `grant`'s writer by the write rule, `seq` being the writer's
    /// stamp (rule 3).
    pub fn write_at(&mut self, change: Change, seq: Hlc, grant: &Grant) -> PushOutcome {
        let held = self.rows.get(&change.key).map(|row| &*row.change);
        let decision = decide(held, &change, grant, &self.models, self.now_ms);
        if let Some(answer) = decision.outcome(grant, &change) {
            return answer;
        }
        debug_assert!(matches!(decision, Decision::Land { .. }));
        let row = Row {
            change: Arc::new(change),
            seq,
        };
        let lag_ms = self.draw_lag_ms();
        let key = row.change.key.clone();
        if let Some(old) = self.rows.insert(key.clone(), row.clone())
            && old.change.op == ChangeOp::Delete
        {
            self.tombstones.remove(&(old.seq, key.clone()));
        }
        if row.change.op == ChangeOp::Delete {
            self.tombstones.insert((row.seq, key.clone()));
        }
        match self.arriving.get_mut(&key) {
            // Visible at once, and nothing of the key before it still on its way.
            None if lag_ms == 0 => self.list(row),
            arrivals => {
                // A key's changes reach the feed in landing order.
                let after_ms = (arrivals.as_ref())
                    .and_then(|a| a.last())
                    .map_or(0, |a| a.visible_ms);
                let visible_ms = (self.now_ms + lag_ms).max(after_ms);
                self.arriving
                    .entry(key)
                    .or_default()
                    .push(Arrival { row, visible_ms });
                self.reveal();
            }
        }
        PushOutcome::Applied
    }

    /// Writes a batch as `grant`'s writer, one outcome per change, in order.
    pub fn push(&mut self, changes: Vec<Change>, grant: &Grant) -> PushResults {
        (changes.into_iter())
            .map(|change| {
                let (key, version) = (change.key.clone(), change.version.clone());
                (key, version, self.write_as(change, grant))
            })
            .collect()
    }

    /// One page of `scope`'s feed (rules 7 and 8).
    pub fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let after = match from {
            PullFrom::Since(since) => {
                if self.purged.get(scope).is_some_and(|purged| since < *purged) {
                    return Err(TransportError::Expired);
                }
                since
            }
            PullFrom::Snapshot(after) => after,
        };
        let start = Bound::Excluded((scope.to_string(), after));
        let mut stamps = (self.feed.range((start, Bound::Unbounded)))
            .take_while(|((row_scope, _), _)| row_scope == scope);
        // Whole stamps only: the next page starts after the last one, so a page that split
        // the changes of one `_seq` would skip the rest of them.
        let mut changes: Vec<(Hlc, Change)> = Vec::new();
        let mut more = false;
        for ((_, seq), at_seq) in stamps.by_ref() {
            if changes.len() >= limit.max(1) {
                more = true;
                break;
            }
            changes.extend(at_seq.iter().map(|change| (*seq, (**change).clone())));
        }
        Ok(PullPage {
            changes,
            more,
            safe: self.safe(),
        })
    }

    /// The feed position up to which every write is visible (rule 7).
    pub fn safe(&self) -> Hlc {
        Hlc::new(self.now_ms.saturating_sub(self.window_ms), 0)
    }

    /// The latest change of `key` (a tombstone is a `Delete`), if the cloud holds one.
    pub fn get(&self, key: &Key) -> Option<&Change> {
        self.rows.get(key).map(|row| &*row.change)
    }

    /// The feed position of `key`'s latest change.
    pub fn seq(&self, key: &Key) -> Option<Hlc> {
        self.rows.get(key).map(|row| row.seq)
    }

    /// Rows held, tombstones included.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the cloud holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn draw_lag_ms(&mut self) -> u64 {
        match self.lag_ms_max {
            0 => 0,
            max_ms => self.lag_rng.up_to(max_ms),
        }
    }

    /// Moves every arrival whose time has come into the feed.
    fn reveal(&mut self) {
        let now_ms = self.now_ms;
        let mut shown = Vec::new();
        for arrivals in self.arriving.values_mut() {
            let due = arrivals
                .iter()
                .take_while(|a| a.visible_ms <= now_ms)
                .count();
            shown.extend(arrivals.drain(..due).map(|a| a.row));
        }
        self.arriving.retain(|_, arrivals| !arrivals.is_empty());
        for row in shown {
            self.list(row);
        }
    }

    /// Shows `row` in the feed in place of the key's earlier change.
    fn list(&mut self, row: Row) {
        self.unlist(&row.change.key);
        let (scope, key) = (row.change.scope.clone(), row.change.key.clone());
        self.feed_of.insert(key, (scope.clone(), row.seq));
        self.feed
            .entry((scope, row.seq))
            .or_default()
            .push(row.change);
    }

    /// Takes `key` out of the feed.
    fn unlist(&mut self, key: &Key) {
        let Some(at) = self.feed_of.remove(key) else {
            return;
        };
        if let Some(at_seq) = self.feed.get_mut(&at) {
            at_seq.retain(|change| change.key != *key);
            if at_seq.is_empty() {
                self.feed.remove(&at);
            }
        }
    }

    fn past_horizon(&self, stamp: Hlc) -> bool {
        stamp.physical_ms().saturating_add(self.horizon_ms) <= self.now_ms
    }

    fn purge(&mut self) {
        let expired: Vec<(Hlc, Key)> = (self.tombstones.iter())
            .take_while(|(seq, _)| self.past_horizon(*seq))
            .filter(|(_, key)| !self.arriving.contains_key(key))
            .cloned()
            .collect();
        for (seq, key) in expired {
            self.tombstones.remove(&(seq, key.clone()));
            if let Some(row) = self.rows.remove(&key) {
                self.unlist(&key);
                let purged = self
                    .purged
                    .entry(row.change.scope.clone())
                    .or_insert(Hlc::ZERO);
                *purged = (*purged).max(row.seq);
            }
        }
    }
}

/// The reference cloud as a [`CloudStore`]: writes stamped by the cloud's own clock.
impl CloudStore for Mutex<MemoryCloud> {
    async fn session(&self) -> Result<Session, TransportError> {
        let cloud = self.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Session {
            server_time_ms: cloud.now_ms(),
            scopes: None,
            limits: Limits::default(),
            horizon_ms: cloud.horizon_ms(),
        })
    }

    async fn write(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<PushResults, TransportError> {
        let mut cloud = self.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cloud.push(changes, grant))
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        let cloud = self.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cloud.get(key).cloned())
    }

    async fn read(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let cloud = self.lock().unwrap_or_else(|p| p.into_inner());
        cloud.pull(scope, from, limit)
    }

    fn shared(&self) -> bool {
        false
    }
}

/// A [`Transport`] over a shared [`MemoryCloud`]: futures resolve immediately.
#[derive(Debug)]
pub struct MemoryTransport {
    cloud: Arc<Mutex<MemoryCloud>>,
    /// What this writer may write, as a relay checks a device's token.
    grant: Grant,
    /// This writer's clock (rule 3), `skew_ms` off the cloud's, disciplined by it.
    writer: Mutex<HlcClock>,
    skew_ms: i64,
    online: AtomicBool,
}

impl MemoryTransport {
    /// An online transport of a device that may write every scope, with a writer clock in
    /// step with the cloud's.
    pub fn new(cloud: Arc<Mutex<MemoryCloud>>) -> MemoryTransport {
        MemoryTransport {
            cloud,
            grant: Grant::device("device", None),
            writer: Mutex::new(HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT)),
            skew_ms: 0,
            online: AtomicBool::new(true),
        }
    }

    /// Restricts writes and reads to `scopes`; changes of other scopes, or that would move
    /// a row out of another scope, are `Rejected`.
    pub fn with_write_scopes<S: Into<String>>(
        mut self,
        scopes: impl IntoIterator<Item = S>,
    ) -> MemoryTransport {
        self.grant.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Writes as `grant`'s writer (a service, say).
    pub fn with_grant(mut self, grant: Grant) -> MemoryTransport {
        self.grant = grant;
        self
    }

    /// Stamps `_seq` from a clock `skew_ms` off the cloud's (a writer whose clock is wrong).
    pub fn with_writer_skew(mut self, skew_ms: i64) -> MemoryTransport {
        self.skew_ms = skew_ms;
        self
    }

    /// Takes the link down (every call fails with `Unavailable`) or up again.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
    }

    /// The cloud behind this transport.
    pub fn cloud(&self) -> &Arc<Mutex<MemoryCloud>> {
        &self.cloud
    }

    fn lock(&self) -> Result<MutexGuard<'_, MemoryCloud>, TransportError> {
        if !self.online.load(Ordering::SeqCst) {
            return Err(TransportError::Unavailable(
                "memory cloud is offline".into(),
            ));
        }
        let mut cloud = (self.cloud.lock())
            .map_err(|_| TransportError::Unavailable("memory cloud lock is poisoned".into()))?;
        cloud.keep_up_with_the_wall();
        Ok(cloud)
    }

    fn session(&self) -> Result<Session, TransportError> {
        let cloud = self.lock()?;
        Ok(Session {
            server_time_ms: cloud.now_ms(),
            scopes: self.grant.scopes.clone(),
            limits: Limits::default(),
            horizon_ms: cloud.horizon_ms(),
        })
    }

    fn push_now(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        let limit = Limits::default().push_changes_max;
        if changes.len() > limit {
            return Err(TransportError::Rejected(format!(
                "batch of {} changes is over the limit of {limit}",
                changes.len()
            )));
        }
        let mut cloud = self.lock()?;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let now_ms = cloud.now_ms().saturating_add_signed(self.skew_ms);
        let outcomes = (changes.into_iter())
            .map(|change| {
                let (key, version) = (change.key.clone(), change.version.clone());
                let outcome = cloud.write_at(change, writer.tick(now_ms), &self.grant);
                (key, version, outcome)
            })
            .collect();
        Ok(outcomes)
    }

    fn pull_now(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        self.grant.may_read(scope)?;
        self.lock()?.pull(scope, from, limit)
    }
}

impl Transport for MemoryTransport {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        std::future::ready(self.session())
    }

    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send {
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
        let held = self.lock().map(|cloud| cloud.get(key).cloned());
        std::future::ready(held.and_then(|held| crate::store::readable(held, &self.grant)))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use ferry_types::limits::ITEM_BYTES_MAX;
    use ferry_types::{Item, ReplicaId, Value, Version};

    use super::*;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    fn lock_cloud(cloud: &Mutex<MemoryCloud>) -> MutexGuard<'_, MemoryCloud> {
        cloud.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(n: u32) -> Key {
        Key {
            hash: Value::S(format!("k{n}")),
            sort: None,
        }
    }

    fn ver(ms: u64, who: &str) -> Version {
        let replica = ReplicaId::parse(who).unwrap_or_else(|e| panic!("replica {who}: {e}"));
        Version {
            hlc: Hlc::new(ms, 0),
            replica,
        }
    }

    fn put(n: u32, ms: u64, scope: &str) -> Change {
        let item = Item::from([("v".to_string(), Value::int(ms as i64))]);
        Change {
            model: "Thing".into(),
            key: key(n),
            op: ChangeOp::Put,
            version: ver(ms, "dev"),
            scope: scope.into(),
            item: Some(item),
            base: None,
        }
    }

    fn delete(n: u32, ms: u64, scope: &str) -> Change {
        Change {
            op: ChangeOp::Delete,
            item: None,
            ..put(n, ms, scope)
        }
    }

    /// The keys (numbers) of a page, in order.
    fn keys(page: &PullPage) -> Vec<String> {
        (page.changes.iter())
            .map(|(_, change)| change.key.to_string())
            .collect()
    }

    /// A snapshot page after `since` (never expires).
    fn pull(cloud: &MemoryCloud, scope: &str, since: Hlc, limit: usize) -> PullPage {
        cloud
            .pull(scope, PullFrom::Snapshot(since), limit)
            .unwrap_or_else(|e| panic!("pull {scope}: {e}"))
    }

    /// Polls a future that must be ready at once (the memory transport's are).
    fn now<F: Future>(future: F) -> F::Output {
        let mut context = Context::from_waker(Waker::noop());
        match pin!(future).poll(&mut context) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("memory transport futures resolve at once"),
        }
    }

    fn superseded(cloud: Change) -> PushOutcome {
        PushOutcome::Superseded {
            cloud: Box::new(cloud),
        }
    }

    #[test]
    fn conditional_last_writer_wins() {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(1_000);
        // (change, expected outcome, version held after)
        let rows = [
            (put(1, 10, "*"), PushOutcome::Applied, 10),
            (put(1, 20, "*"), PushOutcome::Applied, 20),
            (put(1, 15, "*"), superseded(put(1, 20, "*")), 20),
            (put(1, 20, "*"), PushOutcome::Applied, 20), // a retry whose answer was lost
        ];
        for (change, expected, held_ms) in rows {
            let ms = change.version.hlc.physical_ms();
            assert_eq!(cloud.write(change), expected, "write at {ms}");
            let held = cloud.get(&key(1)).map(|c| c.version.hlc.physical_ms());
            assert_eq!(held, Some(held_ms), "after write at {ms}");
        }
    }

    #[test]
    fn a_retried_write_neither_moves_the_feed_nor_changes_the_row() {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(1_000);
        cloud.write(put(1, 10, "*"));
        let seq = cloud.seq(&key(1));
        cloud.set_time_ms(2_000);
        assert_eq!(cloud.write(put(1, 10, "*")), PushOutcome::Applied);
        assert_eq!(cloud.seq(&key(1)), seq);
        assert!(
            pull(&cloud, "*", seq.unwrap_or_default(), 10)
                .changes
                .is_empty()
        );
    }

    #[test]
    fn tombstones_beat_older_puts_and_lose_to_newer_ones() {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(1_000);
        cloud.write(put(1, 10, "*"));
        assert_eq!(cloud.write(delete(1, 20, "*")), PushOutcome::Applied);
        let tombstone = superseded(delete(1, 20, "*"));
        assert_eq!(cloud.write(put(1, 15, "*")), tombstone, "no resurrection");
        assert_eq!(cloud.get(&key(1)).map(|c| c.op), Some(ChangeOp::Delete));
        assert_eq!(cloud.write(put(1, 30, "*")), PushOutcome::Applied);
        assert_eq!(cloud.get(&key(1)).map(|c| c.op), Some(ChangeOp::Put));
    }

    #[test]
    fn the_feed_is_in_seq_order_per_scope_with_one_entry_per_key() {
        let mut cloud = MemoryCloud::default();
        for (ms, change) in [
            (1_000, put(1, 1, "*")),
            (2_000, put(2, 2, "a")),
            (3_000, put(3, 3, "*")),
        ] {
            cloud.set_time_ms(ms);
            cloud.write(change);
        }
        cloud.set_time_ms(4_000);
        cloud.write(put(1, 4, "*")); // key 1 moves to the end of the feed
        let page = pull(&cloud, "*", Hlc::ZERO, 10);
        assert_eq!(keys(&page), ["k3", "k1"]);
        assert!(
            page.changes.windows(2).all(|w| w[0].0 < w[1].0),
            "_seq increases"
        );
        assert_eq!(keys(&pull(&cloud, "a", Hlc::ZERO, 10)), ["k2"]);
        let after_k3 = page.changes[0].0;
        assert_eq!(
            keys(&pull(&cloud, "*", after_k3, 10)),
            ["k1"],
            "since is exclusive"
        );
    }

    #[test]
    fn seq_increases_even_within_one_millisecond() {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(5_000);
        for n in 0..5 {
            cloud.write(put(n, 1, "*"));
        }
        let page = pull(&cloud, "*", Hlc::ZERO, 10);
        assert_eq!(page.changes.len(), 5);
        assert!(page.changes.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn limit_pages_the_feed() {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(1_000);
        for n in 0..5 {
            cloud.write(put(n, 1, "*"));
        }
        let mut since = Hlc::ZERO;
        let mut pages = Vec::new();
        loop {
            let page = pull(&cloud, "*", since, 2);
            pages.push(keys(&page));
            since = page.changes.last().map_or(since, |(seq, _)| *seq);
            if !page.more {
                break;
            }
        }
        assert_eq!(pages, [vec!["k0", "k1"], vec!["k2", "k3"], vec!["k4"]]);
        assert_eq!(
            pull(&cloud, "*", Hlc::ZERO, 0).changes.len(),
            1,
            "limit 0 reads one"
        );
    }

    #[test]
    fn only_a_cursor_before_a_purged_tombstone_expires_and_snapshots_never_do() {
        let mut cloud = MemoryCloud::new(30 * DAY_MS);
        cloud.set_time_ms(DAY_MS);
        cloud.write(put(1, 1, "*"));
        let before_delete = cloud.seq(&key(1)).unwrap_or_default();
        cloud.write(delete(2, 1, "*"));
        cloud.write(put(3, 1, "quiet"));
        let quiet_cursor = cloud.seq(&key(3)).unwrap_or_default();
        cloud.set_time_ms(31 * DAY_MS - 1);
        assert_eq!(cloud.len(), 3, "kept until the horizon");
        assert!(cloud.pull("*", PullFrom::Since(before_delete), 10).is_ok());
        cloud.set_time_ms(31 * DAY_MS);
        assert_eq!(cloud.get(&key(2)), None, "the tombstone is purged");
        assert_eq!(cloud.len(), 2, "live items stay");
        let expired = cloud.pull("*", PullFrom::Since(before_delete), 10);
        assert_eq!(expired, Err(TransportError::Expired));
        assert!(
            cloud
                .pull("quiet", PullFrom::Since(quiet_cursor), 10)
                .is_ok(),
            "a scope without purged tombstones never expires, however old the cursor"
        );
        // A snapshot pages through rows of any age, from the start and after its first page.
        for n in 10..15 {
            cloud.write(put(n, 2, "*"));
        }
        cloud.set_time_ms(90 * DAY_MS);
        let first = pull(&cloud, "*", Hlc::ZERO, 2);
        let after = first
            .changes
            .last()
            .map(|(seq, _)| *seq)
            .unwrap_or_default();
        assert!(first.more);
        let second = cloud.pull("*", PullFrom::Snapshot(after), 10);
        assert_eq!(second.map(|p| keys(&p).len()).ok(), Some(4));
    }

    #[test]
    fn late_visibility_shows_a_write_after_a_later_one_and_safe_stays_behind_it() {
        let mut cloud = MemoryCloud::default().with_lag(CATCHUP_WINDOW_MS / 2, 7);
        cloud.set_time_ms(DAY_MS);
        let mut writes = Vec::new();
        for n in 0..20 {
            cloud.write(put(n, 1, "*"));
            writes.push(cloud.seq(&key(n)).unwrap_or_default());
            cloud.set_time_ms(DAY_MS + u64::from(n) * 100);
        }
        let seen_early = pull(&cloud, "*", Hlc::ZERO, 100);
        assert!(
            seen_early.changes.len() < 20,
            "some writes are not visible yet"
        );
        let safe = seen_early.safe;
        assert!(
            writes.iter().filter(|seq| **seq <= safe).count()
                <= seen_early
                    .changes
                    .iter()
                    .filter(|(seq, _)| *seq <= safe)
                    .count(),
            "every write stamped at or before `safe` is visible"
        );
        cloud.set_time_ms(DAY_MS + CATCHUP_WINDOW_MS);
        assert_eq!(pull(&cloud, "*", Hlc::ZERO, 100).changes.len(), 20);
    }

    #[test]
    fn refusals_are_rejected_not_stored() {
        let mut cloud = MemoryCloud::default();
        let empty_put = Change {
            item: None,
            ..put(1, 1, "*")
        };
        let huge = Item::from([("blob".to_string(), Value::B(vec![0; ITEM_BYTES_MAX]))]);
        let huge_put = Change {
            item: Some(huge),
            ..put(2, 1, "*")
        };
        for change in [empty_put, huge_put] {
            let key = change.key.clone();
            let outcome = cloud.write(change);
            assert!(
                matches!(outcome, PushOutcome::Rejected { .. }),
                "{key}: {outcome:?}"
            );
            assert_eq!(cloud.get(&key), None);
        }
    }

    #[test]
    fn memory_transport_checks_scopes_limits_and_the_link() {
        let cloud = Arc::new(Mutex::new(MemoryCloud::default()));
        let transport = MemoryTransport::new(Arc::clone(&cloud)).with_write_scopes(["dev"]);
        let answer = now(transport.push(vec![put(1, 1, "dev"), put(2, 1, "other")]))
            .unwrap_or_else(|e| panic!("push: {e}"));
        assert_eq!(answer[0], (key(1), ver(1, "dev"), PushOutcome::Applied));
        assert!(
            matches!(&answer[1].2, PushOutcome::Rejected { reason } if reason.contains("other"))
        );
        let page = now(transport.pull("dev", PullFrom::Snapshot(Hlc::ZERO), 10))
            .unwrap_or_else(|e| panic!("pull: {e}"));
        assert_eq!(keys(&page), ["k1"]);
        // Key 2 is another scope's row: writing it from "dev" would move it out of "other".
        lock_cloud(&cloud).write(put(2, 1, "other"));
        let moved = now(transport.push(vec![put(2, 2, "dev")])).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&moved[0].2, PushOutcome::Rejected { reason } if reason.contains("other"))
        );
        let too_many = (0..=Limits::default().push_changes_max as u32)
            .map(|n| put(n, 1, "dev"))
            .collect();
        assert!(matches!(
            now(transport.push(too_many)),
            Err(TransportError::Rejected(_))
        ));
        transport.set_online(false);
        let offline = now(transport.pull("dev", PullFrom::Snapshot(Hlc::ZERO), 10));
        assert!(matches!(offline, Err(TransportError::Unavailable(_))));
    }

    /// A cloud nobody sets the time of follows the system's clock: a device writing at the
    /// wall's time lands at once. Before, it stood at zero and refused every such version
    /// as ahead of its time.
    #[test]
    fn a_cloud_whose_time_is_never_set_follows_the_wall() {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let wall_ms = wall.map_or(0, |d| d.as_millis() as u64);
        let cloud = Arc::new(Mutex::new(MemoryCloud::default()));
        let transport = MemoryTransport::new(Arc::clone(&cloud));
        let session = now(transport.connect()).unwrap();
        assert!(
            session.server_time_ms >= wall_ms,
            "{}",
            session.server_time_ms
        );
        let answer = now(transport.push(vec![put(1, wall_ms, "*")])).unwrap();
        assert_eq!(answer[0].2, PushOutcome::Applied);
        // A cloud whose caller sets its time keeps to it.
        let driven = Arc::new(Mutex::new(MemoryCloud::default()));
        driven.lock().unwrap().set_time_ms(1_000);
        let session = now(MemoryTransport::new(driven).connect()).unwrap();
        assert_eq!(session.server_time_ms, 1_000);
    }
}
