//! Work that must finish once it has started, whether or not anyone still waits for it.
//!
//! hyper drops a handler's future when its client closes the connection (or a layer gives
//! up on it). Dropped between the enclave's signature and the durable audit row, a mint
//! would leave a `seq` the enclave counted and the log never recorded, and a later
//! `audit verify` against a checkpoint would report rows missing. [`RunToCompletion`]
//! hands such an unfinished future to the runtime instead of dropping it, so the row is
//! written; only the answer, which nobody can receive any more, is discarded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::TaskTracker;

/// Wraps a future that is run to its end: if the wrapper is dropped before the future has
/// finished, the future is spawned on `abandoned` (a tracker the shutdown waits for) and
/// finishes there, its output discarded.
///
/// Costs one allocation (the boxed future) and, only when abandoned, one task.
pub struct RunToCompletion<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// `None` once the future has returned its output.
    future: Option<Pin<Box<F>>>,
    /// Where an unfinished future is spawned when the wrapper is dropped.
    abandoned: TaskTracker,
}

impl<F> RunToCompletion<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Wraps `future`; if it is abandoned, it finishes as a task of `abandoned`.
    pub fn new(future: F, abandoned: TaskTracker) -> Self {
        RunToCompletion {
            future: Some(Box::pin(future)),
            abandoned,
        }
    }
}

impl<F> Future for RunToCompletion<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `RunToCompletion` is `Unpin` (the future is boxed), so `self` can be used mutably.
        let Some(future) = self.future.as_mut() else {
            // Polled again after its output was returned: a caller bug, and the contract of
            // `Future` leaves the answer open; never finishing is the harmless choice.
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F> Drop for RunToCompletion<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.abandoned.spawn_on(
                    async move {
                        let _abandoned_output = future.await;
                    },
                    &runtime,
                );
            }
            // Dropped outside any runtime (the runtime itself is being torn down): nothing
            // can run the future any more; it ends the way a killed process would.
            Err(_) => tracing::warn!("unfinished work dropped outside a tokio runtime"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn returns_the_output_of_the_wrapped_future() {
        let out = RunToCompletion::new(async { 7 }, TaskTracker::new()).await;
        assert_eq!(out, 7);
    }

    #[tokio::test]
    async fn a_future_dropped_after_its_first_poll_still_finishes() {
        let finished = Arc::new(AtomicU32::new(0));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let counter = finished.clone();
        let abandoned = TaskTracker::new();
        let waiter = tokio::spawn(RunToCompletion::new(
            async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = done_tx.send(());
            },
            abandoned.clone(),
        ));
        started_rx.await.unwrap();
        // The waiter goes away the way hyper drops a handler whose client left.
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        assert_eq!(
            abandoned.len(),
            1,
            "the unfinished future became a tracked task"
        );
        release_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("the abandoned future was not finished")
            .unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        abandoned.close();
        tokio::time::timeout(Duration::from_secs(5), abandoned.wait())
            .await
            .expect("the tracker drains once the task has finished");
    }

    #[tokio::test]
    async fn a_finished_future_is_not_run_again_on_drop() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let abandoned = TaskTracker::new();
        let work = RunToCompletion::new(
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            abandoned.clone(),
        );
        work.await;
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(abandoned.is_empty(), "nothing was spawned");
    }

    #[test]
    fn a_future_dropped_outside_a_runtime_is_dropped_quietly() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        drop(RunToCompletion::new(
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            TaskTracker::new(),
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
