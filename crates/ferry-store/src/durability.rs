//! When committed writes reach stable storage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Which commits an fsync has covered. Shared by the store's commits, its `persist` and the
/// syncer thread; fsyncs run under the store's fsync lock, commits under its write lock.
/// An fsync is due while a commit begun is not covered: no flag is kept beside the counts.
pub(crate) struct Flushes {
    /// Commits begun since the store opened, each counted before its batch is visible: a
    /// reader who meets a change knows a mark that holds its commit.
    begun: AtomicU64,
    /// Commits ended (written, or failed having written nothing), in the order they began.
    ended: AtomicU64,
    /// Every commit up to this count is on disk.
    covered: AtomicU64,
}

impl Default for Flushes {
    /// The open counts as a commit not fsynced yet: what the last process wrote may be in
    /// the OS's cache only (it crashed before its fsync), and a push must not take it from
    /// there to the cloud before an fsync.
    fn default() -> Flushes {
        Flushes {
            begun: AtomicU64::new(1),
            ended: AtomicU64::new(1),
            covered: AtomicU64::new(0),
        }
    }
}

impl Flushes {
    /// A commit begins: before its batch is visible. It ends when the returned guard does,
    /// even by a panic, so that the counts never part for good.
    pub fn begin(&self) -> Begun<'_> {
        self.begun.fetch_add(1, Ordering::AcqRel);
        Begun {
            flushes: self,
            ended: false,
        }
    }

    /// Records an fsync of commits up to `ended` done outside
    /// [`Flushes::fsync_if_uncovered`] (an `Immediate` commit's own).
    pub fn covered(&self, ended: u64) {
        self.covered.fetch_max(ended, Ordering::AcqRel);
    }

    /// A mark that holds every commit begun so far.
    pub fn mark(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    pub fn is_covered(&self, mark: u64) -> bool {
        self.covered.load(Ordering::Acquire) >= mark
    }

    /// Runs `fsync` if a commit begun is not covered yet, and records what it covered. The
    /// caller holds the fsync lock.
    pub fn fsync_if_uncovered<E>(&self, fsync: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        // Ended commits are read first: each of them is in the OS, so the fsync covers it.
        // A commit begun and not ended is not counted as covered, yet it may have handed
        // its batch to the OS and shown it to readers already: the fsync runs for it too.
        let ended = self.ended.load(Ordering::Acquire);
        if self.begun.load(Ordering::Acquire) > self.covered.load(Ordering::Acquire) {
            fsync()?;
        }
        self.covered(ended);
        Ok(())
    }
}

/// A commit under way (see [`Flushes::begin`]).
pub(crate) struct Begun<'f> {
    flushes: &'f Flushes,
    ended: bool,
}

impl Begun<'_> {
    /// The commit ends, its batch in the OS if it wrote one; returns its count.
    pub fn end(mut self) -> u64 {
        self.ended = true;
        self.flushes.ended.fetch_add(1, Ordering::AcqRel) + 1
    }
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.flushes.ended.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Fsyncs the journal of the database in `dir` as `mode` asks, without holding fjall's
/// journal lock through the fsync. fjall's own `persist` holds it, so every commit waits
/// the fsync out: 0.6 ms here, which a writer paid at each push of a syncing database.
/// The lock is held only to hand the journal's buffer to the OS; the fsync then goes
/// through a handle of our own on each journal file (an fsync covers the file, whatever
/// the handle). A journal fjall sealed meanwhile was fsynced as it was sealed; one it
/// removed had its contents flushed to tables first. When the journals cannot be listed
/// or opened (no descriptor left, say, or another fjall layout), fjall's own fsync does
/// it: only a failed fsync is a failure.
pub(crate) fn fsync_journal(
    db: &fjall::Database,
    dir: &Path,
    mode: fjall::PersistMode,
) -> fjall::Result<()> {
    db.persist(fjall::PersistMode::Buffer)?;
    let journals = match journal_files(dir) {
        Ok(journals) if !journals.is_empty() => journals,
        _ => return db.persist(mode),
    };
    for journal in journals {
        match mode {
            fjall::PersistMode::SyncData => journal.sync_data()?,
            _ => journal.sync_all()?,
        }
    }
    Ok(())
}

/// The journal files in `dir`, opened; one removed meanwhile is left out.
fn journal_files(dir: &Path) -> std::io::Result<Vec<std::fs::File>> {
    let mut journals = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "jnl") {
            continue;
        }
        match std::fs::File::open(&path) {
            Ok(file) => journals.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(journals)
}

/// Fsyncs the journal every window while there are unsynced commits.
pub(crate) struct Fsyncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Fsyncer {
    pub fn start(
        db: fjall::Database,
        dir: PathBuf,
        window: Duration,
        flushes: Arc<Flushes>,
        fsyncing: Arc<Mutex<()>>,
        poisoned: Arc<AtomicBool>,
        on_fsync: Option<crate::store::FsyncHook>,
    ) -> std::io::Result<Fsyncer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ferry-fsync".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(window) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let _fsync = fsyncing.lock().unwrap_or_else(|p| p.into_inner());
                    let disk = || on_fsync.as_ref().map_or(Ok(()), |hook| hook());
                    let fsync = || match fsync_journal(&db, &dir, fjall::PersistMode::SyncData) {
                        Ok(()) => disk().map_err(|_| ()),
                        Err(_) => Err(()),
                    };
                    if flushes.fsync_if_uncovered(fsync).is_err() {
                        // A failed fsync means acknowledged writes may be lost: refuse more.
                        poisoned.store(true, Ordering::Release);
                        return;
                    }
                }
            })?;
        Ok(Fsyncer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Fsyncer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
