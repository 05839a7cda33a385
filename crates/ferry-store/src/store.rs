//! Opening a store, its keyspaces, its layout, and reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_types::limits::ITEM_BYTES_MAX;
use ferry_types::table::Index;
use ferry_types::{Item, ItemRef, Key};
use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions};

use crate::durability::{Flushes, Fsyncer, fsync_journal};
use crate::layout;
use crate::outbox_writes::OutboxWrites;
use crate::store_layout::StoreLayout;
use crate::tx::{ItemChange, Tx};
use crate::{Error, Result};
use ferry_types::Durability;

/// The layout's document (a database's schema: the key is older than layouts).
const META_DOCUMENT: &[u8] = b"schema";
const META_INDEX_PREFIX: &str = "index:";
/// One keyspace's memtable before it is flushed (fjall's default is 64 MiB).
const MEMTABLE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Journal kept before memtables are flushed; bounds replay time and memory at open.
const JOURNAL_BYTES_MAX: u64 = 64 * 1024 * 1024; // fjall's minimum
/// Items re-indexed per batch when an index is added or changed.
const REINDEX_BATCH_ITEMS: usize = 10_000;

/// Called after every fsync of the store (a simulator's disk copies the directory then);
/// an error counts as the fsync's own (a test's failing disk).
pub type FsyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Called before every commit; an error fails the commit as the disk's would (tests of a
/// failing disk).
pub type CommitHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Store options.
#[derive(Clone)]
pub struct Options {
    /// How long a committed write may wait for its fsync at [`Durability::Default`].
    pub sync_window: Duration,
    /// Block cache size. Small by default: devices have little memory.
    pub cache_bytes: u64,
    /// Changes the outbox holds at most ([`OUTBOX_CHANGES_MAX`]); past it a write that
    /// would queue a new key fails with [`Error::OutboxFull`] (nothing is dropped).
    pub outbox_changes_max: usize,
    /// The largest item a put takes (DynamoDB's 400 KiB, [`ITEM_BYTES_MAX`]); a store
    /// whose items wrap other items (the relay's rows) allows for the wrapping.
    pub item_bytes_max: usize,
    /// Called after each fsync (background, [`Store::persist`], `Immediate` commits).
    pub on_fsync: Option<FsyncHook>,
    /// Asked before each commit ([`CommitHook`]).
    pub on_commit: Option<CommitHook>,
}

/// Default bound of the outbox: days of a busy device offline, about 25 MiB of entries
/// of a typical size, far below what a device's flash holds.
pub const OUTBOX_CHANGES_MAX: usize = 100_000;

impl Default for Options {
    fn default() -> Options {
        Options {
            sync_window: Duration::from_millis(100),
            cache_bytes: 16 * 1024 * 1024,
            outbox_changes_max: OUTBOX_CHANGES_MAX,
            item_bytes_max: ITEM_BYTES_MAX,
            on_fsync: None,
            on_commit: None,
        }
    }
}

/// A Ferry database directory: items, indexes, expiries, unique claims and metadata.
pub struct Store {
    pub(crate) path: PathBuf,
    /// Where fjall keeps its journal files: `path` made absolute, so that a process that
    /// changes its working directory still finds them to fsync.
    journal_dir: PathBuf,
    pub(crate) db: Database,
    pub(crate) layout: StoreLayout,
    pub(crate) items: Keyspace,
    /// Secondary indexes, in the layout's order.
    pub(crate) indexes: Vec<(Index, Keyspace)>,
    pub(crate) expiry: Keyspace,
    pub(crate) unique: Keyspace,
    /// Primary keys of items of `mem: true` models: removed at every open.
    pub(crate) memory: Keyspace,
    pub(crate) meta: Keyspace,
    /// Replication records: see the `journal` module for their layout.
    pub(crate) outbox: Keyspace,
    pub(crate) tombstones: Keyspace,
    pub(crate) conflicts: Keyspace,
    pub(crate) quarantine: Keyspace,
    /// Entries in `outbox`, kept by commits (under `write_lock`), and their bound; the
    /// records of `conflicts` and `quarantine`, likewise (counting a keyspace scans it).
    pub(crate) outbox_len: AtomicUsize,
    pub(crate) conflicts_len: AtomicUsize,
    pub(crate) quarantine_len: AtomicUsize,
    pub(crate) outbox_changes_max: usize,
    pub(crate) item_bytes_max: usize,
    pub(crate) on_fsync: Option<FsyncHook>,
    pub(crate) on_commit: Option<CommitHook>,
    pub(crate) write_lock: Mutex<()>,
    /// The outbox keys the latest commits wrote (recorded and read under `write_lock`).
    pub(crate) outbox_writes: Mutex<OutboxWrites>,
    /// Outbox entries read for their version (tests count what a settle reads).
    #[cfg(test)]
    pub(crate) pending_reads: AtomicUsize,
    pub(crate) flushes: Arc<Flushes>,
    /// Held through each fsync, the background one too: a caller of [`Store::persist`]
    /// that finds nothing uncovered may still have to wait for an fsync in flight. Callers
    /// that queue here are served by one fsync: a group commit.
    pub(crate) fsyncing: Arc<Mutex<()>>,
    pub(crate) poisoned: Arc<AtomicBool>,
    _syncer: Fsyncer,
}

impl Store {
    /// Opens (or creates) the store in `dir`, keeping its items by the layout `layout_of`
    /// gives for the document the last open kept (`None` for a new store), with what else
    /// `layout_of` made of that document (a caller's schema, say). Indexes the layout adds
    /// or changes are rebuilt; its document is kept for the next open.
    pub fn open<E: From<Error>, T>(
        dir: &Path,
        options: &Options,
        layout_of: impl FnOnce(Option<&[u8]>) -> std::result::Result<(StoreLayout, T), E>,
    ) -> std::result::Result<(Store, T), E> {
        let path = dir.to_path_buf();
        let journal_dir = std::path::absolute(dir).unwrap_or_else(|_| path.clone());
        let fail = |source| Error::Storage {
            path: dir.display().to_string(),
            source,
        };
        let db = Database::builder(dir)
            .cache_size(options.cache_bytes)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => Error::Locked(dir.display().to_string()),
                other => fail(other),
            })?;
        // Data blocks are lz4-compressed on every level: a third of the bytes on disk and
        // of the bytes written, for reads within the noise (`bench blocks`, `bench local`:
        // docs/benchmarks.md). fjall keeps a keyspace's options from its creation, so a
        // store made before stays uncompressed; every table says how its blocks are
        // stored, so either reads.
        // Index and filter blocks are partitioned from L2, where tables are large: a point
        // read then loads one small partition, not a table's whole index, when the small
        // cache no longer holds them (10M items).
        let keyspace_options = || {
            let partitioned = || fjall::config::PartitioningPolicy::new([false, false, true]);
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES_MAX)
                .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
                .index_block_partitioning_policy(partitioned())
                .filter_block_partitioning_policy(partitioned())
        };
        let open = |name: &str| db.keyspace(name, keyspace_options).map_err(fail);
        let meta = open("meta")?;
        let stored = meta.get(META_DOCUMENT).map_err(fail)?;
        let (layout, made) = layout_of(stored.as_deref())?;
        layout.check().map_err(|detail| Error::Corrupt {
            path: path.display().to_string(),
            what: "store layout".into(),
            detail,
        })?;
        let mut indexes = Vec::new();
        for index in &layout.indexes {
            indexes.push((index.clone(), open(&format!("index.{}", index.name))?));
        }
        let flushes = Arc::new(Flushes::default());
        let fsyncing = Arc::new(Mutex::new(()));
        let poisoned = Arc::new(AtomicBool::new(false));
        let syncer = Fsyncer::start(
            db.clone(),
            journal_dir.clone(),
            options.sync_window,
            flushes.clone(),
            fsyncing.clone(),
            poisoned.clone(),
            options.on_fsync.clone(),
        )
        .map_err(|source| Error::Thread {
            path: dir.display().to_string(),
            source,
        })?;
        let outbox = open("outbox")?;
        let conflicts = open("conflicts")?;
        let quarantine = open("quarantine")?;
        let count = |keyspace: &Keyspace| keyspace.len().map(AtomicUsize::new).map_err(fail);
        let (outbox_len, conflicts_len) = (count(&outbox)?, count(&conflicts)?);
        let quarantine_len = count(&quarantine)?;
        let store = Store {
            items: open("items")?,
            expiry: open("expiry")?,
            unique: open("unique")?,
            memory: open("memory")?,
            outbox,
            outbox_len,
            outbox_changes_max: options.outbox_changes_max,
            item_bytes_max: options.item_bytes_max,
            tombstones: open("tombstones")?,
            conflicts,
            quarantine,
            conflicts_len,
            quarantine_len,
            meta,
            indexes,
            layout,
            path,
            journal_dir,
            db,
            on_fsync: options.on_fsync.clone(),
            on_commit: options.on_commit.clone(),
            write_lock: Mutex::new(()),
            outbox_writes: Mutex::default(),
            #[cfg(test)]
            pending_reads: AtomicUsize::new(0),
            flushes,
            fsyncing,
            poisoned,
            _syncer: syncer,
        };
        store.save_layout()?;
        store.forget_memory_kinds()?;
        Ok((store, made))
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the item stored under `key`.
    pub fn get(&self, key: &Key) -> Result<Option<Item>> {
        let bytes = self
            .items
            .get(layout::key_bytes(key))
            .map_err(|e| self.fail(e))?;
        bytes.map(|b| self.decode(&b, "item")).transpose()
    }

    /// The stored bytes of the item under `key`, to read in place ([`Record::view`]).
    pub fn record(&self, key: &Key) -> Result<Option<Record<'_>>> {
        let bytes = self
            .items
            .get(layout::key_bytes(key))
            .map_err(|e| self.fail(e))?;
        Ok(bytes.map(|bytes| Record { store: self, bytes }))
    }

    /// An owned copy of an item read in place from this store (a number whose stored text
    /// does not parse is corruption).
    pub fn owned(&self, item: &ItemRef<'_>) -> Result<Item> {
        item.to_item()
            .map_err(|e| self.corrupt("item", e.to_string()))
    }

    /// [`Store::owned`] of only the attributes `names`.
    pub fn owned_of<'n>(
        &self,
        item: &ItemRef<'_>,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Item> {
        item.to_item_of(names)
            .map_err(|e| self.corrupt("item", e.to_string()))
    }

    /// [`Store::key_of`] an item read in place, copying only its key attributes.
    pub fn key_of_view(&self, item: &ItemRef<'_>) -> Result<Key> {
        self.key_of(&self.owned_of(item, self.layout.primary.keys())?)
    }

    /// Runs `f` as one atomic write: everything it does through the [`Tx`] commits in one
    /// fjall batch, or nothing does (when `f` or the commit fails). Writers are serialized,
    /// so `f` reads a stable state. Returns `f`'s result and the changes made, in order.
    pub fn write<R, E: From<Error>>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, Vec<ItemChange>), E> {
        // A panic in another writer cannot leave a half-written batch: batches commit whole.
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_writable()?;
        let mut tx = Tx::new(self, durability);
        let result = f(&mut tx)?;
        let changes = tx.commit()?;
        Ok((result, changes))
    }

    /// Keys of items whose TTL passed at or before `now_seconds`, oldest first, at most `limit`.
    pub fn expired(&self, now_seconds: u64, limit: usize) -> Result<Vec<Key>> {
        let end = (now_seconds.saturating_add(1)).to_be_bytes();
        let has_sort = self.layout.primary.sort.is_some();
        let mut keys = Vec::new();
        for guard in self.expiry.range(..end.as_slice()).take(limit) {
            let record = guard.key().map_err(|e| self.fail(e))?;
            let key = record
                .get(8..)
                .ok_or_else(|| "short expiry record".to_string())
                .and_then(|pk| layout::decode_key(pk, has_sort))
                .map_err(|detail| self.corrupt("expiry record", detail))?;
            keys.push(key);
        }
        Ok(keys)
    }

    /// Fsyncs everything committed so far (nothing to do when another fsync got there
    /// first: this waits for one in flight). Concurrent callers share one fsync. A failed
    /// fsync poisons the store: what it held may be lost.
    pub fn persist(&self) -> Result<()> {
        let _fsync = self.fsyncing.lock().unwrap_or_else(|p| p.into_inner());
        // The fsync this caller waited for may have failed: what it covered may be lost.
        self.check_writable()?;
        let fsync = || {
            fsync_journal(&self.db, &self.journal_dir, fjall::PersistMode::SyncAll)
                .and_then(|()| self.fsynced().map_err(fjall::Error::Io))
        };
        self.flushes.fsync_if_uncovered(fsync).map_err(|e| {
            self.poisoned.store(true, Ordering::Release);
            self.fail(e)
        })
    }

    /// A mark of the writes committed so far: once [`Store::is_persisted`] holds for it,
    /// each of them is on disk.
    pub fn commit_mark(&self) -> u64 {
        self.flushes.mark()
    }

    /// Whether every write committed by `mark` ([`Store::commit_mark`]) is on disk: an
    /// fsync since covered it.
    pub fn is_persisted(&self, mark: u64) -> bool {
        self.flushes.is_covered(mark)
    }

    pub(crate) fn fsynced(&self) -> std::io::Result<()> {
        match &self.on_fsync {
            Some(hook) => hook(),
            None => Ok(()),
        }
    }

    /// The primary key of `item`; an error when a key attribute is missing or not S, N or B.
    pub fn key_of(&self, item: &Item) -> Result<Key> {
        layout::item_key(&self.layout.primary, item).map_err(Error::Key)
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned(self.path.display().to_string()));
        }
        Ok(())
    }

    pub(crate) fn fail(&self, source: fjall::Error) -> Error {
        if matches!(source, fjall::Error::Poisoned) {
            self.poisoned.store(true, Ordering::Release);
            return Error::Poisoned(self.path.display().to_string());
        }
        Error::Storage {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, what: &str, detail: String) -> Error {
        Error::Corrupt {
            path: self.path.display().to_string(),
            what: what.into(),
            detail,
        }
    }

    pub(crate) fn decode(&self, bytes: &[u8], what: &str) -> Result<Item> {
        layout::decode_item(bytes).map_err(|detail| self.corrupt(what, detail))
    }

    pub(crate) fn view<'b>(&self, bytes: &'b [u8], what: &str) -> Result<ItemRef<'b>> {
        layout::view_item(bytes).map_err(|detail| self.corrupt(what, detail))
    }

    /// Keeps the layout's document and rebuilds any index whose definition changed.
    fn save_layout(&self) -> Result<()> {
        let document = &self.layout.document;
        let stored = self.meta.get(META_DOCUMENT).map_err(|e| self.fail(e))?;
        let mut changed = false;
        if stored.as_deref() != Some(&document[..]) {
            (self.meta)
                .insert(META_DOCUMENT, document.as_slice())
                .map_err(|e| self.fail(e))?;
            changed = true;
        }
        for (index, keyspace) in &self.indexes {
            let name = format!("{META_INDEX_PREFIX}{}", index.name);
            let definition = index_definition(index);
            let stored = self.meta.get(&name).map_err(|e| self.fail(e))?;
            if stored.as_deref() != Some(definition.as_bytes()) {
                self.reindex(index, keyspace)?;
                self.meta
                    .insert(&name, definition)
                    .map_err(|e| self.fail(e))?;
                changed = true;
            }
        }
        // Written past the transactions, which count commits: counted here as one, so
        // that the persist fsyncs them. An unchanged layout leaves the open's own fsync to
        // the syncer's window or the first push (see `Flushes::default`).
        if !changed {
            return Ok(());
        }
        self.flushes.begin().end();
        self.persist()
    }

    /// Removes the items of memory-only kinds left by the previous run: a restart starts
    /// them empty (with their indexes and claims).
    fn forget_memory_kinds(&self) -> Result<()> {
        let has_sort = self.layout.primary.sort.is_some();
        let mut keys = Vec::new();
        for guard in self.memory.iter() {
            let bytes = guard.key().map_err(|e| self.fail(e))?;
            let key = layout::decode_key(&bytes, has_sort)
                .map_err(|d| self.corrupt("memory record", d))?;
            keys.push(key);
        }
        for chunk in keys.chunks(REINDEX_BATCH_ITEMS) {
            self.write(Durability::Default, |tx| {
                chunk.iter().try_for_each(|key| tx.delete(key).map(|_| ()))
            })?;
        }
        Ok(())
    }

    /// Rebuilds one secondary index from the items (after a schema adds or changes it).
    fn reindex(&self, index: &Index, keyspace: &Keyspace) -> Result<()> {
        keyspace.clear().map_err(|e| self.fail(e))?;
        let (primary, type_field) = (&self.layout.primary, &self.layout.type_field);
        let mut batch = self.db.batch();
        for guard in self.items.iter() {
            let (key, value) = guard.into_inner().map_err(|e| self.fail(e))?;
            let item = self.decode(&value, "item")?;
            if let Some(entry) = layout::index_entry_key(index, &item, &key) {
                let projected = layout::project(index, primary, type_field, &item);
                batch.insert(keyspace, entry, layout::encode_item(&projected));
            }
            if batch.len() >= REINDEX_BATCH_ITEMS {
                std::mem::replace(&mut batch, self.db.batch())
                    .commit()
                    .map_err(|e| self.fail(e))?;
            }
        }
        batch.commit().map_err(|e| self.fail(e))
    }
}

/// An item's stored bytes, read from the store without decoding them.
pub struct Record<'s> {
    store: &'s Store,
    bytes: fjall::Slice,
}

impl Record<'_> {
    /// The item, borrowed from the record.
    pub fn view(&self) -> Result<ItemRef<'_>> {
        self.store.view(&self.bytes, "item")
    }
}

/// With feature `fast-reopen` (the patched fjall of `vendor/fjall`), a clean close moves
/// everything into tables, so the next open replays no journal (a `ferry get` process opens
/// the store for one read). A failure here loses nothing: the journal stays and the next
/// open replays it. On crates.io's fjall the journal is replayed at every open instead.
#[cfg(feature = "fast-reopen")]
impl Drop for Store {
    fn drop(&mut self) {
        if !self.poisoned.load(Ordering::Acquire) {
            let _ = self.db.flush_all();
        }
    }
}

/// The parts of an index definition that change its entries.
fn index_definition(index: &Index) -> String {
    format!(
        "{}|{}|{:?}|{:?}",
        index.hash,
        index.sort.as_deref().unwrap_or(""),
        index.kind,
        index.project
    )
}

impl Store {
    /// Every stored item, in primary key order (for export and maintenance).
    pub fn items(&self) -> impl Iterator<Item = Result<Item>> + '_ {
        self.items.iter().map(move |guard| {
            let value = guard.value().map_err(|e| self.fail(e))?;
            self.decode(&value, "item")
        })
    }
}
