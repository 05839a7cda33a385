//! Which outbox entries the latest commits wrote, and the versions they left. A pusher
//! knows the commit that queued each version it pushes; when that commit is the last to
//! have written the entry and left that version, the entry is still that version, and its
//! settle removes it without reading it.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_types::Version;
use rustc_hash::{FxBuildHasher, FxHashMap};

/// Written keys remembered; past it the oldest are forgotten, and a settle of a version
/// queued before them reads its entry.
const HELD_MAX: usize = 4096;

/// Commit numbers, unique in the process: a number from another store (one reopened in
/// the same process, say) never names a commit of this one.
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// The outbox keys of the latest commits that wrote any, by commit, with the versions they
/// left. Keys and versions are held as hashes: a collision only costs a read.
#[derive(Debug, Default)]
pub(crate) struct OutboxWrites {
    /// The number of this store's latest commit that wrote the outbox.
    latest: u64,
    /// The newest commit some of whose keys were forgotten.
    forgotten_through: u64,
    /// (commit, key hash, hash of the version left; `None`: the entry was removed), oldest
    /// first.
    held: VecDeque<(u64, u64, Option<u64>)>,
}

impl OutboxWrites {
    /// The number of the latest commit that wrote the outbox.
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// A commit writes the outbox entries at `writes` (each key with the version it
    /// leaves, `None` for a removal; recorded under the write lock, before they are
    /// visible); returns its number (the latest's when it writes none).
    pub fn record<'k>(
        &mut self,
        writes: impl ExactSizeIterator<Item = (&'k [u8], Option<&'k Version>)>,
    ) -> u64 {
        if writes.len() == 0 {
            return self.latest;
        }
        // Under the write lock: a store's numbers grow with its commits.
        self.latest = COMMITS.fetch_add(1, Ordering::Relaxed) + 1;
        for (key, version) in writes {
            if self.held.len() == HELD_MAX
                && let Some((commit, _, _)) = self.held.pop_front()
            {
                self.forgotten_through = commit;
            }
            self.held
                .push_back((self.latest, hash(key), version.map(hash)));
        }
        self.latest
    }

    /// Whether every write of commits from `from` on is held (`from` is one of this
    /// store's numbers, and none of those writes is forgotten).
    pub fn holds_from(&self, from: u64) -> bool {
        from > self.forgotten_through && from <= self.latest
    }

    /// The commits from `from` on, as the newest of them that wrote each key; `None` unless
    /// [`OutboxWrites::holds_from`].
    pub fn since(&self, from: u64) -> Option<Writes> {
        self.holds_from(from).then(|| {
            let mut newest = FxHashMap::default();
            for (commit, key, version) in self.held.iter().rev() {
                if *commit < from {
                    break;
                }
                newest.entry(*key).or_insert((*commit, *version));
            }
            Writes(newest)
        })
    }
}

/// What [`OutboxWrites::since`] found: per key hash, the newest commit that wrote it and
/// the version it left.
pub(crate) struct Writes(FxHashMap<u64, (u64, Option<u64>)>);

impl Writes {
    /// Whether commit `commit` is the last that wrote the entry at `key`, and left
    /// `version` there. A collision makes it not so (a read, never a wrong answer), and so
    /// does a commit these writes do not reach back to.
    pub fn left(&self, key: &[u8], commit: u64, version: &Version) -> bool {
        self.0.get(&hash(key)) == Some(&(commit, Some(hash(version))))
    }
}

fn hash<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    FxBuildHasher.hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_types::{Hlc, ReplicaId};

    fn version(hlc: u64) -> Version {
        Version {
            hlc: Hlc::from_u64(hlc),
            replica: ReplicaId::from_random(1),
        }
    }

    #[test]
    fn only_the_last_commit_to_write_a_key_is_named_with_the_version_it_left() {
        let (v1, v2) = (version(1), version(2));
        let mut log = OutboxWrites::default();
        let first = log.record([(b"a".as_slice(), Some(&v1)), (b"b", Some(&v1))].into_iter());
        assert_eq!(
            log.record(std::iter::empty()),
            first,
            "a commit that wrote no entry is not numbered"
        );
        let second = log.record([(b"b".as_slice(), Some(&v2)), (b"c", None)].into_iter());
        assert!(second > first);
        let writes = log.since(first).unwrap();
        assert!(writes.left(b"a", first, &v1));
        assert!(!writes.left(b"a", first, &v2), "it left another version");
        assert!(!writes.left(b"b", first, &v1), "b was written again");
        assert!(writes.left(b"b", second, &v2));
        assert!(!writes.left(b"c", second, &v1), "c was removed");
        assert!(
            !writes.left(b"c", first, &v1),
            "the first commit did not write c"
        );
        assert!(
            !log.holds_from(second + 1),
            "a number this store never gave"
        );

        let keys: Vec<Vec<u8>> = (0..HELD_MAX as u32)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        let big = log.record(keys.iter().map(|key| (key.as_slice(), Some(&v1))));
        assert!(log.since(second).is_none(), "b and c are forgotten");
        let after = log.record([(b"d".as_slice(), Some(&v2))].into_iter());
        assert!(log.since(after).unwrap().left(b"d", after, &v2));
        assert!(
            !log.holds_from(big),
            "the big commit lost a key to the one after it"
        );
    }
}
