//! Server streams that end as soon as holdless starts shutting down.
//!
//! A server stream never ends by itself, so without this every restart with a dialer
//! or a wallboard connected waited the whole shutdown grace period and then cancelled
//! the stream. Ending it at once, with UNAVAILABLE and a message saying to come back
//! after the restart, tells the client what happened.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_stream::Stream;
use tonic::Status;

/// `inner` until it ends, or until the server drains: then one UNAVAILABLE with
/// `message`, and the inner stream is dropped (a channel behind it closes, so nothing
/// more is sent to it).
pub(super) struct UntilDrained<S> {
    inner: Option<S>,
    drained: Pin<Box<dyn Future<Output = ()> + Send>>,
    message: &'static str,
}

impl<S> UntilDrained<S> {
    pub(super) fn new(
        inner: S,
        mut draining: tokio::sync::watch::Receiver<bool>,
        message: &'static str,
    ) -> Self {
        Self {
            inner: Some(inner),
            drained: Box::pin(async move {
                // A dropped sender means the server is gone: drain as well.
                let _ = draining.wait_for(|d| *d).await;
            }),
            message,
        }
    }
}

impl<T, S> Stream for UntilDrained<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.drained.as_mut().poll(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(Status::unavailable(this.message))));
        }
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}
