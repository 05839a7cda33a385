//! Versions of replicated writes: replica ids, hybrid logical clock stamps and the clock
//! that issues them (docs/design.md section 5).
//!
//! Every text form here sorts exactly like the value it stands for, so versions can be
//! compared as plain strings in the cloud (DynamoDB condition expressions compare strings).

use std::fmt;

use crate::{Error, Result};

/// Longest replica id, in characters: short enough to repeat in every stored version.
pub const REPLICA_ID_LEN_MAX: usize = 32;
/// Length of a replica id made by [`ReplicaId::from_random`]: 128 bits in base 32.
pub const RANDOM_REPLICA_ID_LEN: usize = 26;
/// Bits of an [`Hlc`] that count the logical counter; the rest are physical milliseconds.
const LOGICAL_BITS: u32 = 16;
/// Largest physical time an [`Hlc`] can hold (48 bits of milliseconds: year 10889).
pub const PHYSICAL_MS_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;
/// Length of [`Hlc::to_text`]: fixed, so that texts sort like the numbers.
pub const HLC_TEXT_LEN: usize = 16;
/// Default bound on how far a received stamp may move the clock past wall time (1 hour):
/// a peer with a wild clock must not drag every later write into the future.
pub const MAX_FORWARD_MS_DEFAULT: u64 = 3_600_000;

/// Crockford's base-32 alphabet: no I, L, O or U, and in ASCII order so ids sort like bits.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Texts longer than this are named by their start: a version is 16 + 1 + 32 characters,
/// and a refusal echoes no more of what a peer sent than it needs.
const ECHO_CHARS_MAX: usize = 64;

fn bad(text: &str, problem: &'static str) -> Error {
    let text = match text.char_indices().nth(ECHO_CHARS_MAX) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text.to_string(),
    };
    Error::BadVersion { text, problem }
}

/// A replica's stable id: 1..=32 chars of `[0-9A-Za-z_-]`. Devices generate one at creation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(String);

impl ReplicaId {
    /// Checks `text` as a replica id.
    pub fn parse(text: &str) -> Result<ReplicaId> {
        if text.is_empty() || text.len() > REPLICA_ID_LEN_MAX {
            return Err(bad(text, "a replica id has 1 to 32 characters"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if !text.bytes().all(allowed) {
            return Err(bad(text, "a replica id uses only 0-9, A-Z, a-z, _ and -"));
        }
        Ok(ReplicaId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id made from random bits (the caller supplies them: this crate has no randomness):
    /// 26 Crockford base-32 characters, most significant first.
    pub fn from_random(bits: u128) -> ReplicaId {
        let id = (0..RANDOM_REPLICA_ID_LEN)
            .rev()
            .map(|digit| CROCKFORD[((bits >> (5 * digit)) & 0x1F) as usize] as char)
            .collect();
        ReplicaId(id)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hybrid logical clock stamp: 48-bit physical milliseconds << 16 | 16-bit logical counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(u64);

impl Hlc {
    /// The stamp before every other.
    pub const ZERO: Hlc = Hlc(0);

    /// A stamp from its parts; `physical_ms` beyond [`PHYSICAL_MS_MAX`] is clamped to it.
    pub fn new(physical_ms: u64, logical: u16) -> Hlc {
        Hlc(physical_ms.min(PHYSICAL_MS_MAX) << LOGICAL_BITS | u64::from(logical))
    }

    /// A stamp from its packed form ([`Hlc::as_u64`]).
    pub fn from_u64(packed: u64) -> Hlc {
        Hlc(packed)
    }

    /// The packed form: orders exactly like the stamp.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter: orders stamps within one millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }

    /// 16 lowercase hex digits: sorts like the number.
    pub fn to_text(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Parses [`Hlc::to_text`]; only the exact form is accepted, so that texts stay sortable.
    pub fn parse(text: &str) -> Result<Hlc> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if text.len() != HLC_TEXT_LEN || !text.bytes().all(hex) {
            return Err(bad(text, "a clock stamp is 16 lowercase hex digits"));
        }
        u64::from_str_radix(text, 16)
            .map(Hlc)
            .map_err(|_| bad(text, "a clock stamp is 16 lowercase hex digits"))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A write's version: total order by (hlc, replica). Text `{hlc 16 hex}-{replica}` sorts
/// the same way, because the stamp part has a fixed length.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// When the write happened, by the writer's clock.
    pub hlc: Hlc,
    /// Who wrote it: breaks ties between replicas that stamped the same instant.
    pub replica: ReplicaId,
}

impl Version {
    /// The text form `{hlc}-{replica}`.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// Parses [`Version::to_text`].
    pub fn parse(text: &str) -> Result<Version> {
        // The stamp has no '-', so the first one separates it; the replica may hold more.
        let (hlc, replica) = text
            .split_once('-')
            .ok_or_else(|| bad(text, "a version is a clock stamp, '-' and a replica id"))?;
        Ok(Version {
            hlc: Hlc::parse(hlc).map_err(|_| bad(text, "a version starts with 16 hex digits"))?,
            replica: ReplicaId::parse(replica)
                .map_err(|_| bad(text, "a version ends with a replica id"))?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hlc, self.replica)
    }
}

/// What [`HlcClock::observe`] did with a received stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The clock is now at or past the received stamp.
    Advanced,
    /// The remote stamp is more than `max_forward_ms` ahead of wall time: the clock
    /// advanced only to wall + max_forward_ms (never poisoned).
    TooFarAhead {
        /// How far the remote stamp was ahead of wall time.
        ahead_ms: u64,
    },
}

/// The HLC state machine. Pure: wall time comes in as an argument, and the caller persists
/// [`HlcClock::last`] so that stamps keep increasing across restarts.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_forward_ms: u64,
}

impl HlcClock {
    /// A clock that continues after `last` and lets received stamps move it at most
    /// `max_forward_ms` past wall time (see [`MAX_FORWARD_MS_DEFAULT`]).
    pub fn new(last: Hlc, max_forward_ms: u64) -> HlcClock {
        HlcClock {
            last,
            max_forward_ms,
        }
    }

    /// The latest stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A stamp for a local write: greater than every stamp issued or observed before, even
    /// when wall time goes backwards (a device without a real-time clock after a reboot).
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let last = self.last;
        let physical_ms = wall_ms.min(PHYSICAL_MS_MAX).max(last.physical_ms());
        self.last = if physical_ms > last.physical_ms() {
            Hlc::new(physical_ms, 0)
        } else if let Some(logical) = last.logical().checked_add(1) {
            Hlc::new(physical_ms, logical)
        } else {
            // 65536 stamps in one millisecond: borrow the next millisecond.
            Hlc::new(physical_ms + 1, 0)
        };
        debug_assert!(
            self.last > last || last.physical_ms() == PHYSICAL_MS_MAX,
            "hlc must increase"
        );
        self.last
    }

    /// Advances past a received stamp, bounded by wall time + `max_forward_ms`.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> Observed {
        let bound_ms = wall_ms.saturating_add(self.max_forward_ms);
        if remote.physical_ms() > bound_ms {
            self.last = self.last.max(Hlc::new(bound_ms, 0));
            return Observed::TooFarAhead {
                ahead_ms: remote.physical_ms() - wall_ms,
            };
        }
        self.last = self.last.max(remote);
        Observed::Advanced
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn version(hlc: u64, replica: &str) -> Version {
        Version {
            hlc: Hlc::from_u64(hlc),
            replica: ReplicaId::parse(replica).unwrap(),
        }
    }

    #[test]
    fn tick_increases_when_wall_time_goes_backwards() {
        let mut clock = HlcClock::new(Hlc::new(1_000, 5), MAX_FORWARD_MS_DEFAULT);
        assert_eq!(clock.tick(500), Hlc::new(1_000, 6));
        assert_eq!(clock.tick(1_000), Hlc::new(1_000, 7));
        assert_eq!(clock.tick(2_000), Hlc::new(2_000, 0));
    }

    #[test]
    fn tick_borrows_a_millisecond_when_the_counter_overflows() {
        let mut clock = HlcClock::new(Hlc::new(1_000, u16::MAX), MAX_FORWARD_MS_DEFAULT);
        assert_eq!(clock.tick(1_000), Hlc::new(1_001, 0));
    }

    #[test]
    fn observe_moves_past_a_remote_stamp() {
        let mut clock = HlcClock::new(Hlc::new(1_000, 0), MAX_FORWARD_MS_DEFAULT);
        assert_eq!(clock.observe(Hlc::new(5_000, 3), 1_000), Observed::Advanced);
        assert_eq!(clock.tick(1_000), Hlc::new(5_000, 4));
        // An older remote stamp never moves the clock back.
        assert_eq!(clock.observe(Hlc::new(10, 0), 1_000), Observed::Advanced);
        assert_eq!(clock.last(), Hlc::new(5_000, 4));
    }

    #[test]
    fn observe_bounds_a_stamp_too_far_ahead() {
        let mut clock = HlcClock::new(Hlc::new(1_000, 0), 100);
        let observed = clock.observe(Hlc::new(10_000, 0), 1_000);
        assert_eq!(observed, Observed::TooFarAhead { ahead_ms: 9_000 });
        assert_eq!(clock.last(), Hlc::new(1_100, 0));
        assert_eq!(clock.tick(1_000), Hlc::new(1_100, 1));
    }

    #[test]
    fn texts_parse_back() {
        let v = version(0x0123_4567_89ab_cdef, "dev-1_A");
        assert_eq!(v.to_text(), "0123456789abcdef-dev-1_A");
        assert_eq!(Version::parse(&v.to_text()).unwrap(), v);
        assert_eq!(Hlc::parse("0000000000000000").unwrap(), Hlc::ZERO);
        let id = ReplicaId::from_random(u128::MAX);
        assert_eq!(id.as_str(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(ReplicaId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn bad_texts_fail_naming_the_text() {
        for text in [
            "",
            "0123456789abcdef",
            "0123456789abcdef-",
            "0123456789ABCDEF-a",
            "+123456789abcdef-a",
            "0123456789abcde-a",
            "0123456789abcdef-a b",
            "0123456789abcdef-123456789012345678901234567890123",
        ] {
            let err = Version::parse(text).unwrap_err();
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
        assert!(ReplicaId::parse("é").is_err());
        // A peer's long or multi-line text is named by its start, quoted.
        let long = format!("a\n{}", "b".repeat(10_000));
        let err = ReplicaId::parse(&long).unwrap_err().to_string();
        assert!(
            err.starts_with("\"a\\nbbb") && err.contains("(10002 bytes)"),
            "{err}"
        );
        assert!(err.len() < 200, "{err}");
    }

    fn any_version() -> impl Strategy<Value = Version> {
        (any::<u64>(), "[0-9A-Za-z_-]{1,32}").prop_map(|(hlc, replica)| version(hlc, &replica))
    }

    proptest! {
        #[test]
        fn version_texts_sort_like_versions(a in any_version(), b in any_version()) {
            prop_assert_eq!(a.cmp(&b), a.to_text().cmp(&b.to_text()));
            prop_assert_eq!(a.hlc.cmp(&b.hlc), a.hlc.to_text().cmp(&b.hlc.to_text()));
            prop_assert_eq!(Version::parse(&a.to_text()).unwrap(), a);
        }

        #[test]
        fn random_ids_sort_like_their_bits(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(a.cmp(&b), ReplicaId::from_random(a).cmp(&ReplicaId::from_random(b)));
        }

        #[test]
        fn stamps_strictly_increase(
            start in 0u64..1 << 40,
            steps in prop::collection::vec((any::<bool>(), 0u64..1 << 40, 0u64..1 << 40), 1..50),
        ) {
            let mut clock = HlcClock::new(Hlc::from_u64(start), MAX_FORWARD_MS_DEFAULT);
            let mut issued = Hlc::ZERO;
            for (is_tick, wall_ms, remote) in steps {
                if is_tick {
                    let stamp = clock.tick(wall_ms);
                    prop_assert!(stamp > issued && stamp > Hlc::from_u64(start));
                    issued = stamp;
                } else {
                    let before = clock.last();
                    clock.observe(Hlc::from_u64(remote), wall_ms);
                    prop_assert!(clock.last() >= before);
                    issued = issued.max(clock.last());
                }
            }
        }
    }
}

/// Which way a model's changes replicate (the schema's `control.sync`): what the cloud's
/// write rule and a device's inbound rule both decide by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SyncDirection {
    /// No replication.
    #[default]
    None,
    /// Device to cloud; the device is authoritative.
    Up,
    /// Cloud to device; the cloud is authoritative.
    Down,
    /// Both ways; last writer wins.
    Both,
}

impl SyncDirection {
    /// Whether devices upload the model's changes.
    pub fn uploads(self) -> bool {
        matches!(self, SyncDirection::Up | SyncDirection::Both)
    }

    /// Whether devices receive the cloud's changes of the model.
    pub fn downloads(self) -> bool {
        matches!(self, SyncDirection::Down | SyncDirection::Both)
    }

    /// The schema's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncDirection::None => "none",
            SyncDirection::Up => "up",
            SyncDirection::Down => "down",
            SyncDirection::Both => "both",
        }
    }
}
