//! A seeded generator: retry delays with jitter for the engine, feed lags for the reference
//! cloud.
//!
//! Neither draws randomness of its own: the seed comes from the caller, so the same seed
//! and inputs replay the same run (the simulator depends on it).

/// splitmix64 (Steele, Lea and Flood, 2014): tiny, fast and good enough to spread retries.
#[derive(Debug, Clone)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator whose draws follow from `seed`.
    pub fn new(seed: u64) -> Jitter {
        Jitter { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max {
            u64::MAX => self.next_u64(),
            _ => self.next_u64() % (max + 1),
        }
    }

    /// The delay before retry number `failures` (1 for the first): `base * 2^(failures-1)`
    /// capped at `max`, then "equal jitter" (half fixed, half random) so that devices that
    /// failed together do not retry together, while the delay still grows.
    pub fn backoff_ms(&mut self, failures: u32, base_ms: u64, max_ms: u64) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        let full_ms = base_ms.saturating_mul(1u64 << doublings).min(max_ms);
        let half_ms = full_ms / 2;
        let spread_ms = (full_ms - half_ms).saturating_add(1);
        half_ms + self.next_u64() % spread_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let mut jitter = Jitter::new(7);
        for (failures, full_ms) in [(1, 500), (2, 1_000), (3, 2_000), (8, 60_000), (40, 60_000)] {
            let delay_ms = jitter.backoff_ms(failures, 500, 60_000);
            assert!(
                (full_ms / 2..=full_ms).contains(&delay_ms),
                "failure {failures}: {delay_ms} ms not in {}..={full_ms}",
                full_ms / 2
            );
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let draw = |seed| {
            let mut jitter = Jitter::new(seed);
            (1..10)
                .map(|n| jitter.backoff_ms(n, 500, 60_000))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
