//! The connected devices and the live fan-out: a change that lands is sent at once to
//! every other device whose scopes hold it. Each device has a bounded queue (`queue.rs`);
//! a device too slow to drain it misses live frames (counted in the metrics) rather than
//! stalling the others, and catches up by pulling, which is the source of truth anyway.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_journal::Change;
use ferry_protocol::{Frame, encode};
use tokio_tungstenite::tungstenite::Bytes;

use crate::metrics::Metrics;
use crate::queue::Queue;

/// One connected device, as the hub sees it.
pub struct Member {
    /// The scopes its token grants.
    pub scopes: BTreeSet<String>,
    /// Its replica id: its own changes are not echoed back to it.
    pub replica: String,
    /// Its outgoing queue.
    pub queue: Queue,
}

/// Every connected device.
#[derive(Default)]
pub struct Hub {
    members: RwLock<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

impl Hub {
    /// Adds a device; the id removes it.
    pub fn join(&self, member: Member) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, member);
        id
    }

    /// Removes a device.
    pub fn leave(&self, id: u64) {
        self.members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// How many devices are connected.
    pub fn len(&self) -> usize {
        self.members.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every scope some connected device holds.
    pub fn scopes(&self) -> BTreeSet<String> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        (members.values())
            .flat_map(|m| m.scopes.iter().cloned())
            .collect()
    }

    /// Sends `changes` live to every device but `from` whose scopes hold some of them.
    /// Devices that get the same selection share one encoded frame.
    pub fn fan_out(&self, from: Option<u64>, changes: &[Change], metrics: &Metrics) {
        if changes.is_empty() {
            return;
        }
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let mut frames: HashMap<Vec<usize>, Bytes> = HashMap::new();
        for (id, member) in members.iter() {
            if Some(*id) == from {
                continue;
            }
            let selection: Vec<usize> = (changes.iter().enumerate())
                .filter(|(_, c)| {
                    member.scopes.contains(&c.scope) && c.version.replica.as_str() != member.replica
                })
                .map(|(i, _)| i)
                .collect();
            if selection.is_empty() {
                continue;
            }
            let count = selection.len() as u64;
            let frame = frames.entry(selection).or_insert_with_key(|selection| {
                let changes = selection.iter().map(|&i| changes[i].clone()).collect();
                Bytes::from(encode(&Frame::Live { changes }))
            });
            match member.queue.offer_live(frame.clone()) {
                true => metrics.changes_out.inc_by(count),
                false => metrics.live_dropped.inc(),
            };
        }
    }
}
