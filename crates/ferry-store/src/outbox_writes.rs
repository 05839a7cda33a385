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

/// The newest write of each outbox entry among the latest commits' writes. Keys and
/// versions are held as hashes: a collision only costs a read.
#[derive(Debug, Default)]
pub(crate) struct OutboxWrites {
    /// The number of this store's latest commit that wrote the outbox.
    latest: u64,
    /// Per key hash: the newest commit that wrote it, and the hash of the version it left
    /// (`None`: it removed the entry).
    newest: FxHashMap<u64, (u64, Option<u64>)>,
    /// (commit, key hash) of the writes held, oldest first: past [`HELD_MAX`] the oldest
    /// is forgotten, and with it its key's newest write if it was that.
    order: VecDeque<(u64, u64)>,
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
            if self.order.len() == HELD_MAX
                && let Some((commit, key)) = self.order.pop_front()
                && self
                    .newest
                    .get(&key)
                    .is_some_and(|(newest, _)| *newest == commit)
            {
                self.newest.remove(&key);
            }
            let key = hash(key);
            self.order.push_back((self.latest, key));
            self.newest.insert(key, (self.latest, version.map(hash)));
        }
        self.latest
    }

    /// Whether commit `commit` is the last that wrote the entry at `key`, and left
    /// `version` there. A write forgotten, a collision, or a number this store never gave
    /// makes it not so: a read, never a wrong answer.
    pub fn left(&self, key: &[u8], commit: u64, version: &Version) -> bool {
        self.newest.get(&hash(key)) == Some(&(commit, Some(hash(version))))
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
        assert!(log.left(b"a", first, &v1));
        assert!(!log.left(b"a", first, &v2), "it left another version");
        assert!(!log.left(b"b", first, &v1), "b was written again");
        assert!(log.left(b"b", second, &v2));
        assert!(!log.left(b"c", second, &v1), "c was removed");
        assert!(
            !log.left(b"c", first, &v1),
            "the first commit did not write c"
        );
        assert!(
            !log.left(b"a", second + 1, &v1),
            "a number this store never gave"
        );

        // Past the bound the oldest writes go: a's, and b's older one but not its newest.
        let keys: Vec<Vec<u8>> = (0..HELD_MAX as u32 - 2)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        log.record(keys.iter().map(|key| (key.as_slice(), Some(&v1))));
        assert!(!log.left(b"a", first, &v1), "a's write is forgotten");
        assert!(
            log.left(b"b", second, &v2),
            "b's newest write is still held"
        );
        log.record([(b"d".as_slice(), Some(&v2)), (b"e", Some(&v2))].into_iter());
        assert!(!log.left(b"b", second, &v2), "now it is forgotten too");
        assert_eq!(
            log.newest.len(),
            log.order.len(),
            "one newest write per key held"
        );
    }
}
