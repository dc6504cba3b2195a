//! The smallest Weft web role: `GET /` answers `Hello from Weft!`, or the
//! role's `greeting` setting when the manifest sets one.

use weft_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    if request.uri().path() != "/" {
        return reply(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if request.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    let greeting = match weft_sdk::config::get("greeting") {
        Ok(Some(greeting)) => greeting,
        Ok(None) => "Hello from Weft!".to_owned(),
        Err(e) => {
            eprintln!("hello-web: reading the greeting failed: {e}");
            "Hello from Weft!".to_owned()
        }
    };
    reply(StatusCode::OK, greeting)
}

fn reply(status: StatusCode, body: String) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(status).body(body.into())?)
}

weft_sdk::web_role!(handle);
