//! `db.sync()`: what each call waits for, and when it is answered.

use std::collections::BTreeMap;

use ferry_types::{Key, KeyMap, Version};

use super::{Engine, Output};
use crate::config::SYNC_WAITS_MAX;

/// One or more `SyncRequested` waiting for the same condition.
#[derive(Debug, Clone)]
pub(super) struct SyncWait {
    /// Keys pending at the request, with their versions: each must be acknowledged (or
    /// superseded, rejected, settled) at that version or a newer one.
    keys: KeyMap<Version>,
    /// Per scope, the rounds started before the request: a later round must complete.
    rounds: BTreeMap<String, u64>,
    /// How many requests this answers.
    requests: usize,
}

impl Engine {
    /// Records what a new `db.sync()` waits for. Past [`SYNC_WAITS_MAX`] the newest wait
    /// takes the new request's snapshot: a later snapshot asks for more, so it still answers
    /// the requests it held correctly, only later.
    pub(super) fn add_sync_wait(&mut self) {
        let rounds = (self.scopes.iter())
            .map(|(name, scope)| (name.clone(), scope.rounds_started))
            .collect();
        let keys = self.pushes.snapshot();
        if self.waits.len() >= SYNC_WAITS_MAX
            && let Some(newest) = self.waits.back_mut()
        {
            (newest.keys, newest.rounds) = (keys, rounds);
            newest.requests += 1;
            return;
        }
        let requests = 1;
        self.waits.push_back(SyncWait {
            keys,
            rounds,
            requests,
        });
    }

    /// `key` reached a final answer at `version`: waits for that version or an older one end.
    pub(super) fn resolve_waits(&mut self, key: &Key, version: &Version) {
        for wait in &mut self.waits {
            if wait.keys.get(key).is_some_and(|waited| waited <= version) {
                wait.keys.remove(key);
            }
        }
    }

    /// Whether some wait still needs a round of `name` that has not completed.
    pub(super) fn sync_wants_round(&self, name: &str) -> bool {
        let Some(scope) = self.scopes.get(name).filter(|_| self.reads(name)) else {
            return false;
        };
        let wants = |wait: &SyncWait| {
            wait.rounds
                .get(name)
                .is_some_and(|r| scope.rounds_done <= *r)
        };
        self.waits.iter().any(wants)
    }

    fn wait_is_met(&self, wait: &SyncWait) -> bool {
        // A scope the credentials do not grant is not pulled: no round of it is awaited.
        let pulled = |(name, started): (&String, &u64)| {
            (self.scopes.get(name))
                .filter(|_| self.reads(name))
                .is_none_or(|scope| scope.rounds_done > *started)
        };
        wait.keys.is_empty() && wait.rounds.iter().all(pulled)
    }

    /// Answers met waits oldest first. Waits are met in order: a later one waits for every
    /// key version and round the earlier one does, or newer ones.
    pub(super) fn answer_sync_waits(&mut self) {
        while let Some(wait) = self.waits.front() {
            if !self.wait_is_met(wait) {
                return;
            }
            let requests = wait.requests;
            self.waits.pop_front();
            for _ in 0..requests {
                self.emit(Output::SyncDone { ok: true });
            }
        }
    }
}
