//! Queued changes as their commits handed them over, kept for the push: a change pushed
//! from here is not read back from the outbox. Bounded by bytes: past
//! [`LOADED_BYTES_MAX`] a change is not kept, and its push reads it back.

use ferry_journal::Change;
use ferry_types::{Key, KeyMap, Version};

/// Encoded bytes of queued changes kept at most, by the writers' side and by the driver's
/// each: four batches of the default size.
pub(crate) const LOADED_BYTES_MAX: usize = 4 * ferry_sync::BATCH_BYTES_MAX;

/// Queued changes by key, the newest of each.
#[derive(Default)]
pub(crate) struct Loaded {
    changes: KeyMap<(Change, usize)>,
    bytes: usize,
}

impl Loaded {
    /// Keeps `change` (`bytes` encoded) in place of an older one of its key, if there is
    /// room.
    pub fn keep(&mut self, change: Change, bytes: usize) {
        if (self.changes.get(&change.key)).is_some_and(|(held, _)| held.version >= change.version) {
            return;
        }
        self.remove(&change.key);
        if self.bytes.saturating_add(bytes) <= LOADED_BYTES_MAX {
            self.bytes += bytes;
            self.changes.insert(change.key.clone(), (change, bytes));
        }
    }

    /// The change of `key` at `version`, taken out; `None` when another version (or none)
    /// is kept: the outbox has the truth then.
    pub fn take(&mut self, key: &Key, version: &Version) -> Option<Change> {
        let (change, _) = self.remove(key)?;
        (change.version == *version).then_some(change)
    }

    /// The change of `key` left the outbox at `version`: an older one kept goes too.
    pub fn forget(&mut self, key: &Key, version: &Version) {
        if (self.changes.get(key)).is_some_and(|(held, _)| held.version <= *version) {
            self.remove(key);
        }
    }

    /// Takes every change out, for another holder.
    pub fn drain(&mut self) -> impl Iterator<Item = (Change, usize)> + '_ {
        self.bytes = 0;
        self.changes.drain().map(|(_, held)| held)
    }

    fn remove(&mut self, key: &Key) -> Option<(Change, usize)> {
        let held = self.changes.remove(key)?;
        self.bytes -= held.1;
        Some(held)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ferry_journal::ChangeOp;
    use ferry_types::{Hlc, ReplicaId, Value};

    /// A delete of key `k`/`sort` stamped at `at`.
    pub(crate) fn change(sort: u64, at: u64) -> Change {
        Change {
            model: "M".into(),
            key: Key {
                hash: Value::S("k".into()),
                sort: Some(Value::N(sort.into())),
            },
            op: ChangeOp::Delete,
            version: Version {
                hlc: Hlc::new(at, 0),
                replica: ReplicaId::from_random(1),
            },
            scope: "*".into(),
            item: None,
            base: None,
        }
    }

    #[test]
    fn the_newest_change_of_a_key_is_kept_within_the_bound() {
        let mut loaded = Loaded::default();
        loaded.keep(change(1, 20), 100);
        loaded.keep(change(1, 10), 100);
        let newest = change(1, 20);
        assert_eq!(loaded.take(&newest.key, &newest.version), Some(newest));
        assert_eq!(loaded.bytes, 0);

        loaded.keep(change(1, 10), 100);
        let newer = change(1, 30);
        assert_eq!(
            loaded.take(&newer.key, &newer.version),
            None,
            "a push of another version reads the outbox"
        );

        loaded.keep(change(2, 10), LOADED_BYTES_MAX);
        loaded.keep(change(3, 10), 1);
        let over = change(3, 10);
        assert_eq!(
            loaded.take(&over.key, &over.version),
            None,
            "past the bound"
        );

        let settled = change(2, 10);
        loaded.forget(&settled.key, &change(2, 9).version);
        assert_eq!(
            loaded.bytes, LOADED_BYTES_MAX,
            "an older version leaving keeps it"
        );
        loaded.forget(&settled.key, &settled.version);
        assert_eq!(loaded.bytes, 0);
    }
}
