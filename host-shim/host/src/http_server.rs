//! Serving a web role over hyper: HTTP/1.1 with keep-alive, a cap on the
//! connections held, bounds on how long a client may sit idle or take to
//! send its request head and how slowly its body may come
//! ([`crate::connections`]), and graceful shutdown that lets in-flight
//! requests finish. Request bodies left unread are drained after the answer
//! ([`crate::lingering`]). Each request goes to the version of the role its
//! share is routed to ([`WebFront`]); the listener stays open across upgrades.
//!
//! [`WebServer::start`] is the one wiring of a started web version to its
//! listener, used by the controller for every web role it deploys and by
//! `weft serve` for its one component.

use crate::connections::{Accepted, Listening};
use crate::controller::web::{WebFront, WebVersion, not_ready};
use crate::lingering::LingeringBody;
use crate::session_cookie;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_sandbox::WebResponse;

/// A web role behind its listener: the front that shares its requests out
/// among its versions, and the task serving the listener.
pub struct WebServer {
    /// Where its requests go.
    pub front: Arc<WebFront>,
    /// Where it listens, as `http://ADDR`.
    pub url: String,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl WebServer {
    /// Serves `version` (started: its start hook returned and its health
    /// path answered) on `listener`, all `domains` shares of the role
    /// `role_name` going to it, holding connections in the web pool `pool`.
    /// Once stopped, in-flight requests get up to `grace` to finish.
    pub fn start(
        listener: TcpListener,
        version: &Arc<WebVersion>,
        domains: u32,
        pool: Arc<Listening>,
        role_name: &str,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let local: SocketAddr = listener.local_addr()?;
        let front = Arc::new(WebFront::default());
        front.route_all(version, domains);
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let server = tokio::spawn(serve(
            listener,
            pool,
            front.clone(),
            role_name.to_owned(),
            shutdown,
            grace,
        ));
        Ok(Self {
            front,
            url: format!("http://{local}"),
            stop,
            server: Mutex::new(Some(server)),
        })
    }

    /// Closes the listener and asks open connections to finish; the task
    /// returned ends once they have (bounded by the grace period). `None`
    /// if it was asked before.
    pub fn stop_accepting(&self) -> Option<JoinHandle<()>> {
        let _ = self.stop.send(true);
        self.server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Once requests are answered: drains every version the front had
    /// (their stop hooks run), and waits for the drains of versions an
    /// upgrade retired, each bounded by `grace`.
    pub async fn drain(&self, grace: Duration) {
        for version in self.front.close() {
            version.drain_and_stop(grace).await;
        }
        for retiring in self.front.retiring() {
            let _ = retiring.await;
        }
    }

    /// Stops it: no new connections, in-flight requests finish, then every
    /// version drains and stops.
    pub async fn stop(&self, grace: Duration) {
        if let Some(server) = self.stop_accepting() {
            let _ = server.await;
        }
        self.drain(grace).await;
    }
}

/// Serves the role behind `front` on `listener`, holding its connections in
/// the web pool `pool`, until `shutdown` completes, then waits up to `grace`
/// for in-flight requests to finish.
async fn serve(
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
                    let mut request = LingeringBody::wrap(request, min_rate);
                    session_cookie::strip_cookie(request.headers_mut());
                    let version = front.pick();
                    async move {
                        let response = match version {
                            Some(version) => version.serve(request).await,
                            None => not_ready(),
                        };
                        Ok::<_, Infallible>(from_guest(response))
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

/// A guest's answer as it may leave: without a `Set-Cookie` for the
/// dashboard's session, which a browser would file under the admin
/// address's host name too (cookies ignore ports), overwriting or planting
/// the operator's session. The request's session cookie was taken out
/// before the guest saw it, so an operator's session is never a guest's in
/// either direction.
fn from_guest(mut response: WebResponse) -> WebResponse {
    session_cookie::strip_set_cookie(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode, header};

    #[test]
    fn a_guest_answer_loses_only_the_session_s_set_cookie() {
        let mut response = weft_sandbox::busy_response(StatusCode::OK, "ok", "a guest answer");
        for value in [
            "weft_session=planted; HttpOnly; Path=/",
            "cart=3; Path=/",
            "=weft_session=nameless",
        ] {
            response
                .headers_mut()
                .append(header::SET_COOKIE, HeaderValue::from_static(value));
        }
        let response = from_guest(response);
        let left: Vec<_> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .collect();
        assert_eq!(left, vec!["cart=3; Path=/"]);
        assert_eq!(response.status(), StatusCode::OK);
    }
}
