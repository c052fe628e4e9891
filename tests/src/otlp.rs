//! An in-process OTLP/HTTP trace receiver: what a collector would see from
//! nodes started with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use serde_json::Value;

/// One received span, reduced to what tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// Span name (`publish`, `deliver`, …).
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root span.
    pub parent_span_id: String,
    /// The resource's `service.name`.
    pub service: String,
    /// The resource's `service.instance.id` (the node id).
    pub instance: String,
}

/// A receiver listening on 127.0.0.1; it lives as long as the test's runtime.
pub struct OtlpReceiver {
    /// Where it listens; use `http://{addr}` as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
}

impl OtlpReceiver {
    /// Starts the receiver on an ephemeral port (inside a tokio runtime).
    pub async fn start() -> OtlpReceiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver { addr, spans }
    }

    /// The endpoint to export to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().expect("spans lock").clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<SpanRecord>>>>,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "{}");
    };
    let parsed = parse_export_request(&request);
    spans.lock().expect("spans lock").extend(parsed);
    (StatusCode::OK, "{}")
}

/// Flattens an OTLP/JSON `ExportTraceServiceRequest`.
pub fn parse_export_request(request: &Value) -> Vec<SpanRecord> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut out = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let attributes = resource_spans["resource"]["attributes"].as_array();
        let attribute = |key: &str| {
            attributes
                .into_iter()
                .flatten()
                .find(|a| a["key"] == key)
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_owned()
        };
        let (service, instance) = (attribute("service.name"), attribute("service.instance.id"));
        for scope_spans in resource_spans["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope_spans["spans"].as_array().into_iter().flatten() {
                out.push(SpanRecord {
                    name: text(span, "name"),
                    trace_id: text(span, "traceId").to_ascii_lowercase(),
                    span_id: text(span, "spanId").to_ascii_lowercase(),
                    parent_span_id: text(span, "parentSpanId").to_ascii_lowercase(),
                    service: service.clone(),
                    instance: instance.clone(),
                });
            }
        }
    }
    out
}
