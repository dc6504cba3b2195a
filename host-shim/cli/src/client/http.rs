//! A small HTTP/1.1 client for the admin API: one connection per call,
//! the bearer token on every request, JSON in and out, and the server's
//! `{"error": ...}` turned into the error message.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long one call may take (a deploy compiles components first).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A client of one host's admin API.
pub struct Client {
    authority: String,
    token: String,
}

impl Client {
    /// A client of the admin API at `url` (`http://HOST:PORT`), presenting `token`.
    pub fn new(url: &str, token: String) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--admin {url}: not a URL like http://127.0.0.1:9070"))?;
        if uri.scheme_str() != Some("http") {
            bail!(
                "--admin {url}: only http:// is supported (keep the admin address on loopback or a private network)"
            );
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--admin {url}: no host and port"))?
            .to_string();
        Ok(Self { authority, token })
    }

    /// Sends one request; returns the status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let call = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("cannot reach the admin API at {}", self.authority))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, &self.authority)
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", self.token),
                )
                .header(http::header::CONTENT_TYPE, content_type)
                .body(Full::new(body))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .with_context(|| {
                format!("the admin API at {} did not answer in time", self.authority)
            })?
    }

    /// Sends `body` as JSON (or nothing) and reads a JSON answer; a non-2xx
    /// answer is an error carrying the server's message.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<T> {
        let bytes = match body {
            Some(body) => Bytes::from(serde_json::to_vec(body)?),
            None => Bytes::new(),
        };
        let (status, answer) = self.call(method, path, "application/json", bytes).await?;
        check(status, &answer)?;
        serde_json::from_slice(&answer).context("the admin API's answer is not the JSON expected")
    }
}

/// Ok for 2xx; otherwise the server's message as an error.
pub fn check(status: StatusCode, body: &[u8]) -> anyhow::Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    bail!("{status}: {message}")
}
