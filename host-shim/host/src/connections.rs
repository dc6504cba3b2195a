//! What clients may hold of the host: descriptors, connections and time.
//!
//! A host out of file descriptors answers nobody, its admin API included.
//! So, at start, the soft `RLIMIT_NOFILE` is raised to the hard limit
//! ([`raise_descriptor_limit`]), and from what that leaves each kind of
//! listener gets a cap on the connections it holds open ([`Listening`]):
//! the web roles' listeners share one pool, the admin address has a pool of
//! its own, and a part is kept back for everything else the host opens
//! (the queue store, the component cache, egress sockets). A flood on a web
//! port therefore takes at most the web pool: the admin API stays reachable.
//!
//! A listener at its cap stops accepting: new connections wait in the
//! kernel's backlog (and past it, the kernel drops their SYNs, so clients
//! retry) until a held connection closes. Accepting and closing at once
//! would spend a descriptor and a wake-up per attempt, at the moment the
//! host has neither to spare, and would turn clients that can wait a moment
//! into errors.
//!
//! Held connections cannot be held forever: a connection that sends no
//! complete request head within the idle timeout is closed (hyper's header
//! timer runs from the moment a connection waits for a head, so it bounds a
//! keep-alive connection's idle gap and a slow head alike), and a request
//! body that arrives slower than the minimum rate is cut
//! ([`crate::lingering::MinRate`]).

use crate::lingering::MinRate;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept back from the listeners for everything else the host
/// opens, as a fraction of the limit (and at least [`MIN_RESERVE`]).
const RESERVE_DIVISOR: u64 = 4;
/// The fewest descriptors kept back for the host's own files and sockets.
const MIN_RESERVE: u64 = 64;
/// The admin pool by default: a sixteenth of the limit, between 8 and 64
/// connections (an operator's tools, a scraper, a few followers of logs).
const ADMIN_DIVISOR: u64 = 16;
const ADMIN_DEFAULT_RANGE: (u64, u64) = (8, 64);
/// The web pool never defaults above this many connections: past it, idle
/// connections cost more memory than a host should give away unasked.
const WEB_DEFAULT_MAX: u64 = 16 * 1024;
/// The fewest connections a default pool gets, however low the limit.
const MIN_POOL: u64 = 8;

/// How long the admin address waits for a request head, at most.
const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit now in force (the old one if it cannot be raised).
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` through a pointer to a live,
    // properly aligned local; it has no other preconditions.
    #[allow(unsafe_code)]
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
    if got != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit(2) reads one `rlimit` through a pointer to a
        // live local; raising the soft limit up to the hard one needs no
        // privilege and touches no memory of ours.
        #[allow(unsafe_code)]
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) };
        if set != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// The default connection caps `(web, admin)` for a soft descriptor limit
/// of `descriptors` (see the module docs).
pub fn default_caps(descriptors: u64) -> (usize, usize) {
    let admin = (descriptors / ADMIN_DIVISOR).clamp(ADMIN_DEFAULT_RANGE.0, ADMIN_DEFAULT_RANGE.1);
    let reserve = (descriptors / RESERVE_DIVISOR).max(MIN_RESERVE);
    let web = descriptors
        .saturating_sub(admin)
        .saturating_sub(reserve)
        .clamp(MIN_POOL, WEB_DEFAULT_MAX);
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    (size(web), size(admin))
}

/// What one kind of listener allows its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections held open at once, across every listener of the kind.
    pub max_connections: usize,
    /// How long a connection may go without a complete request head.
    pub idle_timeout: Duration,
    /// The slowest a request body may arrive; `None`: no bound.
    pub min_body_rate: Option<MinRate>,
}

impl ConnectionLimits {
    /// The admin address's limits beside the web roles' `web`: the same
    /// body rate, an idle timeout no longer than `ADMIN_IDLE_TIMEOUT` (10 s), and
    /// a pool of `max_connections` of its own.
    pub fn admin(web: &Self, max_connections: usize) -> Self {
        Self {
            max_connections,
            idle_timeout: web.idle_timeout.min(ADMIN_IDLE_TIMEOUT),
            min_body_rate: web.min_body_rate,
        }
    }
}

/// One pool of connections, shared by the listeners of one kind.
#[derive(Debug)]
pub struct Listening {
    limits: ConnectionLimits,
    room: Arc<Semaphore>,
    /// Whether the pool was full at the last accept: the warning is logged
    /// once when it fills, not once per connection of a flood.
    full: AtomicBool,
}

/// A connection accepted from a [`Listening`] pool; its place in the pool
/// is given back when this (moved into the connection's task) is dropped.
pub struct Accepted {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's place in the pool.
    pub place: OwnedSemaphorePermit,
}

impl Listening {
    /// A pool with these limits (a cap of 0 is taken as 1).
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        let room = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Arc::new(Self {
            limits,
            room,
            full: AtomicBool::new(false),
        })
    }

    /// The pool's limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Waits for room in the pool, then for a connection on `listener`.
    /// While the pool is full nothing is accepted: clients wait in the
    /// kernel's backlog (see the module docs). `what` names the listener in
    /// the log.
    pub async fn accept(&self, listener: &TcpListener, what: &str) -> Accepted {
        let place = match self.room.clone().try_acquire_owned() {
            Ok(place) => {
                self.full.store(false, Ordering::Relaxed);
                place
            }
            Err(_) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        listener = what,
                        max = self.limits.max_connections,
                        "connection cap reached; new connections wait in the backlog"
                    );
                }
                match self.room.clone().acquire_owned().await {
                    Ok(place) => place,
                    // The semaphore is never closed; should it be, there is
                    // nothing to accept for.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    return Accepted {
                        stream,
                        peer,
                        place,
                    };
                }
                Err(e) => {
                    // Out of descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// An HTTP/1.1 connection builder with this pool's idle timeout.
    pub fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.idle_timeout);
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_leave_room_for_the_admin_and_the_host() {
        for descriptors in [0, 64, 256, 512, 1024, 20_000, 1 << 20, u64::MAX] {
            let (web, admin) = default_caps(descriptors);
            let (web, admin) = (web as u64, admin as u64);
            assert!(web >= MIN_POOL && admin >= ADMIN_DEFAULT_RANGE.0);
            assert!(web <= WEB_DEFAULT_MAX && admin <= ADMIN_DEFAULT_RANGE.1);
            if descriptors >= 256 {
                assert!(
                    web + admin + MIN_RESERVE.max(descriptors / RESERVE_DIVISOR) <= descriptors,
                    "{descriptors}: web {web} + admin {admin} leave the host too little"
                );
            }
        }
        assert_eq!(default_caps(512), (352, 32));
        assert_eq!(default_caps(1 << 20), (16 * 1024, 64));
    }

    fn descriptor_limit() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_descriptor_limit`.
        #[allow(unsafe_code)]
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
        assert_eq!(got, 0);
        limit
    }

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let hard = descriptor_limit().rlim_max;
        // Lowered first (to half, so the other tests of this process keep
        // plenty), so that the raise is seen.
        let lowered = libc::rlimit {
            rlim_cur: hard / 2,
            rlim_max: hard,
        };
        // SAFETY: as in `raise_descriptor_limit`.
        #[allow(unsafe_code)]
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lowered) };
        assert_eq!(set, 0);
        assert_eq!(descriptor_limit().rlim_cur, hard / 2);
        assert_eq!(raise_descriptor_limit().unwrap(), hard);
        assert_eq!(descriptor_limit().rlim_cur, hard);
    }

    #[tokio::test]
    async fn a_full_pool_accepts_nothing_until_a_place_is_given_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let pool = Listening::new(ConnectionLimits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(30),
            min_body_rate: None,
        });
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(address).await.unwrap());
        }
        let first = pool.accept(&listener, "test").await;
        let _second = pool.accept(&listener, "test").await;
        let third =
            tokio::time::timeout(Duration::from_millis(200), pool.accept(&listener, "test"));
        assert!(third.await.is_err(), "a third connection was accepted");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(10), pool.accept(&listener, "test"));
        assert!(third.await.is_ok(), "the freed place was not taken");
    }
}
