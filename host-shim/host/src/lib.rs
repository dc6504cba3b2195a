//! Weft's host: everything the `weft` process does besides parsing its
//! command line. The sandbox (`weft-sandbox`) runs one guest; the broker
//! (`weft-broker`) keeps queues and buckets; this crate runs services of
//! roles on them and lets an operator drive them.
//!
//! # Concepts
//!
//! - A **service** is a [`manifest`] (`weft.toml`): named **roles**, each a
//!   web role (a wasi:http component behind an address, a fresh sandbox per
//!   request) or a worker role (a fixed number of long-running instances),
//!   with the queues and buckets each may use and the limits that bound it.
//!   An [`environment`] overlay changes instance counts and settings; a
//!   [`local_part`] narrows a service that runs on many hosts to this
//!   host's roles.
//! - Its **backends** ([`backends`]) are the queues and buckets its roles
//!   share: an embedded store in its state folder, or a NATS server.
//! - The [`controller`] deploys, scales, upgrades (one upgrade domain at a
//!   time) and heals services; it records each in the state folder, so a
//!   host that starts again redeploys them. Worker instances restart under
//!   the [`supervisor`]'s policy; web roles are served by [`http_server`].
//! - The [`admin`] API (`/v1`, behind a bearer token) drives the
//!   controller; `/metrics` ([`metrics`]) and `/healthz` sit beside it.
//! - What a client may hold of the host is bounded by [`connections`]
//!   (connection pools, idle timeouts) and [`lingering`] (slow bodies).
//! - What guests print is kept per role by [`guest_output`] for `weft logs`.
//! - Each running service's queue lengths over the last minutes are kept by
//!   [`queue_history`], sampled by a task per host.
//!
//! # Lifecycle of a host
//!
//! [`launch`] holds the pieces a host is started from, given plain options:
//! it sizes the connection pools and the engine, makes the controller,
//! stages a folder's service into the state folder, and serves the admin
//! API. The binary puts them together: it runs a folder's build commands
//! ([`builder`]) before staging, deploys what it staged (`weft up`) or has
//! the controller restore the services the state folder records
//! ([`Controller::restore`], `weft host`), then waits for a signal and shuts
//! the controller down, then the admin server.

pub mod admin;
pub mod backends;
pub mod builder;
pub mod clock;
pub mod connections;
pub mod controller;
pub mod environment;
pub mod guest_output;
mod hex;
pub mod http_server;
pub mod launch;
pub mod lingering;
pub mod local_part;
pub mod manifest;
pub mod metrics;
pub mod otlp;
pub mod queue_history;
pub mod session_cookie;
pub mod supervisor;

pub use backends::Backends;
pub use controller::{Controller, ControllerError};
pub use guest_output::GuestOutput;
pub use launch::LaunchError;
pub use manifest::{Manifest, ManifestError, Role, RoleByKind, RoleKind};
