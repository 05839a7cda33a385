//! The writer's clock, disciplined by DynamoDB's: every response's `Date` header sets the
//! server's time, carried from then on by both the monotonic clock and the wall clock
//! (rule 1 of the feed, docs/dynamodb.md), so a device whose clock is behind still stamps
//! where readers look.
//!
//! The two carriers disagree when the wall clock steps (a device without a real-time
//! clock, corrected by NTP) or the device sleeps (the monotonic clock stops). Each use
//! takes the side that cannot lose a change: cursors and versions the earlier time (a
//! cursor set too far ahead would skip changes for good; a version too far ahead would be
//! refused), `_seq` stamps the later one (a stamp behind readers' cursors would never be
//! read; one ahead is read at once).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock};

/// `Date` has whole seconds: the server's time is somewhere in the second it names.
const DATE_HALF_SECOND_MS: i64 = 500;

/// The server's time (its last `Date`, carried by the monotonic and the wall clock; the
/// wall clock alone before the first response), and the HLC that stamps `_seq`.
#[derive(Debug)]
pub struct ServerClock {
    /// The server's time at the last response, and when it was observed (monotonic, wall).
    observed: Mutex<Option<Observation>>,
    /// The wall clock, read only before the first response (a test steps its own).
    wall: fn() -> u64,
    /// A deliberate error on top (tests of writer skew).
    skew_ms: AtomicI64,
    stamps: Mutex<HlcClock>,
    versions: Mutex<HlcClock>,
}

/// One `Date`: the server's time and when this device saw it.
#[derive(Debug, Clone, Copy)]
struct Observation {
    server_ms: u64,
    at: Instant,
    wall_ms: u64,
}

impl Observation {
    /// The server's time now by each carrier: (monotonic, wall).
    fn now(&self, wall_now_ms: u64) -> (u64, u64) {
        let monotonic = self
            .server_ms
            .saturating_add(self.at.elapsed().as_millis() as u64);
        let by_wall = (self.server_ms as i64 + (wall_now_ms as i64 - self.wall_ms as i64)).max(0);
        (monotonic, by_wall as u64)
    }
}

impl Default for ServerClock {
    fn default() -> ServerClock {
        ServerClock {
            observed: Mutex::new(None),
            wall: wall_ms,
            skew_ms: AtomicI64::new(0),
            stamps: Mutex::new(HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT)),
            versions: Mutex::new(HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT)),
        }
    }
}

impl ServerClock {
    /// The server's time now, as far as its responses tell (epoch ms): the earlier of the
    /// monotonic and the wall clock's reckoning, for cursors and versions.
    pub fn now_ms(&self) -> u64 {
        self.reckon(|(monotonic, by_wall)| monotonic.min(by_wall))
    }

    /// The later reckoning, for `_seq` stamps: never behind where readers look.
    fn latest_ms(&self) -> u64 {
        self.reckon(|(monotonic, by_wall)| monotonic.max(by_wall))
    }

    fn reckon(&self, pick: fn((u64, u64)) -> u64) -> u64 {
        let observed = *self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let wall = (self.wall)();
        let server = observed.map_or(wall, |o| pick(o.now(wall)));
        server.saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }

    /// A clock whose wall time is `wall` (tests that step it).
    #[doc(hidden)]
    pub fn with_wall(wall: fn() -> u64) -> ServerClock {
        ServerClock {
            wall,
            ..ServerClock::default()
        }
    }

    /// Puts this clock `ms` off the server's, past what the `Date` discipline corrects: a
    /// writer whose stamps are late (negative) or early, for tests of the feed rules.
    #[doc(hidden)]
    pub fn set_skew_ms(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::Relaxed);
    }

    /// The server's time at the least (epoch ms): `Date` names the second the server was
    /// in, so this is never ahead of it. What a device's clock may be moved up to: a
    /// midpoint could push devices' versions up to half a second ahead of the server, and
    /// order two writes a few milliseconds apart by that rounding rather than by time.
    pub fn at_least_ms(&self) -> u64 {
        self.now_ms().saturating_sub(DATE_HALF_SECOND_MS as u64)
    }

    /// A fresh feed stamp: past every stamp this clock gave, at the server's time.
    pub fn stamp(&self) -> Hlc {
        let now = self.latest_ms();
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        stamps.tick(now)
    }

    /// A fresh version stamp for a write of this replica (cloud mode, the follower): at
    /// [`ServerClock::at_least_ms`], so that versions never run ahead of the server's time
    /// and push every device's clock ahead with them.
    pub fn version_stamp(&self) -> Hlc {
        let now = self.at_least_ms();
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.tick(now)
    }

    /// Takes the time of a response's `Date` header (epoch ms, whole seconds).
    pub fn observe_date(&self, date_ms: u64) {
        let observation = Observation {
            server_ms: date_ms.saturating_add(DATE_HALF_SECOND_MS as u64),
            at: Instant::now(),
            wall_ms: (self.wall)(),
        };
        *self.observed.lock().unwrap_or_else(|p| p.into_inner()) = Some(observation);
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The SDK interceptor that hands every response's `Date` to a [`ServerClock`].
#[derive(Debug)]
pub struct DateObserver(pub Arc<ServerClock>);

impl Intercept for DateObserver {
    fn name(&self) -> &'static str {
        "FerryDateObserver"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context.response().headers().get("date");
        if let Some(time) = date.and_then(|d| httpdate::parse_http_date(d).ok()) {
            let ms = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            self.0.observe_date(ms as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_behind_the_server_stamps_at_the_servers_time() {
        let clock = ServerClock::default();
        let hour_ahead = wall_ms() + 3_600_000;
        clock.observe_date(hour_ahead);
        let stamp = clock.stamp().physical_ms();
        assert!(
            stamp >= hour_ahead && stamp < hour_ahead + 60_000,
            "{stamp}"
        );
        assert!(clock.stamp() > Hlc::new(stamp, 0));
    }

    /// A wall clock that steps a day forward after a response moves neither the server's
    /// time nor the stamps (it set the cursor a day ahead and lost every change after it).
    #[test]
    fn a_wall_clock_step_moves_nothing_once_the_server_spoke() {
        static WALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        fn wall() -> u64 {
            WALL.load(Ordering::SeqCst)
        }
        const DAY_MS: u64 = 24 * 3_600_000;
        let right = wall_ms();
        WALL.store(right - DAY_MS, Ordering::SeqCst); // boots a day slow
        let clock = ServerClock::with_wall(wall);
        assert!(
            clock.now_ms().abs_diff(right - DAY_MS) < 1_000,
            "before: the wall clock"
        );
        clock.observe_date(right);
        WALL.store(right, Ordering::SeqCst); // NTP steps it forward
        let now = clock.now_ms();
        assert!(
            now.abs_diff(right) < 5_000,
            "{now} vs {right}: the server's time"
        );
        // Stamps take the later reckoning: ahead of readers' cursors, never behind.
        assert!(clock.stamp().physical_ms() >= right);
    }

    /// A device that sleeps: its monotonic clock stopped while the wall clock ran on.
    /// Stamps must not fall behind readers' cursors (they follow the wall clock then);
    /// cursors stay on the earlier reckoning.
    #[test]
    fn stamps_follow_the_later_reckoning_and_cursors_the_earlier() {
        static WALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        fn wall() -> u64 {
            WALL.load(Ordering::SeqCst)
        }
        let start = wall_ms();
        WALL.store(start, Ordering::SeqCst);
        let clock = ServerClock::with_wall(wall);
        clock.observe_date(start);
        WALL.store(start + 60_000, Ordering::SeqCst); // a minute passes while asleep
        assert!(
            clock.stamp().physical_ms() >= start + 60_000,
            "stamps by the wall clock"
        );
        assert!(
            clock.now_ms() < start + 5_000,
            "cursors by the monotonic clock"
        );
    }

    #[test]
    fn stamps_never_go_back_when_the_server_does() {
        let clock = ServerClock::default();
        clock.observe_date(wall_ms() + 60_000);
        let first = clock.stamp();
        clock.observe_date(wall_ms() - 60_000);
        assert!(clock.stamp() > first);
    }
}
