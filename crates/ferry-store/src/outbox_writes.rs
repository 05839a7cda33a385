//! Which outbox entries the latest commits wrote. A pusher knows the commit that queued
//! each version it pushes; when that commit is the last to have written the entry, the
//! entry is still that version, and its settle removes it without reading it.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::{FxBuildHasher, FxHashMap};

/// Written keys remembered; past it the oldest are forgotten, and a settle of a version
/// queued before them reads its entry.
const HELD_MAX: usize = 4096;

/// Commit numbers, unique in the process: a number from another store (one reopened in
/// the same process, say) never names a commit of this one.
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// The outbox keys of the latest commits that wrote any, by commit. Keys are held as
/// hashes: two keys that collide only cost a read.
#[derive(Debug, Default)]
pub(crate) struct OutboxWrites {
    /// The number of this store's latest commit that wrote the outbox.
    latest: u64,
    /// The newest commit some of whose keys were forgotten.
    forgotten_through: u64,
    /// (commit, key hash), oldest first.
    held: VecDeque<(u64, u64)>,
}

impl OutboxWrites {
    /// The number of the latest commit that wrote the outbox.
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// A commit writes the outbox entries at `keys` (recorded under the write lock, before
    /// they are visible); returns its number (the latest's when it writes none).
    pub fn record<'k>(&mut self, keys: impl ExactSizeIterator<Item = &'k [u8]>) -> u64 {
        if keys.len() == 0 {
            return self.latest;
        }
        // Under the write lock: a store's numbers grow with its commits.
        self.latest = COMMITS.fetch_add(1, Ordering::Relaxed) + 1;
        for key in keys {
            if self.held.len() == HELD_MAX
                && let Some((commit, _)) = self.held.pop_front()
            {
                self.forgotten_through = commit;
            }
            self.held.push_back((self.latest, hash(key)));
        }
        self.latest
    }

    /// The commits from `from` on, as the newest of them that wrote each key; `None` when
    /// some of them are forgotten, or `from` is past every commit of this store.
    pub fn since(&self, from: u64) -> Option<Writes> {
        let known = from > self.forgotten_through && from <= self.latest;
        known.then(|| {
            let mut newest = FxHashMap::default();
            for (commit, hash) in self.held.iter().rev() {
                if *commit < from {
                    break;
                }
                newest.entry(*hash).or_insert(*commit);
            }
            Writes(newest)
        })
    }
}

/// What [`OutboxWrites::since`] found: per key hash, the newest commit that wrote it.
pub(crate) struct Writes(FxHashMap<u64, u64>);

impl Writes {
    /// Whether commit `commit` is the last that wrote the entry at `key` (a colliding key
    /// written later makes it not so: a read, never a wrong answer).
    pub fn last_wrote(&self, key: &[u8], commit: u64) -> bool {
        self.0.get(&hash(key)) == Some(&commit)
    }
}

fn hash(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_commit_to_write_a_key_is_named_while_it_is_held() {
        let mut log = OutboxWrites::default();
        let first = log.record([b"a".as_slice(), b"b".as_slice()].into_iter());
        assert_eq!(
            log.record(std::iter::empty()),
            first,
            "a commit that wrote no entry is not numbered"
        );
        let second = log.record([b"b".as_slice(), b"c".as_slice()].into_iter());
        assert!(second > first);
        let writes = log.since(first).unwrap();
        assert!(writes.last_wrote(b"a", first));
        assert!(!writes.last_wrote(b"b", first), "b was written again");
        assert!(writes.last_wrote(b"b", second));
        assert!(writes.last_wrote(b"c", second));
        assert!(
            !writes.last_wrote(b"c", first),
            "the first commit did not write c"
        );
        assert!(
            log.since(second + 1).is_none(),
            "a number this store never gave"
        );

        let keys: Vec<Vec<u8>> = (0..HELD_MAX as u32)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        let big = log.record(keys.iter().map(Vec::as_slice));
        assert!(log.since(second).is_none(), "b and c are forgotten");
        let after = log.record([b"d".as_slice()].into_iter());
        let writes = log.since(after).unwrap();
        assert!(writes.last_wrote(b"d", after));
        assert!(
            log.since(big).is_none(),
            "the big commit lost a key to the one after it"
        );
    }
}
