//! Engine scenarios: a small harness drives the engine with inputs at chosen times and
//! checks the outputs a driver would see.

use std::collections::BTreeMap;

use ferry_types::{Hlc, Key, ReplicaId, Value, Version};
use proptest::prelude::*;

use super::*;
use crate::config::*;
use ferry_cloud::Limits;

fn key(n: u32) -> Key {
    Key {
        hash: Value::S(format!("k{n}")),
        sort: None,
    }
}

/// A device version stamped at `ms`.
fn ver(ms: u64) -> Version {
    let replica = ReplicaId::parse("dev").unwrap_or_else(|e| panic!("replica: {e}"));
    Version {
        hlc: Hlc::new(ms, 0),
        replica,
    }
}

fn cloud_ver(ms: u64) -> Version {
    let replica = ReplicaId::parse("cloud").unwrap_or_else(|e| panic!("replica: {e}"));
    Version {
        hlc: Hlc::new(ms, 0),
        replica,
    }
}

/// The cloud's answer to a push when it holds `cloud`.
fn superseded_by(cloud: &Version) -> PushOutcome {
    let change = ferry_journal::Change {
        model: "Thing".into(),
        key: key(0),
        op: ferry_journal::ChangeOp::Delete,
        version: cloud.clone(),
        scope: "*".into(),
        item: None,
        base: None,
    };
    PushOutcome::Superseded {
        cloud: Box::new(change),
    }
}

/// The engine at a time of our choosing, and what it said.
struct Sim {
    engine: Engine,
    now_ms: u64,
}

impl Sim {
    /// A connected engine without scopes (push-only scenarios).
    fn new(config: EngineConfig) -> Sim {
        Sim::with_scopes(config, &[])
    }

    /// A connected engine reading `scopes` (name, cursor ms); the connect pulls are drained.
    fn with_scopes(config: EngineConfig, scopes: &[(&str, u64)]) -> Sim {
        let cursors = (scopes.iter())
            .map(|(name, ms)| (name.to_string(), Hlc::new(*ms, 0)))
            .collect();
        let mut sim = Sim {
            engine: Engine::new(config, cursors, 1),
            now_ms: 1_000_000,
        };
        sim.input(Input::Connected {
            limits: Limits::default(),
            granted: None,
        });
        sim.drain();
        sim
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        self.engine.handle(input, self.now_ms);
        self.drain()
    }

    /// Moves time to `ms` (absolute) and ticks.
    fn at(&mut self, ms: u64) -> Vec<Output> {
        self.now_ms = ms;
        self.engine.tick(ms);
        self.drain()
    }

    /// Moves time forward by `ms` and ticks.
    fn after(&mut self, ms: u64) -> Vec<Output> {
        self.at(self.now_ms + ms)
    }

    fn queue(&mut self, n: u32, version_ms: u64, bytes: usize) -> Vec<Output> {
        let (key, version) = (key(n), ver(version_ms));
        self.input(Input::Queued {
            key,
            version,
            bytes,
        })
    }

    fn answer(&mut self, batch: BatchId, outcomes: &[(u32, u64, PushOutcome)]) -> Vec<Output> {
        let outcomes = (outcomes.iter())
            .map(|(n, ms, outcome)| (key(*n), ver(*ms), outcome.clone()))
            .collect();
        self.input(Input::Pushed { batch, outcomes })
    }

    fn applied(&mut self, batch: BatchId, changes: &[(u32, u64)]) -> Vec<Output> {
        let outcomes: Vec<_> = (changes.iter())
            .map(|(n, ms)| (*n, *ms, PushOutcome::Applied))
            .collect();
        self.answer(batch, &outcomes)
    }

    fn pulled(&mut self, scope: &str, last_ms: Option<u64>, more: bool) -> Vec<Output> {
        let scope = scope.to_string();
        let last_seq = last_ms.map(|ms| Hlc::new(ms, 0));
        // The cloud saw everything up to the page's end as visible.
        let safe = last_seq.or(self.engine.cursor(&scope)).unwrap_or(Hlc::ZERO);
        self.input(Input::Pulled {
            scope,
            last_seq,
            more,
            safe,
        })
    }

    /// The outputs so far, handshakes aside (scenarios connect by hand; see
    /// `a_failed_handshake_is_retried_with_backoff` for the handshake itself).
    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.engine.poll_output())
            .filter(|output| *output != Output::Connect)
            .collect()
    }
}

/// The pushes among `outputs`: (batch, [(key number, version ms)]).
fn pushes(outputs: &[Output]) -> Vec<(BatchId, Vec<(u32, u64)>)> {
    let number = |key: &Key| match &key.hash {
        Value::S(text) => text[1..].parse().unwrap_or(u32::MAX),
        _ => u32::MAX,
    };
    (outputs.iter())
        .filter_map(|output| match output {
            Output::Push { batch, changes } => Some((
                *batch,
                (changes.iter())
                    .map(|(key, version)| (number(key), version.hlc.physical_ms()))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn pulls(outputs: &[Output]) -> Vec<(String, Hlc)> {
    (outputs.iter())
        .filter_map(|output| match output {
            Output::Pull { scope, since } => Some((scope.clone(), *since)),
            _ => None,
        })
        .collect()
}

fn sync_dones(outputs: &[Output]) -> usize {
    let done = |output: &&Output| matches!(output, Output::SyncDone { ok: true });
    outputs.iter().filter(done).count()
}

fn config() -> EngineConfig {
    EngineConfig::default()
}

// ---- batching -------------------------------------------------------------------------------

#[test]
fn first_change_starts_the_delay_and_later_ones_ride_along() {
    let mut sim = Sim::new(config());
    let t0 = sim.now_ms;
    assert!(
        sim.queue(1, 1, 100).is_empty(),
        "nothing goes before the delay"
    );
    assert_eq!(sim.engine.next_deadline(), Some(t0 + SYNC_DELAY_MS));
    sim.after(1_000);
    assert!(sim.queue(2, 2, 100).is_empty());
    assert_eq!(
        sim.engine.next_deadline(),
        Some(t0 + SYNC_DELAY_MS),
        "the second change does not restart the timer"
    );
    assert!(pushes(&sim.at(t0 + SYNC_DELAY_MS - 1)).is_empty());
    let sent = pushes(&sim.at(t0 + SYNC_DELAY_MS));
    assert_eq!(sent, vec![(0, vec![(1, 1), (2, 2)])]);
}

#[test]
fn reaching_the_sync_limit_sends_at_once() {
    let mut sim = Sim::new(EngineConfig {
        sync_limit_bytes: 1_000,
        ..config()
    });
    assert!(sim.queue(1, 1, 600).is_empty());
    let sent = pushes(&sim.queue(2, 2, 400));
    assert_eq!(sent, vec![(0, vec![(1, 1), (2, 2)])]);
}

#[test]
fn queue_slack_is_what_can_wait_for_the_next_deadline() {
    let mut sim = Sim::new(EngineConfig {
        sync_limit_bytes: 1_000,
        ..config()
    });
    assert_eq!(
        sim.engine.queue_slack_bytes(),
        0,
        "a first change starts the delay"
    );
    sim.queue(1, 1, 600);
    assert_eq!(
        sim.engine.queue_slack_bytes(),
        400,
        "the rest of the sync limit"
    );
    sim.queue(2, 2, 100);
    assert_eq!(sim.engine.queue_slack_bytes(), 300);
    let sent = pushes(&sim.queue(3, 3, 300));
    assert_eq!(sent.len(), 1, "reaching the limit sends at once");
    assert_eq!(sim.engine.queue_slack_bytes(), 0, "nothing left waiting");
}

#[test]
fn sync_requested_sends_at_once() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    let sent = pushes(&sim.input(Input::SyncRequested));
    assert_eq!(sent, vec![(0, vec![(1, 1)])]);
}

#[test]
fn a_newer_write_of_a_waiting_key_replaces_it() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.queue(1, 2, 20);
    sim.queue(1, 1, 10); // a stale notification changes nothing
    assert_eq!(sim.engine.status().pending_bytes, 20);
    let sent = pushes(&sim.input(Input::SyncRequested));
    assert_eq!(sent, vec![(0, vec![(1, 2)])]);
}

#[test]
fn batches_respect_count_bytes_and_in_flight_limits() {
    // (changes_max, bytes_max, in_flight_max, bytes per change, expected batch sizes)
    let rows: &[(usize, usize, usize, usize, &[usize])] = &[
        (3, 1_000_000, 4, 10, &[3, 3, 3, 1]),
        (25, 100, 4, 40, &[2, 2, 2, 2]),
        (3, 1_000_000, 2, 10, &[3, 3]),
        (25, 10, 4, 50, &[1, 1, 1, 1]), // a change over the byte limit goes alone
    ];
    for &(changes_max, bytes_max, in_flight_max, bytes, expected) in rows {
        let mut sim = Sim::new(EngineConfig {
            batch_changes_max: changes_max,
            batch_bytes_max: bytes_max,
            in_flight_batches_max: in_flight_max,
            ..config()
        });
        for n in 0..10 {
            sim.queue(n, 1, bytes);
        }
        let sizes: Vec<usize> = (pushes(&sim.input(Input::SyncRequested)).iter())
            .map(|(_, changes)| changes.len())
            .collect();
        assert_eq!(
            sizes, expected,
            "limits {changes_max}/{bytes_max}/{in_flight_max}"
        );
    }
}

#[test]
fn a_free_slot_sends_the_next_batch_without_a_new_delay() {
    let mut sim = Sim::new(EngineConfig {
        batch_changes_max: 1,
        in_flight_batches_max: 1,
        ..config()
    });
    sim.queue(1, 1, 10);
    sim.queue(2, 1, 10);
    assert_eq!(pushes(&sim.input(Input::SyncRequested)).len(), 1);
    let next = pushes(&sim.applied(0, &[(1, 1)]));
    assert_eq!(next, vec![(1, vec![(2, 1)])]);
}

// ---- acknowledgements -----------------------------------------------------------------------

#[test]
fn ack_of_an_older_version_keeps_the_newer_pending_and_sends_it_next() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    assert_eq!(pushes(&sim.input(Input::SyncRequested)).len(), 1);
    sim.queue(1, 2, 10);
    assert!(
        pushes(&sim.input(Input::SyncRequested)).is_empty(),
        "a key is in one batch at a time"
    );
    let out = sim.applied(0, &[(1, 1)]);
    let (key, version) = (key(1), ver(1));
    assert!(out.contains(&Output::Acked { key, version }));
    assert_eq!(
        pushes(&out),
        vec![(1, vec![(1, 2)])],
        "the newer version goes after"
    );
    assert_eq!(sim.engine.status().pending_changes, 1);
    sim.applied(1, &[(1, 2)]);
    assert_eq!(sim.engine.status().pending_changes, 0);
    assert_eq!(sim.engine.status().last_ack_ms, Some(sim.now_ms));
}

#[test]
fn superseded_waits_for_the_driver_and_rejected_is_dropped() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.queue(2, 1, 10);
    sim.input(Input::SyncRequested);
    let cloud = cloud_ver(5);
    let superseded = superseded_by(&cloud);
    let rejected = PushOutcome::Rejected {
        reason: "scope".into(),
    };
    let out = sim.answer(0, &[(1, 1, superseded), (2, 1, rejected)]);
    let (local, reason) = (ver(1), "scope".to_string());
    assert!(out.contains(&Output::Superseded {
        key: key(1),
        local,
        cloud
    }));
    assert!(out.contains(&Output::Rejected {
        key: key(2),
        version: ver(1),
        reason
    }));
    assert!(
        pushes(&sim.after(120_000)).is_empty(),
        "a superseded key is not resent as is"
    );
    assert_eq!(sim.engine.status().pending_changes, 1, "key 2 is gone");
    // `up`: the driver re-stamps past the cloud and queues again.
    let resent = pushes(&sim.queue(1, 6, 10));
    let resent = [resent, pushes(&sim.input(Input::SyncRequested))].concat();
    assert_eq!(resent, vec![(1, vec![(1, 6)])]);
}

/// A change refused as ahead of the cloud's time comes back re-stamped (the driver settles
/// the refused version first): it waited its delay once and goes with the next batch.
#[test]
fn a_change_restamped_after_ahead_goes_with_the_next_batch() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.input(Input::SyncRequested);
    let ahead = PushOutcome::Ahead {
        server_time_ms: 500,
    };
    let out = sim.answer(0, &[(1, 1, ahead)]);
    assert!(
        out.iter().any(|o| matches!(o, Output::Ahead { .. })),
        "{out:?}"
    );
    sim.input(Input::Settled {
        key: key(1),
        version: ver(1),
    });
    let resent = pushes(&sim.queue(1, 0, 10));
    assert_eq!(
        resent,
        vec![(1, vec![(1, 0)])],
        "not after another sync delay"
    );
    // A later write of the key is a new change again: it waits its delay.
    sim.applied(1, &[(1, 0)]);
    assert!(pushes(&sim.queue(1, 2, 10)).is_empty());
}

#[test]
fn settled_drops_only_versions_it_covers() {
    let mut sim = Sim::new(config());
    sim.queue(1, 2, 10);
    sim.input(Input::Settled {
        key: key(1),
        version: ver(1),
    });
    assert_eq!(
        sim.engine.status().pending_changes,
        1,
        "an older settle is stale"
    );
    sim.input(Input::Settled {
        key: key(1),
        version: ver(2),
    });
    assert_eq!(sim.engine.status().pending_changes, 0);
    assert_eq!(sim.engine.status().pending_bytes, 0);
}

#[test]
fn a_key_settled_while_in_flight_and_written_again_waits_for_that_batch() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.input(Input::SyncRequested);
    // The driver applied a newer cloud change over it, then the user wrote again.
    sim.input(Input::Settled {
        key: key(1),
        version: ver(1),
    });
    sim.queue(1, 3, 10);
    assert!(
        pushes(&sim.input(Input::SyncRequested)).is_empty(),
        "one batch per key"
    );
    let out = sim.applied(0, &[(1, 1)]);
    assert_eq!(pushes(&out), vec![(1, vec![(1, 3)])]);
}

// ---- retries --------------------------------------------------------------------------------

#[test]
fn failed_batches_retry_with_growing_backoff_without_new_traffic() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.input(Input::SyncRequested);
    let mut batch = 0;
    for failures in 1..=4u32 {
        let failed_at = sim.now_ms;
        sim.input(Input::PushFailed { batch });
        let full_ms = RETRY_BASE_MS << (failures - 1);
        let Some(deadline) = sim.engine.next_deadline() else {
            panic!("a retry is scheduled after failure {failures}");
        };
        let delay_ms = deadline - failed_at;
        assert!(
            (full_ms / 2..=full_ms).contains(&delay_ms),
            "failure {failures}: {delay_ms} ms"
        );
        assert!(
            pushes(&sim.at(deadline - 1)).is_empty(),
            "no retry before the backoff"
        );
        let sent = pushes(&sim.at(deadline));
        assert_eq!(sent, vec![(batch + 1, vec![(1, 1)])], "retry {failures}");
        assert_eq!(sim.engine.status().consecutive_failures, failures);
        batch += 1;
    }
    sim.applied(batch, &[(1, 1)]);
    assert_eq!(sim.engine.status().consecutive_failures, 0);
}

#[test]
fn an_unanswered_batch_times_out_and_is_resent() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.input(Input::SyncRequested);
    let sent_at = sim.now_ms;
    assert_eq!(sim.engine.next_deadline(), Some(sent_at + ACK_TIMEOUT_MS));
    assert!(
        pushes(&sim.at(sent_at + ACK_TIMEOUT_MS)).is_empty(),
        "backoff first"
    );
    let Some(retry_at) = sim.engine.next_deadline() else {
        panic!("a retry is scheduled");
    };
    assert_eq!(pushes(&sim.at(retry_at)), vec![(1, vec![(1, 1)])]);
    // The first batch's answer arrives late: it still acknowledges, the retry answers too.
    let late = sim.applied(0, &[(1, 1)]);
    assert!(
        late.is_empty(),
        "key 1 is in flight again: its new batch will answer"
    );
    sim.applied(1, &[(1, 1)]);
    assert_eq!(sim.engine.status().pending_changes, 0);
}

#[test]
fn keys_missing_from_an_answer_stay_pending_and_back_off() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.queue(2, 1, 10);
    sim.input(Input::SyncRequested);
    let out = sim.applied(0, &[(1, 1)]);
    assert!(
        pushes(&out).is_empty(),
        "unprocessed keys wait for the backoff"
    );
    assert_eq!(sim.engine.status().pending_changes, 1);
    let Some(retry_at) = sim.engine.next_deadline() else {
        panic!("a retry is scheduled");
    };
    assert_eq!(pushes(&sim.at(retry_at)), vec![(1, vec![(2, 1)])]);
}

#[test]
fn a_key_the_cloud_keeps_leaving_out_backs_off_alone_and_holds_up_no_other() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    sim.queue(2, 1, 10);
    sim.input(Input::SyncRequested);
    // Key 1 goes first, and the cloud takes only key 2, again and again.
    let out = sim.applied(0, &[(2, 1)]);
    assert!(pushes(&out).is_empty(), "key 1 waits out its own backoff");
    assert_eq!(
        sim.engine.status().consecutive_failures,
        0,
        "the outbox does not back off"
    );
    sim.queue(3, 1, 10);
    let next_push = |sim: &mut Sim| {
        for _ in 0..10 {
            let due = sim.engine.next_deadline().expect("a send is scheduled");
            let sent = pushes(&sim.at(due));
            if let [(batch, keys)] = &sent[..] {
                return (*batch, keys.clone());
            }
            assert!(sent.is_empty(), "one batch at a time: {sent:?}");
        }
        panic!("nothing was sent");
    };
    let (batch, keys) = next_push(&mut sim);
    assert_eq!(
        keys[0],
        (3, 1),
        "key 3 goes first, whenever key 1 goes: {keys:?}"
    );
    let mut landed = vec![(3, 1)];
    if keys.contains(&(1, 1)) {
        landed.push((1, 1));
    }
    sim.applied(batch, &landed);
    if landed.len() == 1 {
        let (batch, keys) = next_push(&mut sim);
        assert_eq!(keys, vec![(1, 1)], "key 1 goes again once its backoff ends");
        sim.applied(batch, &[(1, 1)]);
    }
    assert_eq!(sim.engine.status().pending_changes, 0);
}

#[test]
fn disconnect_pauses_and_connect_resends_at_once() {
    let mut sim = Sim::with_scopes(config(), &[("*", 500_000)]);
    sim.queue(1, 1, 10);
    sim.input(Input::SyncRequested);
    assert!(sim.input(Input::Disconnected).is_empty());
    sim.queue(2, 1, 10);
    assert!(
        sim.after(600_000).is_empty(),
        "nothing goes while disconnected"
    );
    assert_eq!(
        sim.engine.next_deadline(),
        None,
        "no timer can do anything offline"
    );
    assert!(!sim.engine.status().connected);
    let out = sim.input(Input::Connected {
        limits: Limits::default(),
        granted: None,
    });
    assert_eq!(pushes(&out), vec![(1, vec![(1, 1), (2, 1)])]);
    assert_eq!(pulls(&out).len(), 1);
}

// ---- pulls ----------------------------------------------------------------------------------

#[test]
fn connect_pulls_every_scope_from_cursor_minus_the_window() {
    let cursors = BTreeMap::from([
        ("*".to_string(), Hlc::new(100_000, 3)),
        ("dev".to_string(), Hlc::new(4_000, 0)),
    ]);
    let mut engine = Engine::new(config(), cursors, 9);
    engine.handle(
        Input::Connected {
            limits: Limits::default(),
            granted: None,
        },
        200_000,
    );
    let out: Vec<Output> = std::iter::from_fn(|| engine.poll_output()).collect();
    let expected = vec![
        ("*".to_string(), Hlc::new(100_000 - CATCHUP_WINDOW_MS, 3)),
        ("dev".to_string(), Hlc::ZERO),
    ];
    assert_eq!(pulls(&out), expected);
}

#[test]
fn pages_follow_at_once_and_polls_follow_the_interval() {
    let mut sim = Sim::with_scopes(config(), &[("*", 0)]);
    let next = pulls(&sim.pulled("*", Some(50_000), true));
    assert_eq!(
        next,
        vec![("*".to_string(), Hlc::new(50_000, 0))],
        "next page from the page's end"
    );
    assert!(pulls(&sim.pulled("*", Some(60_000), false)).is_empty());
    let done_at = sim.now_ms;
    assert_eq!(sim.engine.next_deadline(), Some(done_at + POLL_INTERVAL_MS));
    let poll = pulls(&sim.at(done_at + POLL_INTERVAL_MS));
    let since = Hlc::new(60_000 - CATCHUP_WINDOW_MS, 0);
    assert_eq!(poll, vec![("*".to_string(), since)]);
    assert_eq!(sim.engine.status().last_receive_ms, Some(done_at));
}

#[test]
fn cursor_never_goes_backwards() {
    let mut sim = Sim::with_scopes(config(), &[("*", 10_000)]);
    // (last_seq ms of a page in arrival order, cursor after it)
    let rows = [
        (Some(30_000), 30_000),
        (Some(20_000), 30_000),
        (None, 30_000),
        (Some(31_000), 31_000),
    ];
    for (last_ms, cursor_ms) in rows {
        sim.pulled("*", last_ms, false);
        assert_eq!(
            sim.engine.cursor("*"),
            Some(Hlc::new(cursor_ms, 0)),
            "after {last_ms:?}"
        );
    }
    assert_eq!(sim.engine.status().cursors["*"], Hlc::new(31_000, 0));
    assert_eq!(sim.engine.cursor("elsewhere"), None);
}

#[test]
fn failed_and_unanswered_pulls_retry_with_backoff() {
    let mut sim = Sim::with_scopes(config(), &[("*", 0)]);
    let failed_at = sim.now_ms;
    sim.input(Input::PullFailed { scope: "*".into() });
    let Some(retry_at) = sim.engine.next_deadline() else {
        panic!("a pull retry is scheduled");
    };
    assert!((failed_at + RETRY_BASE_MS / 2..=failed_at + RETRY_BASE_MS).contains(&retry_at));
    assert_eq!(pulls(&sim.at(retry_at)).len(), 1);
    assert!(
        pulls(&sim.after(ACK_TIMEOUT_MS)).is_empty(),
        "a timed-out pull backs off"
    );
    let Some(retry_at) = sim.engine.next_deadline() else {
        panic!("a pull retry is scheduled after the timeout");
    };
    assert_eq!(pulls(&sim.at(retry_at)).len(), 1);
}

#[test]
fn an_expired_cursor_resyncs_and_then_pulls_from_the_resyncs_safe_position() {
    let mut sim = Sim::with_scopes(config(), &[("*", 40_000)]);
    let out = sim.input(Input::PullExpired { scope: "*".into() });
    assert_eq!(out, vec![Output::Resync { scope: "*".into() }]);
    assert!(
        pulls(&sim.after(10 * POLL_INTERVAL_MS)).is_empty(),
        "no polls during a resync"
    );
    let safe = Hlc::new(700_000, 0);
    sim.input(Input::Pulled {
        scope: "*".into(),
        last_seq: None,
        more: false,
        safe,
    });
    let poll = pulls(&sim.after(POLL_INTERVAL_MS));
    assert_eq!(
        poll,
        vec![("*".to_string(), Hlc::new(700_000 - CATCHUP_WINDOW_MS, 0))],
        "an empty resync still proves the feed up to its safe position"
    );
    sim.pulled("*", Some(900_000), false);
    let poll = pulls(&sim.after(POLL_INTERVAL_MS));
    assert_eq!(
        poll,
        vec![("*".to_string(), Hlc::new(900_000 - CATCHUP_WINDOW_MS, 0))]
    );
}

#[test]
fn a_failed_handshake_is_retried_with_backoff_and_refused_credentials_wait_longest() {
    let mut engine = Engine::new(config(), BTreeMap::new(), 1);
    engine.tick(1_000);
    assert_eq!(
        engine.poll_output(),
        Some(Output::Connect),
        "connects at start"
    );
    assert_eq!(engine.next_deadline(), None, "one handshake at a time");
    engine.handle(
        Input::ConnectFailed {
            unauthorized: false,
        },
        2_000,
    );
    let Some(retry_at) = engine.next_deadline() else {
        panic!("a retry is scheduled");
    };
    assert!((2_000 + RETRY_BASE_MS / 2..=2_000 + RETRY_BASE_MS).contains(&retry_at));
    engine.tick(retry_at);
    assert_eq!(engine.poll_output(), Some(Output::Connect));
    engine.handle(Input::ConnectFailed { unauthorized: true }, retry_at);
    assert_eq!(engine.next_deadline(), Some(retry_at + RETRY_MAX_MS));
    assert_eq!(engine.status().connect_failures, 2);
    engine.handle(
        Input::Connected {
            limits: Limits::default(),
            granted: None,
        },
        retry_at + RETRY_MAX_MS,
    );
    assert!(engine.status().connected);
    assert_eq!(engine.status().connect_failures, 0);
}

#[test]
fn batches_respect_the_transports_limits() {
    let mut sim = Sim::new(config());
    let limits = Limits {
        push_changes_max: 2,
        ..Limits::default()
    };
    sim.input(Input::Disconnected);
    sim.input(Input::Connected {
        limits,
        granted: None,
    });
    for n in 0..5 {
        sim.queue(n, 1, 10);
    }
    let out = sim.input(Input::SyncRequested);
    assert!(
        pushes(&out).iter().all(|(_, changes)| changes.len() <= 2),
        "{out:?}"
    );
    assert_eq!(pushes(&out).len(), 3.min(IN_FLIGHT_BATCHES_MAX));
}

// ---- db.sync() ------------------------------------------------------------------------------

#[test]
fn sync_done_waits_for_acks_and_a_pull_of_every_scope() {
    let mut sim = Sim::with_scopes(config(), &[("*", 0), ("dev", 0)]);
    sim.pulled("*", None, false);
    sim.pulled("dev", None, false);
    sim.queue(1, 1, 10);
    let out = sim.input(Input::SyncRequested);
    assert_eq!(pulls(&out).len(), 2, "every scope is pulled at once");
    sim.queue(2, 2, 10); // queued after the request: not waited for
    assert_eq!(
        sync_dones(&sim.applied(0, &[(1, 1)])),
        0,
        "scopes not pulled yet"
    );
    assert_eq!(sync_dones(&sim.pulled("*", None, false)), 0);
    assert_eq!(sync_dones(&sim.pulled("dev", None, false)), 1);
    assert_eq!(sim.engine.status().pending_changes, 1);
}

#[test]
fn sync_during_a_pull_waits_for_a_round_started_after_it() {
    let mut sim = Sim::with_scopes(config(), &[("*", 0)]);
    let out = sim.input(Input::SyncRequested);
    assert!(pulls(&out).is_empty(), "the connect round is still running");
    let out = sim.pulled("*", Some(5_000), false);
    assert_eq!(sync_dones(&out), 0, "that round started before the request");
    assert_eq!(pulls(&out).len(), 1, "a new round starts at once");
    assert_eq!(sync_dones(&sim.pulled("*", None, false)), 1);
}

#[test]
fn sync_counts_superseded_and_settled_and_answers_in_order() {
    let mut sim = Sim::new(config());
    assert_eq!(
        sync_dones(&sim.input(Input::SyncRequested)),
        1,
        "nothing to wait for"
    );
    sim.queue(1, 1, 10);
    sim.queue(2, 1, 10);
    sim.input(Input::SyncRequested);
    sim.input(Input::SyncRequested);
    let superseded = superseded_by(&cloud_ver(9));
    assert_eq!(
        sync_dones(&sim.answer(0, &[(1, 1, superseded), (2, 1, PushOutcome::Applied)])),
        2
    );
}

#[test]
fn many_sync_calls_are_bounded_and_all_answered() {
    let mut sim = Sim::new(config());
    sim.queue(1, 1, 10);
    for _ in 0..SYNC_WAITS_MAX + 10 {
        sim.input(Input::SyncRequested);
    }
    assert_eq!(sim.engine.waits.len(), SYNC_WAITS_MAX);
    let out = sim.applied(0, &[(1, 1)]);
    assert_eq!(sync_dones(&out), SYNC_WAITS_MAX + 10);
}

// ---- determinism and limits under random inputs ---------------------------------------------

/// One random step of a driver (and a hostile cloud).
#[derive(Debug, Clone)]
enum Step {
    Queue {
        key: u32,
        bytes: usize,
    },
    AnswerOldest {
        outcome: u8,
        skip: bool,
    },
    FailOldest,
    Settle {
        key: u32,
    },
    Connect,
    Disconnect,
    Sync,
    Pulled {
        scope: bool,
        seq_ms: Option<u64>,
        more: bool,
    },
    PullFailed {
        scope: bool,
    },
    Expired {
        scope: bool,
    },
    Wait {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..12u32, 0..3_000usize).prop_map(|(key, bytes)| Step::Queue { key, bytes }),
        3 => (0..4u8, any::<bool>()).prop_map(|(outcome, skip)| Step::AnswerOldest { outcome, skip }),
        1 => Just(Step::FailOldest),
        1 => (0..12u32).prop_map(|key| Step::Settle { key }),
        1 => Just(Step::Connect),
        1 => Just(Step::Disconnect),
        1 => Just(Step::Sync),
        2 => (any::<bool>(), proptest::option::of(0..1_000_000u64), any::<bool>())
            .prop_map(|(scope, seq_ms, more)| Step::Pulled { scope, seq_ms, more }),
        1 => any::<bool>().prop_map(|scope| Step::PullFailed { scope }),
        1 => any::<bool>().prop_map(|scope| Step::Expired { scope }),
        3 => (0..40_000u64).prop_map(|ms| Step::Wait { ms }),
    ]
}

fn scope_name(first: bool) -> String {
    if first { "*".into() } else { "d".into() }
}

/// A driver that answers at random and checks the engine's promises after every step.
struct Fuzz {
    config: EngineConfig,
    engine: Engine,
    now_ms: u64,
    clock_ms: u64,
    bytes_of: BTreeMap<(Key, Version), usize>,
    in_flight: BTreeMap<BatchId, Vec<(Key, Version)>>,
    cursors: BTreeMap<String, Hlc>,
    seen: Vec<Output>,
}

impl Fuzz {
    fn new(config: &EngineConfig, seed: u64) -> Fuzz {
        let cursors = BTreeMap::from([
            (scope_name(true), Hlc::ZERO),
            (scope_name(false), Hlc::ZERO),
        ]);
        Fuzz {
            config: config.clone(),
            engine: Engine::new(config.clone(), cursors.clone(), seed),
            now_ms: 0,
            clock_ms: 1,
            bytes_of: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            cursors,
            seen: Vec::new(),
        }
    }

    fn step(&mut self, step: &Step) {
        match self.input_for(step) {
            Some(input) => self.engine.handle(input, self.now_ms),
            None => self.engine.tick(self.now_ms),
        }
        while let Some(output) = self.engine.poll_output() {
            if let Output::Push { batch, changes } = &output {
                self.check_push(*batch, changes);
            }
            self.seen.push(output);
        }
        self.check_cursors();
    }

    fn input_for(&mut self, step: &Step) -> Option<Input> {
        match *step {
            Step::Queue { key: n, bytes } => {
                self.clock_ms += 1;
                let (key, version) = (key(n), ver(self.clock_ms));
                self.bytes_of.insert((key.clone(), version.clone()), bytes);
                Some(Input::Queued {
                    key,
                    version,
                    bytes,
                })
            }
            Step::AnswerOldest { outcome, skip } => {
                let (batch, changes) = self.in_flight.pop_first()?;
                let outcome = match outcome {
                    0 | 1 => PushOutcome::Applied,
                    2 => superseded_by(&cloud_ver(2_000_000)),
                    _ => PushOutcome::Rejected {
                        reason: "no".into(),
                    },
                };
                let outcomes = (changes.into_iter().enumerate())
                    .filter(|(i, _)| !(skip && i % 2 == 0))
                    .map(|(_, (key, version))| (key, version, outcome.clone()))
                    .collect();
                Some(Input::Pushed { batch, outcomes })
            }
            Step::FailOldest => {
                let (batch, _) = self.in_flight.pop_first()?;
                Some(Input::PushFailed { batch })
            }
            Step::Settle { key: n } => Some(Input::Settled {
                key: key(n),
                version: ver(self.clock_ms),
            }),
            Step::Connect => Some(Input::Connected {
                limits: Limits::default(),
                granted: None,
            }),
            Step::Disconnect => Some(Input::Disconnected),
            Step::Sync => Some(Input::SyncRequested),
            Step::Pulled {
                scope,
                seq_ms,
                more,
            } => {
                let last_seq = seq_ms.map(|ms| Hlc::new(ms, 0));
                let safe = last_seq.unwrap_or(Hlc::ZERO);
                Some(Input::Pulled {
                    scope: scope_name(scope),
                    last_seq,
                    more,
                    safe,
                })
            }
            Step::PullFailed { scope } => Some(Input::PullFailed {
                scope: scope_name(scope),
            }),
            Step::Expired { scope } => Some(Input::PullExpired {
                scope: scope_name(scope),
            }),
            Step::Wait { ms } => {
                self.now_ms += ms;
                None
            }
        }
    }

    fn check_push(&mut self, batch: BatchId, changes: &[(Key, Version)]) {
        // Batches the engine gave up on (timeout, disconnect) no longer hold their keys.
        self.in_flight
            .retain(|batch, _| self.engine.pushes.is_in_flight(*batch));
        let bytes: usize = (changes.iter())
            .map(|change| self.bytes_of.get(change).copied().unwrap_or(0))
            .sum();
        assert!(!changes.is_empty(), "empty batch");
        assert!(
            changes.len() <= self.config.batch_changes_max,
            "batch over the change limit"
        );
        assert!(
            changes.len() == 1 || bytes <= self.config.batch_bytes_max,
            "batch over the byte limit"
        );
        for (key, _) in changes {
            let elsewhere = self
                .in_flight
                .values()
                .flatten()
                .any(|(other, _)| other == key);
            assert!(!elsewhere, "key {key} in two batches");
        }
        self.in_flight.insert(batch, changes.to_vec());
        assert!(
            self.in_flight.len() <= self.config.in_flight_batches_max,
            "too many batches in flight"
        );
    }

    fn check_cursors(&mut self) {
        for (scope, cursor) in self.engine.status().cursors {
            let before = self.cursors.insert(scope.clone(), cursor);
            assert!(
                before.is_none_or(|before| before <= cursor),
                "cursor of {scope} went back"
            );
        }
    }
}

/// Runs `steps`, checking the engine's promises after each; returns every output.
fn run(config: &EngineConfig, steps: &[Step], seed: u64) -> Vec<Output> {
    let mut fuzz = Fuzz::new(config, seed);
    for step in steps {
        fuzz.step(step);
    }
    fuzz.seen
}

proptest! {
    #[test]
    fn random_inputs_never_panic_or_break_limits(
        steps in proptest::collection::vec(step(), 1..200),
        changes_max in 1..6usize,
        bytes_max in 1..8_000usize,
        in_flight_max in 1..4usize,
        seed in any::<u64>(),
    ) {
        let config = EngineConfig {
            batch_changes_max: changes_max,
            batch_bytes_max: bytes_max,
            in_flight_batches_max: in_flight_max,
            sync_limit_bytes: 4_000,
            ..EngineConfig::default()
        };
        let first = run(&config, &steps, seed);
        prop_assert_eq!(first, run(&config, &steps, seed), "same seed, same run");
    }
}

#[test]
fn a_deadline_in_the_past_is_always_acted_on() {
    // A tick at the deadline must change something, or the driver would spin.
    let mut sim = Sim::with_scopes(
        EngineConfig {
            in_flight_batches_max: 1,
            batch_changes_max: 1,
            ..config()
        },
        &[("*", 0)],
    );
    sim.queue(1, 1, 10);
    sim.queue(2, 1, 10);
    sim.input(Input::SyncRequested);
    sim.pulled("*", None, false);
    for _ in 0..20 {
        let Some(deadline) = sim.engine.next_deadline() else {
            break;
        };
        let before = format!("{:?}", sim.engine);
        sim.at(deadline.max(sim.now_ms));
        assert_ne!(
            before,
            format!("{:?}", sim.engine),
            "tick at {deadline} did nothing"
        );
    }
}

#[test]
fn a_scope_the_handshake_does_not_grant_is_not_pulled_nor_waited_for() {
    let cursors = [("*", 500), ("mine", 500)]
        .iter()
        .map(|(name, ms)| (name.to_string(), Hlc::new(*ms, 0)))
        .collect();
    let mut sim = Sim {
        engine: Engine::new(config(), cursors, 1),
        now_ms: 1_000_000,
    };
    let granted = Some(["mine".to_string()].into());
    let out = sim.input(Input::Connected {
        limits: Limits::default(),
        granted,
    });
    let pulled: Vec<String> = pulls(&out).into_iter().map(|(s, _)| s).collect();
    assert_eq!(pulled, ["mine"], "only the granted scope is pulled");
    assert_eq!(sim.engine.ungranted(), ["*"]);
    sim.pulled("mine", None, false);
    let out = sim.input(Input::SyncRequested);
    assert_eq!(pulls(&out).len(), 1, "a sync pulls the granted scope again");
    let out = sim.pulled("mine", None, false);
    assert_eq!(sync_dones(&out), 1, "and does not wait for the other");
    // Polls leave it alone too; a later handshake granting it pulls it.
    let out = sim.after(3_600_000);
    assert!(pulls(&out).iter().all(|(s, _)| s == "mine"), "{out:?}");
    sim.input(Input::Disconnected);
    let out = sim.input(Input::Connected {
        limits: Limits::default(),
        granted: None,
    });
    assert_eq!(pulls(&out).len(), 2, "{out:?}");
}
