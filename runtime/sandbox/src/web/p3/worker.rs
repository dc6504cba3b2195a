//! One WASIp3 instance at work: a task that owns the store, instantiates the
//! component, and serves the requests handed to it, several at once when
//! the role allows, inside one `Store::run_concurrent` event loop.
//!
//! The loop runs under the CPU scheduler's [`run_scheduled`] and under a
//! watch polled from outside the loop ([`watched`]): a guest task spinning
//! or blocked in a host call holds the store's whole event loop (wasmtime
//! issues #11869 and #11870), so only a watch outside it can end the
//! instance at the latest deadline of the requests it carries, or once it
//! has been idle for the role's idle timeout.

use super::registry::{Active, Ending, Instance, Job, NewInstance, Registry};
use crate::cpu::run_scheduled;
use crate::error::GuestFailure;
use crate::limits::SandboxLimits;
use crate::role_version::RoleVersion;
use crate::sandbox::{Failed, GuestState, sandbox_store, settle_cpu};
use crate::trace::SpanContext;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut as _, StoreContextMut};
use wasmtime_wasi_http::handler::{ExpirationError, Prepared, Proxy};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtxView, WasiHttpView};

type Answer = oneshot::Sender<Result<http::Response<WasiBody>, GuestFailure>>;

/// What every instance of one version of a role shares.
pub(super) struct Shared {
    pub(super) pre: ServicePre<GuestState>,
    pub(super) version: Arc<RoleVersion>,
    pub(super) registry: Registry,
}

/// Runs one instance from its first request until it closes: its count
/// served and nothing in flight, idle past the timeout, failed, or past a
/// deadline. Every request handed to it is answered.
pub(super) async fn run(shared: Arc<Shared>, new: Box<NewInstance>, number: u64) {
    let NewInstance {
        instance,
        mut jobs,
        first,
    } = *new;
    let limits = *shared.version.limits();
    let version = &shared.version;
    let mut store = match sandbox_store(
        shared.pre.engine(),
        version,
        format!("req-{number}"),
        version.vmbus(),
    ) {
        Ok(store) => store,
        Err(failure) => return fail_all(&shared, &instance, first, &mut jobs, &failure),
    };
    store.data_mut().deadline = Some(first.deadline);
    let spot = store.data().cpu.parking_spot();
    let instantiated = tokio::time::timeout_at(
        first.deadline.into(),
        run_scheduled(spot.clone(), shared.pre.instantiate_async(&mut store)),
    )
    .await;
    let service = match instantiated {
        Ok(Ok(service)) => service,
        Ok(Err(error)) => {
            let failure = Failed::Instantiating(error).explain(store.data(), &limits);
            return fail_all(&shared, &instance, first, &mut jobs, &failure);
        }
        Err(_elapsed) => {
            let failure = GuestFailure::Deadline(limits.deadline());
            return fail_all(&shared, &instance, first, &mut jobs, &failure);
        }
    };
    let proxy = Proxy::P3(service);
    let answers = Answers::default();
    let serving = store.run_concurrent(async |accessor| {
        serve(
            accessor, &proxy, &shared, &instance, first, &mut jobs, &answers,
        )
        .await
    });
    let watch = watched(&shared.registry, &instance, serving);
    let ended = run_scheduled(spot, watch).await;
    shared.registry.retire(&instance);
    settle_cpu(&mut store);
    store.data_mut().cpu.pause();
    let failure = match ended {
        Watched::Finished(Ok(Ok(()))) | Watched::Ended(Ending::Idle) => None,
        Watched::Finished(Ok(Err(error)) | Err(error)) => {
            Some(Failed::Running(error).explain(store.data(), &limits))
        }
        Watched::Ended(Ending::Deadline) => Some(GuestFailure::Deadline(limits.deadline())),
    };
    let unanswered = answers.drain();
    let failure = failure.unwrap_or_else(|| {
        GuestFailure::Protocol("the instance ended before the guest answered".into())
    });
    if !unanswered.is_empty() {
        for (answer, active) in unanswered {
            let _ = answer.send(Err(failure.clone()));
            drop(active);
        }
    }
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(failure.clone()));
    }
    // The store (its memory, its pool slot, its live count) goes last.
    drop(store);
}

/// Answers every request of an instance that could not start.
fn fail_all(
    shared: &Shared,
    instance: &Arc<Instance>,
    first: Job,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    failure: &GuestFailure,
) {
    shared.registry.retire(instance);
    let _ = first.reply.send(Err(failure.clone()));
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(failure.clone()));
    }
}

/// The answers an instance owes, kept outside its event loop so that a
/// trap ending the loop still leaves them to be answered.
#[derive(Default)]
struct Answers(Mutex<HashMap<u64, (Answer, Active)>>);

impl Answers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Answer, Active)>> {
        // Inserts and removals only: a panic cannot leave the map half-changed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, id: u64) -> Option<(Answer, Active)> {
        self.map().remove(&id)
    }

    fn drain(&self) -> Vec<(Answer, Active)> {
        self.map().drain().map(|(_, owed)| owed).collect()
    }
}

/// The instance's event loop: starts each request handed to it, answers
/// each as its handler returns, and returns once the registry closes it.
async fn serve(
    accessor: &Accessor<GuestState>,
    proxy: &Proxy,
    shared: &Shared,
    instance: &Arc<Instance>,
    first: Job,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    answers: &Answers,
) -> wasmtime::Result<()> {
    let limits = *shared.version.limits();
    let mut running = FuturesUnordered::new();
    let mut next_id = 0_u64;
    let mut start = |job: Job, running: &mut FuturesUnordered<_>| {
        let Job {
            request,
            deadline,
            span,
            reply,
            active,
        } = job;
        let id = next_id;
        next_id += 1;
        let (sender, result) = futures::channel::oneshot::channel();
        let prepared = accessor.with(|mut access| {
            let mut store = access.as_context_mut();
            begin_request(&mut store, &limits, instance.active(), deadline, span)?;
            Prepared::new(store, proxy, request, http_view, sender)
        });
        answers.map().insert(id, (reply, active));
        running.push(async move {
            let outcome = match prepared {
                Ok(prepared) => {
                    let expiry = tokio::time::sleep_until(deadline.into());
                    match prepared.run(accessor, expiry).await {
                        Ok(_) => result.await.unwrap_or_else(|_| {
                            Err(wasmtime::format_err!("the handler left no answer"))
                        }),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            (id, outcome)
        });
    };
    start(first, &mut running);
    loop {
        tokio::select! {
            biased;
            Some((id, outcome)) = running.next(), if !running.is_empty() => {
                let Some((reply, active)) = answers.take(id) else { continue };
                match outcome {
                    Ok(response) => {
                        let response = response.map(|body| {
                            Guarded { body, _active: active }.boxed_unsync()
                        });
                        let _ = reply.send(Ok(response));
                    }
                    Err(error) => {
                        instance.refuse_more();
                        let failure = explain(accessor, error, &limits);
                        let _ = reply.send(Err(failure));
                        drop(active);
                    }
                }
            }
            Some(job) = jobs.recv() => start(job, &mut running),
            () = instance.wake.notified() => {
                if shared.registry.close_if_done(instance) {
                    return Ok(());
                }
            }
        }
    }
}

/// Readies the store for one more request: fuel for it, its deadline, the
/// span its VMBus calls hang under, and, on an instance that was idle,
/// ticks counted from now and no memory refusal remembered.
fn begin_request(
    store: &mut StoreContextMut<'_, GuestState>,
    limits: &SandboxLimits,
    in_flight: u32,
    deadline: Instant,
    span: Option<SpanContext>,
) -> wasmtime::Result<()> {
    // Fuel is the store's, not a request's: each request adds the role's
    // budget, and the instance holds at most a budget per request in flight.
    let left = store.get_fuel()?;
    store.data_mut().cpu.settle(left);
    let cap = limits.fuel.saturating_mul(u64::from(in_flight.max(1)));
    let fuel = left.saturating_add(limits.fuel).min(cap);
    store.set_fuel(fuel)?;
    let state = store.data_mut();
    state.cpu.refuelled(fuel);
    if in_flight <= 1 {
        state.limiter.clear_refusal();
        state.cpu.restart_ticks();
    }
    // VMBus spans hang under the request's while it is alone: with others
    // in flight a call could be any of theirs.
    let current = if in_flight <= 1 { span } else { None };
    state.vmbus.caller.trace.set_current(current);
    // The call hook stops the guest past the latest deadline it carries.
    state.deadline = Some(state.deadline.map_or(deadline, |d| d.max(deadline)));
    Ok(())
}

/// Why a request failed, from the error its call ended with.
fn explain(
    accessor: &Accessor<GuestState>,
    error: wasmtime::Error,
    limits: &SandboxLimits,
) -> GuestFailure {
    if error.is::<ExpirationError>() {
        return GuestFailure::Deadline(limits.deadline());
    }
    if let Some(code) = error.downcast_ref::<ErrorCode>() {
        let text: String = format!("{code:?}").chars().take(200).collect();
        return GuestFailure::Protocol(format!("guest answered with an error: {text}"));
    }
    accessor.with(|mut access| {
        let store = access.as_context_mut();
        Failed::Running(error).explain(store.data(), limits)
    })
}

fn http_view(state: &mut GuestState) -> WasiHttpCtxView<'_> {
    state.http()
}

/// How an instance's loop ended.
enum Watched<T> {
    Finished(T),
    Ended(Ending),
}

/// Drives `serving`, ending it when the instance's watch says so: past the
/// latest deadline of its requests in flight, or idle past the timeout.
async fn watched<F: Future>(
    registry: &Registry,
    instance: &Arc<Instance>,
    serving: F,
) -> Watched<F::Output> {
    let idle = registry.caps().idle;
    let mut serving = std::pin::pin!(serving);
    let mut timer = Box::pin(tokio::time::sleep_until(Instant::now().into()));
    // Re-arming the timer takes it out of tokio's timer wheel and puts it
    // back: done only when the instant moves, not at every poll of the loop.
    let mut armed = None;
    std::future::poll_fn(move |cx| {
        loop {
            instance.set_running(true);
            let polled = serving.as_mut().poll(cx);
            instance.set_running(false);
            if let Poll::Ready(output) = polled {
                return Poll::Ready(Watched::Finished(output));
            }
            let (at, ending) = instance.end_at(idle);
            if Instant::now() >= at {
                match ending {
                    Ending::Deadline => return Poll::Ready(Watched::Ended(ending)),
                    Ending::Idle if registry.close_if_idle(instance, at.checked_sub(idle)) => {
                        return Poll::Ready(Watched::Ended(ending));
                    }
                    // A request arrived meanwhile: watch its deadline.
                    Ending::Idle => continue,
                }
            }
            if armed != Some(at) {
                timer.as_mut().reset(at.into());
                armed = Some(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// A response body that counts its request in flight until it is dropped:
/// the instance serves on while the guest streams it.
struct Guarded {
    body: WasiBody,
    _active: Active,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
