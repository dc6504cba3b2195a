//! Test guest: a plain `wasi:http` component built with wstd's
//! `#[wstd::http_server]` and no weft-sdk, to prove Weft serves standard
//! components. `GET /` answers `hello from wstd`; any other path answers
//! `path: <path>`.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let body = match request.uri().path() {
        "/" => "hello from wstd".to_owned(),
        path => format!("path: {path}"),
    };
    Ok(Response::new(body.into()))
}
