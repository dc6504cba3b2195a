//! The admin address's server, running in the background until stopped,
//! with the task sampling the services' queue lengths for its history
//! ([`crate::queue_history`]) when it has a controller. Both tasks wait on
//! one stop watch: [`AdminServer::stop`] sends on it, and a dropped
//! [`AdminServer`] drops its sender, which ends them too, so no task is
//! left holding the controller.

use super::error::LaunchError;
use crate::admin::{self, Admin};
use crate::connections::Listening;
use crate::queue_history;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest component the admin API accepts unless told otherwise, in MiB.
pub const DEFAULT_MAX_COMPONENT_MIB: u64 = 64;

/// The admin server running in the background.
pub struct AdminServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Samples queue lengths until the stop watch says stop (or its sender
    /// goes); `None` without a controller (`weft serve`).
    sampler: Option<tokio::task::JoinHandle<()>>,
    /// The address it listens on (the port the OS picked, for port 0).
    pub addr: SocketAddr,
}

impl AdminServer {
    /// Listens on `addr`, holding its connections in `pool`, and serves
    /// `admin` there in a task of its own.
    pub async fn start(
        addr: SocketAddr,
        pool: Arc<Listening>,
        admin: Admin,
    ) -> Result<Self, LaunchError> {
        let listen = |reason| LaunchError::Listen {
            what: "admin".into(),
            addr,
            reason,
        };
        let listener = TcpListener::bind(addr).await.map_err(listen)?;
        let local = listener.local_addr().map_err(listen)?;
        let (stop, stopped) = watch::channel(false);
        // Stops when told, or when the sender is dropped with the server.
        let stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let sampler = admin.controller.clone().map(|controller| {
            let running = move || controller.all_service_data();
            queue_history::spawn_sampler(admin.queue_history.clone(), running, stopped())
        });
        let task = tokio::spawn(admin::serve(listener, pool, Arc::new(admin), stopped()));
        Ok(Self {
            stop,
            task,
            sampler,
            addr: local,
        })
    }

    /// Stops taking connections, lets those open finish, and waits for it
    /// and for the sampler (which stops as soon as it is told).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(sampler) = self.sampler {
            let _ = sampler.await;
        }
    }
}
