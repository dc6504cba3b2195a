//! A web role's side of the lifecycle hooks ([`crate::hooks`]): a web role
//! gets a fresh sandbox per request, so it runs `start` and `stop` once per
//! version of the role, each in a sandbox of its own.

use super::WebRole;
use crate::cpu::run_scheduled;
use crate::error::GuestFailure;
use crate::hooks::Hook;
use crate::sandbox::{Failed, sandbox_store, settle_cpu};

impl WebRole {
    /// Whether the role's component exports lifecycle hooks.
    pub fn has_hooks(&self) -> bool {
        self.hooks.is_some()
    }

    /// Runs the role's `start` hook, if it has one, in a sandbox of its
    /// own: a version of a web role takes no request until this returns Ok.
    pub async fn start_hook(&self) -> Result<(), GuestFailure> {
        self.hook_in_fresh_sandbox(Hook::Start).await
    }

    /// Runs the role's `stop` hook, if it has one, in a sandbox of its own,
    /// bounded by the role's stop grace period.
    pub async fn stop_hook(&self) -> Result<(), GuestFailure> {
        self.hook_in_fresh_sandbox(Hook::Stop).await
    }

    async fn hook_in_fresh_sandbox(&self, hook: Hook) -> Result<(), GuestFailure> {
        let Some(hooks) = &self.hooks else {
            return Ok(());
        };
        let version = &self.version;
        let limits = *version.limits();
        let mut store = sandbox_store(
            self.pre.engine(),
            version,
            hook.name().to_owned(),
            version.vmbus(),
        )?;
        let spot = store.data().cpu.parking_spot();
        let instance = run_scheduled(spot, self.pre.instantiate_async(&mut store))
            .await
            .map_err(|e| Failed::Instantiating(e).explain(store.data(), &limits))?;
        let result = hooks.call(hook, &mut store, &instance).await;
        settle_cpu(&mut store);
        if let Err(failure) = &result {
            version.usage.add_failure(failure);
        }
        result
    }
}
