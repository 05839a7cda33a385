//! When committed writes reach stable storage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Which commits an fsync has covered. Shared by the store's commits, its `persist` and the
/// syncer thread; fsyncs run under the store's fsync lock.
#[derive(Default)]
pub(crate) struct Flushes {
    /// Set by each commit, taken by the fsync that covers it.
    pub dirty: AtomicBool,
    /// Commits written since the store opened.
    commits: AtomicU64,
    /// Every commit up to this count is on disk.
    covered: AtomicU64,
}

impl Flushes {
    /// Counts a commit, once written (after it set `dirty`).
    pub fn committed(&self) -> u64 {
        self.commits.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Records an fsync of commits up to `commits` done outside [`Flushes::fsync_if_dirty`]
    /// (an `Immediate` commit's own).
    pub fn covered(&self, commits: u64) {
        self.covered.fetch_max(commits, Ordering::AcqRel);
    }

    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    pub fn is_covered(&self, commits: u64) -> bool {
        self.covered.load(Ordering::Acquire) >= commits
    }

    /// Runs `fsync` if a commit took place since the last one, and records what is covered.
    /// The caller holds the fsync lock.
    pub fn fsync_if_dirty<E>(&self, fsync: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        // Counted before the flag is read: a commit counted here set the flag before it was
        // counted, so either the flag holds it or an fsync that took the flag since (done:
        // the caller holds the lock it ran under) covered it.
        let commits = self.commits();
        if self.dirty.swap(false, Ordering::AcqRel) {
            fsync()?;
        }
        self.covered(commits);
        Ok(())
    }
}

/// Fsyncs the journal of the database in `dir` as `mode` asks, without holding fjall's
/// journal lock through the fsync. fjall's own `persist` holds it, so every commit waits
/// the fsync out: 0.6 ms here, which a writer paid at each push of a syncing database.
/// The lock is held only to hand the journal's buffer to the OS; the fsync then goes
/// through a handle of our own on each journal file (an fsync covers the file, whatever
/// the handle). A journal fjall sealed meanwhile was fsynced as it was sealed; one it
/// removed had its contents flushed to tables first. A directory with no journal this
/// knows (another fjall layout) gets fjall's own fsync.
pub(crate) fn fsync_journal(
    db: &fjall::Database,
    dir: &Path,
    mode: fjall::PersistMode,
) -> fjall::Result<()> {
    db.persist(fjall::PersistMode::Buffer)?;
    let mut journals = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "jnl") {
            continue;
        }
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        match mode {
            fjall::PersistMode::SyncData => file.sync_data()?,
            _ => file.sync_all()?,
        }
        journals += 1;
    }
    if journals == 0 {
        db.persist(mode)?;
    }
    Ok(())
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
                    if flushes.fsync_if_dirty(fsync).is_err() {
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
