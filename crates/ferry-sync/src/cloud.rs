//! `MemoryCloud`: the reference cloud, and `MemoryTransport` over it.
//!
//! This is the semantics every cloud backend must match (the DynamoDB layout of DESIGN.md 7
//! implements the same rules with a conditional write and the sync GSI):
//!
//! 1. **One row per key** (the table's primary key): the latest change of the item, either
//!    a put with its item or a tombstone (`_del`), with its version (`_ver`), its scope
//!    (`_scope`) and its feed position (`_seq`).
//! 2. **Conditional last writer wins**: a change lands iff there is no row or the row's
//!    version is older (`attribute_not_exists(pk) OR _ver < :ver`). Landing stamps `_seq`
//!    from the cloud's own [`HlcClock`], so `_seq` strictly increases in landing order.
//! 3. **Retries are harmless**: a change whose version equals the row's is a retry whose
//!    answer was lost: `Applied`, and nothing changes (no new `_seq`, no feed entry). An
//!    older one is `Superseded { cloud }` with the row's version.
//! 4. **Tombstones are rows**: a delete beats older puts (rule 2) and loses to newer ones.
//! 5. **Refusals**: a put without an item, or with an item over DynamoDB's 400 KiB, is
//!    `Rejected` (it can never land, so retrying is pointless).
//! 6. **Change feed**: `pull(scope, since, limit)` returns the rows of `scope` with
//!    `_seq > since`, in `_seq` order, at most `limit` (at least one), and `more` when
//!    further rows exist. A key appears once, at its latest `_seq`: the feed is a
//!    snapshot-able index, not a log. A row whose scope changes leaves the old scope's feed.
//!    The last page (`more == false`) carries the feed's `position`: the latest `_seq`
//!    stamped or, if later, just before the current time. Every later landing is stamped
//!    after it, so a device may move its cursor there although the page is empty; a scope
//!    that sees no change for longer than the horizon then still never expires.
//! 7. **Horizon**: a tombstone is purged once `_seq`'s time + horizon <= now (DynamoDB's TTL
//!    on `_ttl`). A pull with `since != Hlc::ZERO` and `since`'s time + horizon <= now is
//!    `Expired` (tombstones after it may be gone); `since == Hlc::ZERO` reads the whole
//!    scope and never expires.
//! 8. **Time** is the cloud's wall clock, set by the caller with
//!    [`MemoryCloud::set_time_ms`]; it never goes backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_journal::{Change, ChangeOp};
use ferry_types::limits::ITEM_BYTES_MAX;
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock, Key, Version, item_size};

use crate::config::{BATCH_CHANGES_MAX, HORIZON_MS};
use crate::transport::{PullPage, PushOutcome, Transport, TransportError};

/// One stored row: the item's latest change and its feed position.
#[derive(Debug, Clone)]
struct Row {
    change: Change,
    seq: Hlc,
}

/// The reference cloud: the rules in the module documentation, in memory.
#[derive(Debug)]
pub struct MemoryCloud {
    clock: HlcClock,
    now_ms: u64,
    horizon_ms: u64,
    rows: BTreeMap<Key, Row>,
    /// The sync GSI: (`_scope`, `_seq`) -> key.
    feed: BTreeMap<(String, Hlc), Key>,
}

impl Default for MemoryCloud {
    fn default() -> MemoryCloud {
        MemoryCloud::new(HORIZON_MS)
    }
}

impl MemoryCloud {
    /// An empty cloud at time 0 whose tombstones live `horizon_ms`.
    pub fn new(horizon_ms: u64) -> MemoryCloud {
        MemoryCloud {
            clock: HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT),
            now_ms: 0,
            horizon_ms,
            rows: BTreeMap::new(),
            feed: BTreeMap::new(),
        }
    }

    /// Sets the cloud's wall clock (ignored if it would go backwards) and purges the
    /// tombstones past the horizon.
    pub fn set_time_ms(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.purge();
    }

    /// The cloud's wall clock.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Writes one change by the conditional rule; also how a cloud developer writes.
    pub fn write(&mut self, change: Change) -> PushOutcome {
        if let Some(reason) = refusal(&change) {
            return PushOutcome::Rejected { reason };
        }
        if let Some(row) = self.rows.get(&change.key) {
            if row.change.version == change.version {
                return PushOutcome::Applied;
            }
            if row.change.version > change.version {
                let cloud = row.change.version.clone();
                return PushOutcome::Superseded { cloud };
            }
            self.feed.remove(&(row.change.scope.clone(), row.seq));
        }
        let seq = self.clock.tick(self.now_ms);
        self.feed
            .insert((change.scope.clone(), seq), change.key.clone());
        self.rows.insert(change.key.clone(), Row { change, seq });
        PushOutcome::Applied
    }

    /// Writes a batch, one outcome per change, in order.
    pub fn push(&mut self, changes: Vec<Change>) -> Vec<(Key, Version, PushOutcome)> {
        (changes.into_iter())
            .map(|change| {
                let (key, version) = (change.key.clone(), change.version.clone());
                (key, version, self.write(change))
            })
            .collect()
    }

    /// One page of `scope`'s feed after `since` (rules 6 and 7).
    pub fn pull(&self, scope: &str, since: Hlc, limit: usize) -> Result<PullPage, TransportError> {
        if since != Hlc::ZERO && self.past_horizon(since) {
            return Err(TransportError::Expired);
        }
        let start = Bound::Excluded((scope.to_string(), since));
        let mut rows = (self.feed.range((start, Bound::Unbounded)))
            .take_while(|((row_scope, _), _)| row_scope == scope)
            .filter_map(|((_, seq), key)| Some((*seq, self.rows.get(key)?.change.clone())));
        let changes: Vec<(Hlc, Change)> = rows.by_ref().take(limit.max(1)).collect();
        let more = rows.next().is_some();
        let position = (!more).then(|| self.position());
        Ok(PullPage {
            changes,
            more,
            position,
        })
    }

    /// A feed position every later landing is stamped after (rule 6): the clock's last
    /// stamp, or the last instant before now (a landing now may be stamped `(now, 0)`).
    fn position(&self) -> Hlc {
        let before_now = Hlc::new(self.now_ms, 0).as_u64().saturating_sub(1);
        self.clock.last().max(Hlc::from_u64(before_now))
    }

    /// The latest change of `key` (a tombstone is a `Delete`), if the cloud holds one.
    pub fn get(&self, key: &Key) -> Option<&Change> {
        self.rows.get(key).map(|row| &row.change)
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

    fn past_horizon(&self, stamp: Hlc) -> bool {
        stamp.physical_ms().saturating_add(self.horizon_ms) <= self.now_ms
    }

    fn purge(&mut self) {
        let expired: Vec<Key> = (self.rows.iter())
            .filter(|(_, row)| row.change.op == ChangeOp::Delete && self.past_horizon(row.seq))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some(row) = self.rows.remove(&key) {
                self.feed.remove(&(row.change.scope, row.seq));
            }
        }
    }
}

/// Why the cloud can never accept `change` (rule 5).
fn refusal(change: &Change) -> Option<String> {
    let key = &change.key;
    match (&change.op, &change.item) {
        (ChangeOp::Put, None) => Some(format!("put of key {key} carries no item")),
        (ChangeOp::Put, Some(item)) if item_size(item) > ITEM_BYTES_MAX => Some(format!(
            "item of key {key} is {} bytes, over DynamoDB's {ITEM_BYTES_MAX}",
            item_size(item)
        )),
        _ => None,
    }
}

/// A [`Transport`] over a shared [`MemoryCloud`]: futures resolve immediately.
#[derive(Debug)]
pub struct MemoryTransport {
    cloud: Arc<Mutex<MemoryCloud>>,
    /// Scopes this device may write (None: all), as a relay checks a device's token.
    write_scopes: Option<BTreeSet<String>>,
    online: AtomicBool,
}

impl MemoryTransport {
    /// An online transport that may write every scope.
    pub fn new(cloud: Arc<Mutex<MemoryCloud>>) -> MemoryTransport {
        MemoryTransport {
            cloud,
            write_scopes: None,
            online: AtomicBool::new(true),
        }
    }

    /// Restricts writes to `scopes`; changes of other scopes are `Rejected`.
    pub fn with_write_scopes<S: Into<String>>(
        mut self,
        scopes: impl IntoIterator<Item = S>,
    ) -> MemoryTransport {
        self.write_scopes = Some(scopes.into_iter().map(Into::into).collect());
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
        (self.cloud.lock())
            .map_err(|_| TransportError::Unavailable("memory cloud lock is poisoned".into()))
    }

    fn push_now(
        &self,
        changes: Vec<Change>,
    ) -> Result<Vec<(Key, Version, PushOutcome)>, TransportError> {
        if changes.len() > BATCH_CHANGES_MAX {
            return Err(TransportError::Rejected(format!(
                "batch of {} changes is over the limit of {BATCH_CHANGES_MAX}",
                changes.len()
            )));
        }
        let mut cloud = self.lock()?;
        let outcomes = (changes.into_iter())
            .map(|change| {
                let (key, version) = (change.key.clone(), change.version.clone());
                let outcome = match &self.write_scopes {
                    Some(scopes) if !scopes.contains(&change.scope) => PushOutcome::Rejected {
                        reason: format!("scope {} is not writable by this device", change.scope),
                    },
                    _ => cloud.write(change),
                };
                (key, version, outcome)
            })
            .collect();
        Ok(outcomes)
    }
}

impl Transport for MemoryTransport {
    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<Vec<(Key, Version, PushOutcome)>, TransportError>> + Send {
        std::future::ready(self.push_now(changes))
    }

    fn pull(
        &self,
        scope: &str,
        since: Hlc,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        std::future::ready(
            self.lock()
                .and_then(|cloud| cloud.pull(scope, since, limit)),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use ferry_types::{Item, ReplicaId, Value};

    use super::*;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

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

    fn pull(cloud: &MemoryCloud, scope: &str, since: Hlc, limit: usize) -> PullPage {
        cloud
            .pull(scope, since, limit)
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

    #[test]
    fn conditional_last_writer_wins() {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(1_000);
        // (change, expected outcome, version held after)
        let rows = [
            (put(1, 10, "*"), PushOutcome::Applied, 10),
            (put(1, 20, "*"), PushOutcome::Applied, 20),
            (
                put(1, 15, "*"),
                PushOutcome::Superseded {
                    cloud: ver(20, "dev"),
                },
                20,
            ),
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
        let superseded = PushOutcome::Superseded {
            cloud: ver(20, "dev"),
        };
        assert_eq!(cloud.write(put(1, 15, "*")), superseded, "no resurrection");
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
    fn tombstones_are_purged_after_the_horizon_and_old_cursors_expire() {
        let mut cloud = MemoryCloud::new(30 * DAY_MS);
        cloud.set_time_ms(DAY_MS);
        cloud.write(put(1, 1, "*"));
        cloud.write(delete(2, 1, "*"));
        let cursor = pull(&cloud, "*", Hlc::ZERO, 10).changes[0].0;
        cloud.set_time_ms(31 * DAY_MS - 1);
        assert_eq!(cloud.len(), 2, "kept until the horizon");
        assert!(cloud.pull("*", cursor, 10).is_ok());
        cloud.set_time_ms(31 * DAY_MS);
        assert_eq!(cloud.get(&key(2)), None, "the tombstone is purged");
        assert_eq!(cloud.len(), 1, "live items stay");
        assert_eq!(cloud.pull("*", cursor, 10), Err(TransportError::Expired));
        let snapshot = pull(&cloud, "*", Hlc::ZERO, 10);
        assert_eq!(
            keys(&snapshot),
            ["k1"],
            "a read from the start never expires"
        );
    }

    #[test]
    fn the_last_page_gives_a_position_that_keeps_a_quiet_scope_from_expiring() {
        let mut cloud = MemoryCloud::new(30 * DAY_MS);
        cloud.set_time_ms(DAY_MS);
        cloud.write(put(1, 1, "*"));
        let first = pull(&cloud, "*", Hlc::ZERO, 10);
        let seq = first.changes[0].0;
        assert_eq!(
            first.position,
            Some(seq),
            "nothing newer than the last landing yet"
        );
        cloud.set_time_ms(20 * DAY_MS);
        let quiet = pull(&cloud, "*", seq, 10);
        let position = quiet.position.unwrap_or_default();
        assert!(
            quiet.changes.is_empty() && position > seq,
            "an empty page moves on"
        );
        cloud.write(put(2, 2, "*")); // lands within the same millisecond as the pull
        assert_eq!(
            keys(&pull(&cloud, "*", position, 10)),
            ["k2"],
            "later landings follow"
        );
        cloud.set_time_ms(45 * DAY_MS);
        assert!(
            cloud.pull("*", position, 10).is_ok(),
            "within the horizon of the position"
        );
        assert_eq!(
            pull(&cloud, "*", Hlc::ZERO, 1).position,
            None,
            "only on the last page"
        );
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
        let page =
            now(transport.pull("dev", Hlc::ZERO, 10)).unwrap_or_else(|e| panic!("pull: {e}"));
        assert_eq!(keys(&page), ["k1"]);
        let too_many = (0..=BATCH_CHANGES_MAX as u32)
            .map(|n| put(n, 1, "dev"))
            .collect();
        assert!(matches!(
            now(transport.push(too_many)),
            Err(TransportError::Rejected(_))
        ));
        transport.set_online(false);
        let offline = now(transport.pull("dev", Hlc::ZERO, 10));
        assert!(matches!(offline, Err(TransportError::Unavailable(_))));
    }
}
