//! The native baseline: a plain hyper HTTP/1.1 server doing natively what
//! the benchmark guests do in wasm. `GET /` answers `hello from wstd` (as
//! the `wstd-hello` guest does), and `POST /order` runs the very code of the
//! `json-web` guest (its `order.rs`, compiled natively).

#[path = "../../tests/guests/json-web/src/order.rs"]
pub mod order;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

/// Serves on `addr` until killed, on tokio's default multi-threaded
/// runtime (one thread per CPU), as a small native service would.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}

async fn answer(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/order" {
        return Ok(reply(StatusCode::OK, b"hello from wstd".to_vec()));
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, e.to_string().into_bytes())),
    };
    Ok(match order::summarize(&body) {
        Ok(json) => {
            let mut response = reply(StatusCode::OK, json);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(reason) => reply(StatusCode::BAD_REQUEST, reason.into_bytes()),
    })
}
