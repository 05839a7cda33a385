//! The embedded store: the cloud's rows in a `ferry-store` directory the relay owns. Every
//! write is decided by the write rule (`ferry_cloud::decide`) over the row it holds. It is
//! a true sequencer: each landed change gets its `_seq` from one clock under
//! the commit lock, so the feed order is the commit order, every committed change is
//! visible at once, and the feed's window W is zero.
//!
//! A row is an item of a fixed internal schema: `k` the device key's bytes (the primary
//! key), `s` the scope and `q` the `_seq` (the `feed` index, the sync GSI's twin), `c` the
//! change in the journal's encoding, and on tombstones `x`, the second they are purged
//! (the store's TTL index finds them). A push is answered once its commit is fsynced, so
//! neither a killed relay nor a power loss on its host loses a change it acknowledged;
//! pushes that commit while an fsync runs share the next one (group commit). A read that
//! meets a row whose fsync is still running waits for it, so a device never applies a
//! change that a power loss takes back; a failed fsync fails every push it covered.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_cloud::defaults::CATCHUP_WINDOW_MS;
use ferry_cloud::{
    Grant, Limits, Models, PullFrom, PullPage, PushOutcome, PushResults, Session, TransportError,
    decide,
};
use ferry_journal::{Change, ChangeOp, decode_change, encode_change};
use ferry_store::{Durability, Kind, Options, Query, Store, StoreLayout};
use ferry_types::limits::ITEM_BYTES_MAX;
use ferry_types::table::{Index, IndexKind, Projection, SortCondition};
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock, Item, Key, Value, ValueRef, keycode};

use super::CloudStore;
use crate::Clock;

/// The attribute naming a row's kind, and its one kind.
const TYPE_FIELD: &str = "_type";
const ROW_KIND: &str = "Row";

/// How the rows are kept: by key `k`; the feed index on scope `s` and `_seq` `q`, holding
/// the whole row (the change `c`); a tombstone row expires at `x` (epoch seconds).
fn row_layout() -> StoreLayout {
    let index = |name: &str, hash: &str, sort: Option<&str>, kind| Index {
        name: name.into(),
        hash: hash.into(),
        sort: sort.map(str::to_string),
        kind,
        project: Projection::All,
    };
    let row = Kind {
        ttl: Some("x".into()),
        ..Kind::default()
    };
    StoreLayout {
        primary: index("primary", "k", None, IndexKind::Primary),
        indexes: vec![index("feed", "s", Some("q"), IndexKind::Global)],
        type_field: TYPE_FIELD.into(),
        kinds: BTreeMap::from([(ROW_KIND.to_string(), row)]),
        document: b"ferry relay rows: k, feed (s, q), c, x".to_vec(),
    }
}

/// Meta record of the highest `_seq` assigned, so a restarted sequencer goes on above it.
const META_SEQ: &str = "relay:seq";
/// Meta record of each scope's highest purged tombstone (JSON: scope -> `_seq`).
const META_PURGED: &str = "relay:purged";
/// The store's age clock when last committed (epoch ms at creation, then advanced only by
/// the monotonic clock while the relay runs).
const META_AGE: &str = "relay:age";
/// The largest row: the change as encoded (which spells numbers out and names every
/// attribute: two to three times what DynamoDB counts for a list of small numbers)
/// plus its key, scope and stamp.
const ROW_BYTES_MAX: usize = 3 * ITEM_BYTES_MAX + 64 * 1024;
/// Changes per push and per page.
const CHANGES_PER_CALL: usize = 1000;
/// Bytes per push: well inside a frame.
const PUSH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes of changes a page reads at most: a frame's worth less the room the frame keeps
/// for the rest (the connection then cuts it to fit, counting keys and versions too).
const PAGE_BYTES_MAX: usize = ferry_protocol::FRAME_BYTES_MAX - 64 * 1024;
/// Tombstones purged per upkeep round.
const PURGE_BATCH: usize = 1000;

/// The relay's own store in a directory.
pub struct EmbeddedStore {
    /// Shared with the threads that wait for its fsyncs.
    store: Arc<Store>,
    horizon_ms: u64,
    /// The sequencer, held across each commit.
    sequencer: Mutex<HlcClock>,
    /// The highest `_seq` fsynced: every row stamped at or below it is durable and readable.
    committed: AtomicU64,
    /// Per scope, the highest `_seq` of a purged tombstone.
    purged: Mutex<BTreeMap<String, Hlc>>,
    /// What the write rule knows of the schema.
    models: Models,
    /// The relay's wall clock.
    clock: Clock,
    /// The store's age clock, which tombstone lifetimes count on: its value at open, the
    /// monotonic clock, and that clock's reading at open.
    age_at_open_ms: u64,
    timer: Clock,
    timer_at_open_ms: u64,
}

/// Why the embedded store cannot open.
pub type OpenError = ferry_store::Error;

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` for the schema's `models`, purging tombstones
    /// `horizon_ms` after their deletion.
    pub fn open(dir: &Path, horizon_ms: u64, models: Models) -> Result<EmbeddedStore, OpenError> {
        EmbeddedStore::open_observed(dir, horizon_ms, models, None)
    }

    /// [`EmbeddedStore::open`], with `on_fsync` called after each fsync (a test's disk
    /// copies the directory then, to lose what was not fsynced).
    #[doc(hidden)]
    pub fn open_observed(
        dir: &Path,
        horizon_ms: u64,
        models: Models,
        on_fsync: Option<ferry_store::FsyncHook>,
    ) -> Result<EmbeddedStore, OpenError> {
        let corrupt = |what: &str, e: serde_json::Error| ferry_store::Error::Corrupt {
            path: dir.display().to_string(),
            what: what.into(),
            detail: e.to_string(),
        };
        let options = Options {
            item_bytes_max: ROW_BYTES_MAX,
            on_fsync,
            ..Options::default()
        };
        let (store, ()) = Store::open(dir, &options, |_| Ok::<_, OpenError>((row_layout(), ())))?;
        let last = Hlc::from_u64(store.meta_u64(META_SEQ)?.unwrap_or(0));
        let purged: BTreeMap<String, u64> = match store.meta(META_PURGED)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(META_PURGED, e))?,
            None => BTreeMap::new(),
        };
        let purged = (purged.into_iter())
            .map(|(scope, seq)| (scope, Hlc::from_u64(seq)))
            .collect();
        let age_at_open_ms = match store.meta_u64(META_AGE)? {
            Some(age_ms) => age_ms,
            // A new store's age starts at the wall clock's time. A store written before
            // the age clock counted its tombstones' lifetimes from their stamps: its age
            // starts at its newest stamp (a wall clock ahead would purge them all at
            // once), and is recorded now.
            None => {
                let age_ms = match last == Hlc::ZERO {
                    true => crate::wall_ms(),
                    false => crate::wall_ms().min(last.physical_ms()),
                };
                store.write(Durability::Default, |tx| {
                    tx.set_meta(META_AGE, age_ms.to_be_bytes().to_vec());
                    Ok::<_, ferry_store::Error>(())
                })?;
                age_ms
            }
        };
        let timer = crate::monotonic_clock();
        let timer_at_open_ms = timer();
        Ok(EmbeddedStore {
            store: Arc::new(store),
            horizon_ms,
            sequencer: Mutex::new(HlcClock::new(last, MAX_FORWARD_MS_DEFAULT)),
            committed: AtomicU64::new(last.as_u64()),
            purged: Mutex::new(purged),
            models,
            clock: crate::wall_clock(),
            age_at_open_ms,
            timer,
            timer_at_open_ms,
        })
    }

    /// The same store reading the wall time from `wall` and the monotonic time from
    /// `timer` (a simulation's relay).
    pub fn with_clocks(mut self, wall: Clock, timer: Clock) -> EmbeddedStore {
        self.clock = wall;
        self.timer_at_open_ms = timer();
        self.timer = timer;
        self
    }

    /// The store's age clock: tombstones live `horizon_ms` of it. It moves only with the
    /// monotonic clock while the relay runs (persisted at each commit), so a wall clock
    /// stepped forward purges no tombstone early; the relay's downtime makes them live
    /// longer, which is safe.
    fn age_ms(&self) -> u64 {
        let elapsed = (self.timer)().saturating_sub(self.timer_at_open_ms);
        self.age_at_open_ms.saturating_add(elapsed)
    }

    /// The store's time: its clock, but never before the last stamp it gave, so that a
    /// wall clock stepped back neither refuses devices' versions as ahead of it nor holds
    /// back the purge.
    pub fn now_ms(&self) -> u64 {
        let last = lock(&self.sequencer).last();
        (self.clock)().max(last.physical_ms())
    }

    /// Writes `changes` of `grant`'s writer by the write rule in one commit, each landed
    /// one stamped by the sequencer; returns once the commit is fsynced.
    pub fn write_now(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<PushResults, TransportError> {
        let (results, last) = self.commit(changes, grant)?;
        self.store.persist().map_err(StoreFailure::from)?;
        self.committed.fetch_max(last, Ordering::AcqRel);
        Ok(results)
    }

    /// [`EmbeddedStore::write_now`] up to its fsync: the results and the highest `_seq`
    /// stamped so far, which the fsync makes readable.
    fn commit(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<(PushResults, u64), TransportError> {
        let mut sequencer = lock(&self.sequencer);
        let now = (self.clock)().max(sequencer.last().physical_ms());
        let age_ms = self.age_ms();
        let (results, _) = self.store.write(Durability::Default, |tx| {
            let mut results = PushResults::with_capacity(changes.len());
            let mut last = None;
            for change in changes {
                let (key, version) = (change.key.clone(), change.version.clone());
                let row_key = row_key(&change.key);
                let held = tx.get(&row_key)?.map(|row| held(&row)).transpose()?;
                let decision = decide(held.as_ref(), &change, grant, &self.models, now);
                // Every answer but `Land` is the rule's own; a landed change is written here.
                let outcome = match decision.outcome(grant, &change) {
                    Some(answer) => answer,
                    None => {
                        let seq = sequencer.tick(now);
                        debug_assert!(last.is_none_or(|last| seq > last), "_seq only grows");
                        tx.put(self.row(&change, row_key, seq, age_ms))?;
                        last = Some(seq);
                        PushOutcome::Applied
                    }
                };
                results.push((key, version, outcome));
            }
            if let Some(seq) = last {
                tx.set_meta(META_SEQ, seq.as_u64().to_be_bytes().to_vec());
                tx.set_meta(META_AGE, age_ms.to_be_bytes().to_vec());
            }
            Ok::<_, StoreFailure>(results)
        })?;
        // The next push commits while this one waits for its fsync, and shares the next.
        Ok((results, sequencer.last().as_u64()))
    }

    /// One page of `scope`'s feed.
    pub fn read_now(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        // Read first: every row stamped at or below it is committed, so the page sees it.
        let safe = Hlc::from_u64(self.committed.load(Ordering::Acquire));
        let after = match from {
            PullFrom::Since(since) => {
                if lock(&self.purged).get(scope).is_some_and(|p| since < *p) {
                    return Err(TransportError::Expired);
                }
                since
            }
            PullFrom::Snapshot(after) => after,
        };
        let query = Query {
            index: "feed".into(),
            hash: Value::S(scope.to_string()),
            sort: Some(SortCondition::Gt(seq_value(after))),
            reverse: false,
            after: None,
        };
        let limit = limit.max(1);
        let mut changes = Vec::with_capacity(limit.min(CHANGES_PER_CALL));
        let (mut more, mut bytes) = (false, 0);
        let rows = self.store.rows(&query).map_err(StoreFailure::from)?;
        for row in rows {
            // Read in place: a row's change is decoded straight from the stored bytes. A
            // pull reads only the row's change and stamp; the change is checked in full by
            // its decode, the rest of the row by its shape only (a view's check).
            let row = row.map_err(StoreFailure::from)?;
            let row = row.view().map_err(StoreFailure::from)?;
            // A page holds what one frame can carry: no row past it is read, however large
            // the rows (every row has its own stamp, so the cut keeps stamps whole; the
            // first row always goes, so a pull moves on).
            let change = match row.get("c") {
                Some(ValueRef::B(change)) => Some(*change),
                _ => None,
            };
            let size = change.map_or(0, <[u8]>::len);
            if changes.len() == limit || (!changes.is_empty() && bytes + size > PAGE_BYTES_MAX) {
                more = true;
                break;
            }
            bytes += size;
            let seq = match row.get("q") {
                Some(ValueRef::B(bytes)) => seq_of(bytes),
                _ => None,
            };
            let seq = seq.ok_or_else(|| StoreFailure::corrupt("row without a _seq"))?;
            if seq > safe && self.committed.load(Ordering::Acquire) < seq.as_u64() {
                // Committed, its fsync still running: shown once it is durable.
                self.store.persist().map_err(StoreFailure::from)?;
            }
            changes.push((seq, decode_held(change)?));
        }
        Ok(PullPage {
            changes,
            more,
            safe,
        })
    }

    /// The latest change of `key` the store holds (a tombstone is a `Delete`), once it is
    /// durable.
    pub fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        let row = self.store.get(&row_key(key)).map_err(StoreFailure::from)?;
        let seq = (row.as_ref()).and_then(|row| match row.get("q") {
            Some(Value::B(bytes)) => seq_of(bytes),
            _ => None,
        });
        if seq.is_some_and(|seq| self.committed.load(Ordering::Acquire) < seq.as_u64()) {
            self.store.persist().map_err(StoreFailure::from)?;
        }
        Ok(row.map(|row| held(&row)).transpose()?)
    }

    /// Purges tombstones whose lifetime (the horizon, on the store's age clock) passed,
    /// remembering per scope the newest purged.
    ///
    /// A tombstone within the catch-up window of the newest stamp stays, however old: a
    /// device's round starts that far behind its cursor, which may be the newest stamp, and
    /// a purged tombstone past its start answers `Expired`, so after a resync that lands
    /// there, every round would expire again. Only a store that no one wrote to for a
    /// horizon keeps one; the next write lets it go.
    pub fn purge(&self) -> Result<usize, TransportError> {
        let due =
            (self.store.expired(self.age_ms() / 1000, PURGE_BATCH)).map_err(StoreFailure::from)?;
        if due.is_empty() {
            return Ok(0);
        }
        let sequencer = lock(&self.sequencer);
        // Read under the commit lock: the age recorded never goes back.
        let age_ms = self.age_ms();
        let kept_from = sequencer
            .last()
            .physical_ms()
            .saturating_sub(CATCHUP_WINDOW_MS);
        let mut purged = lock(&self.purged);
        let (count, _) = self.store.write(Durability::Default, |tx| {
            let mut count = 0;
            for key in &due {
                let Some(row) = tx.get(key)? else { continue };
                let change = held(&row)?;
                let seq = match row.get("q") {
                    Some(Value::B(bytes)) => seq_of(bytes),
                    _ => None,
                };
                let seq = seq.filter(|seq| seq.physical_ms() < kept_from);
                if let (ChangeOp::Delete, Some(seq)) = (change.op, seq) {
                    tx.delete(key)?;
                    let newest = purged.entry(change.scope.clone()).or_insert(Hlc::ZERO);
                    *newest = (*newest).max(seq);
                    count += 1;
                }
            }
            let record: BTreeMap<&str, u64> = (purged.iter())
                .map(|(scope, seq)| (scope.as_str(), seq.as_u64()))
                .collect();
            let record = serde_json::to_vec(&record).unwrap_or_default();
            tx.set_meta(META_PURGED, record);
            tx.set_meta(META_AGE, age_ms.to_be_bytes().to_vec());
            Ok::<_, StoreFailure>(count)
        })?;
        Ok(count)
    }

    /// The stored row of `change`, stamped `seq` when the store's age is `age_ms`.
    fn row(&self, change: &Change, row_key: Key, seq: Hlc, age_ms: u64) -> Item {
        let mut encoded = Vec::new();
        encode_change(change, &mut encoded);
        let mut row = row_holding(change, row_key, encoded, seq);
        if change.op == ChangeOp::Delete {
            let purge_s = (age_ms + self.horizon_ms).div_ceil(1000);
            row.insert("x".into(), Value::N(purge_s.into()));
        }
        row
    }
}

impl CloudStore for EmbeddedStore {
    async fn session(&self) -> Result<Session, TransportError> {
        Ok(Session {
            server_time_ms: self.now_ms(),
            scopes: None,
            limits: Limits {
                push_changes_max: CHANGES_PER_CALL,
                push_bytes_max: PUSH_BYTES_MAX,
                page_changes_max: CHANGES_PER_CALL,
            },
            horizon_ms: self.horizon_ms,
        })
    }

    async fn write(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<PushResults, TransportError> {
        let (results, last) = blocking(|| self.commit(changes, grant))?;
        // The fsync is waited for on a thread of its own: the connection goes on with the
        // device's next push, which commits meanwhile and shares the next fsync.
        let store = Arc::clone(&self.store);
        fsynced(move || store.persist()).await?;
        self.committed.fetch_max(last, Ordering::AcqRel);
        Ok(results)
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        blocking(|| EmbeddedStore::get(self, key))
    }

    async fn read(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        blocking(|| self.read_now(scope, from, limit))
    }

    fn shared(&self) -> bool {
        false
    }

    async fn maintain(&self) {
        if let Err(e) = blocking(|| self.purge()) {
            tracing::warn!(error = %e, "purging tombstones failed");
        }
    }
}

/// A store failure, as the device hears of it: the call failed, retry later.
struct StoreFailure(String);

impl StoreFailure {
    fn corrupt(what: &str) -> StoreFailure {
        StoreFailure(format!("relay store: {what}"))
    }
}

impl From<ferry_store::Error> for StoreFailure {
    fn from(e: ferry_store::Error) -> StoreFailure {
        StoreFailure(format!("relay store: {e}"))
    }
}

impl From<StoreFailure> for TransportError {
    fn from(e: StoreFailure) -> TransportError {
        TransportError::Unavailable(e.0)
    }
}

/// The row's primary key: the device key's bytes as binary.
fn row_key(key: &Key) -> Key {
    let mut bytes = Vec::with_capacity(32);
    keycode::encode(&key.hash, &mut bytes);
    if let Some(sort) = &key.sort {
        keycode::encode(sort, &mut bytes);
    }
    Key {
        hash: Value::B(bytes),
        sort: None,
    }
}

/// The row of `change` stamped `seq`, holding `encoded` as its change: the rows' layout.
fn row_holding(change: &Change, row_key: Key, encoded: Vec<u8>, seq: Hlc) -> Item {
    Item::from([
        (TYPE_FIELD.to_string(), Value::S(ROW_KIND.into())),
        ("k".to_string(), row_key.hash),
        ("s".to_string(), Value::S(change.scope.clone())),
        ("q".to_string(), seq_value(seq)),
        ("c".to_string(), Value::B(encoded)),
    ])
}

/// The change a row holds.
fn held(row: &Item) -> Result<Change, StoreFailure> {
    decode_held(match row.get("c") {
        Some(Value::B(bytes)) => Some(bytes),
        _ => None,
    })
}

/// The change of a row whose change attribute holds `bytes` (`None`: it holds none).
fn decode_held(bytes: Option<&[u8]>) -> Result<Change, StoreFailure> {
    let bytes = bytes.ok_or_else(|| StoreFailure::corrupt("row without a change"))?;
    decode_change(bytes).map_err(|e| StoreFailure::corrupt(&format!("row change: {e}")))
}

/// A stamp as a sort key: big-endian bytes order as the stamps do.
fn seq_value(seq: Hlc) -> Value {
    Value::B(seq.as_u64().to_be_bytes().to_vec())
}

fn seq_of(bytes: &[u8]) -> Option<Hlc> {
    Some(Hlc::from_u64(u64::from_be_bytes(bytes.try_into().ok()?)))
}

/// Runs store work that may wait for an fsync off the async workers' hands (on a
/// multi-threaded runtime, the relay's), so that connections go on being served.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Waits for `fsync` on a blocking thread (on the relay's multi-threaded runtime), else
/// runs it here.
async fn fsynced(
    fsync: impl FnOnce() -> ferry_store::Result<()> + Send + 'static,
) -> Result<(), TransportError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let done = match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => match tokio::task::spawn_blocking(fsync).await {
            Ok(done) => done,
            Err(e) => {
                let failed = format!("relay store: the fsync's thread failed: {e}");
                return Err(StoreFailure(failed).into());
            }
        },
        _ => fsync(),
    };
    done.map_err(|e| StoreFailure::from(e).into())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use ferry_types::{ReplicaId, Version};

    use super::*;

    fn change(sort: &str, at_ms: u64, scope: &str, op: ChangeOp) -> Change {
        let key = Key {
            hash: Value::S("pk".into()),
            sort: Some(Value::S(sort.into())),
        };
        let item = (op == ChangeOp::Put).then(|| {
            Item::from([
                ("pk".to_string(), key.hash.clone()),
                ("sk".to_string(), Value::S(sort.into())),
            ])
        });
        Change {
            model: "M".into(),
            key,
            op,
            version: Version {
                hlc: Hlc::new(at_ms, 0),
                replica: ReplicaId::parse("writer").unwrap(),
            },
            scope: scope.into(),
            item,
            base: None,
        }
    }

    /// A store in `dir` whose every fsync goes through `disk` (a test's disk).
    fn on_disk(dir: &Path, disk: ferry_store::FsyncHook) -> EmbeddedStore {
        EmbeddedStore::open_observed(dir, 60_000, Models::unchecked(), Some(disk)).unwrap()
    }

    fn writer() -> Grant {
        Grant::service("test", None)
    }

    /// Copies directory `from` over `to` (a disk as the last fsync left it).
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        // Nothing fsynced yet: an empty disk.
        let Ok(entries) = std::fs::read_dir(from) else {
            return;
        };
        for entry in entries.flatten() {
            let target = to.join(entry.file_name());
            match entry.file_type().unwrap().is_dir() {
                true => copy_dir(&entry.path(), &target),
                // A file removed meanwhile (a compaction) was not needed.
                false => drop(std::fs::copy(entry.path(), target)),
            }
        }
    }

    /// One connection's pushes, written at once as the relay's connection does, share
    /// fsyncs: a push commits while an earlier one waits for its fsync.
    #[test]
    fn pushes_written_at_once_share_their_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let fsyncs = std::sync::Arc::new(AtomicU64::new(0));
        let counted = fsyncs.clone();
        let hook: ferry_store::FsyncHook = std::sync::Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(100));
            Ok(())
        });
        let store = on_disk(dir.path(), hook);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let before = fsyncs.load(Ordering::SeqCst);
        let pushes = ["a", "b", "c", "d"].map(|sort| {
            let store = &store;
            async move {
                let push = vec![change(sort, 10, "*", ChangeOp::Put)];
                CloudStore::write(store, push, &writer()).await.unwrap()
            }
        });
        let answers = runtime.block_on(futures_util::future::join_all(pushes));
        for answer in &answers {
            assert_eq!(answer[0].2, PushOutcome::Applied, "{answers:?}");
        }
        let fsynced = fsyncs.load(Ordering::SeqCst) - before;
        assert!(
            (1..=2).contains(&fsynced),
            "four pushes at once took {fsynced} fsyncs"
        );
        let page = store.read_now("*", PullFrom::Since(Hlc::ZERO), 10).unwrap();
        assert_eq!(page.changes.len(), 4, "every push is durable and readable");
    }

    #[test]
    fn a_read_that_meets_a_row_whose_fsync_is_running_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        // The first fsync after `slow` is set takes 300 ms.
        let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stall = slow.clone();
        let hook: ferry_store::FsyncHook = std::sync::Arc::new(move || {
            if stall.swap(false, Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            Ok(())
        });
        let store = on_disk(dir.path(), hook);
        store
            .write_now(vec![change("a", 10, "*", ChangeOp::Put)], &writer())
            .unwrap();
        slow.store(true, Ordering::SeqCst);
        std::thread::scope(|threads| {
            threads.spawn(|| {
                store
                    .write_now(vec![change("a", 20, "*", ChangeOp::Put)], &writer())
                    .unwrap()
            });
            // The second write is committed and its fsync runs: a snapshot, then a get.
            std::thread::sleep(std::time::Duration::from_millis(100));
            let page = store
                .read_now("*", PullFrom::Snapshot(Hlc::ZERO), 10)
                .unwrap();
            let versions: Vec<u64> = (page.changes.iter())
                .map(|(_, c)| c.version.hlc.physical_ms())
                .collect();
            assert_eq!(versions, [20], "the row as it is, once durable: {page:?}");
            let held = store.get(&page.changes[0].1.key).unwrap().unwrap();
            assert_eq!(held.version.hlc.physical_ms(), 20);
        });
    }

    #[test]
    fn a_power_loss_takes_back_no_push_the_store_answered() {
        let (dir, platter) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // What reached stable storage: the directory as each fsync left it.
        let disk = std::sync::Arc::new(Mutex::new(platter.path().join("store")));
        let (live, on_fsync) = (dir.path().to_path_buf(), disk.clone());
        let hook: ferry_store::FsyncHook = std::sync::Arc::new(move || {
            let durable = lock(&on_fsync);
            let _ = std::fs::remove_dir_all(&*durable);
            copy_dir(&live, &durable);
            Ok(())
        });
        let store = on_disk(dir.path(), hook);
        for n in 0..20 {
            let landed = store
                .write_now(
                    vec![change(&format!("k{n:02}"), 10 + n, "*", ChangeOp::Put)],
                    &writer(),
                )
                .unwrap();
            assert_eq!(outcomes(&landed), [&PushOutcome::Applied]);
        }
        // The power fails now: the relay restarts from what the disk holds.
        let after = tempfile::tempdir().unwrap();
        copy_dir(&lock(&disk), after.path());
        drop(store);
        let store = EmbeddedStore::open(after.path(), 60_000, Models::unchecked()).unwrap();
        let page = store
            .read_now("*", PullFrom::Since(Hlc::ZERO), 100)
            .unwrap();
        assert_eq!(page.changes.len(), 20, "every answered push survived");
    }

    fn outcomes(results: &PushResults) -> Vec<&PushOutcome> {
        results.iter().map(|(_, _, outcome)| outcome).collect()
    }

    #[test]
    fn the_conditional_rule_retries_and_refusals_are_memory_clouds() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 60_000, Models::unchecked()).unwrap();
        let first = store
            .write_now(vec![change("a", 10, "*", ChangeOp::Put)], &writer())
            .unwrap();
        assert_eq!(outcomes(&first), [&PushOutcome::Applied]);
        let retried = store
            .write_now(vec![change("a", 10, "*", ChangeOp::Put)], &writer())
            .unwrap();
        assert_eq!(
            outcomes(&retried),
            [&PushOutcome::Applied],
            "a retry is harmless"
        );
        let older = store
            .write_now(vec![change("a", 5, "*", ChangeOp::Put)], &writer())
            .unwrap();
        assert!(
            matches!(outcomes(&older)[0], PushOutcome::Superseded { cloud } if cloud.version.hlc == Hlc::new(10, 0))
        );
        let empty = Change {
            item: None,
            ..change("b", 10, "*", ChangeOp::Put)
        };
        let refused = store.write_now(vec![empty], &writer()).unwrap();
        assert!(matches!(
            outcomes(&refused)[0],
            PushOutcome::Rejected { .. }
        ));
        assert_eq!(
            store.get(&change("b", 0, "*", ChangeOp::Put).key).unwrap(),
            None
        );
        // A key stays in its scope (its devices would never hear of a move).
        let moved = store
            .write_now(vec![change("a", 20, "dev", ChangeOp::Put)], &writer())
            .unwrap();
        assert!(matches!(outcomes(&moved)[0], PushOutcome::Rejected { .. }));
        // One feed entry per key, at its latest stamp.
        store
            .write_now(vec![change("a", 30, "*", ChangeOp::Put)], &writer())
            .unwrap();
        let shared = store.read_now("*", PullFrom::Since(Hlc::ZERO), 10).unwrap();
        assert_eq!(shared.changes.len(), 1, "{shared:?}");
        assert_eq!(shared.changes[0].1.version.hlc, Hlc::new(30, 0));
        assert_eq!(
            shared.safe, shared.changes[0].0,
            "everything committed is visible"
        );
    }

    #[test]
    fn the_feed_pages_in_commit_order_and_the_sequencer_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 60_000, Models::unchecked()).unwrap();
        // Versions out of order: the feed follows the commits, not the versions.
        for (sort, at) in [("c", 30), ("a", 10), ("b", 20)] {
            store
                .write_now(vec![change(sort, at, "*", ChangeOp::Put)], &writer())
                .unwrap();
        }
        let page = store.read_now("*", PullFrom::Since(Hlc::ZERO), 2).unwrap();
        assert!(page.more);
        let versions: Vec<u64> = (page.changes.iter())
            .map(|(_, c)| c.version.hlc.physical_ms())
            .collect();
        assert_eq!(versions, [30, 10], "commit order");
        let last = page.changes[1].0;
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 60_000, Models::unchecked()).unwrap();
        let rest = store.read_now("*", PullFrom::Since(last), 10).unwrap();
        assert_eq!((rest.changes.len(), rest.more), (1, false));
        store
            .write_now(vec![change("d", 40, "*", ChangeOp::Put)], &writer())
            .unwrap();
        let after = store
            .read_now("*", PullFrom::Since(rest.changes[0].0), 10)
            .unwrap();
        assert_eq!(
            after.changes.len(),
            1,
            "a restarted sequencer stamps above the old"
        );
        assert!(after.changes[0].0 > rest.changes[0].0);
    }

    #[test]
    fn purged_tombstones_expire_older_cursors_but_never_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let clocks = Clocks::new();
        let open = || clocks.open(dir.path());
        let store = open();
        store
            .write_now(vec![change("a", 10, "*", ChangeOp::Put)], &writer())
            .unwrap();
        let before = store
            .read_now("*", PullFrom::Since(Hlc::ZERO), 10)
            .unwrap()
            .safe;
        store
            .write_now(vec![change("a", 20, "*", ChangeOp::Delete)], &writer())
            .unwrap();
        assert_eq!(store.purge().unwrap(), 0, "not yet past the horizon");
        // Past the horizon, and a write later than the catch-up window: the tombstone goes.
        clocks.pass(CATCHUP_WINDOW_MS + 1);
        store
            .write_now(vec![change("b", 30, "*", ChangeOp::Put)], &writer())
            .unwrap();
        assert_eq!(store.purge().unwrap(), 1);
        assert_eq!(
            store.read_now("*", PullFrom::Since(before), 10),
            Err(TransportError::Expired)
        );
        let snapshot = store
            .read_now("*", PullFrom::Snapshot(Hlc::ZERO), 10)
            .unwrap();
        assert_eq!(snapshot.changes.len(), 1, "b alone: the tombstone is gone");
        drop(store);
        let store = open();
        assert_eq!(
            store.read_now("*", PullFrom::Since(before), 10),
            Err(TransportError::Expired),
            "the purge is remembered"
        );
    }

    /// Found by the simulator on the relay path (seed 1 --long): the relay's clock stepped
    /// forward past the horizon and the tombstones it purged then let older writes land
    /// over deletes that devices kept. Lifetimes count on the store's age clock, which
    /// only the monotonic clock moves, across restarts too.
    #[test]
    fn a_wall_clock_stepped_forward_purges_no_tombstone_before_its_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let clocks = Clocks::new();
        let open = || clocks.open(dir.path());
        let store = open();
        put_then_delete(&store);
        clocks
            .wall
            .fetch_add(365 * 24 * 3_600_000, Ordering::SeqCst);
        store
            .write_now(vec![change("b", 30, "*", ChangeOp::Put)], &writer())
            .unwrap();
        assert_eq!(
            store.purge().unwrap(),
            0,
            "a year of wall clock is no lifetime"
        );
        // A restart: the age goes on from what was committed, not from the wall clock.
        drop(store);
        let store = open();
        assert_eq!(store.purge().unwrap(), 0);
        clocks.timer.fetch_add(2_000, Ordering::SeqCst);
        assert_eq!(
            store.purge().unwrap(),
            1,
            "its lifetime passed on the age clock"
        );
    }

    /// Found by the simulator on the relay path (seed 985): a device whose resync ended at
    /// the newest stamp, a tombstone, starts its next round a catch-up window behind it;
    /// had the tombstone been purged, every round would be answered `Expired`.
    #[test]
    fn the_newest_tombstone_outlives_its_lifetime_until_a_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let clocks = Clocks::new();
        let store = clocks.open(dir.path());
        put_then_delete(&store);
        let caught_up = store.read_now("*", PullFrom::Since(Hlc::ZERO), 10).unwrap();
        let round =
            |safe: Hlc| PullFrom::Since(Hlc::new(safe.physical_ms() - CATCHUP_WINDOW_MS, 0));
        clocks.timer.fetch_add(2_000, Ordering::SeqCst);
        assert_eq!(store.purge().unwrap(), 0, "the newest stays");
        assert!(store.read_now("*", round(caught_up.safe), 10).is_ok());
        clocks.pass(CATCHUP_WINDOW_MS + 1);
        store
            .write_now(vec![change("b", 30, "*", ChangeOp::Put)], &writer())
            .unwrap();
        assert_eq!(store.purge().unwrap(), 1);
        let safe = store
            .read_now("*", PullFrom::Snapshot(Hlc::ZERO), 10)
            .unwrap()
            .safe;
        assert!(store.read_now("*", round(safe), 10).is_ok());
    }

    /// A store written before the age clock counted a tombstone's lifetime from its stamp.
    /// Opened with a wall clock a year past its newest stamp (stepped, or downtime), it
    /// purges none of them at once: its age starts at its newest stamp.
    #[test]
    fn a_store_from_before_the_age_clock_purges_no_tombstone_early() {
        let dir = tempfile::tempdir().unwrap();
        let seq = Hlc::new(crate::wall_ms() - 365 * 24 * 3_600_000, 0);
        let horizon_ms = 24 * 3_600_000;
        let tombstone = change("a", 20, "*", ChangeOp::Delete);
        // The rows as the earlier version wrote them: no age record.
        let mut encoded = Vec::new();
        encode_change(&tombstone, &mut encoded);
        let mut row = raw_row(&tombstone, encoded, seq);
        let expiry = (seq.physical_ms() + horizon_ms) / 1000;
        row.insert("x".to_string(), Value::N(expiry.into()));
        put_raw_row(dir.path(), row, seq);
        let store = EmbeddedStore::open(dir.path(), horizon_ms, Models::unchecked()).unwrap();
        assert_eq!(
            store.purge().unwrap(),
            0,
            "a year of wall clock is no lifetime"
        );
        assert!(store.get(&tombstone.key).unwrap().is_some());
    }

    /// A row of `change` stamped `seq` as the store writes it, its change bytes as given.
    fn raw_row(change: &Change, encoded: Vec<u8>, seq: Hlc) -> Item {
        row_holding(change, row_key(&change.key), encoded, seq)
    }

    /// Writes `row` straight into the relay store in `dir`, as another version of the relay
    /// or a damaged disk left it.
    fn put_raw_row(dir: &Path, row: Item, seq: Hlc) {
        let options = Options {
            item_bytes_max: ROW_BYTES_MAX,
            ..Options::default()
        };
        let store = Store::open(dir, &options, |_| Ok::<_, OpenError>((row_layout(), ())))
            .unwrap()
            .0;
        store
            .write(Durability::Default, |tx| {
                tx.put(row)?;
                tx.set_meta(META_SEQ, seq.as_u64().to_be_bytes().to_vec());
                Ok::<_, ferry_store::Error>(())
            })
            .unwrap();
    }

    /// A row whose change bytes are damaged fails the pull and the get that reach it with an
    /// error naming the row's change, and a push to its key, rather than passing on
    /// something else or panicking.
    #[test]
    fn a_damaged_row_fails_what_reads_it_and_names_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let put = change("a", 10, "*", ChangeOp::Put);
        let mut encoded = Vec::new();
        encode_change(&put, &mut encoded);
        encoded.truncate(encoded.len() - 3);
        put_raw_row(
            dir.path(),
            raw_row(&put, encoded, Hlc::new(10, 0)),
            Hlc::new(10, 0),
        );
        let store = EmbeddedStore::open(dir.path(), 60_000, Models::unchecked()).unwrap();
        let named = |result: Result<_, TransportError>| match result {
            Err(TransportError::Unavailable(why)) => why.contains("row change"),
            _ => false,
        };
        let pulled = store.read_now("*", PullFrom::Since(Hlc::new(0, 0)), 10);
        assert!(
            named(pulled.as_ref().map(|_| ()).map_err(Clone::clone)),
            "{pulled:?}"
        );
        let got = store.get(&put.key);
        assert!(
            named(got.as_ref().map(|_| ()).map_err(Clone::clone)),
            "{got:?}"
        );
        let newer = change("a", 20, "*", ChangeOp::Put);
        let pushed = store.write_now(vec![newer], &writer());
        assert!(
            named(pushed.as_ref().map(|_| ()).map_err(Clone::clone)),
            "{pushed:?}"
        );
    }

    /// A disk whose fsync fails: the push it covered is failed (the device sends it again),
    /// the store refuses every later write, and no read shows the row that may be lost.
    #[test]
    fn an_fsync_that_fails_fails_its_push_and_everything_after() {
        let dir = tempfile::tempdir().unwrap();
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let disk = failing.clone();
        let hook: ferry_store::FsyncHook =
            std::sync::Arc::new(move || match disk.load(Ordering::SeqCst) {
                true => Err(std::io::Error::other("the disk failed")),
                false => Ok(()),
            });
        let store = on_disk(dir.path(), hook);
        store
            .write_now(vec![change("a", 10, "*", ChangeOp::Put)], &writer())
            .unwrap();
        failing.store(true, Ordering::SeqCst);
        let failed = store.write_now(vec![change("b", 20, "*", ChangeOp::Put)], &writer());
        assert!(
            matches!(failed, Err(TransportError::Unavailable(_))),
            "{failed:?}"
        );
        failing.store(false, Ordering::SeqCst);
        let after = store.write_now(vec![change("c", 30, "*", ChangeOp::Put)], &writer());
        assert!(
            after.is_err(),
            "a store whose fsync failed takes no more: {after:?}"
        );
        let read = store.read_now("*", PullFrom::Since(Hlc::ZERO), 10);
        assert!(
            read.as_ref().is_err() || read.as_ref().is_ok_and(|p| p.changes.len() == 1),
            "b, which may be lost, is not shown: {read:?}"
        );
    }

    /// A page reads no more rows than a frame can carry, however large they are: a
    /// scope of 1000 rows of 400 KiB each would otherwise load 400 MB for each pull.
    #[test]
    fn a_page_of_large_rows_reads_about_a_frame_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 60_000, Models::unchecked()).unwrap();
        for n in 0..40u64 {
            let mut large = change(&format!("k{n:02}"), 10 + n, "*", ChangeOp::Put);
            if let Some(item) = &mut large.item {
                item.insert("blob".into(), Value::B(vec![n as u8; 300 * 1024]));
            }
            store.write_now(vec![large], &writer()).unwrap();
        }
        let page = store
            .read_now("*", PullFrom::Since(Hlc::ZERO), 1000)
            .unwrap();
        assert!(page.more, "the rest on the next page");
        let bytes = 300 * 1024 * page.changes.len();
        assert!(
            (PAGE_BYTES_MAX - 400 * 1024..=PAGE_BYTES_MAX).contains(&bytes),
            "{} rows read",
            page.changes.len()
        );
        // Paged on, every row comes once.
        let (mut seen, mut from) = (Vec::new(), PullFrom::Since(Hlc::ZERO));
        loop {
            let page = store.read_now("*", from, 1000).unwrap();
            seen.extend(page.changes.iter().map(|(_, c)| c.key.clone()));
            match (page.more, page.changes.last()) {
                (true, Some((seq, _))) => from = PullFrom::Since(*seq),
                _ => break,
            }
        }
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), distinct.len()), (40, 40));
    }

    /// Key `a` written, then deleted: a tombstone, the newest row.
    fn put_then_delete(store: &EmbeddedStore) {
        for (at, op) in [(10, ChangeOp::Put), (20, ChangeOp::Delete)] {
            store
                .write_now(vec![change("a", at, "*", op)], &writer())
                .unwrap();
        }
    }

    /// A wall clock and a monotonic clock a test moves.
    struct Clocks {
        wall: std::sync::Arc<AtomicU64>,
        timer: std::sync::Arc<AtomicU64>,
    }

    impl Clocks {
        fn new() -> Clocks {
            Clocks {
                wall: std::sync::Arc::new(AtomicU64::new(crate::wall_ms())),
                timer: std::sync::Arc::new(AtomicU64::new(0)),
            }
        }

        /// The store in `dir` (a horizon of one second) on these clocks.
        fn open(&self, dir: &Path) -> EmbeddedStore {
            let store = EmbeddedStore::open(dir, 1_000, Models::unchecked()).unwrap();
            let (wall, timer) = (self.wall.clone(), self.timer.clone());
            store.with_clocks(
                std::sync::Arc::new(move || wall.load(Ordering::SeqCst)),
                std::sync::Arc::new(move || timer.load(Ordering::SeqCst)),
            )
        }

        /// Time passes: both clocks move by `ms`.
        fn pass(&self, ms: u64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
            self.timer.fetch_add(ms, Ordering::SeqCst);
        }
    }
}
