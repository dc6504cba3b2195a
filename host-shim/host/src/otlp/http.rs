//! OTLP/HTTP: each batch POSTed as protobuf to the collector's
//! `/v1/traces`, on one kept-alive HTTP/1.1 connection (made again when it
//! breaks), each export bounded by a timeout that covers connecting too.

use super::batch::Export;
use super::encode::{export_request, resource};
use super::error::OtlpError;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::time::Duration;
use tokio::net::TcpStream;
use weft_sandbox::FinishedSpan;

/// The most of a collector's answer read (its body says little we use).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where spans go: the collector's address and its `/v1/traces`.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    /// The full `http://host:port/.../v1/traces`.
    uri: Uri,
}

impl Endpoint {
    /// Reads `http://HOST[:PORT][/PATH]` (no query); spans go to `PATH/v1/traces`.
    pub(super) fn parse(url: &str) -> Result<Self, OtlpError> {
        let bad = |reason: &str| OtlpError::BadEndpoint {
            url: url.chars().take(200).collect(),
            reason: reason.into(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(OtlpError::Https(url.chars().take(200).collect())),
            _ => return Err(bad("the scheme must be http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("no host, or user info"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let authority = format!("{}:{port}", authority.host());
        let base = uri.path().trim_end_matches('/');
        let uri = format!("http://{authority}{base}/v1/traces")
            .parse()
            .map_err(|_| bad("not a URL"))?;
        Ok(Self { authority, uri })
    }
}

/// Exports batches to one collector.
pub(super) struct HttpExport {
    endpoint: Endpoint,
    resource: Resource,
    timeout: Duration,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl HttpExport {
    pub(super) fn new(endpoint: Endpoint, host_name: &str, timeout: Duration) -> Self {
        Self {
            endpoint,
            resource: resource(host_name),
            timeout,
            connection: None,
        }
    }

    /// The connection kept from the last export, if it is still usable,
    /// else a new one.
    async fn connection(&mut self) -> Result<SendRequest<Full<Bytes>>, String> {
        if let Some(mut sender) = self.connection.take()
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        let stream = TcpStream::connect(&self.endpoint.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn post(&mut self, body: Vec<u8>) -> Result<(), String> {
        let mut sender = self.connection().await?;
        let request = Request::post(self.endpoint.uri.clone())
            .header(header::HOST, &self.endpoint.authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the collector did not answer: {e}"))?;
        let status = response.status();
        // Read the answer out so the connection can carry the next batch.
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the collector's answer: {e}"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer.to_bytes())
                .chars()
                .take(200)
                .collect::<String>();
            return Err(format!("the collector answered {status}: {text}"));
        }
        self.connection = Some(sender);
        Ok(())
    }
}

impl Export for HttpExport {
    async fn export(&mut self, spans: Vec<FinishedSpan>) -> Result<(), String> {
        let body = export_request(&self.resource, spans).encode_to_vec();
        match tokio::time::timeout(self.timeout, self.post(body)).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => {
                // Whatever the connection was doing, it is no use now.
                self.connection = None;
                Err(format!(
                    "no answer from {} within {} s",
                    self.endpoint.uri,
                    self.timeout.as_secs()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_and_spans_go_to_v1_traces() {
        let plain = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(plain.uri.to_string(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(plain.authority, "127.0.0.1:4318");
        let path = Endpoint::parse("http://collector/otlp/").unwrap();
        assert_eq!(path.uri.to_string(), "http://collector:80/otlp/v1/traces");
        assert!(matches!(
            Endpoint::parse("https://collector:4318"),
            Err(OtlpError::Https(_))
        ));
        for bad in [
            "",
            "collector:4318",
            "ftp://x",
            "http://",
            "http://a@b:1",
            "http://x/?q=1",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(OtlpError::BadEndpoint { .. })),
                "{bad:?}"
            );
        }
    }
}
