//! Running a request on its connection's task, and finishing it on a task
//! of its own only if the client goes away first.
//!
//! hyper drops a service future when its client hangs up, but a call that was
//! already forwarded must still be metered, settled and recorded: the
//! provider bills it anyway. Spawning every request onto its own task would
//! ensure that, at the price of a task hand-off (and often a wake-up of
//! another worker thread) on the way in and again on the way out of every
//! request. [`Detachable`] instead polls the request inline and, when it is
//! dropped unfinished, moves the (boxed, so already pinned) future onto a
//! new task that runs it to the end and discards its response.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A future that finishes on a task of its own if dropped before it is done.
pub(super) struct Detachable<T: Send + 'static> {
    inner: Option<Boxed<T>>,
}

impl<T: Send + 'static> Detachable<T> {
    pub(super) fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        Detachable {
            inner: Some(Box::pin(future)),
        }
    }
}

impl<T: Send + 'static> Future for Detachable<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(inner) = self.inner.as_mut() else {
            panic!("Detachable polled after it finished");
        };
        let ready = inner.as_mut().poll(cx);
        if ready.is_ready() {
            self.inner = None;
        }
        ready
    }
}

impl<T: Send + 'static> Drop for Detachable<T> {
    fn drop(&mut self) {
        let Some(unfinished) = self.inner.take() else {
            return;
        };
        spawn_outside_async(
            async move {
                let _ = unfinished.await;
            },
            "an unfinished request was dropped outside the runtime",
        );
    }
}

/// Spawn `task` from code that is not async (a `Drop`, a body's poll) on
/// the runtime it runs on. Outside one, which happens only while the runtime
/// itself is torn down (ending every task anyway), `lost` is logged instead.
pub(super) fn spawn_outside_async(
    task: impl Future<Output = ()> + Send + 'static,
    lost: &'static str,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => tracing::warn!("{lost}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use super::*;

    /// A future that sets `done` after a short sleep.
    async fn slow(done: Arc<AtomicBool>) -> u32 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        done.store(true, Ordering::SeqCst);
        7
    }

    #[tokio::test]
    async fn runs_inline_to_its_output() {
        let done = Arc::new(AtomicBool::new(false));
        assert_eq!(Detachable::new(slow(done.clone())).await, 7);
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn dropped_after_starting_it_still_finishes() {
        let done = Arc::new(AtomicBool::new(false));
        let mut request = Detachable::new(slow(done.clone()));
        // Start it, then give up on it as hyper does when a client hangs up.
        let waited = tokio::time::timeout(Duration::from_millis(1), &mut request).await;
        assert!(waited.is_err(), "the future needs 20 ms");
        drop(request);
        assert!(!done.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.load(Ordering::SeqCst), "the detached future ran on");
    }

    #[tokio::test]
    async fn dropped_before_its_first_poll_still_runs() {
        let done = Arc::new(AtomicBool::new(false));
        drop(Detachable::new(slow(done.clone())));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.load(Ordering::SeqCst));
    }
}
