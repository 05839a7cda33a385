//! Pushes in flight: up to the engine's `in_flight_batches_max` batches at once, answered
//! in any order (the engine matches each answer to its batch).
//!
//! The background driver spawns each push as a task on its runtime: it runs while the
//! driver does other work, and its answer comes back on a channel. A driver stepped by hand
//! (`Db::drive`, the simulations) holds the pushes a step sends and runs them at the step's
//! end, in an order drawn from its seed: a network delivering concurrent requests in any
//! order, replayed.

use std::sync::Arc;

use ferry_journal::Change;
use ferry_sync::{BatchId, Jitter, PushResults, TransportError};

use crate::link::{Call, Link};

/// A push's answer, with its batch.
pub(crate) type Answer = (BatchId, Result<PushResults, TransportError>);

pub(crate) enum InFlight {
    #[cfg(feature = "tokio")]
    Spawned {
        sender: tokio::sync::mpsc::UnboundedSender<Answer>,
        answers: tokio::sync::mpsc::UnboundedReceiver<Answer>,
        call_timeout: std::time::Duration,
    },
    Held {
        calls: Vec<(BatchId, Call<'static, PushResults>)>,
        order: Jitter,
    },
}

impl InFlight {
    /// Pushes spawned on the background driver's runtime, each failing with `Timeout`
    /// after `call_timeout`.
    #[cfg(feature = "tokio")]
    pub fn spawned(call_timeout: std::time::Duration) -> InFlight {
        let (sender, answers) = tokio::sync::mpsc::unbounded_channel();
        InFlight::Spawned {
            sender,
            answers,
            call_timeout,
        }
    }

    /// Pushes held until the step's end, run in an order drawn from `seed`.
    pub fn held(seed: u64) -> InFlight {
        InFlight::Held {
            calls: Vec::new(),
            order: Jitter::new(seed),
        }
    }

    /// Sends `changes` as `batch`.
    pub fn send(&mut self, link: &Arc<dyn Link>, batch: BatchId, changes: Vec<Change>) {
        let link = Arc::clone(link);
        let call: Call<'static, PushResults> = Box::pin(async move { link.push(changes).await });
        match self {
            #[cfg(feature = "tokio")]
            InFlight::Spawned {
                sender,
                call_timeout,
                ..
            } => {
                let (sender, timeout) = (sender.clone(), *call_timeout);
                tokio::spawn(async move {
                    // The driver gone, nobody waits for the answer.
                    let _ = sender.send((batch, crate::link::timed(timeout, call).await));
                });
            }
            InFlight::Held { calls, .. } => calls.push((batch, call)),
        }
    }

    /// The answers that came in, without waiting; a driver stepped by hand runs its held
    /// pushes now, in a drawn order.
    pub async fn answered(&mut self) -> Vec<Answer> {
        match self {
            #[cfg(feature = "tokio")]
            InFlight::Spawned { answers, .. } => {
                let mut answered = Vec::new();
                while let Ok(answer) = answers.try_recv() {
                    answered.push(answer);
                }
                answered
            }
            InFlight::Held { calls, order } => {
                let mut calls = std::mem::take(calls);
                let mut answered = Vec::with_capacity(calls.len());
                while !calls.is_empty() {
                    let next = order.up_to(calls.len() as u64 - 1) as usize;
                    let (batch, call) = calls.swap_remove(next);
                    answered.push((batch, call.await));
                }
                answered
            }
        }
    }

    /// Waits for the next answer of a spawned push (never, when none is in flight and for
    /// held pushes: the step runs those).
    #[cfg(feature = "tokio")]
    pub async fn next(&mut self) -> Answer {
        match self {
            InFlight::Spawned { answers, .. } => match answers.recv().await {
                Some(answer) => answer,
                // The driver holds a sender: the channel never closes.
                None => std::future::pending().await,
            },
            InFlight::Held { .. } => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sync::{PullFrom, PullPage, Session, Transport};

    /// Answers every push at once, with no outcomes.
    struct Answers;

    impl Transport for Answers {
        async fn connect(&self) -> Result<Session, TransportError> {
            Err(TransportError::Unavailable("not in this test".into()))
        }

        async fn push(&self, _: Vec<Change>) -> Result<PushResults, TransportError> {
            Ok(Vec::new())
        }

        async fn pull(&self, _: &str, _: PullFrom, _: usize) -> Result<PullPage, TransportError> {
            Err(TransportError::Unavailable("not in this test".into()))
        }
    }

    #[test]
    fn held_pushes_are_all_answered_in_an_order_the_seed_draws() {
        let link: Arc<dyn Link> = Arc::new(Answers);
        let orders: Vec<Vec<BatchId>> = (0..8)
            .map(|seed| {
                let mut in_flight = InFlight::held(seed);
                for batch in 1..=4 {
                    in_flight.send(&link, batch, Vec::new());
                }
                let answered = crate::link::block_on(in_flight.answered());
                assert!(crate::link::block_on(in_flight.answered()).is_empty());
                answered.into_iter().map(|(batch, _)| batch).collect()
            })
            .collect();
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2, 3, 4], "each batch answered once: {order:?}");
        }
        assert!(
            orders.iter().any(|order| order != &[1, 2, 3, 4]),
            "some seed answers out of order: {orders:?}"
        );
    }
}
