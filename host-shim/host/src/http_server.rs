//! Serving a web role over hyper: HTTP/1.1 with keep-alive, a cap on the
//! connections held, bounds on how long a client may sit idle or take to
//! send its request head and how slowly its body may come
//! ([`crate::connections`]), and graceful shutdown that lets in-flight
//! requests finish. Request bodies left unread are drained after the answer
//! ([`crate::lingering`]). Each request goes to the version of the role its
//! share is routed to ([`WebFront`]); the listener stays open across upgrades.

use crate::connections::{Accepted, Listening};
use crate::controller::web::{WebFront, not_ready};
use crate::lingering::LingeringBody;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves the role behind `front` on `listener`, holding its connections in
/// the web pool `pool`, until `shutdown` completes, then waits up to `grace`
/// for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Listening>,
    front: Arc<WebFront>,
    role_name: String,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let min_rate = pool.limits().min_body_rate;
    loop {
        tokio::select! {
            Accepted { stream, peer, place } = pool.accept(&listener, &role_name) => {
                // Responses are written as the guest produces them, often a
                // head and then a body: without this, Nagle's algorithm holds
                // the second write until the client acknowledges the first.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(role = %role_name, %peer, error = %e, "cannot set TCP_NODELAY");
                }
                let front = front.clone();
                let service = service_fn(move |request| {
                    let request = LingeringBody::wrap(request, min_rate);
                    let version = front.pick();
                    async move {
                        Ok::<_, Infallible>(match version {
                            Some(version) => version.serve(request).await,
                            None => not_ready(),
                        })
                    }
                });
                let connection = pool.http1().serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                let role_name = role_name.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(role = %role_name, %peer, error = %e, "connection ended with an error");
                    }
                    drop(place);
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
