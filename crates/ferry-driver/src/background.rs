//! The background driver: a thread of its own running a current-thread tokio runtime
//! whose one task owns the driver (engine and transport).
//!
//! The task steps the driver, then sleeps until the engine's next deadline, a writer's
//! notification or a live change, whichever comes first. It holds the database only during
//! a step, so dropping the last `Db` ends it. Built without the `tokio` feature there is no
//! background driver: `Db::drive` and `Db::sync` move data on the caller's thread.

use std::sync::Arc;

use ferry_db::{Result, WeakReplicaPort};

use crate::Syncer;
use crate::driver::Driver;

/// Longest sleep between steps: a database whose timer is replaced (tests) gets no
/// real-time deadline from the engine, local work the store refused is tried again, and a
/// dropped database is noticed.
#[cfg(feature = "tokio")]
const IDLE_MS_MAX: u64 = 200;

/// Wakes the background task when a writer or `sync()` has news for it.
#[derive(Default)]
pub(super) struct Wake {
    #[cfg(feature = "tokio")]
    notify: Option<Arc<tokio::sync::Notify>>,
}

impl Wake {
    /// A wake for a background task (without the `tokio` feature: none, the caller drives).
    pub fn for_background() -> Wake {
        Wake {
            #[cfg(feature = "tokio")]
            notify: Some(Arc::default()),
        }
    }

    pub fn notify(&self) {
        #[cfg(feature = "tokio")]
        if let Some(notify) = &self.notify {
            notify.notify_one();
        }
    }

    /// No background task: the caller drives.
    pub fn is_manual(&self) -> bool {
        #[cfg(feature = "tokio")]
        return self.notify.is_none();
        #[cfg(not(feature = "tokio"))]
        true
    }
}

/// Starts the background driver of the database behind `db`.
#[cfg(feature = "tokio")]
pub(super) fn start(port: WeakReplicaPort, driver: Driver, syncer: Arc<Syncer>) -> Result<()> {
    let Some(notify) = syncer.wake.notify.clone() else {
        return Err(crate::system(
            "the sync wake",
            std::io::Error::other("not a background one"),
        ));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::system("cannot start the sync runtime", e))?;
    std::thread::Builder::new()
        .name("ferry-sync".into())
        .spawn(move || runtime.block_on(run(port, driver, syncer, notify)))
        .map_err(|e| crate::system("cannot start the sync thread", e))?;
    Ok(())
}

#[cfg(not(feature = "tokio"))]
pub(super) fn start(_db: WeakReplicaPort, _driver: Driver, _syncer: Arc<Syncer>) -> Result<()> {
    Err(ferry_db::Error::Argument(
        "ferry was built without the tokio feature: attach with SyncOptions { background: false, .. } and call Db::sync or Db::drive".into(),
    ))
}

#[cfg(feature = "tokio")]
async fn run(
    port: WeakReplicaPort,
    mut driver: Driver,
    syncer: Arc<Syncer>,
    notify: Arc<tokio::sync::Notify>,
) {
    loop {
        let Some(db_handle) = port.upgrade() else {
            return;
        };
        driver.step(&db_handle, &syncer).await;
        let now = db_handle.timer_ms();
        let wait_ms = (driver.engine.next_deadline())
            .map_or(IDLE_MS_MAX, |at| at.saturating_sub(now))
            .min(IDLE_MS_MAX);
        drop(db_handle);
        tokio::select! {
            biased;
            () = notify.notified() => {}
            answer = driver.in_flight.next() => driver.arrived.push(answer),
            () = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => {}
            live = driver.link.live() => {
                // Triggers behind: the next pull brings these (live moves no cursor).
                if let (Ok(changes), Some(port)) = (live, port.upgrade())
                    && !syncer.triggers_behind()
                {
                    let settled = port.apply_live(&changes);
                    driver.left_outbox(&port, settled);
                }
            }
        }
    }
}
