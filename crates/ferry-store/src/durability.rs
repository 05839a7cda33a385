//! When committed writes reach stable storage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Fsyncs the journal every window while there are unsynced commits.
pub(crate) struct Fsyncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Fsyncer {
    pub fn start(
        db: fjall::Database,
        window: Duration,
        dirty: Arc<AtomicBool>,
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
