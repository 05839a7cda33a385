//! The fault-injecting transport: a `MemoryTransport` with a bad network in front of it.
//!
//! Every call draws its fate from the link's seeded RNG. A push may be dropped before the
//! cloud sees it, applied with its answer lost, applied twice, or held back and applied
//! later (a late, reordered delivery); a pull may be dropped or answered with a shorter page.
//! A partitioned link fails every call. Each case answers `Unavailable` exactly where a real
//! network would leave the device not knowing what happened, which is what the engine's
//! retries and the cloud's conditional writes must make harmless.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry::replication::{
    Grant, Limits, MemoryCloud, PullFrom, PullPage, PushOutcome, Session, Transport, TransportError,
};
use ferry::types::version::MAX_FORWARD_MS_DEFAULT;
use ferry::types::{Hlc, HlcClock, Key, Version};
use ferry_journal::Change;

/// Per-call fault probabilities in percent, drawn once per seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// The request never reaches the cloud.
    pub drop: u32,
    /// The cloud applies the push; the answer is lost.
    pub lose_answer: u32,
    /// The cloud receives the push twice.
    pub duplicate: u32,
    /// The push is held and applied later, after newer pushes.
    pub delay: u32,
    /// The pull answers fewer changes than asked (with `more` set).
    pub truncate: u32,
}

/// One device's link: its faults, its partition and the pushes it holds back.
#[derive(Debug)]
pub struct LinkState {
    rng: fastrand::Rng,
    pub rates: FaultRates,
    /// Steps left offline; 0 is online.
    pub offline_steps: u32,
    /// Pushes held for late delivery, oldest first, with the cloud time they were sent.
    pub held: Vec<(u64, Vec<Change>)>,
    /// What happened on the link since the runner last looked (for `--verbose`).
    pub events: Vec<String>,
    /// Broken cloud rules seen on this link (a stale write that won).
    pub violations: Vec<String>,
    /// Pulls the cloud answered `Expired` (each one costs the device a full resync).
    pub expired: u64,
    /// Pushes sent on this link.
    pub pushes: u64,
    /// The clock this link's writes stamp `_seq` with: `writer_skew_ms` off the cloud's.
    writer: HlcClock,
    writer_skew_ms: i64,
}

/// Longest a held push waits for its late delivery: an hour, far past any retry, far
/// within the tombstone horizon.
pub const HELD_MS_MAX: u64 = 60 * 60 * 1000;

/// A shared handle: the transport the driver owns and the simulator both hold one.
pub type Link = Arc<Mutex<LinkState>>;

/// A new online link whose faults follow `seed` and whose writes stamp `_seq` from a clock
/// `writer_skew_ms` off the cloud's.
pub fn link(seed: u64, rates: FaultRates, writer_skew_ms: i64) -> Link {
    Arc::new(Mutex::new(LinkState {
        rng: fastrand::Rng::with_seed(seed),
        rates,
        offline_steps: 0,
        held: Vec::new(),
        events: Vec::new(),
        violations: Vec::new(),
        expired: 0,
        pushes: 0,
        writer: HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT),
        writer_skew_ms,
    }))
}

/// Locks a link or the cloud; a panic elsewhere already failed the run, so take the data.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one push call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFate {
    Deliver,
    Drop,
    LoseAnswer,
    Duplicate,
    Delay,
}

impl LinkState {
    /// True with `percent` percent chance.
    pub fn roll(&mut self, percent: u32) -> bool {
        self.rng.u32(0..100) < percent
    }

    /// A number of `range`, from the link's dice.
    pub fn draw_ms(&mut self, range: std::ops::RangeInclusive<i64>) -> i64 {
        self.rng.i64(range)
    }

    pub fn push_fate(&mut self) -> PushFate {
        self.pushes += 1;
        let r = self.rates;
        let roll = self.rng.u32(0..100);
        let fates = [
            (r.drop, PushFate::Drop),
            (r.lose_answer, PushFate::LoseAnswer),
            (r.duplicate, PushFate::Duplicate),
            (r.delay, PushFate::Delay),
        ];
        let mut bound = 0;
        for (percent, fate) in fates {
            bound += percent;
            if roll < bound {
                return fate;
            }
        }
        PushFate::Deliver
    }

    /// Takes one held push at random (late deliveries arrive in any order). Requests held
    /// longer than [`HELD_MS_MAX`] are dropped first: no network delivers a request days
    /// late (and a cloud whose tombstone of the key was purged meanwhile would take it).
    pub fn take_held(&mut self, now_ms: u64) -> Option<Vec<Change>> {
        self.held
            .retain(|(sent_ms, _)| now_ms.saturating_sub(*sent_ms) <= HELD_MS_MAX);
        if self.held.is_empty() {
            return None;
        }
        let at = self.rng.usize(0..self.held.len());
        Some(self.held.remove(at).1)
    }
}

/// Writes `changes` to the cloud, each stamped by the link's writer clock, and checks rule 2
/// of the cloud: whatever arrives, the key ends at the newer of the version it held and the
/// one written, so a stale write never wins.
pub fn write_checked(
    cloud: &mut MemoryCloud,
    changes: Vec<Change>,
    link: &mut LinkState,
) -> Vec<(Key, Version, PushOutcome)> {
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        let (key, version) = (change.key.clone(), change.version.clone());
        let before = cloud.get(&key).map(|c| c.version.clone());
        let writer_ms = cloud.now_ms().saturating_add_signed(link.writer_skew_ms);
        let device = Grant::device("device", None);
        let outcome = cloud.write_at(change, link.writer.tick(writer_ms), &device);
        let after = cloud.get(&key).map(|c| c.version.clone());
        let expected = before.clone().max(Some(version.clone()));
        let refused = matches!(
            outcome,
            PushOutcome::Rejected { .. } | PushOutcome::Ahead { .. }
        );
        if !refused && after != expected {
            link.violations.push(format!(
                "cloud write of {key} at {version} over {before:?} left {after:?}"
            ));
        }
        outcomes.push((key, version, outcome));
    }
    outcomes
}

/// The transport the simulator attaches to each device.
pub struct FaultyTransport {
    pub cloud: Arc<Mutex<MemoryCloud>>,
    pub link: Link,
}

fn unavailable(why: &str) -> TransportError {
    TransportError::Unavailable(why.to_string())
}

impl FaultyTransport {
    fn push_now(
        &self,
        changes: Vec<Change>,
    ) -> Result<Vec<(Key, Version, PushOutcome)>, TransportError> {
        let mut link = lock(&self.link);
        if link.offline_steps > 0 {
            return Err(unavailable("partitioned"));
        }
        let fate = link.push_fate();
        let count = changes.len();
        link.events
            .push(format!("push of {count} changes: {fate:?}"));
        let link = &mut *link;
        let mut cloud = lock(&self.cloud);
        match fate {
            PushFate::Drop => Err(unavailable("request dropped")),
            PushFate::Delay => {
                link.held.push((cloud.now_ms(), changes));
                Err(unavailable("request delayed"))
            }
            PushFate::LoseAnswer => {
                write_checked(&mut cloud, changes, link);
                Err(unavailable("answer lost"))
            }
            PushFate::Duplicate => {
                let first = write_checked(&mut cloud, changes.clone(), link);
                write_checked(&mut cloud, changes, link);
                Ok(first)
            }
            PushFate::Deliver => Ok(write_checked(&mut cloud, changes, link)),
        }
    }

    fn session(&self) -> Result<Session, TransportError> {
        if lock(&self.link).offline_steps > 0 {
            return Err(unavailable("partitioned"));
        }
        let cloud = lock(&self.cloud);
        Ok(Session {
            server_time_ms: cloud.now_ms(),
            scopes: None,
            limits: Limits::default(),
            horizon_ms: cloud.horizon_ms(),
        })
    }

    fn pull_now(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let mut link = lock(&self.link);
        if link.offline_steps > 0 {
            return Err(unavailable("partitioned"));
        }
        if link.rng.u32(0..100) < link.rates.drop {
            link.events.push(format!("pull of '{scope}': dropped"));
            return Err(unavailable("request dropped"));
        }
        // A shorter page is a legal answer (`more` tells the rest): the driver must page on.
        let limit = if link.rng.u32(0..100) < link.rates.truncate {
            link.rng.usize(1..=limit.clamp(1, 3))
        } else {
            limit
        };
        let page = lock(&self.cloud).pull(scope, from, limit);
        if page == Err(TransportError::Expired) {
            link.expired += 1;
            link.events.push(format!("pull of '{scope}': expired"));
        }
        page
    }
}

impl Transport for FaultyTransport {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        std::future::ready(self.session())
    }

    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<Vec<(Key, Version, PushOutcome)>, TransportError>> + Send {
        std::future::ready(self.push_now(changes))
    }

    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        std::future::ready(self.pull_now(scope, from, limit))
    }
}
