//! Web roles: components that serve HTTP through the standard
//! `wasi:http/incoming-handler` export.
//!
//! Weft adds no HTTP API of its own: a web role is an async function from a
//! [`wstd`] request to a [`wstd`] response, and [`web_role!`](crate::web_role)
//! exports it. wstd (maintained by the Bytecode Alliance) provides the
//! request, response and body types, an outgoing HTTP client, timers and
//! randomness; it is re-exported as [`weft_sdk::wstd`](crate::wstd) so a role
//! needs no other dependency.
//!
//! Each request runs to completion on wstd's single-threaded executor before
//! the host sends the response; the queue, key-value and config calls of
//! this crate are synchronous and can be called from the handler directly.
//!
//! Build a web role as a `cdylib` (`[lib] crate-type = ["cdylib"]`, code in
//! `src/lib.rs`):
//!
//! ```no_run
//! use weft_sdk::wstd::http::{Body, Error, Request, Response};
//!
//! async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
//!     let greeting = format!("Hello from {}!\n", request.uri().path());
//!     Ok(Response::new(greeting.into()))
//! }
//!
//! weft_sdk::web_role!(handle);
//! # fn main() {}
//! ```
//!
//! Alternatively, write the role as a binary (`src/main.rs`) with wstd's own
//! attribute, which does the same export and adds a `fn main` the host never
//! calls. The attribute expands to `::wstd::...` paths, so add `wstd` to the
//! role's dependencies too:
//!
//! ```no_run
//! # extern crate wstd;
//! use wstd::http::{Body, Error, Request, Response};
//!
//! #[wstd::http_server]
//! async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
//!     Ok(Response::new("Hello!\n".into()))
//! }
//! ```

/// Exports an async handler as the component's `wasi:http/incoming-handler`.
///
/// The argument is the path of an
/// `async fn(Request<Body>) -> Result<Response<B>, wstd::http::Error>` (with
/// `B: Into<Body>`; all types from [`wstd::http`](crate::wstd::http)). Invoke
/// it once per component, at module level.
///
/// For each request the export converts the incoming request, awaits the
/// handler on wstd's executor and sends the response. If the handler
/// returns `Err`, the host answers with an internal error (or with the
/// `ErrorCode` the error wraps). If sending the body fails (the client went
/// away), the failure is logged to stderr.
#[macro_export]
macro_rules! web_role {
    ($handler:path) => {
        const _: () = {
            struct WeftWebRole;

            impl $crate::__private::wasip2::exports::http::incoming_handler::Guest for WeftWebRole {
                fn handle(
                    request: $crate::__private::wasip2::http::types::IncomingRequest,
                    response_out: $crate::__private::wasip2::http::types::ResponseOutparam,
                ) {
                    $crate::__private::serve(request, response_out, $handler)
                }
            }

            $crate::__private::wasip2::http::proxy::export!(
                WeftWebRole with_types_in $crate::__private::wasip2
            );
        };
    };
}

/// What [`web_role!`] expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    pub use wasip2;
    use wasip2::http::types::{IncomingRequest, ResponseOutparam};
    use wstd::http::server::Responder;
    use wstd::http::{Body, Error, Request, Response};

    /// Serves one request with `handler`, as wstd's `http_server` does, but
    /// logs a failure to send the body instead of panicking.
    pub fn serve<F, Fut, B>(request: IncomingRequest, response_out: ResponseOutparam, handler: F)
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: Future<Output = Result<Response<B>, Error>>,
        B: Into<Body>,
    {
        let responder = Responder::new(response_out);
        wstd::runtime::block_on(async move {
            let request = match wstd::http::request::try_from_incoming(request) {
                Ok(request) => request,
                Err(e) => return responder.fail(e),
            };
            match handler(request).await {
                Ok(response) => {
                    if let Err(e) = responder.respond(response).await {
                        eprintln!("weft-sdk: sending the response failed: {e:#}");
                    }
                }
                Err(e) => responder.fail(e),
            }
        })
    }
}
