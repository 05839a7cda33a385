//! When a session was last heard from: any byte the device sent (a large upload on a slow
//! link is alive while its bytes arrive), or the end of an answer it waited for (the
//! relay's own time serving is not the device's silence).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::Socket;

/// The last sign of life, in ms since the session began.
pub struct Liveness {
    began: Instant,
    heard_ms: AtomicU64,
}

impl Liveness {
    pub fn new() -> Arc<Liveness> {
        Arc::new(Liveness {
            began: Instant::now(),
            heard_ms: AtomicU64::new(0),
        })
    }

    /// A sign of life now.
    pub fn note(&self) {
        let now_ms = self.began.elapsed().as_millis() as u64;
        self.heard_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// How long nothing was heard.
    pub fn quiet(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        self.began.elapsed().saturating_sub(heard)
    }

    /// `socket`, noting every byte it reads.
    pub fn watch(self: &Arc<Self>, socket: Box<dyn Socket>) -> Box<dyn Socket> {
        Box::new(Watched {
            inner: socket,
            liveness: self.clone(),
        })
    }
}

struct Watched {
    inner: Box<dyn Socket>,
    liveness: Arc<Liveness>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.liveness.note();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Every byte read is a sign of life, so a device uploading a large frame slowly is
    /// alive while the frame is still incomplete.
    #[tokio::test]
    async fn each_byte_read_is_a_sign_of_life() {
        let liveness = Liveness::new();
        let (mut device, relay) = tokio::io::duplex(64);
        let mut relay = liveness.watch(Box::new(relay));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(liveness.quiet() >= Duration::from_millis(50));
        device.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        relay.read_exact(&mut byte).await.unwrap();
        assert!(
            liveness.quiet() < Duration::from_millis(50),
            "heard just now"
        );
    }
}
