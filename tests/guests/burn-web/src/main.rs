//! Benchmark guest: a plain `wasi:http` component (wstd alone, no
//! weft-sdk, so a bare wasmtime host runs it too). `GET /burn/{n}` runs `n`
//! million rounds of the `probe` guest's loop (the same source file, which
//! the benchmarks also compile natively) and answers the hash; any other
//! path answers `ok`.

#[path = "../../probe/src/burn.rs"]
mod burn;

use wstd::http::{Body, Error, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let answer = match request.uri().path().strip_prefix("/burn/") {
        Some(n) => match n.parse::<u64>() {
            Ok(n) => format!("burnt {}", burn::burn(n)),
            Err(_) => {
                return Ok(Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body("not a number".into())?);
            }
        },
        None => "ok".to_owned(),
    };
    Ok(Response::new(answer.into()))
}
