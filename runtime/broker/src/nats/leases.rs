//! The leases this host holds on NATS messages, kept to each delivery's own
//! visibility timeout.
//!
//! JetStream has one ack wait per consumer, not one per receive. So each
//! lease is recorded here with its deadline and the delivery's reply
//! subject, and a keeper task, every tick:
//!
//! - lets go of a lease whose deadline has passed (a negative
//!   acknowledgement: the server delivers the message again at once, as a
//!   lapsed lease would be);
//! - tells the server a lease that outlives the ack wait is still in
//!   progress (`+WPI`), often enough that the server never redelivers it.
//!
//! If this host dies, nothing keeps its leases: the server redelivers each
//! message one ack wait after it last heard of it. A receipt is valid only
//! while its lease is here, so a receipt from an earlier delivery, or from
//! another host, is refused.

use super::failure::unavailable;
use crate::error::BrokerError;
use crate::error::one_line;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One delivery this host holds.
#[derive(Debug)]
struct Lease {
    queue: String,
    /// Where the server takes this delivery's acknowledgements.
    reply: String,
    deadline: Instant,
    /// When the server last heard of this lease (delivery or `+WPI`).
    heard_at: Instant,
}

/// What a settle does to a lease.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    Complete,
    Abandon(Duration),
    Extend(Duration),
}

/// The leases of this host.
pub(crate) struct Leases {
    client: async_nats::Client,
    ack_wait: Duration,
    held: Mutex<HashMap<u64, Lease>>,
}

impl Leases {
    pub(crate) fn new(client: async_nats::Client, ack_wait: Duration) -> Self {
        Self {
            client,
            ack_wait,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Lease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a delivery and returns its token.
    pub(crate) fn hold(&self, queue: &str, reply: String, visibility: Duration) -> u64 {
        let now = Instant::now();
        let token = rand::random();
        self.held().insert(
            token,
            Lease {
                queue: queue.to_owned(),
                reply,
                deadline: now + visibility,
                heard_at: now,
            },
        );
        token
    }

    /// Settles the lease `token` of `queue`: `Ok(false)` if there is no such
    /// lease in force. A completion waits for the server to confirm it, so a
    /// completed message is gone when this returns.
    pub(crate) async fn settle(
        &self,
        queue: &str,
        token: u64,
        how: Settle,
    ) -> Result<bool, BrokerError> {
        let now = Instant::now();
        let (reply, kind) = {
            let mut held = self.held();
            match held.get_mut(&token) {
                Some(lease) if lease.queue == queue && lease.deadline > now => match how {
                    Settle::Extend(visibility) => {
                        lease.deadline = now + visibility;
                        lease.heard_at = now;
                        (lease.reply.clone(), AckKind::Progress)
                    }
                    Settle::Complete | Settle::Abandon(_) => {
                        let Some(lease) = held.remove(&token) else {
                            return Ok(false);
                        };
                        let kind = match how {
                            Settle::Abandon(delay) if !delay.is_zero() => AckKind::Nak(Some(delay)),
                            Settle::Abandon(_) => AckKind::Nak(None),
                            _ => AckKind::Ack,
                        };
                        (lease.reply, kind)
                    }
                },
                _ => return Ok(false),
            }
        };
        if matches!(kind, AckKind::Ack) {
            self.client
                .request(reply, Bytes::from(kind))
                .await
                .map_err(|e| unavailable("complete a message", &e))?;
        } else {
            self.tell(reply, kind).await;
        }
        Ok(true)
    }

    /// Sends an acknowledgement. One lost with a dropped connection only
    /// means the server delivers the message again: at-least-once allows it.
    async fn tell(&self, reply: String, kind: AckKind) {
        if let Err(e) = self.client.publish(reply, Bytes::from(kind)).await {
            tracing::debug!(error = %one_line(&e), "queues: NATS: an acknowledgement was not sent");
        }
    }

    /// Drops every lease of `queue` this host holds, without telling the
    /// server: their messages were purged, so their receipts must stop
    /// working (other hosts' receipts of a purged message fail when used:
    /// the server no longer has it).
    pub(crate) fn forget(&self, queue: &str) {
        self.held().retain(|_, lease| lease.queue != queue);
    }

    /// Acknowledges a delivery that was never handed out (an expired message,
    /// one moved to its poison queue, a delayed one that was promoted).
    pub(crate) async fn ack(&self, reply: String) {
        self.tell(reply, AckKind::Ack).await;
    }

    /// Asks for a delivery again after `delay` (a delayed message not yet due).
    pub(crate) async fn nak(&self, reply: String, delay: Duration) {
        self.tell(reply, AckKind::Nak(Some(delay))).await;
    }

    /// Keeps every lease to its deadline, forever (the broker aborts it).
    pub(crate) async fn keep(self: std::sync::Arc<Self>) {
        let tick = (self.ack_wait / 5).clamp(Duration::from_millis(20), Duration::from_millis(200));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = Instant::now();
            let mut messages = Vec::new();
            {
                let mut held = self.held();
                held.retain(|_, lease| {
                    if lease.deadline <= now {
                        messages.push((lease.reply.clone(), AckKind::Nak(None)));
                        return false;
                    }
                    if now.duration_since(lease.heard_at) >= self.ack_wait / 3 {
                        lease.heard_at = now;
                        messages.push((lease.reply.clone(), AckKind::Progress));
                    }
                    true
                });
            }
            for (reply, kind) in messages {
                self.tell(reply, kind).await;
            }
        }
    }
}
