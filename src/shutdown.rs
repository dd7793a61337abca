//! The cancellation tree and grace period shared by every long-running task.
//!
//! Shutdown order (see `ARCHITECTURE.md`): stop receiving, flush in-flight batches, settle their messages,
//! flush the audit log, stop the servers. Each subsystem gets a child token of the root so it can be stopped on
//! its own; [`Shutdown::wait`] gives the tracked tasks a grace period and names the ones still running.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The root of the cancellation tree plus the tracker of every task spawned under it.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root token: cancelled when shutdown starts.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A child token for one subsystem: cancelled with the root, or on its own.
    pub fn child(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Spawns a named task that shutdown waits for.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            task.await;
            tracing::debug!(task = name, "task finished");
        })
    }

    /// Starts shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Starts shutdown and waits up to `grace` for every tracked task; returns whether all finished in time.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.trigger();
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    still_running = self.tracker.len(),
                    grace_ms = grace.as_millis() as u64,
                    "grace period over with tasks still running"
                );
                false
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tasks_that_honour_the_token_and_reports_stragglers() {
        let shutdown = Shutdown::new();
        let token = shutdown.child();
        shutdown.spawn("polite", async move { token.cancelled().await });
        assert!(
            shutdown.wait(Duration::from_secs(1)).await,
            "a task that honours its token finishes"
        );

        let stubborn = Shutdown::new();
        stubborn.spawn("stubborn", tokio::time::sleep(Duration::from_secs(30)));
        assert!(
            !stubborn.wait(Duration::from_millis(50)).await,
            "a task that ignores the token is reported"
        );
    }
}
