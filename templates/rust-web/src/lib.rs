//! {{name}}: a Weft web role. `GET /` answers the role's `greeting` setting;
//! `POST /echo` answers the request's body back. Other paths answer 404.

use weft_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

/// Answered when the manifest declares no `greeting`.
const DEFAULT_GREETING: &str = "Hello from {{name}}!";

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => reply(StatusCode::OK, greeting().into()),
        (&Method::POST, "/echo") => {
            // The host has already bounded the body's size (the role's
            // `max-request-body-kib` limit).
            let body = request.into_body().bytes_contents().await?;
            reply(StatusCode::OK, body.into())
        }
        (_, "/" | "/echo") => reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// The `greeting` setting, or the default when it is unset or unreadable.
fn greeting() -> String {
    match weft_sdk::config::get("greeting") {
        Ok(Some(greeting)) => greeting,
        Ok(None) => DEFAULT_GREETING.to_owned(),
        Err(e) => {
            eprintln!("{{name}}: reading the greeting failed: {e}");
            DEFAULT_GREETING.to_owned()
        }
    }
}

fn reply(status: StatusCode, body: Body) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(status).body(body)?)
}

weft_sdk::web_role!(handle);
