//! An instance's lifecycle, in the manner of the classic cloud fabric's
//! role entry point (OnStart, Run, OnStop).
//!
//! The host moves every instance through *starting*, *ready*, *draining*
//! and *stopped* (or *failed*). It asks an instance to stop when its role is
//! upgraded, scaled down, reconfigured or shut down: from then on
//! [`stopping`] answers `true` and [`queue::receive`](crate::queue::receive)
//! returns no messages, at once. [`Worker::run`](crate::worker::Worker::run)
//! handles this for you: it finishes the batch it holds and returns
//! `Ok(())`, so `main` returns and the instance stops cleanly.
//!
//! A role may also export two hooks, with [`role_hooks!`](crate::role_hooks):
//!
//! * `start` runs before the instance is ready: for a worker, in the
//!   instance before `main`; for a web role, once per version of the role,
//!   before that version takes any request. Return `Err` to refuse to start
//!   (a worker instance is restarted with backoff; a web version never takes
//!   traffic, and an upgrade to it is rolled back).
//! * `stop` runs when the instance winds down: for a worker, after `main`
//!   returned; for a web role, once the version has drained. The host bounds
//!   it by the role's `stop-grace-ms`.
//!
//! ```no_run
//! struct Hooks;
//!
//! impl weft_sdk::lifecycle::Hooks for Hooks {
//!     fn start() -> Result<(), String> {
//!         let bucket = weft_sdk::kv::Bucket::open("state").map_err(|e| e.to_string())?;
//!         bucket.set("started", "yes").map_err(|e| e.to_string())
//!     }
//!
//!     fn stop() {
//!         eprintln!("goodbye");
//!     }
//! }
//!
//! weft_sdk::role_hooks!(Hooks);
//! # fn main() {}
//! ```

/// Whether the host has asked this instance to stop. Always `false` in a
/// web role's request: a request is bounded by its deadline instead.
pub fn stopping() -> bool {
    crate::bindings::weft::vmbus::lifecycle::stopping()
}

/// A role's lifecycle hooks; export them with [`role_hooks!`](crate::role_hooks).
/// Both have defaults that do nothing.
pub trait Hooks {
    /// Prepares the instance; an `Err` keeps it from becoming ready.
    fn start() -> Result<(), String> {
        Ok(())
    }

    /// Winds the instance down, within the role's stop grace period.
    fn stop() {}
}

/// Exports a type's [`Hooks`](crate::lifecycle::Hooks) as the component's
/// `weft:vmbus/hooks`. Invoke it once per component, at module level, beside
/// [`web_role!`](crate::web_role) or a worker's `main`.
#[macro_export]
macro_rules! role_hooks {
    ($hooks:ty) => {
        const _: () = {
            struct WeftRoleHooks;

            impl $crate::bindings::hooks::exports::weft::vmbus::hooks::Guest for WeftRoleHooks {
                fn start() -> ::core::result::Result<(), ::std::string::String> {
                    <$hooks as $crate::lifecycle::Hooks>::start()
                }

                fn stop() {
                    <$hooks as $crate::lifecycle::Hooks>::stop()
                }
            }

            $crate::bindings::hooks::__export_role_hooks!(WeftRoleHooks with_types_in $crate::bindings::hooks);
        };
    };
}
