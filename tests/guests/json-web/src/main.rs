//! Benchmark guest: a plain `wasi:http` component (wstd alone, no weft-sdk,
//! so `wasmtime serve` runs it too) doing real work per request. `POST
//! /order` with a JSON order answers its totals as JSON (`order.rs`); a
//! malformed order gets 400 with the reason.

mod order;

use wstd::http::{Body, Error, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let body = request.into_body().contents().await?.to_vec();
    let (status, answer) = match order::summarize(&body) {
        Ok(json) => (StatusCode::OK, json),
        Err(reason) => (StatusCode::BAD_REQUEST, reason.into_bytes()),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(answer.into())?)
}
