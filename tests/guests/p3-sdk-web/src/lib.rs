//! A WASIp3 web role written with weft-sdk: `/` greets with the role's
//! `greeting` setting (a VMBus call), `POST /echo` answers the body back.
//! It exports lifecycle hooks too: `start` refuses when the setting
//! `refuse-start` is present.

use weft_sdk::web_p3::{ErrorCode, Method, Request, Response, read_body, text};

async fn handle(request: Request) -> Result<Response, ErrorCode> {
    let path = request.get_path_with_query().unwrap_or_default();
    match (request.get_method(), path.as_str()) {
        (Method::Post, "/echo") => {
            let body = read_body(request, 64 * 1024).await?;
            text(200, body)
        }
        (_, "/") => {
            let greeting = weft_sdk::config::get("greeting")
                .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?
                .unwrap_or_else(|| "hello".into());
            text(200, format!("{greeting} from the p3 SDK\n"))
        }
        _ => text(404, "no such path\n"),
    }
}

weft_sdk::web_role_p3!(handle);

struct Hooks;

impl weft_sdk::lifecycle::Hooks for Hooks {
    fn start() -> Result<(), String> {
        match weft_sdk::config::get("refuse-start") {
            Ok(Some(why)) => Err(why),
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

weft_sdk::role_hooks!(Hooks);
