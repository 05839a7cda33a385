//! The changes this device pushed to scopes it also pulls. Each comes back in its scope's
//! feed, and applying it would change nothing: the device held that version of the key
//! when it pushed it, and its copy of a key only moves on to newer versions. Skipping them
//! saves a read and a decode of the item per change, the most of a pull that follows an
//! upload. Only versions this process pushed are skipped, matched exactly by key and
//! version: a device restored from a backup, or a twin with a copied replica id, applies
//! what it pulls as before. Fingerprints are of a hash keyed by this process, so that no
//! cloud can make another change pass for one of them; bounded, the oldest go first.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};

use ferry_journal::Change;

/// Pushed changes remembered at most: about 1 MiB of fingerprints.
pub(crate) const ECHOES_MAX: usize = 65_536;

#[derive(Default)]
pub(crate) struct Echoes {
    hasher: RandomState,
    expected: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Echoes {
    /// `change` went up: it may come back.
    pub fn pushed(&mut self, change: &Change) {
        let print = self.fingerprint(change);
        if self.expected.insert(print) {
            self.order.push_back(print);
        }
        if self.order.len() > ECHOES_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.expected.remove(&oldest);
        }
    }

    /// Whether `change` is one this process pushed (forgotten then: it comes back once).
    pub fn came_back(&mut self, change: &Change) -> bool {
        self.expected.remove(&self.fingerprint(change))
    }

    fn fingerprint(&self, change: &Change) -> u64 {
        self.hasher.hash_one((&change.key, &change.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loaded::tests::change;

    #[test]
    fn a_pushed_change_comes_back_once_and_nothing_else_passes_for_it() {
        let mut echoes = Echoes::default();
        echoes.pushed(&change(1, 10));
        assert!(!echoes.came_back(&change(1, 11)), "another version");
        assert!(!echoes.came_back(&change(2, 10)), "another key");
        assert!(echoes.came_back(&change(1, 10)));
        assert!(!echoes.came_back(&change(1, 10)), "once");
    }

    #[test]
    fn past_the_bound_the_oldest_are_forgotten() {
        let mut echoes = Echoes::default();
        for n in 0..=ECHOES_MAX as u64 {
            echoes.pushed(&change(n, 10));
        }
        assert_eq!(echoes.expected.len(), ECHOES_MAX);
        assert!(!echoes.came_back(&change(0, 10)));
        assert!(echoes.came_back(&change(ECHOES_MAX as u64, 10)));
    }
}
