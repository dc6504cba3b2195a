//! The admin address's server, running in the background until stopped.

use super::error::LaunchError;
use crate::admin::{self, Admin};
use crate::connections::Listening;
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
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(admin::serve(listener, pool, Arc::new(admin), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        Ok(Self {
            stop,
            task,
            addr: local,
        })
    }

    /// Stops taking connections, lets those open finish, and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
