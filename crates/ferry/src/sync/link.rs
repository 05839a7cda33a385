//! The transport as the driver uses it: object-safe and blocking.
//!
//! `Transport` is async and runtime-agnostic; the driver runs one call at a time, so it
//! waits on each future with a minimal executor that parks the thread until woken.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use ferry_journal::Change;
use ferry_sync::{PullPage, PushOutcome, Transport, TransportError};
use ferry_types::{Hlc, Key, Version};

/// Per-change results of a push.
pub(crate) type Outcomes = Vec<(Key, Version, PushOutcome)>;

/// A transport behind a trait object.
pub(crate) trait Link: Send + Sync {
    fn push(&self, changes: Vec<Change>) -> Result<Outcomes, TransportError>;
    fn pull(&self, scope: &str, since: Hlc, limit: usize) -> Result<PullPage, TransportError>;
}

impl<T: Transport + Send + Sync> Link for T {
    fn push(&self, changes: Vec<Change>) -> Result<Outcomes, TransportError> {
        block_on(Transport::push(self, changes))
    }

    fn pull(&self, scope: &str, since: Hlc, limit: usize) -> Result<PullPage, TransportError> {
        block_on(Transport::pull(self, scope, since, limit))
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
