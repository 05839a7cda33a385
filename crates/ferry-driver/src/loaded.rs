//! Queued changes as their commits handed them over, kept for the push: a change pushed
//! from here is not read back from the outbox, and its settle names the commit that
//! queued it ([`QueuedBy`]), so it is not read then either. Bounded by bytes: past
//! [`LOADED_BYTES_MAX`] a change is not kept, and its push reads it back.

use ferry_db::Queued;
use ferry_types::{Key, KeyMap, Version};

/// Encoded bytes of queued changes kept at most, by the writers' side and by the driver's
/// each: four batches of the default size.
pub(crate) const LOADED_BYTES_MAX: usize = 4 * ferry_sync::BATCH_BYTES_MAX;

/// Queued changes by key, the newest of each.
#[derive(Default)]
pub(crate) struct Loaded {
    changes: KeyMap<Queued>,
    bytes: usize,
}

impl Loaded {
    /// Keeps `queued` in place of an older change of its key, if there is room.
    pub fn keep(&mut self, queued: Queued) {
        let key = &queued.change.key;
        if (self.changes.get(key)).is_some_and(|held| held.change.version >= queued.change.version)
        {
            return;
        }
        self.remove(key);
        if self.bytes.saturating_add(queued.bytes) <= LOADED_BYTES_MAX {
            self.bytes += queued.bytes;
            self.changes.insert(queued.change.key.clone(), queued);
        }
    }

    /// The change of `key` at `version`, taken out; `None` when another version (or none)
    /// is kept: the outbox has the truth then.
    pub fn take(&mut self, key: &Key, version: &Version) -> Option<Queued> {
        let queued = self.remove(key)?;
        (queued.change.version == *version).then_some(queued)
    }

    /// The change of `key` left the outbox at `version`: an older one kept goes too.
    pub fn forget(&mut self, key: &Key, version: &Version) {
        if (self.changes.get(key)).is_some_and(|held| held.change.version <= *version) {
            self.remove(key);
        }
    }

    /// Takes every change out, for another holder.
    pub fn drain(&mut self) -> impl Iterator<Item = Queued> + '_ {
        self.bytes = 0;
        self.changes.drain().map(|(_, held)| held)
    }

    fn remove(&mut self, key: &Key) -> Option<Queued> {
        let held = self.changes.remove(key)?;
        self.bytes -= held.bytes;
        Some(held)
    }
}

/// The commit that queued each version pushed from memory, until it is acknowledged: its
/// settle names that commit and reads no outbox entry (`ferry_store::Store::settle`).
/// Bounded as [`Loaded`] is, by the changes' bytes: pushes that never come back
/// acknowledged (refused, superseded, a resync) leave theirs behind, and past the bound
/// all are forgotten, which only makes their settles read.
#[derive(Default)]
pub(crate) struct QueuedBy {
    commits: KeyMap<(Version, u64, usize)>,
    bytes: usize,
}

impl QueuedBy {
    /// `queued` was pushed.
    pub fn pushed(&mut self, queued: &Queued) {
        self.forget(&queued.change.key);
        if self.bytes.saturating_add(queued.bytes) > LOADED_BYTES_MAX {
            self.commits.clear();
            self.bytes = 0;
        }
        let held = (queued.change.version.clone(), queued.commit, queued.bytes);
        self.commits.insert(queued.change.key.clone(), held);
        self.bytes += queued.bytes;
    }

    /// A change of `key` was pushed from the outbox: no commit is known for it.
    pub fn forget(&mut self, key: &Key) {
        if let Some((_, _, bytes)) = self.commits.remove(key) {
            self.bytes -= bytes;
        }
    }

    /// The commit that queued `version` of `key`, taken out, if that version was pushed
    /// from memory.
    pub fn acked(&mut self, key: &Key, version: &Version) -> Option<u64> {
        let (pushed, commit, _) = self.commits.get(key)?;
        let commit = (pushed == version).then_some(*commit)?;
        self.forget(key);
        Some(commit)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ferry_journal::{Change, ChangeOp};
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

    fn queued(change: Change, bytes: usize) -> Queued {
        Queued {
            change,
            bytes,
            commit: 1,
        }
    }

    #[test]
    fn the_newest_change_of_a_key_is_kept_within_the_bound() {
        let mut loaded = Loaded::default();
        loaded.keep(queued(change(1, 20), 100));
        loaded.keep(queued(change(1, 10), 100));
        let newest = change(1, 20);
        assert_eq!(
            loaded.take(&newest.key, &newest.version),
            Some(queued(newest.clone(), 100))
        );
        assert_eq!(loaded.bytes, 0);

        loaded.keep(queued(change(1, 10), 100));
        let newer = change(1, 30);
        assert_eq!(
            loaded.take(&newer.key, &newer.version),
            None,
            "a push of another version reads the outbox"
        );

        loaded.keep(queued(change(2, 10), LOADED_BYTES_MAX));
        loaded.keep(queued(change(3, 10), 1));
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

    #[test]
    fn an_acknowledgement_of_the_version_pushed_names_its_commit_once() {
        let mut queued_by = QueuedBy::default();
        let pushed = queued(change(1, 20), 100);
        queued_by.pushed(&pushed);
        let (key, version) = (&pushed.change.key, &pushed.change.version);
        assert_eq!(
            queued_by.acked(key, &change(1, 10).version),
            None,
            "another version"
        );
        assert_eq!(queued_by.acked(key, version), Some(pushed.commit));
        assert_eq!(queued_by.acked(key, version), None, "named once");
        assert_eq!(queued_by.bytes, 0);

        queued_by.pushed(&pushed);
        queued_by.forget(key);
        assert_eq!(
            queued_by.acked(key, version),
            None,
            "pushed again from the outbox"
        );

        queued_by.pushed(&queued(change(2, 10), LOADED_BYTES_MAX));
        queued_by.pushed(&pushed);
        assert_eq!(
            (queued_by.commits.len(), queued_by.bytes),
            (1, 100),
            "past the bound the others are forgotten"
        );
    }
}
