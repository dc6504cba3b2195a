//! How the names a guest uses become the names a backend sees: scoped by
//! service, and a queue's poison queue beside it.

/// The suffix of the queue that takes messages delivered too often.
pub const POISON_SUFFIX: &str = "-poison";

/// The backend's name for a service's queue or bucket `name`: scoped by
/// service, so two services on one host (or sharing one NATS server) never
/// share a queue or a bucket by accident. The VMBus scopes every name a
/// guest passes; the host scopes the names an operator passes.
pub fn scoped(service: &str, name: &str) -> String {
    format!("{service}/{name}")
}

/// The poison queue of queue `name`.
pub fn poison_queue(name: &str) -> String {
    format!("{name}{POISON_SUFFIX}")
}
