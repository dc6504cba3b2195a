//! {{name}}: a Weft WASI 0.3 web role, an async function from a request to
//! a response. `GET /` answers the role's `greeting` setting; `POST /echo`
//! answers the request's body back. Other paths answer 404.

use weft_sdk::web_p3::{ErrorCode, Method, Request, Response, read_body, text};

/// Answered when the manifest declares no `greeting`.
const DEFAULT_GREETING: &str = "Hello from {{name}}!";

/// The most `POST /echo` reads. The host bounds every body as well, by the
/// role's `max-request-body-kib` limit; this bounds what the guest holds.
const MAX_ECHO: usize = 1024 * 1024;

async fn handle(request: Request) -> Result<Response, ErrorCode> {
    let path = request.get_path_with_query().unwrap_or_default();
    match (request.get_method(), path.as_str()) {
        (Method::Get, "/") => text(200, greeting() + "\n"),
        (Method::Post, "/echo") => text(200, read_body(request, MAX_ECHO).await?),
        (_, "/" | "/echo") => text(405, "method not allowed\n"),
        _ => text(404, "not found\n"),
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

weft_sdk::web_role_p3!(handle);
