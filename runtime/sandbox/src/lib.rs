//! Weft's sandbox: the wasmtime engine, per-guest limits, and the host side
//! of the VMBus.
//!
//! # Concepts
//!
//! - A **role** is a Wasm component. A *web role* exports the standard
//!   `wasi:http/incoming-handler` and gets a fresh sandbox per request
//!   ([`WebRole`]). A *worker role* is run through the standard `wasi:cli/run`
//!   entry and pulls its work from queues ([`WorkerRole`]).
//! - A **sandbox** is one wasmtime store with its own linear memory, capped
//!   ([`SandboxLimits::memory_mib`]); a fuel budget per request or received
//!   batch ([`SandboxLimits::fuel`]); a wall-clock deadline covering host
//!   calls too ([`SandboxLimits::deadline_ms`]); and no ambient authority: no
//!   files (unless a scratch folder is granted), no environment, no sockets,
//!   no outgoing HTTP. Its stdout and stderr go to the host's log
//!   ([`guest_log`]).
//! - The **VMBus** ([`vmbus`]) is a guest's only way out: queues
//!   (`weft:vmbus/queue`), key-value (`wasi:keyvalue/store`) and settings
//!   (`wasi:config/store`), each checked against the role's [`Grants`] and
//!   passed through the role's token buckets ([`rate_limit`], [`RateLimits`]).
//! - The **broker** ([`broker`]) stores queues and buckets behind the
//!   [`QueueBroker`] and [`KvStore`] traits: [`MemoryBroker`] in process,
//!   [`broker::EmbeddedBroker`] durable on local disk (the default of
//!   `weft up`), [`broker::NatsBroker`] on NATS JetStream across hosts; one
//!   conformance suite holds all three to the same semantics.
//!
//! # Lifecycle
//!
//! 1. [`Runtime::new`] builds the one engine of a host (component model,
//!    async, fuel, epoch interruption, pooling allocator) from an
//!    [`EngineConfig`], and links every interface once per role kind.
//! 2. [`Runtime::web_role`] / [`Runtime::worker_role`] compile a component
//!    (or load it from the on-disk cache, keyed by content hash) and
//!    pre-instantiate it against its kind's linker, with a [`RoleSpec`].
//! 3. [`WebRole::handle`] serves a hyper request; [`WorkerRole::run_instance`]
//!    runs a worker instance until it returns, fails or is stopped. A
//!    failure ([`GuestFailure`]) ends only that request or instance.
//! 4. A role may export lifecycle hooks (`weft:vmbus/hooks`: `start`,
//!    `stop`; see `wit/lifecycle.wit`). A worker instance runs them around
//!    `run` and is asked to stop through `weft:vmbus/lifecycle`
//!    ([`WorkerRole::run_instance_with`]); a web role runs them once per
//!    version ([`WebRole::start_hook`], [`WebRole::stop_hook`]).

mod body;
mod cache;
pub mod config;
pub mod cpu;
pub mod egress;
mod engine;
mod error;
pub mod guest_log;
mod hooks;
mod memory;
pub mod private_fs;
pub mod rate_limit;
mod sandbox;
mod scratch;
mod tenant;
pub mod usage;
pub mod vmbus;
mod web;
mod worker;

pub use cache::CacheStats;
pub use config::{CpuShare, EngineConfig, Grants, InvalidSetting, SandboxLimits};
pub use cpu::CpuScheduler;
pub use egress::{EgressAllowlist, InvalidOrigin, Origin};
pub use engine::{RoleSpec, Runtime};
pub use error::{GuestFailure, RuntimeError};
pub use rate_limit::RateLimits;
pub use sandbox::SCRATCH_GUEST_PATH;
pub use usage::UsageSnapshot;
pub use web::{WebResponse, WebRole};
pub use worker::{InstancePhase, WorkerExit, WorkerRole};
