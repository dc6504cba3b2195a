//! Serving a web role over hyper: HTTP/1.1 with keep-alive, a bound on how
//! long a client may take to send its request head, and graceful shutdown
//! that lets in-flight requests finish. Request bodies left unread are
//! drained after the answer ([`crate::lingering`]). Each request goes to
//! the version of the role its share is routed to ([`WebFront`]); the
//! listener stays open across upgrades.

use crate::controller::web::{WebFront, not_ready};
use crate::lingering::LingeringBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client may take to send a request head: slow-loris clients
/// must not hold connections forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the role behind `front` on `listener` until `shutdown` completes,
/// then waits up to `grace` for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    front: Arc<WebFront>,
    role_name: String,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // briefly instead of spinning.
                        tracing::warn!(role = %role_name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Responses are written as the guest produces them, often a
                // head and then a body: without this, Nagle's algorithm holds
                // the second write until the client acknowledges the first.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(role = %role_name, %peer, error = %e, "cannot set TCP_NODELAY");
                }
                let front = front.clone();
                let service = service_fn(move |request| {
                    let request = LingeringBody::wrap(request);
                    let version = front.pick();
                    async move {
                        Ok::<_, Infallible>(match version {
                            Some(version) => version.serve(request).await,
                            None => not_ready(),
                        })
                    }
                });
                let connection = http1::Builder::new()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                let role_name = role_name.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(role = %role_name, %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(role = %role_name, "all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(role = %role_name, "grace period over; dropping open connections"),
    }
}
