//! Who may take the relay's time before proving who they are. A connection that has not
//! authenticated (TLS, the HTTP head, `Hello`) holds a pending place, bounded overall and
//! per source (an IPv4 address, an IPv6 /64); a session's place among
//! `RelayConfig::connections_max` is taken only once its token verifies. A newcomer past a
//! bound evicts the oldest pending connection of its source, or of the busiest source when
//! the relay is full: a handshake takes milliseconds, so honest devices get through while
//! idle connections, however many addresses hold them, are pushed out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Connections not yet authenticated, at most, overall.
pub const PENDING_MAX: usize = 1024;
/// Connections not yet authenticated, at most, from one source.
pub const PENDING_PER_SOURCE_MAX: usize = 32;

/// The pending connections, oldest first, by source.
#[derive(Debug, Default)]
pub struct Admission {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_source: HashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
    total: usize,
    next_id: u64,
}

/// A pending place, given back when dropped (the connection authenticated, or ended).
#[derive(Debug)]
pub struct Pending {
    admission: Arc<Admission>,
    source: IpAddr,
    id: u64,
    evicted: Arc<Notify>,
}

impl Admission {
    /// A pending place for a connection from `address`; the bounds make room by evicting
    /// the oldest pending connection of its source, or of the busiest source. The second
    /// value says whether one was evicted.
    pub fn enter(self: &Arc<Self>, address: IpAddr) -> (Pending, bool) {
        let source = source_of(address);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from_source = state.by_source.get(&source).map_or(0, VecDeque::len);
        let crowded = match (
            from_source >= PENDING_PER_SOURCE_MAX,
            state.total >= PENDING_MAX,
        ) {
            (true, _) => Some(source),
            (false, true) => (state.by_source.iter())
                .max_by_key(|(_, pending)| pending.len())
                .map(|(source, _)| *source),
            (false, false) => None,
        };
        let evicted = crowded
            .and_then(|crowded| state.evict_oldest(crowded))
            .is_some();
        let id = state.next_id;
        state.next_id += 1;
        let notify = Arc::new(Notify::new());
        state
            .by_source
            .entry(source)
            .or_default()
            .push_back((id, notify.clone()));
        state.total += 1;
        let pending = Pending {
            admission: Arc::clone(self),
            source,
            id,
            evicted: notify,
        };
        (pending, evicted)
    }
}

impl State {
    /// Tells the oldest pending connection of `source` to end, and forgets it.
    fn evict_oldest(&mut self, source: IpAddr) -> Option<()> {
        let pending = self.by_source.get_mut(&source)?;
        let (_, notify) = pending.pop_front()?;
        if pending.is_empty() {
            self.by_source.remove(&source);
        }
        self.total -= 1;
        notify.notify_one();
        Some(())
    }
}

impl Pending {
    /// `work`, unless this connection is evicted first (`None`).
    pub async fn unless_evicted<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            done = work => Some(done),
            () = self.evicted.notified() => None,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = (self.admission.state.lock()).unwrap_or_else(|p| p.into_inner());
        let Some(pending) = state.by_source.get_mut(&self.source) else {
            return;
        };
        // Gone already if it was evicted.
        if let Some(at) = pending.iter().position(|(id, _)| *id == self.id) {
            pending.remove(at);
            if pending.is_empty() {
                state.by_source.remove(&self.source);
            }
            state.total -= 1;
        }
    }
}

/// The source a bound counts by: an IPv4 address, or an IPv6 /64 (what one host is given).
fn source_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_evicts_the_oldest_of_its_source_or_of_the_busiest() {
        let admission = Arc::new(Admission::default());
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Pending> = (0..PENDING_PER_SOURCE_MAX)
            .map(|_| admission.enter(one).0)
            .collect();
        let (_newest, evicted) = admission.enter(one);
        assert!(evicted, "its source's oldest made room");
        let (_other, evicted) = admission.enter("10.0.0.2".parse().unwrap());
        assert!(!evicted, "another source is not held up");
        drop(held);
        // One host's IPv6 addresses count as one source.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
    }

    #[test]
    fn when_full_the_busiest_source_gives_way() {
        let admission = Arc::new(Admission::default());
        let mut held = Vec::new();
        for n in 0..PENDING_MAX {
            let address = IpAddr::from([10, 1, (n / 32) as u8, (n % 32) as u8]);
            held.push(admission.enter(address).0);
        }
        let (_honest, evicted) = admission.enter("192.0.2.1".parse().unwrap());
        assert!(evicted, "a full relay still lets a newcomer in");
    }
}
