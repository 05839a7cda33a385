//! Sessions per device: a token holder may not open sessions without bound. Past the
//! bound, the device's oldest session ends (a reconnecting device must not wait out the
//! idle timeout of the link it lost), so an honest device always gets in and one token
//! never holds more than the bound.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The sessions of each device, oldest first, each with the handle that ends it.
#[derive(Default)]
pub struct Seats {
    held: Mutex<HashMap<String, VecDeque<Held>>>,
}

/// A seated session: its id, and the handle that ends it.
type Held = (u64, oneshot::Sender<()>);

/// A session's seat, given up when dropped; `ended` resolves when a newer session of the
/// same device took its place.
pub struct Seat {
    seats: Arc<Seats>,
    device: String,
    id: u64,
    pub ended: oneshot::Receiver<()>,
}

impl Seats {
    /// Seats session `id` of `device`, ending its oldest one past `max`.
    pub fn take(self: &Arc<Self>, device: &str, id: u64, max: usize) -> Seat {
        let (end, ended) = oneshot::channel();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = held.entry(device.to_string()).or_default();
        sessions.push_back((id, end));
        while sessions.len() > max.max(1) {
            if let Some((_, end)) = sessions.pop_front() {
                let _ = end.send(());
            }
        }
        Seat {
            seats: self.clone(),
            device: device.to_string(),
            id,
            ended,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut held = self.seats.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sessions) = held.get_mut(&self.device) {
            sessions.retain(|(id, _)| *id != self.id);
            if sessions.is_empty() {
                held.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_the_oldest_session_of_that_device_ends() {
        let seats = Arc::new(Seats::default());
        let mut first = seats.take("dev", 1, 2);
        let mut second = seats.take("dev", 2, 2);
        let mut other = seats.take("other", 3, 2);
        assert!(first.ended.try_recv().is_err(), "within the bound");
        let mut third = seats.take("dev", 4, 2);
        assert!(first.ended.try_recv().is_ok(), "the oldest ends");
        assert!(second.ended.try_recv().is_err());
        assert!(third.ended.try_recv().is_err());
        assert!(
            other.ended.try_recv().is_err(),
            "another device is untouched"
        );
        drop((first, second, third, other));
        assert!(
            seats.held.lock().unwrap().is_empty(),
            "seats are given back"
        );
    }
}
