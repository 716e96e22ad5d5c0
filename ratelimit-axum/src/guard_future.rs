//! The future the guard extractor returns: usually already decided, so it holds the result
//! (a few words) instead of a state machine over every store's future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Either the guard's answer, or the rest of its work when a store must be awaited.
pub(crate) enum GuardFuture<'a, T> {
    /// Decided synchronously; `None` once taken.
    Ready(Option<T>),
    /// A store (Redis, SQL, failover) is being awaited.
    Waiting(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<T: Unpin> Future for GuardFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Self::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                // Polled again after it finished: like any spent future, it never finishes again.
                None => Poll::Pending,
            },
            Self::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}
