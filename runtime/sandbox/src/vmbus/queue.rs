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
//! Strings and byte lists arrive as [`wire::GuestStr`] and [`WasmList`]:
//! views into the guest's memory. Every call goes the same way: lengths are
//! checked first (they cost nothing to check: a gigabyte-long name or body
//! is refused unread), then the role's rate limiter admits the call, and
//! only then is anything decoded or copied, and the grant checked. So a
//! guest flooding calls is held to its rate before the host does any work
//! proportional to what it passes.

mod leases;
#[cfg(test)]
mod lift_tests;
#[cfg(test)]
mod tests;
mod wire;

pub use leases::{Lease, Leases};

use super::VmBusCtx;
use super::bindings::weft::vmbus::queue::{Message, Peeked};
use super::bindings::weft::vmbus::types::Error as WitError;
use crate::rate_limit::{Interface, RateLimited};
use crate::sandbox::GuestState;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};
use weft_broker::{BrokerError, MAX_BATCH, ReceiveRequest, SendOptions, check_batch};
use wire::{GuestStr, WireSendOptions, check_queue, read_queue, read_receipt, read_send};

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

/// A length as bucket tokens.
pub(crate) fn byte_count(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

impl VmBusCtx {
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

pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    // The interface's types live in their own (function-less) instance.
    linker.instance("weft:vmbus/types@0.1.0")?;
    let mut queue = linker.instance(INTERFACE)?;
    queue.func_wrap_async(
        "send",
        |store: StoreContextMut<'_, GuestState>,
         (name, body, options): (GuestStr, WasmList<u8>, WireSendOptions)| {
            Box::new(async move { Ok((send_call(store, name, body, options).await,)) })
        },
    )?;
    queue.func_wrap_async(
        "receive",
        |store: StoreContextMut<'_, GuestState>,
         (name, max, visibility_ms, wait_ms): (GuestStr, u32, u32, u32)| {
            Box::new(
                async move { Ok((receive_call(store, name, max, visibility_ms, wait_ms).await,)) },
            )
        },
    )?;
    queue.func_wrap_async(
        "complete",
        |store: StoreContextMut<'_, GuestState>, (name, receipt): (GuestStr, GuestStr)| {
            Box::new(
                async move { Ok((settle_call(store, name, receipt, Settle::Complete).await,)) },
            )
        },
    )?;
    queue.func_wrap_async(
        "abandon",
        |store: StoreContextMut<'_, GuestState>,
         (name, receipt, delay_ms): (GuestStr, GuestStr, u32)| {
            Box::new(async move {
                Ok((settle_call(store, name, receipt, Settle::Abandon { delay_ms }).await,))
            })
        },
    )?;
    queue.func_wrap_async(
        "extend",
        |store: StoreContextMut<'_, GuestState>,
         (name, receipt, visibility_ms): (GuestStr, GuestStr, u32)| {
            Box::new(async move {
                let how = Settle::Extend { visibility_ms };
                Ok((settle_call(store, name, receipt, how).await,))
            })
        },
    )?;
    queue.func_wrap_async(
        "length",
        |mut store: StoreContextMut<'_, GuestState>, (name,): (GuestStr,)| {
            Box::new(async move {
                Ok((match admit_named(&mut store, &name, 0).await {
                    Ok(name) => length(&mut store.data_mut().vmbus, &name).await,
                    Err(e) => Err(e),
                },))
            })
        },
    )?;
    queue.func_wrap_async(
        "peek",
        |mut store: StoreContextMut<'_, GuestState>, (name, max): (GuestStr, u32)| {
            Box::new(async move {
                Ok((match admit_named(&mut store, &name, 0).await {
                    Ok(name) => peek(&mut store.data_mut().vmbus, &name, max).await,
                    Err(e) => Err(e),
                },))
            })
        },
    )?;
    Ok(())
}

/// The start of every call naming a queue: the name's length checked
/// unread, the call (carrying `bytes`) admitted by the role's rate limiter,
/// then the name read.
async fn admit_named(
    store: &mut StoreContextMut<'_, GuestState>,
    name: &GuestStr,
    bytes: u64,
) -> Result<String, WitError> {
    let limiter = {
        let ctx = &store.data().vmbus;
        check_queue(&ctx.grants.role, name)?;
        ctx.limiter.clone()
    };
    limiter.admit(Interface::Queue, bytes).await?;
    read_queue(&*store, name)
}

async fn send_call(
    mut store: StoreContextMut<'_, GuestState>,
    name: GuestStr,
    body: WasmList<u8>,
    options: WireSendOptions,
) -> Result<String, WitError> {
    let bytes = wire::check_send(&body, &options)?;
    let name = admit_named(&mut store, &name, bytes).await?;
    let (body, options) = read_send(&store, &body, &options)?;
    send(&mut store.data_mut().vmbus, &name, body, options).await
}

async fn receive_call(
    mut store: StoreContextMut<'_, GuestState>,
    name: GuestStr,
    max_messages: u32,
    visibility_ms: u32,
    wait_ms: u32,
) -> Result<Vec<Message>, WitError> {
    let name = admit_named(&mut store, &name, 0).await?;
    receive(store, &name, max_messages, visibility_ms, wait_ms).await
}

async fn settle_call(
    mut store: StoreContextMut<'_, GuestState>,
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
    let name = admit_named(&mut store, &name, bytes).await?;
    let receipt = read_receipt(&store, &receipt)?;
    settle(&mut store.data_mut().vmbus, &name, &receipt, how).await
}

/// Sends, once admitted: the grant checked, then the backend called.
async fn send(
    ctx: &mut VmBusCtx,
    name: &str,
    body: Vec<u8>,
    options: SendOptions,
) -> Result<String, WitError> {
    let queue = ctx.granted_queue(name)?;
    Ok(ctx.queues.send(&queue, body, options).await?)
}

async fn length(ctx: &mut VmBusCtx, name: &str) -> Result<u64, WitError> {
    let queue = ctx.granted_queue(name)?;
    let len = ctx.queues.len(&queue).await?;
    Ok(u64::try_from(len).unwrap_or(u64::MAX))
}

async fn peek(ctx: &mut VmBusCtx, name: &str, max: u32) -> Result<Vec<Peeked>, WitError> {
    let queue = ctx.granted_queue(name)?;
    check_batch(max)?;
    let peeked = ctx.queues.peek(&queue, max).await?;
    ctx.limiter.charge(
        Interface::Queue,
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

async fn receive(
    mut store: StoreContextMut<'_, GuestState>,
    name: &str,
    max_messages: u32,
    visibility_ms: u32,
    wait_ms: u32,
) -> Result<Vec<Message>, WitError> {
    let queue = store.data().vmbus.granted_queue(name)?;
    let request = receive_request(max_messages, visibility_ms, wait_ms)?;
    // An instance asked to stop takes no new work: it settles what it
    // holds and returns from `run`. A wait under way ends when the ask comes.
    let stopping = store.data().vmbus.stopping.clone();
    if stopping.as_ref().is_some_and(|flag| *flag.borrow()) {
        return Ok(Vec::new());
    }
    let limiter = store.data().vmbus.limiter.clone();
    let visibility_timeout = request.visibility_timeout;

    // A worker's batch is settled once it holds no live lease: then no
    // deadline runs while it waits. A guest that still holds messages keeps
    // its batch's deadline and fuel, however often it calls receive.
    let batch = store
        .data()
        .vmbus
        .batch
        .as_ref()
        .map(|b| (b.fuel, b.deadline));
    let settled = !store.data_mut().vmbus.leases.holds_any();
    if batch.is_some() && settled {
        set_batch_deadline(&mut store, None);
    }

    let broker = store.data().vmbus.queues.clone();
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
        Interface::Queue,
        byte_count(deliveries.iter().map(|d| d.body.len()).sum()),
    );

    // Only a new batch brings new fuel and a new deadline; an empty receive
    // refills nothing, so spinning between empty receives runs out of fuel.
    if let Some((fuel, deadline)) = batch
        && settled
        && !deliveries.is_empty()
    {
        crate::sandbox::start_batch(&mut store, fuel)
            .map_err(|e| WitError::Unavailable(format!("cannot refuel: {e}")))?;
        set_batch_deadline(&mut store, Some(Instant::now() + deadline));
    }
    let expires = Instant::now() + visibility_timeout;
    let ctx = &mut store.data_mut().vmbus;
    Ok(deliveries
        .into_iter()
        .map(|d| {
            ctx.leases.hold(&queue, d.receipt.clone(), expires);
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

/// Sets a worker's batch deadline where the epoch callback and the
/// supervising task both see it.
fn set_batch_deadline(store: &mut StoreContextMut<'_, GuestState>, deadline: Option<Instant>) {
    store.data_mut().deadline = deadline;
    if let Some(control) = &store.data().vmbus.batch {
        control.current.send_replace(deadline);
    }
}

async fn settle(
    ctx: &mut VmBusCtx,
    name: &str,
    receipt: &str,
    how: Settle,
) -> Result<(), WitError> {
    let queue = ctx.granted_queue(name)?;
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
        Settle::Complete => ctx.queues.complete(&queue, receipt).await,
        Settle::Abandon { delay_ms } => ctx.queues.abandon(&queue, receipt, ms(delay_ms)).await,
        Settle::Extend { visibility_ms } => {
            let result = ctx.queues.extend(&queue, receipt, ms(visibility_ms)).await;
            if result.is_ok() {
                ctx.leases
                    .extend(&queue, receipt, Instant::now() + ms(visibility_ms));
            }
            return Ok(result?);
        }
    };
    // A lease is gone once settled, or once the backend no longer knows it;
    // on any other failure the instance still holds it (and abandons it if
    // it fails).
    if matches!(result, Ok(()) | Err(BrokerError::NotFound(_))) {
        ctx.leases.release(&queue, receipt);
    }
    Ok(result?)
}
