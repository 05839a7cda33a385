//! A device's outgoing frames, bounded twice: in frames (answers wait for room, so a
//! device that does not read stops being served, and no one else), and in live bytes (a
//! live frame is dropped rather than queued past the budget: the device catches up by
//! pulling). A slow device's memory is bounded whatever the size of the changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// The sending side, shared by the connection (answers) and the hub (live frames).
#[derive(Clone)]
pub struct Queue {
    frames: mpsc::Sender<Outgoing>,
    live_bytes: Arc<AtomicUsize>,
    live_bytes_max: usize,
}

/// The writer's side.
pub struct Drain {
    frames: mpsc::Receiver<Outgoing>,
    live_bytes: Arc<AtomicUsize>,
}

struct Outgoing {
    message: Message,
    /// The live bytes it holds (0 for an answer).
    live: usize,
}

/// A queue of at most `frames_max` frames, of which live frames hold at most
/// `live_bytes_max` bytes.
pub fn queue(frames_max: usize, live_bytes_max: usize) -> (Queue, Drain) {
    let (frames, queued) = mpsc::channel(frames_max.max(1));
    let live_bytes = Arc::new(AtomicUsize::new(0));
    let queue = Queue {
        frames,
        live_bytes: live_bytes.clone(),
        live_bytes_max,
    };
    let drain = Drain {
        frames: queued,
        live_bytes,
    };
    (queue, drain)
}

impl Queue {
    /// Queues an answer (or the closing frames), waiting for room; an error once the
    /// writer is gone.
    pub async fn send(&self, message: Message) -> Result<(), ()> {
        let outgoing = Outgoing { message, live: 0 };
        self.frames.send(outgoing).await.map_err(|_| ())
    }

    /// Queues a live frame if there is room for it; false when it is dropped.
    pub fn offer_live(&self, frame: Bytes) -> bool {
        let live = frame.len();
        let held = self.live_bytes.fetch_add(live, Ordering::AcqRel);
        // The first frame always fits: a live frame larger than the budget still goes to
        // a device that reads.
        if held > 0 && held + live > self.live_bytes_max {
            self.live_bytes.fetch_sub(live, Ordering::AcqRel);
            return false;
        }
        let outgoing = Outgoing {
            message: Message::Binary(frame),
            live,
        };
        match self.frames.try_send(outgoing) {
            Ok(()) => true,
            Err(_) => {
                self.live_bytes.fetch_sub(live, Ordering::AcqRel);
                false
            }
        }
    }
}

impl Drain {
    /// The next frame to write, once the connection queued one; `None` when it is done.
    pub async fn next(&mut self) -> Option<Message> {
        let outgoing = self.frames.recv().await?;
        self.live_bytes.fetch_sub(outgoing.live, Ordering::AcqRel);
        Some(outgoing.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn live_frames_past_the_byte_budget_are_dropped_and_answers_wait_their_turn() {
        let (queue, mut drain) = queue(8, 100);
        assert!(queue.offer_live(Bytes::from(vec![0; 60])));
        assert!(
            !queue.offer_live(Bytes::from(vec![0; 60])),
            "over the byte budget"
        );
        assert!(queue.offer_live(Bytes::from(vec![0; 40])));
        queue.send(Message::Text("answer".into())).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(drain.next().await, Some(Message::Binary(_))));
        }
        assert!(
            queue.offer_live(Bytes::from(vec![0; 100])),
            "written frames free room"
        );
        assert!(matches!(drain.next().await, Some(Message::Text(_))));
        let (small, _drain) = super::queue(1, 1_000);
        assert!(small.offer_live(Bytes::from(vec![0; 10])));
        assert!(
            !small.offer_live(Bytes::from(vec![0; 10])),
            "over the frame bound"
        );
    }
}
