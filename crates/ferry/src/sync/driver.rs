//! Carrying out the engine's outputs against the store and the transport.

use ferry_journal::ConflictRecord;
use ferry_schema::SyncDirection;
use ferry_store::Durability;
use ferry_sync::{BatchId, Engine, Input, Output, TransportError};
use ferry_types::{Hlc, Key, Version};

use super::{PULL_PAGE_CHANGES, Syncer};
use crate::{Db, Error, Result};

impl Db {
    pub(super) fn execute(
        &self,
        syncer: &Syncer,
        engine: &mut Engine,
        output: Output,
        now: u64,
    ) -> Result<()> {
        match output {
            Output::Push { batch, changes } => self.push(syncer, engine, batch, changes, now),
            Output::Acked { key, version } => self.settle(&[(key, version)]),
            Output::Superseded { key, local, cloud } => {
                self.superseded(engine, &key, &local, &cloud, now)
            }
            Output::Rejected {
                key,
                version,
                reason,
            } => {
                self.report_error(format!("the cloud rejected {key} ({version}): {reason}"));
                self.settle(&[(key, version)])
            }
            Output::Pull { scope, since } => self.pull(syncer, engine, &scope, since, now),
            Output::Resync { scope } => self.resync(syncer, engine, &scope, now),
            Output::SyncDone { .. } => {
                syncer
                    .answered
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Loads the listed changes from the outbox and sends them.
    fn push(
        &self,
        syncer: &Syncer,
        engine: &mut Engine,
        batch: BatchId,
        listed: Vec<(Key, Version)>,
        now: u64,
    ) -> Result<()> {
        let mut changes = Vec::with_capacity(listed.len());
        for (key, version) in listed {
            match self.inner.store.pending(&key)? {
                Some(entry) => changes.push(entry.change),
                // Settled since the engine heard of it.
                None => engine.handle(Input::Settled { key, version }, now),
            }
        }
        if changes.is_empty() {
            engine.handle(
                Input::Pushed {
                    batch,
                    outcomes: Vec::new(),
                },
                now,
            );
            return Ok(());
        }
        match syncer.link.push(changes) {
            Ok(outcomes) => engine.handle(Input::Pushed { batch, outcomes }, now),
            Err(e) => {
                engine.handle(Input::PushFailed { batch }, now);
                self.report_error(format!("push failed: {e}"));
            }
        }
        Ok(())
    }

    /// Drops the outbox entry of `key` if the cloud holds its version or a newer one.
    /// Drops each outbox entry whose version the cloud holds (or a newer one), in one commit.
    pub(super) fn settle(&self, acked: &[(Key, Version)]) -> Result<()> {
        if acked.is_empty() {
            return Ok(());
        }
        self.inner.store.write(Durability::Default, |tx| {
            acked
                .iter()
                .try_for_each(|(key, version)| tx.settle(key, version).map(|_| ()))
        })?;
        Ok(())
    }

    /// The cloud holds a newer version than the pending one: the model's direction decides.
    fn superseded(
        &self,
        engine: &mut Engine,
        key: &Key,
        local: &Version,
        cloud: &Version,
        now: u64,
    ) -> Result<()> {
        let Some(entry) = self.inner.store.pending(key)? else {
            return Ok(());
        };
        if &entry.change.version != local {
            return Ok(()); // a newer local write is already pending
        }
        let direction = self
            .schema()
            .model(&entry.change.model)
            .map(|m| m.control.sync);
        let replica = &self.inner.replica;
        if direction.ok() == Some(SyncDirection::Up) {
            // The device is authoritative: come back with a version past the cloud's.
            let (version, _) = self.inner.store.write(Durability::Default, |tx| {
                replica.observe(tx, cloud.hlc, now as i64);
                replica.restamp(tx, entry, cloud, now as i64)
            })?;
            let bytes = self
                .inner
                .store
                .pending(key)?
                .map_or(0, |e| e.encoded_len());
            engine.handle(
                Input::Queued {
                    key: key.clone(),
                    version,
                    bytes,
                },
                now,
            );
            replica.take_staged();
            return Ok(());
        }
        // Last writer wins: the cloud's newer version stands; ours is the loser.
        let conflict = ConflictRecord {
            winner: cloud.clone(),
            loser: entry.change,
            at_ms: now,
        };
        self.inner.store.write(Durability::Default, |tx| {
            tx.log_conflict(conflict)?;
            tx.settle(key, local).map_err(Error::from)
        })?;
        engine.handle(
            Input::Settled {
                key: key.clone(),
                version: local.clone(),
            },
            now,
        );
        Ok(())
    }

    /// Pulls one page of a scope's change feed and applies it.
    fn pull(
        &self,
        syncer: &Syncer,
        engine: &mut Engine,
        scope: &str,
        since: Hlc,
        now: u64,
    ) -> Result<()> {
        match syncer.link.pull(scope, since, PULL_PAGE_CHANGES) {
            Ok(page) => {
                let position = page.position.filter(|_| !page.more);
                let last_seq = self.apply_page(engine, scope, &page.changes, position, now)?;
                engine.handle(
                    Input::Pulled {
                        scope: scope.to_string(),
                        last_seq,
                        more: page.more,
                    },
                    now,
                );
            }
            Err(TransportError::Expired) => engine.handle(
                Input::PullExpired {
                    scope: scope.to_string(),
                },
                now,
            ),
            Err(e) => pull_failed(
                self,
                engine,
                scope,
                &format!("pull of scope '{scope}' failed: {e}"),
                now,
            ),
        }
        Ok(())
    }

    /// Downloads a whole scope, then removes local synced items of it that the cloud no
    /// longer has, unless they are pending upload.
    fn resync(&self, syncer: &Syncer, engine: &mut Engine, scope: &str, now: u64) -> Result<()> {
        let mut since = Hlc::ZERO;
        let mut seen = std::collections::BTreeSet::new();
        let mut last_seq = None;
        loop {
            let page = match syncer.link.pull(scope, since, PULL_PAGE_CHANGES) {
                Ok(page) => page,
                Err(e) => {
                    let what = format!("resync of scope '{scope}' failed: {e}");
                    pull_failed(self, engine, scope, &what, now);
                    return Ok(());
                }
            };
            seen.extend(page.changes.iter().map(|(_, c)| c.key.clone()));
            let position = page.position.filter(|_| !page.more);
            if let Some(seq) = self.apply_page(engine, scope, &page.changes, position, now)? {
                last_seq = Some(seq);
                since = seq;
            }
            if !page.more {
                break;
            }
        }
        self.forget_absent(scope, &seen)?;
        engine.handle(
            Input::Pulled {
                scope: scope.to_string(),
                last_seq,
                more: false,
            },
            now,
        );
        Ok(())
    }
}

/// A pull that failed: the engine retries it; the status shows why.
fn pull_failed(db: &Db, engine: &mut Engine, scope: &str, what: &str, now: u64) {
    engine.handle(
        Input::PullFailed {
            scope: scope.to_string(),
        },
        now,
    );
    db.report_error(what.to_string());
}
