//! A device's outgoing frames, bounded three ways: in frames and in answer bytes (answers
//! wait for room, so a device that does not read stops being served, and no one else), and
//! in live bytes (a live frame is dropped rather than queued past the budget: the device
//! catches up by pulling). A slow device's memory is bounded whatever the size of the
//! changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// The sending side, shared by the connection (answers) and the hub (live frames).
#[derive(Clone)]
pub struct Queue {
    frames: mpsc::Sender<Outgoing>,
    live_bytes: Arc<AtomicUsize>,
    live_bytes_max: usize,
    /// Room for answers, in bytes: a permit per byte queued.
    answer_bytes: Arc<Semaphore>,
    answer_bytes_max: usize,
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
    /// An answer's room, given back once the writer takes it.
    _room: Option<OwnedSemaphorePermit>,
}

/// The bounds of one device's queue.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub frames_max: usize,
    pub live_bytes_max: usize,
    pub answer_bytes_max: usize,
}

/// A queue of at most `frames_max` frames, of which live frames hold at most
/// `live_bytes_max` bytes and answers `answer_bytes_max` (one answer larger than that
/// still goes, alone).
pub fn queue(bounds: Bounds) -> (Queue, Drain) {
    let (frames, queued) = mpsc::channel(bounds.frames_max.max(1));
    let live_bytes = Arc::new(AtomicUsize::new(0));
    let answer_bytes_max = bounds.answer_bytes_max.clamp(1, Semaphore::MAX_PERMITS);
    let queue = Queue {
        frames,
        live_bytes: live_bytes.clone(),
        live_bytes_max: bounds.live_bytes_max,
        answer_bytes: Arc::new(Semaphore::new(answer_bytes_max)),
        answer_bytes_max,
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
        let bytes = message.len().clamp(1, self.answer_bytes_max);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let room = (self.answer_bytes.clone().acquire_many_owned(bytes).await).map_err(|_| ())?;
        let outgoing = Outgoing {
            message,
            live: 0,
            _room: Some(room),
        };
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
            _room: None,
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
    use std::time::Duration;

    use super::*;

    fn bounds(frames_max: usize, live_bytes_max: usize, answer_bytes_max: usize) -> Bounds {
        Bounds {
            frames_max,
            live_bytes_max,
            answer_bytes_max,
        }
    }

    /// A device that does not read holds at most the answer budget in memory: the next
    /// answer waits until the writer takes one; one answer over the budget still goes.
    #[tokio::test]
    async fn answers_past_the_byte_budget_wait_for_the_writer() {
        let (queue, mut drain) = queue(bounds(8, 100, 100));
        let answer = || Message::Binary(Bytes::from(vec![0; 60]));
        queue.send(answer()).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), queue.send(answer())).await;
        assert!(waiting.is_err(), "a second answer waits for room");
        assert!(drain.next().await.is_some());
        queue.send(answer()).await.unwrap();
        assert!(drain.next().await.is_some());
        let huge = Message::Binary(Bytes::from(vec![0; 1_000]));
        queue.send(huge).await.unwrap();
        assert_eq!(drain.next().await.map(|m| m.len()), Some(1_000));
    }

    #[tokio::test]
    async fn live_frames_past_the_byte_budget_are_dropped_and_answers_wait_their_turn() {
        let (queue, mut drain) = queue(bounds(8, 100, 1_000));
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
        let (small, _drain) = super::queue(bounds(1, 1_000, 1_000));
        assert!(small.offer_live(Bytes::from(vec![0; 10])));
        assert!(
            !small.offer_live(Bytes::from(vec![0; 10])),
            "over the frame bound"
        );
    }
}
