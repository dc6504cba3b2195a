//! A web role's one way out over HTTP: every outgoing request passes the
//! role's allowlist (deny by default) and its `egress` rate limits, and its
//! bodies pass the egress bytes bucket in both directions.
//!
//! There is no second path: WASI sockets and name lookup are off for every
//! guest (`sandbox.rs`), worker roles have no `wasi:http` at all, and
//! `wasi:http/outgoing-handler` reaches the network only through
//! `EgressHooks::send_request`. The allowed origins come from the manifest
//! alone: nothing in an incoming request (its `Host` header, say) widens
//! them, unlike Spin's `self` origin that CVE-2024-32980 abused. The guest
//! cannot set `Host` either (wasi-http forbids the header), so the request
//! goes to exactly the origin that was checked.
//!
//! Nor does a name reach past its origin: egress resolves it once, refuses
//! the addresses that are the host's own or its networks' (loopback,
//! private, link-local, the metadata service: `address::is_internal`)
//! unless the allowlist names that address itself, and connects to the
//! address it checked (`send`), so DNS cannot rebind it in between.
//!
//! `allowlist` holds the allowlist as data (what the manifest's
//! `egress.allow` parses into, part of a role's grants); this module holds
//! the hooks that enforce it.

mod address;
mod allowlist;
mod send;

pub use allowlist::{EgressAllowlist, InvalidOrigin, Origin};

use crate::body::MeteredBody;
use crate::grants::Grants;
use crate::rate_limit::{Interface, RoleLimiter};
use crate::usage::{Flow, RoleUsage};
use http_body_util::BodyExt;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The rate-limit bucket outgoing requests and their bodies draw on.
pub const BUCKET: Interface = Interface::Egress;

/// The `wasi:http` hooks of a guest: outgoing requests pass the allowlist
/// and the role's egress limits, then go out to a checked address ([`send`]).
pub(crate) struct EgressHooks {
    pub(crate) allow: Arc<Grants>,
    pub(crate) limiter: Arc<RoleLimiter>,
    pub(crate) usage: Arc<RoleUsage>,
}

type SendFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = wasmtime_wasi_http::Result<(http::Response<WasiBody>, SendFuture)>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: SendFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let allowed = self.allow.egress.allows(request.uri());
        let grants = self.allow.clone();
        let limiter = self.limiter.clone();
        let usage = self.usage.clone();
        let role = self.allow.role.clone();
        Box::new(async move {
            if !allowed {
                tracing::debug!(%role, uri = %request.uri(), "outgoing request denied: origin not allowed");
                return Err(HttpError::HttpRequestDenied);
            }
            if limiter.admit(BUCKET, 0).await.is_err() {
                return Err(HttpError::ConnectionLimitReached);
            }
            let request = request.map(|body| {
                MeteredBody::new(body, limiter.clone(), usage.clone(), Flow::EgressOut)
                    .boxed_unsync()
            });
            let (response, io) = send::send(&grants.egress, request, options).await?;
            let response = response
                .map(|body| MeteredBody::new(body, limiter, usage, Flow::EgressIn).boxed_unsync());
            Ok((response, Box::new(io) as SendFuture))
        })
    }
}
