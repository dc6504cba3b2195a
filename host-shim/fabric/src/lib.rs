//! Weft's fabric: many `weft host` processes as one, on NATS JetStream.
//!
//! The classic cloud fabric's controller placed guests on the machines of a
//! datacenter, healed them when a machine died and upgraded them domain by
//! domain. Weft's fabric does the same for services on `weft host`s, and
//! keeps every piece of shared state in an engine users already run: NATS
//! JetStream. Weft has no consensus, replication or membership protocol of
//! its own.
//!
//! The modules, from the records up:
//!
//! - [`names`]: buckets, keys, and the checks on host ids and labels.
//! - [`model`]: the records kept there (leader, members, desired state,
//!   placement, heartbeats).
//! - `error`: [`FabricError`], each failure a typed one-line message.
//! - [`store`]: the connection and typed compare-and-set reads and writes.
//! - [`blobs`]: components in the fabric's object store, by digest.
//! - [`signing`]: operators' keys, and their signatures over desired state.
//! - [`desired`]: which signed revision of `svc.<name>` may be run, the
//!   one check the leader, each agent and the operator all make.
//! - [`placement`]: which host runs which instance (pure, no I/O).
//! - [`lease`]: the leader's lease, held by one host at a time.
//! - [`leader`]: the leader's loop: judge members, place, heal, roll out.
//! - [`agent`]: what every member runs: its beat, and applying its part.
//! - [`member`]: a `weft host` joining, running and leaving a fabric.
//! - [`ops`]: the operator's changes and reports (the CLI's library).
//! - [`admin_view`]: the fabric as a member's admin API reports it.
//! - `test_support` (tests only): a real `nats-server` to test against.
//!
//! The lifecycle of a host in a fabric: it joins (writes `host.<id>`),
//! beats every second (`beat.<id>`), campaigns for the leader's lease
//! (`leader`); the one that holds it judges the members (`hstate.<id>`)
//! and places each service (`assign.<name>`) from its signed desired state
//! (`svc.<name>`); every member applies to its own controller the part of
//! each service the leader assigned it, once the service's desired state
//! verifies against the fabric's operators' keys, downloading the
//! components it lacks; on leaving it steps down and stops beating, and
//! the leader moves its instances elsewhere.

pub mod admin_view;
pub mod agent;
pub mod blobs;
pub mod desired;
mod error;
pub mod leader;
pub mod lease;
pub mod member;
pub mod model;
pub mod names;
pub mod ops;
pub mod placement;
pub mod signing;
pub mod store;
#[cfg(test)]
mod test_support;

pub use error::FabricError;
