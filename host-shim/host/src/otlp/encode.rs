//! Finished spans as OTLP's `ExportTraceServiceRequest`: one resource
//! (`service.name = "weft"`, `host.name`, `host.id`), one instrumentation
//! scope (`weft`), the spans with their attributes.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use std::time::SystemTime;
use weft_sandbox::FinishedSpan;
use weft_sandbox::trace::{AttributeValue, SpanKind};

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn attribute(key: &str, value: AttributeValue) -> KeyValue {
    let value = match value {
        AttributeValue::Text(text) => any_value::Value::StringValue(text),
        AttributeValue::Int(n) => any_value::Value::IntValue(n),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The resource all of this host's spans share.
pub(super) fn resource(host_name: &str) -> Resource {
    Resource {
        attributes: vec![
            text("service.name", "weft"),
            text("host.name", host_name),
            text("host.id", host_name),
        ],
        ..Resource::default()
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

fn kind(kind: SpanKind) -> span::SpanKind {
    match kind {
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }
}

fn span(finished: FinishedSpan) -> Span {
    Span {
        trace_id: finished.trace_id.0.to_vec(),
        span_id: finished.span_id.0.to_vec(),
        parent_span_id: finished
            .parent_span_id
            .map(|id| id.0.to_vec())
            .unwrap_or_default(),
        name: finished.name.to_owned(),
        kind: kind(finished.kind) as i32,
        start_time_unix_nano: nanos(finished.start),
        end_time_unix_nano: nanos(finished.end),
        attributes: finished
            .attributes
            .into_iter()
            .map(|(key, value)| attribute(key, value))
            .collect(),
        ..Span::default()
    }
}

/// One export request carrying `spans` under `resource`.
pub fn export_request(resource: &Resource, spans: Vec<FinishedSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.into_iter().map(span).collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use weft_sandbox::trace::{SpanId, TraceId};

    #[test]
    fn a_span_survives_encoding_with_ids_times_and_attributes() {
        let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let finished = FinishedSpan {
            name: "weft.request",
            kind: SpanKind::Server,
            trace_id: TraceId([7; 16]),
            span_id: SpanId([8; 8]),
            parent_span_id: Some(SpanId([9; 8])),
            start,
            end: start + std::time::Duration::from_millis(5),
            attributes: vec![
                ("weft.role", AttributeValue::Text("web".into())),
                ("weft.fuel", AttributeValue::Int(42)),
            ],
        };
        let bytes = export_request(&resource("box"), vec![finished]).encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let resource_spans = &decoded.resource_spans[0];
        let resource = resource_spans.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0], text("service.name", "weft"));
        assert_eq!(resource.attributes[1], text("host.name", "box"));
        let span = &resource_spans.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, vec![7; 16]);
        assert_eq!(span.parent_span_id, vec![9; 8]);
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            5_000_000
        );
        assert_eq!(span.attributes[0], text("weft.role", "web"));
        assert_eq!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
    }
}
