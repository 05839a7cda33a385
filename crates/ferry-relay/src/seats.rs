//! Sessions per token subject: a token holder may not open sessions without bound. A
//! replica (one device's database) holds one session: a new session of it replaces the
//! old one (a device back from a lost link must not wait out the old link's idle
//! timeout). Past the bound across the subject's replicas, a new session is refused, so
//! workers sharing a service token never push each other out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The sessions of each subject, oldest first.
#[derive(Default)]
pub struct Seats {
    held: Mutex<HashMap<String, VecDeque<Held>>>,
    next_id: AtomicU64,
}

/// A seated session: its replica, its id, and the handle that ends it.
struct Held {
    replica: String,
    id: u64,
    end: oneshot::Sender<()>,
}

/// A session's seat, given up when dropped; `ended` resolves when a newer session of the
/// same replica took its place.
pub struct Seat {
    seats: Arc<Seats>,
    subject: String,
    id: u64,
    pub ended: oneshot::Receiver<()>,
}

impl Seats {
    /// Seats a session of `replica` under `subject`, replacing that replica's session;
    /// `None` when the subject holds `max` sessions of other replicas.
    pub fn take(self: &Arc<Self>, subject: &str, replica: &str, max: usize) -> Option<Seat> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = held.entry(subject.to_string()).or_default();
        let same = sessions.iter().position(|h| h.replica == replica);
        if let Some(old) = same.and_then(|at| sessions.remove(at)) {
            let _ = old.end.send(());
        }
        if sessions.len() >= max.max(1) {
            if sessions.is_empty() {
                held.remove(subject);
            }
            return None;
        }
        let (end, ended) = oneshot::channel();
        let replica = replica.to_string();
        sessions.push_back(Held { replica, id, end });
        Some(Seat {
            seats: self.clone(),
            subject: subject.to_string(),
            id,
            ended,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut held = self.seats.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sessions) = held.get_mut(&self.subject) {
            sessions.retain(|h| h.id != self.id);
            if sessions.is_empty() {
                held.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_holds_one_session_and_a_subject_at_most_its_bound() {
        let seats = Arc::new(Seats::default());
        let mut first = seats.take("dev", "r1", 2).unwrap();
        let mut again = seats.take("dev", "r1", 2).unwrap();
        assert!(
            first.ended.try_recv().is_ok(),
            "the replica's new session replaces it"
        );
        let mut other = seats.take("dev", "r2", 2).unwrap();
        assert!(
            seats.take("dev", "r3", 2).is_none(),
            "past the bound: refused"
        );
        assert!(again.ended.try_recv().is_err(), "no one else is pushed out");
        assert!(other.ended.try_recv().is_err());
        let elsewhere = seats.take("another", "r1", 2);
        assert!(elsewhere.is_some(), "another subject is untouched");
        drop((first, again, other, elsewhere));
        assert!(
            seats.held.lock().unwrap().is_empty(),
            "seats are given back"
        );
    }
}
