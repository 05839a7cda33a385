//! Who may take the relay's time before proving who they are. A connection that has not
//! authenticated (TLS, the HTTP head, `Hello`) holds a pending place, bounded overall and
//! per source address, and a short deadline; a session's place among
//! `RelayConfig::connections_max` is taken only once its token verifies. So idle or slow
//! connections from one address cannot keep devices elsewhere out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections not yet authenticated, at most, overall.
pub const PENDING_MAX: usize = 1024;
/// Connections not yet authenticated, at most, from one address: handshakes take
/// milliseconds, so even a fleet behind one NAT reconnecting at once keeps few pending;
/// the ones past it retry with backoff.
pub const PENDING_PER_SOURCE_MAX: usize = 32;

/// The pending connections, by source address.
#[derive(Debug, Default)]
pub struct Admission {
    pending: Mutex<HashMap<IpAddr, usize>>,
}

/// A pending place, given back when dropped (the connection authenticated, or ended).
#[derive(Debug)]
pub struct Pending {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    /// A pending place for a connection from `source`, unless the bounds are reached.
    pub fn enter(self: &Arc<Self>, source: IpAddr) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = pending.values().sum();
        let from_source = pending.get(&source).copied().unwrap_or(0);
        if total >= PENDING_MAX || from_source >= PENDING_PER_SOURCE_MAX {
            return None;
        }
        *pending.entry(source).or_default() += 1;
        Some(Pending {
            admission: Arc::clone(self),
            source,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = (self.admission.pending.lock()).unwrap_or_else(|p| p.into_inner());
        if let Some(count) = pending.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_gets_its_share_and_gives_it_back() {
        let admission = Arc::new(Admission::default());
        let (one, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<Pending> = (0..PENDING_PER_SOURCE_MAX)
            .map(|_| admission.enter(one).unwrap())
            .collect();
        assert!(admission.enter(one).is_none(), "past its share");
        assert!(
            admission.enter(other).is_some(),
            "another source is not held up"
        );
        drop(held);
        assert!(admission.enter(one).is_some(), "given back");
    }
}
