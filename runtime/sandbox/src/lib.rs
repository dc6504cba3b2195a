//! Weft's sandbox: the wasmtime engine, per-guest limits, and the host side
//! of the VMBus.
//!
//! # Concepts
//!
//! - A **role** is a Wasm component. A *web role* exports the standard
//!   `wasi:http/incoming-handler` and gets a fresh sandbox per request
//!   ([`WebRole`]). A *worker role* is run through the standard `wasi:cli/run`
//!   entry and pulls its work from queues ([`WorkerRole`]).
//! - A role is given a [`RoleSpec`]: its [`Grants`] (what it may reach), its
//!   [`SandboxLimits`] (what bounds each sandbox), its [`RateLimits`] (token
//!   buckets per host interface), its [`CpuShare`], and the queue and bucket
//!   backends (the `weft-broker` crate's `QueueBroker` and `KvStore`).
//! - Each role the host prepares is one **version** of it (its first, or an
//!   upgrade): all the sandboxes of a version share one set of buckets, one
//!   CPU account, one memory pool and one set of usage counters
//!   ([`UsageSnapshot`]); versions side by side share only the scratch quota.
//! - A **sandbox** is one wasmtime store with its own linear memory, capped
//!   ([`SandboxLimits::memory_mib`]); a fuel budget per request or received
//!   batch ([`SandboxLimits::fuel`]); a wall-clock deadline covering host
//!   calls too ([`SandboxLimits::deadline_ms`]); and no ambient authority: no
//!   files (unless a scratch folder is granted, [`SCRATCH_GUEST_PATH`]), no
//!   environment, no sockets, no outgoing HTTP (unless origins are granted,
//!   [`egress`]). Its stdout and stderr go to the host's log on one target
//!   ([`guest_log::GUEST_LOG_TARGET`]).
//! - The **VMBus** ([`vmbus`]) is a guest's only way out: queues
//!   (`weft:vmbus/queue`), key-value (`wasi:keyvalue/store`) and settings
//!   (`wasi:config/store`), each checked against the role's [`Grants`];
//!   its usage as the host measured it (`weft:vmbus/usage`); and whether
//!   the host has asked it to stop (`weft:vmbus/lifecycle`). Every call but
//!   lifecycle's passes the role's token buckets ([`rate_limit`]).
//! - The **engine** ([`Runtime`]) is built once per host from an
//!   [`EngineConfig`]; its guests share the CPU by weight through the
//!   [`CpuScheduler`] ([`cpu`]).
//! - A **failure** ([`GuestFailure`]) ends only the request or instance it
//!   happened in. A web request's failure, and every refusal the host makes
//!   instead of a guest, is answered by [`failure_response`] or
//!   [`busy_response`], with an [`FAILURE_HEADER`] naming its kind.
//!
//! # Lifecycle
//!
//! 1. [`Runtime::new`] builds the one engine of a host (component model,
//!    async, fuel with yields, pooling allocator; no epoch interruption)
//!    from an [`EngineConfig`], and links every interface once per role
//!    kind.
//! 2. [`Runtime::web_role`] / [`Runtime::worker_role`] check a [`RoleSpec`],
//!    compile a component (or load it from the on-disk cache, keyed by
//!    content hash, [`CacheStats`]), pre-instantiate it against its kind's
//!    linker, and make a new version of the role.
//! 3. [`WebRole::handle`] serves a hyper request; [`WorkerRole::run_instance`]
//!    runs a worker instance until it returns, fails or is stopped
//!    ([`WorkerExit`]).
//! 4. A role may export lifecycle hooks (`weft:vmbus/hooks`: `start`,
//!    `stop`; see `wit/lifecycle.wit`). A worker instance runs them around
//!    `run` and is asked to stop through `weft:vmbus/lifecycle`
//!    ([`WorkerRole::run_instance_with`], which reports its
//!    [`InstancePhase`]); a web role runs them once per version
//!    ([`WebRole::start_hook`], [`WebRole::stop_hook`]).
//! 5. [`Runtime::usage`] reports what every live version has used.
//! 6. With a [`SpanSink`] installed ([`Runtime::with_span_sink`]), requests,
//!    queue calls and deliveries are recorded as spans ([`trace`]).
//!
//! # Modules
//!
//! Settings are data, in modules of their own: `engine_config` (the
//! engine's, [`EngineConfig`]), [`limits`] (each sandbox's), `grants` (what
//! a role may reach) and `role_spec` (all a role is given). The engine
//! (`engine`) makes roles (`web`, `worker`) whose sandboxes (`sandbox`)
//! share their version's state (`role_version`); the lifecycle hooks
//! (`hooks`), the scratch quota (`scratch`), memory caps (`memory`), metered
//! bodies (`body`) and the compiled-component cache (`cache`, on
//! [`private_fs`]) serve them. The module graph has no loops (checked by
//! `tests/module-loops.sh`): a type two modules share lives in a third.

mod body;
mod cache;
pub mod cpu;
pub mod egress;
mod engine;
mod engine_config;
mod error;
mod grants;
pub mod guest_log;
mod hooks;
pub mod limits;
mod memory;
pub mod private_fs;
pub mod rate_limit;
mod role_spec;
mod role_version;
mod sandbox;
mod scratch;
pub mod trace;
pub mod usage;
pub mod vmbus;
mod web;
mod worker;

pub use cache::CacheStats;
pub use cpu::{CpuScheduler, CpuShare};
pub use egress::{EgressAllowlist, InvalidOrigin, Origin};
pub use engine::Runtime;
pub use engine_config::{DEFAULT_FUEL_YIELD_INTERVAL, EngineConfig};
pub use error::{GuestFailure, RuntimeError};
pub use grants::Grants;
pub use limits::{InvalidSetting, SandboxLimits};
pub use rate_limit::RateLimits;
pub use role_spec::RoleSpec;
pub use sandbox::SCRATCH_GUEST_PATH;
pub use trace::{FinishedSpan, SpanSink};
pub use usage::UsageSnapshot;
pub use web::{FAILURE_HEADER, WebResponse, WebRole, busy_response, failure_response};
pub use worker::{InstancePhase, WorkerExit, WorkerRole};
