//! Host side of the standard `wasi:config/store`: the settings the role's
//! manifest gives it, read-only.

use super::VmBusView;
use super::bindings::wasi::config::store::{Error, Host};

impl Host for VmBusView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(self.ctx.grants.settings.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(Ok(self
            .ctx
            .grants
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
