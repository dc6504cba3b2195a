//! Watching a member's tasks: each of them (the elector, the leader, the
//! beat and apply loops, the logs responder) runs until the member leaves.
//! One that ends before that, or panics, would leave the others running
//! half a member: an elector renewing the lease of a leader that no longer
//! places anything, or beats keeping alive a host that no longer applies
//! what it is assigned. So the first task to end unexpectedly makes the
//! whole member leave: it is logged, shutdown is signalled to every task
//! (the elector steps down, the beats stop, so the fabric heals around this
//! host), and the reason is published for the process to act on.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

/// Watches `tasks` until they have all ended: the first to end while
/// `shutdown` is false publishes why on `failure` and turns `shutdown`
/// true. Once shutdown, each task gets `stop_within` to end, then the rest
/// are aborted.
pub(super) async fn supervise(
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    shutdown: Arc<watch::Sender<bool>>,
    failure: watch::Sender<Option<String>>,
    stop_within: Duration,
) {
    let aborts: Vec<_> = tasks
        .iter()
        .map(|(name, task)| (*name, task.abort_handle()))
        .collect();
    let mut running: FuturesUnordered<_> = tasks
        .into_iter()
        .map(|(name, task)| async move { (name, task.await) })
        .collect();
    let mut ended = BTreeSet::new();
    let mut stop = shutdown.subscribe();
    tokio::select! {
        Some((name, outcome)) = running.next() => {
            ended.insert(name);
            // Shutdown may have come just as it ended: that is leaving.
            if !*shutdown.borrow() {
                let why = why_it_ended(name, &outcome);
                tracing::error!(task = name, reason = %why, "a fabric task ended unexpectedly: this host leaves the fabric (it steps down and stops beating)");
                failure.send_replace(Some(why));
                shutdown.send_replace(true);
            }
        }
        _ = stop.wait_for(|stop| *stop) => {}
    }
    let deadline = Instant::now() + stop_within;
    loop {
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some((name, _))) => {
                ended.insert(name);
            }
            Ok(None) => return,
            Err(_) => break,
        }
    }
    for (name, abort) in aborts {
        if !ended.contains(name) {
            tracing::warn!(task = name, "the fabric task did not stop in time; aborted");
            abort.abort();
        }
    }
}

/// Why task `name` ended, on one line.
fn why_it_ended(name: &str, outcome: &Result<(), JoinError>) -> String {
    match outcome {
        Ok(()) => format!("the fabric's {name} task stopped"),
        Err(e) if e.is_panic() => format!("the fabric's {name} task panicked"),
        Err(_) => format!("the fabric's {name} task was cancelled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that runs until shutdown.
    fn until_shutdown(shutdown: &watch::Sender<bool>) -> JoinHandle<()> {
        let mut stop = shutdown.subscribe();
        tokio::spawn(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
    }

    async fn outcome_of(
        odd_one: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (Option<String>, bool) {
        let shutdown = Arc::new(watch::channel(false).0);
        let (failure, failed) = watch::channel(None);
        let tasks = vec![
            ("elector", until_shutdown(&shutdown)),
            ("apply", tokio::spawn(odd_one)),
            ("beat", until_shutdown(&shutdown)),
        ];
        tokio::time::timeout(
            Duration::from_secs(5),
            supervise(tasks, shutdown.clone(), failure, Duration::from_secs(1)),
        )
        .await
        .expect("every task stops once one ended");
        let reason = failed.borrow().clone();
        (reason, *shutdown.borrow())
    }

    #[tokio::test]
    async fn a_task_that_ends_makes_every_task_stop() {
        let (reason, shut) = outcome_of(async {}).await;
        assert_eq!(reason.as_deref(), Some("the fabric's apply task stopped"));
        assert!(
            shut,
            "shutdown signalled: the elector steps down, the beats stop"
        );
    }

    #[tokio::test]
    async fn a_task_that_panics_makes_every_task_stop() {
        let (reason, shut) = outcome_of(async { panic!("boom") }).await;
        assert_eq!(reason.as_deref(), Some("the fabric's apply task panicked"));
        assert!(shut);
    }

    #[tokio::test]
    async fn leaving_is_no_failure_and_a_task_that_hangs_is_aborted() {
        let shutdown = Arc::new(watch::channel(false).0);
        let (failure, failed) = watch::channel(None);
        let hangs = tokio::spawn(std::future::pending::<()>());
        let tasks = vec![("leader", until_shutdown(&shutdown)), ("logs", hangs)];
        let supervisor = tokio::spawn(supervise(
            tasks,
            shutdown.clone(),
            failure,
            Duration::from_millis(200),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!supervisor.is_finished(), "it watches while all run");
        shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*failed.borrow(), None);
    }
}
