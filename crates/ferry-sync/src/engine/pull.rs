//! The pull side: per-scope cursors, pull rounds (one or more pages), polls and resyncs.

use ferry_cloud::cursor_after;
use ferry_types::Hlc;

use super::{Engine, Output};

/// Where a scope's pulling stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullState {
    /// No pull running; the next round starts at `next_ms` (None: not scheduled, offline).
    Idle { next_ms: Option<u64> },
    /// A page was asked for; it counts as failed if unanswered by `deadline_ms`.
    Paging { deadline_ms: u64 },
    /// The driver is downloading the whole scope; it answers when done, however long it takes.
    Resyncing,
}

/// One scope the device reads.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    /// Every change with `_seq <= cursor` has been applied; only ever raised.
    pub(super) cursor: Hlc,
    state: PullState,
    failures: u32,
    /// Rounds are numbered from 1 as they start; `rounds_done` is the last one completed.
    /// A `db.sync()` waits for a round numbered after the ones started before it.
    pub(super) rounds_started: u64,
    pub(super) rounds_done: u64,
}

impl Scope {
    pub(super) fn new(cursor: Hlc) -> Scope {
        Scope {
            cursor,
            state: PullState::Idle { next_ms: None },
            failures: 0,
            rounds_started: 0,
            rounds_done: 0,
        }
    }

    /// Where a round starts: `window_ms` behind the cursor, for writes that reached the feed
    /// late (their `_seq` was stamped before they became visible).
    fn round_start(&self, window_ms: u64) -> Hlc {
        if self.cursor.physical_ms() <= window_ms {
            return Hlc::ZERO;
        }
        Hlc::new(self.cursor.physical_ms() - window_ms, self.cursor.logical())
    }

    fn advance(&mut self, last_seq: Option<Hlc>, more: bool, safe: Hlc) {
        self.cursor = cursor_after(self.cursor, last_seq, more, safe);
    }
}

impl Engine {
    /// Schedules a round of every idle scope now (`Connected`, `db.sync()`); the backoff of
    /// earlier failures is forgotten. Scopes mid-round finish it first.
    pub(super) fn pull_all_now(&mut self) {
        let granted = self.granted.clone();
        let reads = |name: &str| granted.as_ref().is_none_or(|g| g.contains(name));
        for (name, scope) in self.scopes.iter_mut() {
            if !reads(name) {
                continue;
            }
            if let PullState::Idle { .. } = scope.state {
                scope.state = PullState::Idle {
                    next_ms: Some(self.now_ms),
                };
                scope.failures = 0;
            }
        }
    }

    /// The link dropped: pulls in progress are forgotten (a late answer still raises the
    /// cursor) and nothing is scheduled until `Connected`.
    pub(super) fn abandon_pulls(&mut self) {
        for scope in self.scopes.values_mut() {
            scope.state = PullState::Idle { next_ms: None };
        }
    }

    pub(super) fn start_due_pulls(&mut self) {
        let now_ms = self.now_ms;
        let due: Vec<String> = (self.scopes.iter())
            .filter(|(name, scope)| {
                matches!(scope.state, PullState::Idle { next_ms: Some(at_ms) } if at_ms <= now_ms)
                    && self.reads(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.start_round(name);
        }
    }

    fn start_round(&mut self, name: String) {
        let deadline_ms = self.now_ms.saturating_add(self.config.ack_timeout_ms);
        let window_ms = self.config.catchup_window_ms;
        let Some(scope) = self.scopes.get_mut(&name) else {
            return;
        };
        let since = scope.round_start(window_ms);
        scope.state = PullState::Paging { deadline_ms };
        scope.rounds_started += 1;
        self.emit(Output::Pull { scope: name, since });
    }

    pub(super) fn on_pulled(&mut self, name: &str, last_seq: Option<Hlc>, more: bool, safe: Hlc) {
        let deadline_ms = self.now_ms.saturating_add(self.config.ack_timeout_ms);
        let Some(scope) = self.scopes.get_mut(name) else {
            return;
        };
        self.last_receive_ms = Some(self.now_ms);
        scope.advance(last_seq, more, safe);
        match (scope.state, last_seq) {
            // The next page continues where this one ended (not at cursor - W: that would
            // fetch the same page again when W holds more than a page of changes).
            (PullState::Paging { .. }, Some(since)) if more => {
                scope.state = PullState::Paging { deadline_ms };
                let scope = name.to_string();
                self.emit(Output::Pull { scope, since });
            }
            (PullState::Paging { .. } | PullState::Resyncing, _) => self.finish_round(name),
            // A late answer after `Disconnected`: the cursor rose, nothing else to do.
            (PullState::Idle { .. }, _) => {}
        }
    }

    fn finish_round(&mut self, name: &str) {
        if let Some(scope) = self.scopes.get_mut(name) {
            scope.rounds_done = scope.rounds_started;
            scope.failures = 0;
        }
        // A `db.sync()` that arrived mid-round needs a round that started after it: at once.
        let delay_ms = if self.sync_wants_round(name) {
            0
        } else {
            self.config.poll_interval_ms
        };
        let next_ms = Some(self.now_ms.saturating_add(delay_ms));
        if let Some(scope) = self.scopes.get_mut(name) {
            scope.state = PullState::Idle { next_ms };
        }
    }

    pub(super) fn on_pull_failed(&mut self, name: &str) {
        let (base_ms, max_ms) = (self.config.retry_base_ms, self.config.retry_max_ms);
        let Some(scope) = self.scopes.get_mut(name) else {
            return;
        };
        if let PullState::Idle { .. } = scope.state {
            return;
        }
        scope.failures = scope.failures.saturating_add(1);
        let delay_ms = self.jitter.backoff_ms(scope.failures, base_ms, max_ms);
        scope.state = PullState::Idle {
            next_ms: Some(self.now_ms.saturating_add(delay_ms)),
        };
    }

    pub(super) fn on_pull_expired(&mut self, name: &str) {
        let Some(scope) = self.scopes.get_mut(name) else {
            return;
        };
        if let PullState::Paging { .. } = scope.state {
            scope.state = PullState::Resyncing;
            let scope = name.to_string();
            self.emit(Output::Resync { scope });
        }
    }

    /// Fails every page whose answer is overdue (a resync has no deadline: it can be long).
    pub(super) fn expire_pulls(&mut self) {
        let now_ms = self.now_ms;
        let overdue: Vec<String> = (self.scopes.iter())
            .filter(|(_, scope)| {
                matches!(scope.state, PullState::Paging { deadline_ms } if deadline_ms <= now_ms)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in overdue {
            self.on_pull_failed(&name);
        }
    }

    pub(super) fn next_pull_deadline(&self) -> Option<u64> {
        let deadline = |scope: &Scope| match scope.state {
            PullState::Paging { deadline_ms } => Some(deadline_ms),
            PullState::Idle { next_ms } if self.connected => next_ms,
            PullState::Idle { .. } | PullState::Resyncing => None,
        };
        self.scopes.values().filter_map(deadline).min()
    }
}
