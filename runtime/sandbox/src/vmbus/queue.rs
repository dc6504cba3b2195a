//! Host side of `weft:vmbus/queue`: grant checks, argument checks, and the
//! per-batch budget of a worker.
//!
//! A worker's fuel budget and deadline cover one received batch: each
//! `receive` refills the fuel, and when it hands out messages it starts the
//! batch's deadline (stopped again while the worker waits in the next
//! `receive`). That is why this interface is linked by hand with
//! `func_wrap_async`: `receive` needs the store, not only the store's data.
//! A web role's budget covers its whole request instead, so its `receive`
//! refills nothing. Once the host asks a worker instance to stop, `receive`
//! returns nothing, at once (see [`super::lifecycle`]).
//!
//! Strings and byte lists arrive as `wire::GuestStr` and [`WasmList`]:
//! views into the guest's memory. Every call goes the same way: lengths are
//! checked first (they cost nothing to check: a gigabyte-long name or body
//! is refused unread), then the role's rate limiter admits the call, and
//! only then is anything decoded or copied, and the grant checked. So a
//! guest flooding calls is held to its rate before the host does any work
//! proportional to what it passes.
//!
//! Its per-instance state is [`QueueState`] (the backend, the leases held,
//! a worker's batch budget); it draws on the [`BUCKET`] bucket; it asks of
//! the store's data only what [`QueueHost`] says.
//!
//! With tracing on ([`crate::trace`]), every call is a `weft.vmbus` span
//! (wrapped where it is linked, below), a send carries its span's
//! `traceparent` in the message, and each message received opens a
//! `weft.deliver` span (in [`QueueState`]) that its settle, or its lease's
//! lapse, ends.

mod leases;
#[cfg(test)]
mod lift_tests;
#[cfg(test)]
mod tests;
mod wire;

pub use leases::{Lease, Leases};

use super::bindings::weft::vmbus::queue::{Message, Peeked};
use super::bindings::weft::vmbus::types::Error as WitError;
use super::caller::Caller;
use super::lifecycle::LifecycleState;
use crate::rate_limit::{Interface, RateLimited, byte_count};
use crate::trace::{CallError, CallSpan, Deliveries, Parent, SpanContext, SpanKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};
use weft_broker::{BrokerError, MAX_BATCH, QueueBroker, ReceiveRequest, SendOptions, check_batch};
use wire::{
    GuestStr, WireSendOptions, bad_queue_name, check_queue, read_queue, read_receipt, read_send,
};

/// The longest a `receive` waits for a message, whatever the guest asks: a
/// bounded long poll keeps an idle worker cheap without hiding it from the host.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The longest visibility timeout a guest may ask for (12 hours).
pub const MAX_VISIBILITY_MS: u32 = 12 * 60 * 60 * 1000;
/// The longest initial invisibility a guest may ask for (7 days).
pub const MAX_DELAY_MS: u32 = 7 * 24 * 60 * 60 * 1000;
/// How much of a guest-supplied name is echoed back in an error.
const NAME_ECHO: usize = 64;

const INTERFACE: &str = "weft:vmbus/queue@0.1.0";

/// The rate-limit bucket this interface draws on.
pub const BUCKET: Interface = Interface::Queue;

/// An instance's queue state.
pub struct QueueState {
    pub(crate) broker: Arc<dyn QueueBroker>,
    /// The receipts it holds, to abandon if it fails.
    pub(crate) leases: Leases,
    /// A worker's per-batch budget; `None` for a web request's sandbox.
    pub(crate) batch: Option<BatchControl>,
    /// The `weft.deliver` spans of the messages it holds (none while
    /// tracing is off).
    pub(crate) deliveries: Deliveries,
    /// Fuel a worker burnt in its batches before the current one: with
    /// what the current one burnt, the instance's fuel count.
    pub(crate) fuel_spent: u64,
}

impl QueueState {
    /// State for an instance whose queues `broker` holds.
    pub fn new(broker: Arc<dyn QueueBroker>) -> Self {
        Self {
            broker,
            leases: Leases::default(),
            batch: None,
            deliveries: Deliveries::default(),
            fuel_spent: 0,
        }
    }
}

/// What a queue call works on: the instance's queue state, its caller, and
/// whether it has been asked to stop.
pub struct QueueView<'a> {
    /// The instance's queue state.
    pub state: &'a mut QueueState,
    /// Who calls.
    pub caller: &'a Caller,
    /// Whether the host has asked the instance to stop.
    pub lifecycle: &'a LifecycleState,
}

/// What `weft:vmbus/queue` needs of a store's data: its view, and the two
/// things a worker's `receive` changes in the sandbox around it.
pub trait QueueHost: Send + Sized + 'static {
    /// The view queue calls work on.
    fn queue(&mut self) -> QueueView<'_>;
    /// Starts a worker's new batch: charges what the last one burnt and
    /// gives the guest `fuel` afresh.
    fn start_batch(store: &mut StoreContextMut<'_, Self>, fuel: u64) -> wasmtime::Result<()>;
    /// Sets (or, with `None`, clears) the current invocation's deadline.
    fn set_deadline(&mut self, deadline: Option<Instant>);
}

/// A worker's per-batch budget, and where it announces its batch deadline
/// to the supervisor that enforces it.
#[derive(Debug)]
pub struct BatchControl {
    /// Fuel given at every `receive`.
    pub fuel: u64,
    /// Wall-clock time allowed per received batch.
    pub deadline: Duration,
    /// The current batch's deadline; `None` while the worker waits for work.
    pub current: watch::Sender<Option<Instant>>,
}

fn echo(name: &str) -> &str {
    name.char_indices()
        .nth(NAME_ECHO)
        .map_or(name, |(end, _)| &name[..end])
}

impl From<BrokerError> for WitError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::TooLarge(why) => WitError::TooLarge(why),
            BrokerError::NotFound(why) => WitError::NotFound(why),
            BrokerError::Invalid(why) => WitError::Invalid(why),
            BrokerError::Unavailable(why) => WitError::Unavailable(why),
            // A kind added to the broker later: the guest may retry.
            other => WitError::Unavailable(other.to_string()),
        }
    }
}

impl From<RateLimited> for WitError {
    fn from(RateLimited: RateLimited) -> Self {
        WitError::RateLimited
    }
}

impl Caller {
    /// The backend's name for `queue`, if the role may use it.
    fn granted_queue(&self, queue: &str) -> Result<String, WitError> {
        if self.grants.queues.contains(queue) {
            Ok(self.scoped(queue))
        } else {
            Err(WitError::Denied(format!(
                "queue '{}' is not granted to role '{}'",
                echo(queue),
                self.grants.role
            )))
        }
    }
}

/// How a receipt's delivery is settled.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Complete,
    Abandon { delay_ms: u32 },
    Extend { visibility_ms: u32 },
}

/// Links `weft:vmbus/queue` (and its types) into `linker`.
pub fn add_to_linker<T: QueueHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    // The interface's types live in their own (function-less) instance.
    linker.instance("weft:vmbus/types@0.1.0")?;
    let mut queue = linker.instance(INTERFACE)?;
    queue.func_wrap_async(
        "send",
        |mut store: StoreContextMut<'_, T>,
         (name, body, options): (GuestStr, WasmList<u8>, WireSendOptions)| {
            Box::new(async move {
                let span = call_span(&mut store, "queue.send", SpanKind::Producer);
                let parent = span.context();
                let result = send_call(store, name, body, options, parent).await;
                span.end(&result);
                Ok((result,))
            })
        },
    )?;
    queue.func_wrap_async(
        "receive",
        |mut store: StoreContextMut<'_, T>,
         (name, max, visibility_ms, wait_ms): (GuestStr, u32, u32, u32)| {
            Box::new(async move {
                let span = call_span(&mut store, "queue.receive", SpanKind::Internal);
                let result = receive_call(store, name, max, visibility_ms, wait_ms).await;
                span.end(&result);
                Ok((result,))
            })
        },
    )?;
    queue.func_wrap_async(
        "complete",
        |store: StoreContextMut<'_, T>, (name, receipt): (GuestStr, GuestStr)| {
            Box::new(
                async move { Ok((settle_call(store, name, receipt, Settle::Complete).await,)) },
            )
        },
    )?;
    queue.func_wrap_async(
        "complete-batch",
        |mut store: StoreContextMut<'_, T>, (name, receipts): (GuestStr, WasmList<GuestStr>)| {
            Box::new(async move {
                let span = call_span(&mut store, "queue.complete-batch", SpanKind::Internal);
                let result = complete_batch_call(store, name, receipts).await;
                // A receipt that is not a string in the guest's memory traps,
                // as it would passed alone.
                let result = result?;
                span.end(&result);
                Ok((result,))
            })
        },
    )?;
    queue.func_wrap_async(
        "abandon",
        |store: StoreContextMut<'_, T>, (name, receipt, delay_ms): (GuestStr, GuestStr, u32)| {
            Box::new(async move {
                Ok((settle_call(store, name, receipt, Settle::Abandon { delay_ms }).await,))
            })
        },
    )?;
    queue.func_wrap_async(
        "extend",
        |store: StoreContextMut<'_, T>,
         (name, receipt, visibility_ms): (GuestStr, GuestStr, u32)| {
            Box::new(async move {
                let how = Settle::Extend { visibility_ms };
                Ok((settle_call(store, name, receipt, how).await,))
            })
        },
    )?;
    queue.func_wrap_async(
        "length",
        |mut store: StoreContextMut<'_, T>, (name,): (GuestStr,)| {
            Box::new(async move {
                let span = call_span(&mut store, "queue.length", SpanKind::Internal);
                let result = match admit_named(&mut store, &name, 0).await {
                    Ok(name) => length(&mut store.data_mut().queue(), &name).await,
                    Err(e) => Err(e),
                };
                span.end(&result);
                Ok((result,))
            })
        },
    )?;
    queue.func_wrap_async(
        "peek",
        |mut store: StoreContextMut<'_, T>, (name, max): (GuestStr, u32)| {
            Box::new(async move {
                let span = call_span(&mut store, "queue.peek", SpanKind::Internal);
                let result = match admit_named(&mut store, &name, 0).await {
                    Ok(name) => peek(&mut store.data_mut().queue(), &name, max).await,
                    Err(e) => Err(e),
                };
                span.end(&result);
                Ok((result,))
            })
        },
    )?;
    Ok(())
}

/// A `weft.vmbus` span for a queue call, a child of the span the instance
/// works for; empty (one branch) while tracing is off.
fn call_span<T: QueueHost>(
    store: &mut StoreContextMut<'_, T>,
    call: &'static str,
    kind: SpanKind,
) -> CallSpan {
    CallSpan::start(&store.data_mut().queue().caller.trace, call, kind)
}

/// A VMBus error's kind, as its call's span names it (`weft:vmbus/usage`
/// answers these errors too).
impl CallError for WitError {
    fn kind(&self) -> &'static str {
        match self {
            WitError::RateLimited => "rate-limited",
            WitError::TooLarge(_) => "too-large",
            WitError::Denied(_) => "denied",
            WitError::NotFound(_) => "not-found",
            WitError::Unavailable(_) => "unavailable",
            WitError::Invalid(_) => "invalid",
        }
    }
}

/// The instance's fuel count: what a worker burnt in its earlier batches
/// and in this one so far. `None` outside a worker (a web request's fuel
/// is its own span's) or while tracing is off.
pub(crate) fn instance_fuel<T: QueueHost>(store: &mut StoreContextMut<'_, T>) -> Option<u64> {
    let view = store.data_mut().queue();
    if !view.caller.trace.is_on() {
        return None;
    }
    let (given, spent) = (view.state.batch.as_ref()?.fuel, view.state.fuel_spent);
    let left = store.get_fuel().ok()?;
    Some(spent.saturating_add(given.saturating_sub(left)))
}

/// The start of every call naming a queue: the name's length checked
/// unread, the call (carrying `bytes`) admitted by the role's rate limiter,
/// then the name read.
async fn admit_named<T: QueueHost>(
    store: &mut StoreContextMut<'_, T>,
    name: &GuestStr,
    bytes: u64,
) -> Result<String, WitError> {
    // The caller is borrowed from the store while the limiter waits (nothing
    // else uses the store meanwhile), and again for the role's name only if
    // the name cannot be read: no reference count is touched per call.
    let caller = store.data_mut().queue().caller;
    check_queue(&caller.grants.role, name)?;
    caller.limiter.admit(BUCKET, bytes).await?;
    read_queue(&*store, name)
        .map_err(|bad| bad_queue_name(bad, &store.data_mut().queue().caller.grants.role))
}

async fn send_call<T: QueueHost>(
    mut store: StoreContextMut<'_, T>,
    name: GuestStr,
    body: WasmList<u8>,
    options: WireSendOptions,
    trace: Option<SpanContext>,
) -> Result<String, WitError> {
    let bytes = wire::check_send(&body, &options)?;
    let name = admit_named(&mut store, &name, bytes).await?;
    let (body, mut options) = read_send(&store, &body, &options)?;
    // The send's own span is the parent of the message's deliveries.
    options.trace_parent = trace.map(|ctx| ctx.traceparent());
    send(&mut store.data_mut().queue(), &name, body, options).await
}

async fn receive_call<T: QueueHost>(
    mut store: StoreContextMut<'_, T>,
    name: GuestStr,
    max_messages: u32,
    visibility_ms: u32,
    wait_ms: u32,
) -> Result<Vec<Message>, WitError> {
    let name = admit_named(&mut store, &name, 0).await?;
    receive(store, &name, max_messages, visibility_ms, wait_ms).await
}

async fn settle_call<T: QueueHost>(
    mut store: StoreContextMut<'_, T>,
    name: GuestStr,
    receipt: GuestStr,
    how: Settle,
) -> Result<(), WitError> {
    if receipt.min_bytes() > wire::MAX_RECEIPT_BYTES {
        return Err(WitError::NotFound(
            "no current delivery has this receipt".into(),
        ));
    }
    let bytes = byte_count(receipt.min_bytes());
    let call = match how {
        Settle::Complete => "queue.complete",
        Settle::Abandon { .. } => "queue.abandon",
        Settle::Extend { .. } => "queue.extend",
    };
    let span = call_span(&mut store, call, SpanKind::Internal);
    let result = async {
        let name = admit_named(&mut store, &name, bytes).await?;
        let receipt = read_receipt(&store, &receipt)?;
        let fuel = instance_fuel(&mut store);
        settle(&mut store.data_mut().queue(), &name, &receipt, how, fuel).await
    }
    .await;
    span.end(&result);
    result
}

/// `complete-batch`: one call of the rate limit for up to [`MAX_BATCH`]
/// receipts, each completed as `complete` would. The receipts' lengths are
/// checked unread (each over [`wire::MAX_RECEIPT_BYTES`] is unknown), the
/// call admitted carrying their bytes, the grant checked, then the backend
/// asked to complete them all at once (NATS confirms them together, not one
/// round trip after another; the embedded backend writes settles after
/// answering anyway, so there the gain is the rate limit's one call). The
/// outer error traps (a receipt that is not a string in the guest's memory).
async fn complete_batch_call<T: QueueHost>(
    mut store: StoreContextMut<'_, T>,
    name: GuestStr,
    receipts: WasmList<GuestStr>,
) -> wasmtime::Result<Result<Vec<Result<(), WitError>>, WitError>> {
    if let Err(e) = check_receipt_count(receipts.len()) {
        return Ok(Err(e));
    }
    let receipts: Vec<GuestStr> = receipts
        .iter(&mut store)?
        .collect::<wasmtime::Result<_>>()?;
    let bytes = receipts
        .iter()
        .map(|r| byte_count(r.min_bytes().min(wire::MAX_RECEIPT_BYTES + 1)))
        .sum();
    let name = match admit_named(&mut store, &name, bytes).await {
        Ok(name) => name,
        Err(e) => return Ok(Err(e)),
    };
    let read: Vec<Result<String, WitError>> = receipts
        .iter()
        .map(|receipt| read_receipt(&store, receipt))
        .collect();
    let fuel = instance_fuel(&mut store);
    Ok(complete_batch(&mut store.data_mut().queue(), &name, read, fuel).await)
}

/// Refuses a `complete-batch` of no receipts or of more than one `receive`
/// hands out ([`MAX_BATCH`]), before any receipt is read.
fn check_receipt_count(count: usize) -> Result<(), WitError> {
    if count == 0 || count > MAX_BATCH as usize {
        return Err(WitError::Invalid(format!(
            "complete-batch takes 1 to {MAX_BATCH} receipts, not {count}"
        )));
    }
    Ok(())
}

/// Completes each readable receipt of a batch, concurrently, once the grant
/// is checked; an unreadable one keeps its error.
async fn complete_batch(
    view: &mut QueueView<'_>,
    name: &str,
    receipts: Vec<Result<String, WitError>>,
    fuel: Option<u64>,
) -> Result<Vec<Result<(), WitError>>, WitError> {
    let queue = view.caller.granted_queue(name)?;
    view.state.deliveries.expire(Instant::now(), fuel);
    // Each completion is its own task, so the backend sees them at once;
    // they are awaited in the receipts' order.
    let pending: Vec<_> = receipts
        .into_iter()
        .map(|receipt| {
            receipt.map(|receipt| {
                let (broker, queue) = (view.state.broker.clone(), queue.clone());
                let done = tokio::spawn({
                    let receipt = receipt.clone();
                    async move { broker.complete(&queue, &receipt).await }
                });
                (receipt, done)
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(pending.len());
    for entry in pending {
        let outcome = match entry {
            Err(e) => Err(e),
            Ok((receipt, done)) => {
                let result = done.await.unwrap_or_else(|e| {
                    Err(BrokerError::Unavailable(format!("completion failed: {e}")))
                });
                settled(view, &queue, &receipt, Settle::Complete, &result, fuel);
                result.map_err(WitError::from)
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Sends, once admitted: the grant checked, then the backend called.
async fn send(
    view: &mut QueueView<'_>,
    name: &str,
    body: Vec<u8>,
    options: SendOptions,
) -> Result<String, WitError> {
    let queue = view.caller.granted_queue(name)?;
    Ok(view.state.broker.send(&queue, body, options).await?)
}

async fn length(view: &mut QueueView<'_>, name: &str) -> Result<u64, WitError> {
    let queue = view.caller.granted_queue(name)?;
    let len = view.state.broker.len(&queue).await?;
    Ok(u64::try_from(len).unwrap_or(u64::MAX))
}

async fn peek(view: &mut QueueView<'_>, name: &str, max: u32) -> Result<Vec<Peeked>, WitError> {
    let queue = view.caller.granted_queue(name)?;
    check_batch(max)?;
    let peeked = view.state.broker.peek(&queue, max).await?;
    view.caller.limiter.charge(
        BUCKET,
        byte_count(peeked.iter().map(|p| p.body.len()).sum()),
    );
    Ok(peeked
        .into_iter()
        .map(|p| Peeked {
            id: p.id,
            body: p.body,
            dequeue_count: p.dequeue_count,
            inserted_at_ms: p.inserted_at_ms,
            poison_reason: p.poison_reason,
        })
        .collect())
}

/// Checks a guest's receive arguments: batch size and visibility timeout
/// must be in range; the wait is clamped to [`MAX_WAIT`].
fn receive_request(
    max_messages: u32,
    visibility_ms: u32,
    wait_ms: u32,
) -> Result<ReceiveRequest, WitError> {
    if max_messages == 0 || max_messages > MAX_BATCH {
        return Err(WitError::Invalid(format!(
            "max-messages must be 1 to {MAX_BATCH}, not {max_messages}"
        )));
    }
    if visibility_ms == 0 || visibility_ms > MAX_VISIBILITY_MS {
        return Err(WitError::Invalid(format!(
            "visibility-timeout-ms must be 1 to {MAX_VISIBILITY_MS}, not {visibility_ms}"
        )));
    }
    Ok(ReceiveRequest {
        max_messages,
        visibility_timeout: Duration::from_millis(u64::from(visibility_ms)),
        wait: Duration::from_millis(u64::from(wait_ms)).min(MAX_WAIT),
    })
}

async fn receive<T: QueueHost>(
    mut store: StoreContextMut<'_, T>,
    name: &str,
    max_messages: u32,
    visibility_ms: u32,
    wait_ms: u32,
) -> Result<Vec<Message>, WitError> {
    let view = store.data_mut().queue();
    let queue = view.caller.granted_queue(name)?;
    let request = receive_request(max_messages, visibility_ms, wait_ms)?;
    // An instance asked to stop takes no new work: it settles what it
    // holds and returns from `run`. A wait under way ends when the ask comes.
    if view.lifecycle.is_stopping() {
        return Ok(Vec::new());
    }
    let stopping = view.lifecycle.stopping.clone();
    let limiter = view.caller.limiter.clone();
    let visibility_timeout = request.visibility_timeout;

    // A worker's batch is settled once it holds no live lease: then no
    // deadline runs while it waits. A guest that still holds messages keeps
    // its batch's deadline and fuel, however often it calls receive.
    let batch = view.state.batch.as_ref().map(|b| (b.fuel, b.deadline));
    let settled = !view.state.leases.holds_any();
    let broker = view.state.broker.clone();
    if batch.is_some() && settled {
        set_batch_deadline(&mut store, None);
    }

    let deliveries = match stopping {
        Some(mut flag) => tokio::select! {
            deliveries = broker.receive(&queue, request) => deliveries?,
            _ = flag.wait_for(|stopping| *stopping) => return Ok(Vec::new()),
        },
        None => broker.receive(&queue, request).await?,
    };
    // The bodies are handed over already: charge them, to be waited out by
    // the role's next calls.
    limiter.charge(
        BUCKET,
        byte_count(deliveries.iter().map(|d| d.body.len()).sum()),
    );

    // Only a new batch brings new fuel and a new deadline; an empty receive
    // refills nothing, so spinning between empty receives runs out of fuel.
    if let Some((fuel, deadline)) = batch
        && settled
        && !deliveries.is_empty()
    {
        // The instance's fuel count carries over into the new batch.
        let spent = instance_fuel(&mut store);
        T::start_batch(&mut store, fuel)
            .map_err(|e| WitError::Unavailable(format!("cannot refuel: {e}")))?;
        set_batch_deadline(&mut store, Some(Instant::now() + deadline));
        if let Some(spent) = spent {
            store.data_mut().queue().state.fuel_spent = spent;
        }
    }
    let expires = Instant::now() + visibility_timeout;
    let fuel = instance_fuel(&mut store);
    let view = store.data_mut().queue();
    let trace = &view.caller.trace;
    let state = &mut *view.state;
    if trace.is_on() {
        state.deliveries.expire(Instant::now(), fuel);
    }
    Ok(deliveries
        .into_iter()
        .map(|d| {
            state.leases.hold(&queue, d.receipt.clone(), expires);
            let parent = Parent::Remote(d.trace_parent.as_deref());
            if let Some(span) = trace.start("weft.deliver", SpanKind::Consumer, parent) {
                // Sends while handling it join its trace (the last one
                // received, when a batch holds several).
                trace.set_current(Some(span.context()));
                state
                    .deliveries
                    .begin(&queue, &d.receipt, span, expires, fuel);
            }
            Message {
                id: d.id,
                body: d.body,
                dequeue_count: d.dequeue_count,
                inserted_at_ms: d.inserted_at_ms,
                receipt: d.receipt,
                poison_reason: d.poison_reason,
            }
        })
        .collect())
}

/// Sets a worker's batch deadline where the store's call hook and the
/// supervising task both see it.
fn set_batch_deadline<T: QueueHost>(store: &mut StoreContextMut<'_, T>, deadline: Option<Instant>) {
    store.data_mut().set_deadline(deadline);
    if let Some(control) = &store.data_mut().queue().state.batch {
        control.current.send_replace(deadline);
    }
}

async fn settle(
    view: &mut QueueView<'_>,
    name: &str,
    receipt: &str,
    how: Settle,
    fuel: Option<u64>,
) -> Result<(), WitError> {
    let queue = view.caller.granted_queue(name)?;
    let ctx = &mut *view.state;
    ctx.deliveries.expire(Instant::now(), fuel);
    match how {
        Settle::Abandon { delay_ms } if delay_ms > MAX_DELAY_MS => {
            return Err(WitError::Invalid(format!(
                "delay of {delay_ms} ms is over the maximum of {MAX_DELAY_MS} ms"
            )));
        }
        Settle::Extend { visibility_ms }
            if visibility_ms == 0 || visibility_ms > MAX_VISIBILITY_MS =>
        {
            return Err(WitError::Invalid(format!(
                "visibility-timeout-ms must be 1 to {MAX_VISIBILITY_MS}, not {visibility_ms}"
            )));
        }
        _ => {}
    }
    let ms = |n: u32| Duration::from_millis(u64::from(n));
    let result = match how {
        Settle::Complete => ctx.broker.complete(&queue, receipt).await,
        Settle::Abandon { delay_ms } => ctx.broker.abandon(&queue, receipt, ms(delay_ms)).await,
        Settle::Extend { visibility_ms } => {
            let result = ctx.broker.extend(&queue, receipt, ms(visibility_ms)).await;
            if result.is_ok() {
                let expires = Instant::now() + ms(visibility_ms);
                ctx.leases.extend(&queue, receipt, expires);
                ctx.deliveries.extend(&queue, receipt, expires);
            }
            return Ok(result?);
        }
    };
    settled(view, &queue, receipt, how, &result, fuel);
    Ok(result?)
}

/// Records what the backend answered to settling `receipt` (completed or
/// abandoned; an extension keeps its lease).
fn settled(
    view: &mut QueueView<'_>,
    queue: &str,
    receipt: &str,
    how: Settle,
    result: &Result<(), BrokerError>,
    fuel: Option<u64>,
) {
    // A lease is gone once settled, or once the backend no longer knows it;
    // on any other failure the instance still holds it (and abandons it if
    // it fails).
    if matches!(result, Ok(()) | Err(BrokerError::NotFound(_))) {
        let ctx = &mut *view.state;
        ctx.leases.release(queue, receipt);
        let outcome = match (result, how) {
            (Err(_), _) => "lease-lost",
            (Ok(()), Settle::Abandon { .. }) => "abandoned",
            (Ok(()), _) => "completed",
        };
        ctx.deliveries.end(queue, receipt, outcome, fuel);
        // A worker done with all it received works for no trace until its next.
        if ctx.batch.is_some() && ctx.deliveries.is_empty() {
            view.caller.trace.set_current(None);
        }
    }
}
