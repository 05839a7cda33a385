//! The transport as the driver holds it: behind a trait object, every call bounded by a
//! timeout when a tokio runtime runs it.
//!
//! `Transport` is generic (its futures are `impl Future`); the driver stores one of any
//! type, so calls go through boxed futures here. The background driver runs them on its
//! own tokio runtime, under `tokio::time::timeout`; [`Db::drive`](crate::Db::drive) (a
//! simulation's step) runs them to completion on the caller's thread with a minimal
//! executor, where the transports answer at once.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use ferry_journal::Change;
use ferry_sync::{PullFrom, PullPage, PushResults, Session, Transport, TransportError};
use ferry_types::Key;

pub(crate) type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, TransportError>> + Send + 'a>>;

/// A transport behind a trait object.
pub(crate) trait Link: Send + Sync {
    fn connect(&self) -> Call<'_, Session>;
    fn push(&self, changes: Vec<Change>) -> Call<'_, PushResults>;
    fn pull<'a>(&'a self, scope: &'a str, from: PullFrom, limit: usize) -> Call<'a, PullPage>;
    fn get<'a>(&'a self, key: &'a Key) -> Call<'a, Option<Change>>;
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn live(&self) -> Call<'_, Vec<Change>>;
}

impl<T: Transport> Link for T {
    fn connect(&self) -> Call<'_, Session> {
        Box::pin(Transport::connect(self))
    }

    fn push(&self, changes: Vec<Change>) -> Call<'_, PushResults> {
        Box::pin(Transport::push(self, changes))
    }

    fn pull<'a>(&'a self, scope: &'a str, from: PullFrom, limit: usize) -> Call<'a, PullPage> {
        Box::pin(Transport::pull(self, scope, from, limit))
    }

    fn get<'a>(&'a self, key: &'a Key) -> Call<'a, Option<Change>> {
        Box::pin(Transport::get(self, key))
    }

    fn live(&self) -> Call<'_, Vec<Change>> {
        Box::pin(Transport::live(self))
    }
}

/// Awaits a transport call, failing it with `Timeout` after `timeout` when a tokio runtime
/// is running it (the background driver's); elsewhere it runs to completion.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    #[cfg(feature = "tokio")]
    if tokio::runtime::Handle::try_current().is_ok() {
        let ms = timeout.as_millis().min(u128::from(u64::MAX)) as u64;
        return tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(TransportError::Timeout(ms)));
    }
    let _ = timeout;
    call.await
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
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
