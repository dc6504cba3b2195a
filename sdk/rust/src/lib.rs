//! The guest side of Weft: write Weft roles in Rust and compile them to
//! `wasm32-wasip2` components.
//!
//! # Core concepts
//!
//! A Weft *service* is a set of *roles*, described by a `weft.toml`. Each
//! role is a WebAssembly component that the host runs in a sandbox, in as
//! many instances as the manifest asks:
//!
//! * a **web role** serves HTTP. It exports the standard
//!   `wasi:http/incoming-handler`; write an async handler with [`wstd`]'s
//!   types and export it with [`web_role!`] (see [`web`]). Or it exports
//!   WASIp3's `wasi:http/handler@0.3.0`, an async handler returning its
//!   response, with [`web_role_p3!`] (see [`web_p3`]); a host may then let
//!   one instance serve several requests at once.
//! * a **worker role** has no outside contact. It is a Rust binary whose
//!   `fn main` pulls messages from a queue; [`Worker`](worker::Worker) runs
//!   that loop (see [`worker`]). The host restarts a worker that exits,
//!   unless it exits because the host asked it to stop.
//!
//! Both reach the rest of the service only through the *VMBus*, the imports
//! described in `wit/vmbus.wit`:
//!
//! * [`queue`]: at-least-once message queues with leases (receive, then
//!   complete or abandon);
//! * [`kv`]: key-value buckets (the standard `wasi:keyvalue/store`);
//! * [`config`]: the role's settings (the standard `wasi:config/store`);
//! * [`usage`]: what the host has measured of the role (fuel, CPU share,
//!   waits, rate-limited calls, memory, deadline), read-only;
//! * [`lifecycle`]: whether the host has asked the instance to stop, and
//!   optional `start` and `stop` hooks ([`role_hooks!`]).
//!
//! A role may use only the queues and buckets its manifest lists; anything
//! else fails with a *denied* error rather than trapping. Every VMBus call is
//! synchronous, returns a typed error, and may be rate limited by the host:
//! [`Error::is_transient`] tells which failures are worth retrying.
//!
//! # Example: a worker role
//!
//! ```no_run
//! use weft_sdk::kv::Bucket;
//! use weft_sdk::worker::Worker;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let results = Bucket::open("results")?;
//!     Worker::new("tasks").run(|message| {
//!         let words = message.body_str().map_or(0, |text| text.split_whitespace().count());
//!         results.set(message.id(), words.to_string())
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! # Example: a web role
//!
//! ```no_run
//! use weft_sdk::wstd::http::{Body, Error, Request, Response};
//!
//! async fn handle(_request: Request<Body>) -> Result<Response<Body>, Error> {
//!     let greeting = weft_sdk::config::get("greeting")?.unwrap_or_else(|| "Hello!".into());
//!     Ok(Response::new(greeting.into()))
//! }
//!
//! weft_sdk::web_role!(handle);
//! # fn main() {}
//! ```
//!
//! # Building
//!
//! Build roles with `cargo build --release --target wasm32-wasip2`. The
//! crate also compiles for the host so that it can be linted and tested
//! there, but its VMBus functions only work inside a Weft component.

mod backoff;
#[doc(hidden)]
pub mod bindings;
pub mod config;
mod error;
pub mod kv;
pub mod lifecycle;
pub mod queue;
pub mod usage;
pub mod web;
pub mod web_p3;
pub mod worker;

pub use error::{Error, Result};
#[doc(hidden)]
pub use web::__private;
pub use wstd;
