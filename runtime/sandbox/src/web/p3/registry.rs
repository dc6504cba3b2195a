//! A WASIp3 role's open instances and what each carries: which may take
//! another request, handing a request to one, and closing one.
//!
//! Every count an instance's fate depends on (requests in flight, requests
//! started, whether it still accepts) changes under the registry's lock,
//! so an instance never closes while a request is on its way to it, and a
//! request is never handed to one that has closed.

use crate::error::GuestFailure;
use crate::trace::SpanContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use wasmtime_wasi_http::WasiBody;

/// How many requests one instance may take: the role's limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    /// Requests in flight at once (`concurrent-requests-per-instance`).
    pub(super) concurrent: u32,
    /// Requests in all (`requests-per-instance`).
    pub(super) total: u32,
    /// How long an instance with nothing in flight is kept.
    pub(super) idle: Duration,
}

impl Caps {
    /// Whether an instance may ever serve more than one request: only then
    /// is it registered for later requests to find.
    fn reusable(self) -> bool {
        self.concurrent > 1 || self.total > 1
    }
}

/// A request on its way to an instance, and where its answer goes.
pub(super) struct Job {
    pub(super) request: http::Request<WasiBody>,
    pub(super) deadline: Instant,
    /// The request's span, which its guest's VMBus calls hang under.
    pub(super) span: Option<SpanContext>,
    pub(super) reply: oneshot::Sender<Result<http::Response<WasiBody>, GuestFailure>>,
    /// Counts the request in flight on its instance until it is dropped: with
    /// the response's body when the guest answered, else at once.
    pub(super) active: Active,
}

/// One request in flight on an instance (and its slot among the role's
/// `max-in-flight`), until dropped.
pub(super) struct Active {
    instance: Arc<Instance>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Active {
    fn drop(&mut self) {
        {
            let mut load = self.instance.load();
            load.active = load.active.saturating_sub(1);
            if load.active == 0 {
                load.idle_since = Instant::now();
            }
        }
        // The instance checks whether it is done (`Registry::close_if_done`).
        self.instance.wake.notify_one();
    }
}

/// What the registry knows of one instance.
pub(super) struct Instance {
    jobs: mpsc::UnboundedSender<Job>,
    load: Mutex<Load>,
    /// Set while its event loop runs (guest code or the host's side of its
    /// calls): a request handed to it then would wait for the loop to come
    /// back, so it goes to another instance, or a new one.
    running: AtomicBool,
    /// Woken when a request of it ends or the role releases it.
    pub(super) wake: Notify,
}

/// An instance's counts.
#[derive(Debug)]
struct Load {
    /// Requests handed to it and not done (their bodies included).
    active: u32,
    /// Requests handed to it in all.
    started: u32,
    /// Cleared once one of its requests failed: it takes no more.
    accepting: bool,
    /// Set when it left the registry (or never joined it).
    closed: bool,
    /// The latest deadline of the requests handed to it.
    latest_deadline: Instant,
    /// When its last request in flight ended.
    idle_since: Instant,
}

impl Instance {
    fn load(&self) -> MutexGuard<'_, Load> {
        // Counters only: a panic cannot leave them half-changed.
        self.load.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says whether its event loop is running now (see [`Instance::running`]).
    pub(super) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// Stops handing it requests: one of its requests failed.
    pub(super) fn refuse_more(&self) {
        self.load().accepting = false;
    }

    /// Requests in flight on it now.
    pub(super) fn active(&self) -> u32 {
        self.load().active
    }

    /// When the instance must end if nothing changes, and why: past the
    /// latest deadline of the requests in flight, or idle for `idle`.
    pub(super) fn end_at(&self, idle: Duration) -> (Instant, Ending) {
        let load = self.load();
        if load.active > 0 {
            (load.latest_deadline, Ending::Deadline)
        } else {
            (load.idle_since + idle, Ending::Idle)
        }
    }

    /// Whether it may take another request now: it has room for one, and
    /// its loop is waiting (on the guest's awaits or for work), not running.
    /// Only a loop that waits interleaves a new request at once; one that
    /// runs would hold it until the running task's next await, so a busy
    /// instance's request goes to another one, as `wasmtime serve` sends
    /// requests only to an instance whose loop is ready for them.
    fn takes(&self, caps: Caps) -> bool {
        if self.running.load(Ordering::Relaxed) {
            return false;
        }
        let load = self.load();
        load.accepting && !load.closed && load.active < caps.concurrent && load.started < caps.total
    }
}

/// Why an instance's watch ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// A request in flight passed its deadline.
    Deadline,
    /// Nothing was in flight for the idle timeout.
    Idle,
}

/// Where a request went.
pub(super) enum Handed {
    /// To an open instance, which answers on the receiver.
    Existing(oneshot::Receiver<Result<http::Response<WasiBody>, GuestFailure>>),
    /// To a new instance, for the caller to start; it answers on the
    /// receiver.
    New(
        Box<NewInstance>,
        oneshot::Receiver<Result<http::Response<WasiBody>, GuestFailure>>,
    ),
}

/// An instance to start, with its first request.
pub(super) struct NewInstance {
    pub(super) instance: Arc<Instance>,
    pub(super) jobs: mpsc::UnboundedReceiver<Job>,
    pub(super) first: Job,
}

/// A role's open instances.
pub(super) struct Registry {
    caps: Caps,
    open: Mutex<Open>,
}

struct Open {
    instances: Vec<Arc<Instance>>,
    /// Set once the role takes no more requests: no instance is kept.
    released: bool,
}

impl Registry {
    pub(super) fn new(caps: Caps) -> Self {
        Self {
            caps,
            open: Mutex::new(Open {
                instances: Vec::new(),
                released: false,
            }),
        }
    }

    pub(super) fn caps(&self) -> Caps {
        self.caps
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // A push or a removal cannot leave the list half-changed.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `request` to an open instance with room for it whose loop is
    /// not running, else to a new one. `slot` (the request's place among
    /// the role's `max-in-flight`) is held while the request is in flight.
    pub(super) fn hand(
        &self,
        request: http::Request<WasiBody>,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
        span: Option<SpanContext>,
    ) -> Handed {
        let (reply, answer) = oneshot::channel();
        let mut open = self.open();
        let mut job = (request, reply, Some(slot));
        if !open.released {
            let mut dead = None;
            for (at, instance) in open.instances.iter().enumerate() {
                if !instance.takes(self.caps) {
                    continue;
                }
                let (request, reply, slot) = job;
                let active = Self::count_in(instance, deadline, slot);
                match instance.jobs.send(Job {
                    request,
                    deadline,
                    span,
                    reply,
                    active,
                }) {
                    Ok(()) => return Handed::Existing(answer),
                    // Its task is gone (it panicked): forget it, take the
                    // request back, and try the next.
                    Err(mpsc::error::SendError(back)) => {
                        let Job {
                            request,
                            reply,
                            mut active,
                            ..
                        } = back;
                        let slot = active._slot.take();
                        job = (request, reply, slot);
                        instance.load().closed = true;
                        dead = Some(at);
                        break;
                    }
                }
            }
            if let Some(at) = dead {
                open.instances.swap_remove(at);
            }
        }
        let (sender, jobs) = mpsc::unbounded_channel();
        let now = Instant::now();
        let instance = Arc::new(Instance {
            jobs: sender,
            load: Mutex::new(Load {
                active: 0,
                started: 0,
                accepting: true,
                // One that serves a single request never joins the registry.
                closed: open.released || !self.caps.reusable(),
                latest_deadline: deadline,
                idle_since: now,
            }),
            running: AtomicBool::new(false),
            wake: Notify::new(),
        });
        if !instance.load().closed {
            open.instances.push(instance.clone());
        }
        let (request, reply, slot) = job;
        let active = Self::count_in(&instance, deadline, slot);
        let first = Job {
            request,
            deadline,
            span,
            reply,
            active,
        };
        Handed::New(
            Box::new(NewInstance {
                instance,
                jobs,
                first,
            }),
            answer,
        )
    }

    /// Counts a request in flight on `instance` (the registry's lock held).
    fn count_in(
        instance: &Arc<Instance>,
        deadline: Instant,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Active {
        let mut load = instance.load();
        load.active = load.active.saturating_add(1);
        load.started = load.started.saturating_add(1);
        load.latest_deadline = load.latest_deadline.max(deadline);
        Active {
            instance: instance.clone(),
            _slot: slot,
        }
    }

    /// Closes `instance` if it has nothing in flight and will take nothing
    /// more (its count served, a request failed, or the role released it);
    /// whether it closed.
    pub(super) fn close_if_done(&self, instance: &Arc<Instance>) -> bool {
        let released = self.open().released;
        let done = {
            let load = instance.load();
            load.active == 0 && (released || !load.accepting || load.started >= self.caps.total)
        };
        done && self.close_if_idle(instance, None)
    }

    /// Closes `instance` if it has nothing in flight (and, with `since`,
    /// has had nothing since then); whether it closed.
    pub(super) fn close_if_idle(&self, instance: &Arc<Instance>, since: Option<Instant>) -> bool {
        let mut open = self.open();
        let mut load = instance.load();
        if load.active > 0 || since.is_some_and(|at| load.idle_since > at) {
            return false;
        }
        load.closed = true;
        drop(load);
        open.instances.retain(|i| !Arc::ptr_eq(i, instance));
        true
    }

    /// Closes `instance` whatever it carries: it failed, or overran.
    pub(super) fn retire(&self, instance: &Arc<Instance>) {
        let mut open = self.open();
        {
            let mut load = instance.load();
            load.closed = true;
            load.accepting = false;
        }
        open.instances.retain(|i| !Arc::ptr_eq(i, instance));
    }

    /// Keeps no instance from now on: those with nothing in flight close at
    /// once, the others when their requests end. How many were idle.
    pub(super) fn release(&self) -> usize {
        let instances = {
            let mut open = self.open();
            open.released = true;
            open.instances.clone()
        };
        let mut idle = 0;
        for instance in instances {
            if instance.active() == 0 {
                idle += 1;
            }
            instance.wake.notify_one();
        }
        idle
    }

    /// Open instances with nothing in flight.
    pub(super) fn idle_count(&self) -> usize {
        self.open()
            .instances
            .iter()
            .filter(|i| i.active() == 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Empty};
    use tokio::sync::Semaphore;

    fn request() -> http::Request<WasiBody> {
        http::Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync())
    }

    #[test]
    fn a_request_goes_to_an_instance_whose_loop_waits_never_to_one_whose_loop_runs() {
        let registry = Registry::new(Caps {
            concurrent: 4,
            total: 100,
            idle: Duration::from_secs(60),
        });
        let slots = Arc::new(Semaphore::new(8));
        let hand = || {
            let slot = slots.clone().try_acquire_owned().expect("a free slot");
            let deadline = Instant::now() + Duration::from_secs(10);
            registry.hand(request(), deadline, slot, None)
        };
        let Handed::New(first, _answer) = hand() else {
            panic!("the first request starts an instance");
        };
        assert!(
            matches!(hand(), Handed::Existing(_)),
            "a waiting loop with room takes the next request"
        );
        first.instance.set_running(true);
        let Handed::New(second, _answer) = hand() else {
            panic!("a running loop's instance is passed over for a new one");
        };
        assert_eq!(
            first.instance.active(),
            2,
            "the running instance took nothing more"
        );
        assert_eq!(second.instance.active(), 1);
        first.instance.set_running(false);
        second.instance.set_running(true);
        assert!(matches!(hand(), Handed::Existing(_)));
        assert_eq!(first.instance.active(), 3, "the waiting one takes it again");
    }
}
