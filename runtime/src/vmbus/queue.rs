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
//! Strings and byte lists arrive as [`WasmStr`] and [`WasmList`]: views into
//! the guest's memory, whose lengths `wire` checks before anything is
//! copied, so a guest naming a gigabyte-long queue or body costs the host
//! nothing.

mod wire;

use super::VmBusCtx;
use super::bindings::weft::vmbus::queue::{Message, Peeked};
use super::bindings::weft::vmbus::types::Error as WitError;
use crate::broker::{BrokerError, MAX_BATCH, ReceiveRequest, SendOptions, check_batch};
use crate::rate_limit::{Interface, RateLimited};
use crate::sandbox::GuestState;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList, WasmStr};
#[cfg(test)]
use wire::send_options;
use wire::{WireSendOptions, read_queue, read_receipt, read_send};

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

/// Receipts this instance holds and has not yet completed or abandoned, so
/// that if the instance fails they go back to their queue at once instead
/// of after their visibility timeout.
#[derive(Debug, Default)]
pub struct Leases {
    held: Vec<Lease>,
}

/// A message this instance holds by its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The backend's (service-scoped) queue name.
    pub queue: String,
    /// The delivery's receipt.
    pub receipt: String,
    expires: Instant,
}

impl Leases {
    fn hold(&mut self, queue: &str, receipt: String, expires: Instant) {
        // Lapsed leases are worthless; dropping them bounds this list by
        // what the guest can lease within one visibility timeout.
        let now = Instant::now();
        self.held.retain(|lease| lease.expires > now);
        self.held.push(Lease {
            queue: queue.to_owned(),
            receipt,
            expires,
        });
    }

    /// Whether the instance holds any lease still in force.
    fn holds_any(&mut self) -> bool {
        let now = Instant::now();
        self.held.retain(|lease| lease.expires > now);
        !self.held.is_empty()
    }

    fn extend(&mut self, queue: &str, receipt: &str, expires: Instant) {
        for lease in &mut self.held {
            if lease.queue == queue && lease.receipt == receipt {
                lease.expires = expires;
            }
        }
    }

    fn release(&mut self, queue: &str, receipt: &str) {
        self.held
            .retain(|lease| !(lease.queue == queue && lease.receipt == receipt));
    }

    /// Takes every lease still in force.
    pub fn take_live(&mut self) -> Vec<Lease> {
        let now = Instant::now();
        std::mem::take(&mut self.held)
            .into_iter()
            .filter(|lease| lease.expires > now)
            .collect()
    }
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
         (name, body, options): (WasmStr, WasmList<u8>, WireSendOptions)| {
            Box::new(async move { Ok((send_call(store, name, body, options).await,)) })
        },
    )?;
    queue.func_wrap_async(
        "receive",
        |store: StoreContextMut<'_, GuestState>,
         (name, max, visibility_ms, wait_ms): (WasmStr, u32, u32, u32)| {
            Box::new(async move {
                Ok((match read_queue(&store, &name) {
                    Ok(name) => receive(store, &name, max, visibility_ms, wait_ms).await,
                    Err(e) => Err(e),
                },))
            })
        },
    )?;
    queue.func_wrap_async(
        "complete",
        |store: StoreContextMut<'_, GuestState>, (name, receipt): (WasmStr, WasmStr)| {
            Box::new(
                async move { Ok((settle_call(store, name, receipt, Settle::Complete).await,)) },
            )
        },
    )?;
    queue.func_wrap_async(
        "abandon",
        |store: StoreContextMut<'_, GuestState>,
         (name, receipt, delay_ms): (WasmStr, WasmStr, u32)| {
            Box::new(async move {
                Ok((settle_call(store, name, receipt, Settle::Abandon { delay_ms }).await,))
            })
        },
    )?;
    queue.func_wrap_async(
        "extend",
        |store: StoreContextMut<'_, GuestState>,
         (name, receipt, visibility_ms): (WasmStr, WasmStr, u32)| {
            Box::new(async move {
                let how = Settle::Extend { visibility_ms };
                Ok((settle_call(store, name, receipt, how).await,))
            })
        },
    )?;
    queue.func_wrap_async(
        "length",
        |mut store: StoreContextMut<'_, GuestState>, (name,): (WasmStr,)| {
            Box::new(async move {
                Ok((match read_queue(&store, &name) {
                    Ok(name) => length(&mut store.data_mut().vmbus, &name).await,
                    Err(e) => Err(e),
                },))
            })
        },
    )?;
    queue.func_wrap_async(
        "peek",
        |mut store: StoreContextMut<'_, GuestState>, (name, max): (WasmStr, u32)| {
            Box::new(async move {
                Ok((match read_queue(&store, &name) {
                    Ok(name) => peek(&mut store.data_mut().vmbus, &name, max).await,
                    Err(e) => Err(e),
                },))
            })
        },
    )?;
    Ok(())
}

async fn send_call(
    mut store: StoreContextMut<'_, GuestState>,
    name: WasmStr,
    body: WasmList<u8>,
    options: WireSendOptions,
) -> Result<String, WitError> {
    let name = read_queue(&store, &name)?;
    let (body, options) = read_send(&store, &body, &options)?;
    send(&mut store.data_mut().vmbus, &name, body, options).await
}

async fn settle_call(
    mut store: StoreContextMut<'_, GuestState>,
    name: WasmStr,
    receipt: WasmStr,
    how: Settle,
) -> Result<(), WitError> {
    let name = read_queue(&store, &name)?;
    let receipt = read_receipt(&store, &receipt)?;
    settle(&mut store.data_mut().vmbus, &name, &receipt, how).await
}

async fn send(
    ctx: &mut VmBusCtx,
    name: &str,
    body: Vec<u8>,
    options: SendOptions,
) -> Result<String, WitError> {
    let queue = ctx.granted_queue(name)?;
    let dedupe_bytes = options.dedupe_id.as_ref().map_or(0, String::len);
    ctx.limiter
        .admit(Interface::Queue, byte_count(body.len() + dedupe_bytes))
        .await?;
    Ok(ctx.queues.send(&queue, body, options).await?)
}

async fn length(ctx: &mut VmBusCtx, name: &str) -> Result<u64, WitError> {
    let queue = ctx.granted_queue(name)?;
    ctx.limiter.admit(Interface::Queue, 0).await?;
    let len = ctx.queues.len(&queue).await?;
    Ok(u64::try_from(len).unwrap_or(u64::MAX))
}

async fn peek(ctx: &mut VmBusCtx, name: &str, max: u32) -> Result<Vec<Peeked>, WitError> {
    let queue = ctx.granted_queue(name)?;
    check_batch(max)?;
    ctx.limiter.admit(Interface::Queue, 0).await?;
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
    limiter.admit(Interface::Queue, 0).await?;
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
    ctx.limiter
        .admit(Interface::Queue, byte_count(receipt.len()))
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::MemoryBroker;
    use crate::config::Grants;
    use std::sync::Arc;

    fn ctx(queues: &[&str]) -> VmBusCtx {
        let broker = Arc::new(MemoryBroker::default());
        let grants = Grants {
            service: "svc".into(),
            role: "web".into(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            ..Grants::default()
        };
        let limiter = Arc::new(crate::rate_limit::RoleLimiter::new(
            &crate::RateLimits::default(),
        ));
        VmBusCtx::new(Arc::new(grants), broker.clone(), broker, limiter)
    }

    #[tokio::test]
    async fn send_is_denied_for_ungranted_queues_and_scoped_for_granted_ones() {
        let mut ctx = ctx(&["jobs"]);
        let denied = send(&mut ctx, "other", b"x".to_vec(), SendOptions::now()).await;
        assert!(
            matches!(denied, Err(WitError::Denied(ref why)) if why.contains("'other'")),
            "{denied:?}"
        );
        send(&mut ctx, "jobs", b"x".to_vec(), SendOptions::now())
            .await
            .unwrap();
        assert_eq!(ctx.queues.len("svc/jobs").await.unwrap(), 1);
        assert_eq!(ctx.queues.len("jobs").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn hostile_arguments_get_errors_not_traps() {
        let mut ctx = ctx(&["jobs"]);
        let huge_name = "q".repeat(10_000);
        match send(&mut ctx, &huge_name, vec![], SendOptions::now()).await {
            Err(WitError::Denied(why)) => assert!(why.len() < 200),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            send_options(u32::MAX, 0, None),
            Err(WitError::Invalid(_))
        ));
        assert!(matches!(
            send(&mut ctx, "jobs", vec![0; 64 * 1024 + 1], SendOptions::now()).await,
            Err(WitError::TooLarge(_))
        ));
        assert!(matches!(
            settle(&mut ctx, "jobs", "nonsense", Settle::Complete).await,
            Err(WitError::NotFound(_))
        ));
        assert!(matches!(
            settle(
                &mut ctx,
                "nope",
                "nonsense",
                Settle::Abandon { delay_ms: 0 }
            )
            .await,
            Err(WitError::Denied(_))
        ));
        for how in [
            Settle::Abandon { delay_ms: u32::MAX },
            Settle::Extend { visibility_ms: 0 },
            Settle::Extend {
                visibility_ms: u32::MAX,
            },
        ] {
            assert!(
                matches!(
                    settle(&mut ctx, "jobs", "r", how).await,
                    Err(WitError::Invalid(_))
                ),
                "{how:?}"
            );
        }
        for max in [0, 33, u32::MAX] {
            assert!(matches!(
                peek(&mut ctx, "jobs", max).await,
                Err(WitError::Invalid(_))
            ));
        }
        assert!(matches!(
            length(&mut ctx, "nope").await,
            Err(WitError::Denied(_))
        ));
        assert_eq!(length(&mut ctx, "jobs").await.unwrap(), 0);
        let ttl = send_options(0, 5, Some("d".into())).unwrap();
        assert_eq!(ttl.ttl, Some(Duration::from_millis(5)));
        assert_eq!(send_options(0, 0, None).unwrap().ttl, None);
    }

    #[test]
    fn receive_arguments_are_checked_and_the_wait_clamped() {
        for (max, visibility) in [
            (0, 1000),
            (33, 1000),
            (u32::MAX, 1000),
            (1, 0),
            (1, u32::MAX),
        ] {
            assert!(
                matches!(
                    receive_request(max, visibility, 0),
                    Err(WitError::Invalid(_))
                ),
                "{max} {visibility}"
            );
        }
        let ok = receive_request(32, MAX_VISIBILITY_MS, u32::MAX).unwrap();
        assert_eq!(ok.max_messages, 32);
        assert_eq!(ok.wait, MAX_WAIT);
        assert_eq!(
            receive_request(1, 1, 5).unwrap().wait,
            Duration::from_millis(5)
        );
    }

    #[test]
    fn lapsed_leases_are_dropped_and_live_ones_returned() {
        let mut leases = Leases::default();
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        leases.hold("q", "old".into(), past);
        leases.hold("q", "live".into(), later);
        leases.hold("q", "settled".into(), later);
        leases.release("q", "settled");
        assert!(leases.holds_any());
        let live: Vec<String> = leases.take_live().into_iter().map(|l| l.receipt).collect();
        assert_eq!(live, vec!["live".to_owned()]);
        assert!(!leases.holds_any());
    }
}
