//! When committed writes reach stable storage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How durable a commit is when it returns.
/// Ordered: `Default < Immediate`, so the strictest of several wishes is their `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// In the OS at once (survives a process crash); fsynced by a background task within the
    /// store's sync window (survives a power loss after that window).
    #[default]
    Default,
    /// Fsynced before the commit returns.
    Immediate,
}

/// Fsyncs the journal every window while there are unsynced commits.
pub(crate) struct Syncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn start(
        db: fjall::Database,
        window: Duration,
        dirty: Arc<AtomicBool>,
        fsyncing: Arc<Mutex<()>>,
        poisoned: Arc<AtomicBool>,
        on_fsync: Option<crate::store::FsyncHook>,
    ) -> std::io::Result<Syncer> {
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
                    if !dirty.swap(false, Ordering::AcqRel) {
                        continue;
                    }
                    let disk = || on_fsync.as_ref().map_or(Ok(()), |hook| hook());
                    let fsynced = db.persist(fjall::PersistMode::SyncData).is_ok();
                    if !fsynced || disk().is_err() {
                        // A failed fsync means acknowledged writes may be lost: refuse more.
                        poisoned.store(true, Ordering::Release);
                        return;
                    }
                }
            })?;
        Ok(Syncer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
