//! The cloud a seed's devices replicate to, as the simulator and its checks see it: the
//! reference cloud behind a faulty network, or the relay (`relay.rs`).

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ferry::replication::{MemoryCloud, PullFrom};
use ferry::types::{Hlc, Key};
use ferry_journal::Change;
use ferry_relay::EmbeddedStore;

use crate::sim::faults::lock;
use crate::sim::relay::{RelayNode, service};

/// Rows read per page when the checks read a scope of the relay's store.
const PAGE: usize = 1000;

#[derive(Clone)]
pub enum Cloud {
    Memory(Arc<Mutex<MemoryCloud>>),
    Relay(Arc<RelayNode>),
}

impl Cloud {
    /// The row of `key`, tombstones included.
    pub fn get(&self, key: &Key) -> Result<Option<Change>> {
        match self {
            Cloud::Memory(cloud) => Ok(lock(cloud).get(key).cloned()),
            Cloud::Relay(relay) => (relay.with_store(|store| store.get(key))?)
                .with_context(|| format!("reading {key} from the relay's store")),
        }
    }

    /// The time the cloud's write rule judges versions by.
    pub fn now_ms(&self) -> Result<u64> {
        match self {
            Cloud::Memory(cloud) => Ok(lock(cloud).now_ms()),
            Cloud::Relay(relay) => relay.with_store(EmbeddedStore::now_ms),
        }
    }

    /// Every row of `scope`, tombstones included.
    pub fn rows(&self, scope: &str) -> Result<Vec<Change>> {
        let context = || format!("reading the cloud's scope '{scope}'");
        let snapshot = PullFrom::Snapshot(Hlc::ZERO);
        let mut rows = Vec::new();
        match self {
            Cloud::Memory(cloud) => {
                let page = (lock(cloud).pull(scope, snapshot, usize::MAX)).with_context(context)?;
                rows.extend(page.changes.into_iter().map(|(_, change)| change));
            }
            Cloud::Relay(relay) => {
                let mut from = snapshot;
                loop {
                    let page = relay.with_store(|store| store.read_now(scope, from, PAGE))?;
                    let page = page.with_context(context)?;
                    let last = page.changes.last().map(|(seq, _)| *seq);
                    rows.extend(page.changes.into_iter().map(|(_, change)| change));
                    match (page.more, last) {
                        (true, Some(last)) => from = PullFrom::Snapshot(last),
                        _ => break,
                    }
                }
            }
        }
        Ok(rows)
    }

    /// A cloud developer's write; returns its outcome, for `--verbose`.
    pub fn write(&self, change: Change) -> String {
        match self {
            Cloud::Memory(cloud) => format!("{:?}", lock(cloud).write(change)),
            Cloud::Relay(relay) => {
                let written = relay.with_store(|store| store.write_now(vec![change], &service()));
                match written {
                    Ok(Ok(mut results)) => format!("{:?}", results.pop().map(|(_, _, o)| o)),
                    Ok(Err(e)) => format!("{e}"),
                    Err(e) => format!("{e:#}"),
                }
            }
        }
    }

    /// Time moves to `now_ms`, and the relay's wall clock to `now_ms + relay_skew_ms`: late
    /// changes show, tombstones past their lifetime go.
    pub fn set_time(&self, now_ms: i64, relay_skew_ms: i64) -> Result<()> {
        match self {
            Cloud::Memory(cloud) => lock(cloud).set_time_ms(now_ms as u64),
            Cloud::Relay(relay) => {
                relay.set_clocks(now_ms, relay_skew_ms);
                (relay.with_store(EmbeddedStore::purge)?)
                    .context("purging the relay's tombstones")?;
            }
        }
        Ok(())
    }
}
