//! The wasmtime baseline: the same components on a bare wasmtime engine
//! with the least host a `wasi:http` component needs (WASI and `wasi:http`,
//! nothing metered, nothing checked), as `wasmtime serve` would run them.
//! Weft's figures are divided by these to show what Weft adds.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// wasmtime's errors as anyhow's (wasmtime 48 has an error type of its own).
trait Anyhow<T> {
    fn or_anyhow(self) -> anyhow::Result<T>;
}

impl<T> Anyhow<T> for wasmtime::Result<T> {
    fn or_anyhow(self) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::anyhow!("{e:?}"))
    }
}

/// What a bare engine meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metering {
    /// Nothing: wasm as fast as wasmtime runs it.
    None,
    /// Fuel consumed (a budget it never reaches), no yields.
    Fuel,
    /// Fuel, and epoch checks (a deadline never reached), no yields.
    FuelAndEpochs,
}

/// A bare store's data: WASI granting nothing, and `wasi:http`.
pub struct BareState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for BareState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// A component pre-instantiated on a bare engine.
pub struct Bare {
    engine: Engine,
    pre: ProxyPre<BareState>,
    metering: Metering,
}

impl Bare {
    /// Loads `component` (a plain `wasi:http` component) on a bare engine
    /// with wasmtime's pooling allocator at its defaults.
    pub fn new(component: &str, metering: Metering) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(metering != Metering::None)
            .epoch_interruption(metering == Metering::FuelAndEpochs)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(
                PoolingAllocationConfig::default(),
            ));
        let engine = Engine::new(&config).or_anyhow()?;
        let component = Component::from_file(&engine, Path::new(component)).or_anyhow()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).or_anyhow()?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).or_anyhow()?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component).or_anyhow()?).or_anyhow()?;
        Ok(Self {
            engine,
            pre,
            metering,
        })
    }

    fn store(&self) -> anyhow::Result<Store<BareState>> {
        let mut store = Store::new(
            &self.engine,
            BareState {
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        if self.metering != Metering::None {
            store.set_fuel(u64::MAX / 2).or_anyhow()?;
        }
        if self.metering == Metering::FuelAndEpochs {
            store.set_epoch_deadline(u64::MAX / 2);
        }
        Ok(store)
    }

    /// A store and an instance in it, dropped at once.
    pub async fn instantiate(&self) -> anyhow::Result<()> {
        let mut store = self.store()?;
        self.pre.instantiate_async(&mut store).await.or_anyhow()?;
        Ok(())
    }

    /// One request in a fresh instance, its body read whole: the status.
    pub async fn request(&self, method: &str, path: &str, body: Bytes) -> anyhow::Result<u16> {
        let mut store = self.store()?;
        let proxy = self.pre.instantiate_async(&mut store).await.or_anyhow()?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://bench{path}"))
            .body(Full::new(body))?;
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .or_anyhow()?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .or_anyhow()?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await
            .or_anyhow()?;
        let response = receiver.await??;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}
