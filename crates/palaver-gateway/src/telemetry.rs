//! Logs and distributed traces: the process's `tracing` subscriber.
//!
//! Logs go to stderr, filtered by `RUST_LOG` and shaped by `--log-format`.
//! Traces are the same `tracing` spans (`connection`, `join`, `publish`,
//! `deliver`) exported over OTLP/HTTP when the standard `OTEL_*` variables ask
//! for it; they have their own filter (`--trace-filter`), so a node can log at
//! `warn` and still export every chat span.
//!
//! A trace crosses nodes inside the bus envelope: the `publish` span's W3C
//! `traceparent` rides in [`palaver_broker::Draft::trace`] and comes out as
//! [`palaver_protocol::Envelope::trace`] on every subscribed node, where the
//! `deliver` span takes it as its parent. One trace then shows the send on
//! node A, the broker round trip, and the fan-out on nodes B and C.
//!
//! With export off the subscriber has no OpenTelemetry layer at all, and the
//! helpers here return at their first check: nothing is formatted or parsed
//! on the message path.

use std::{collections::HashMap, io::IsTerminal, time::Duration};

use opentelemetry::{
    KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, LevelFilter, filter_fn},
    layer::{Filter, SubscriberExt},
    util::SubscriberInitExt,
};

use crate::config::{Config, LogFormat};

/// Spans opened once per message or per delivered event exist for traces.
/// The log layer would format their fields on every message (~5 % of a
/// gateway's CPU in the chat workload) for log lines that hardly ever come,
/// so it does not see them: with traces off they are not created at all.
fn is_per_message_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && meta.target().starts_with("palaver_gateway")
        && matches!(meta.name(), "publish" | "deliver")
}

/// The log layer's filter: `levels`, without the per-message spans. The
/// level hint stays `levels`' own (the most verbose hint never narrows it),
/// so `log` records below it are still dropped before they are built.
fn without_per_message_spans(levels: EnvFilter) -> impl Filter<Registry> {
    let spans =
        filter_fn(|meta| !is_per_message_span(meta)).with_max_level_hint(LevelFilter::TRACE);
    levels.and(spans)
}

/// The W3C header name the propagator reads and writes.
const TRACEPARENT: &str = "traceparent";
/// Longest wait for the last spans to reach the collector on exit.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Owns the trace pipeline; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// What the standard environment variables ask of trace export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Export {
    /// No export (nothing configured, `none`, or `OTEL_SDK_DISABLED=true`).
    Off,
    /// Export over OTLP.
    Otlp,
    /// An exporter this binary does not have; export stays off.
    Unsupported(String),
}

impl Export {
    /// Reads the decision from environment variables (`get` looks one up).
    ///
    /// Unlike the SDK default (`otlp`), an unset `OTEL_TRACES_EXPORTER`
    /// exports only when an OTLP endpoint is configured: a node started
    /// without any `OTEL_*` variable must not try to reach a collector.
    pub(crate) fn from_env(get: impl Fn(&str) -> Option<String>) -> Export {
        let set = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Export::Off;
        }
        match set("OTEL_TRACES_EXPORTER") {
            Some(exporters) => {
                let exporters: Vec<String> =
                    exporters.split(',').map(|e| e.trim().to_ascii_lowercase()).collect();
                if exporters.iter().any(|e| e == "otlp") {
                    Export::Otlp
                } else if exporters.iter().all(|e| e == "none") {
                    Export::Off
                } else {
                    Export::Unsupported(exporters.join(","))
                }
            }
            None if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() =>
            {
                Export::Otlp
            }
            None => Export::Off,
        }
    }
}

impl Telemetry {
    /// Installs the global `tracing` subscriber: the log layer, plus the OTLP
    /// trace layer when the environment asks for export. Call once, from
    /// `main`, inside the tokio runtime.
    pub fn init(config: &Config, node_id: &str) -> anyhow::Result<Telemetry> {
        let env = |name: &str| std::env::var(name).ok();
        let export = Export::from_env(env);
        let (provider, exporter_error) = match export {
            Export::Otlp => match tracer_provider(node_id) {
                Ok(provider) => (Some(provider), None),
                Err(e) => (None, Some(e)),
            },
            Export::Off | Export::Unsupported(_) => (None, None),
        };

        let log_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
            LogFormat::Json => logs.json().boxed(),
            LogFormat::Text => logs.boxed(),
        };
        let logs = logs.with_filter(without_per_message_spans(log_filter));
        match &provider {
            Some(provider) => {
                let filter = EnvFilter::try_new(&config.trace_filter).map_err(|e| {
                    anyhow::anyhow!("invalid --trace-filter {:?}: {e}", config.trace_filter)
                })?;
                let tracer = provider.tracer("palaver");
                let traces = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter);
                tracing_subscriber::registry().with(logs).with(traces).init();
            }
            // No `Option` layer: a `None` one enables every span for the
            // registry, so each message would still open one.
            None => tracing_subscriber::registry().with(logs).init(),
        }

        let mut protocol = otlp_protocol(env);
        if provider.is_some() && protocol == "grpc" {
            tracing::warn!(
                "OTLP over gRPC is not built in; exporting with http/protobuf (port 4318)"
            );
            protocol = "http/protobuf".into();
        }
        match (&export, &provider) {
            (Export::Otlp, Some(_)) => tracing::info!(
                endpoint = %otlp_endpoint(env),
                protocol = %protocol,
                "exporting traces over OTLP"
            ),
            (Export::Otlp, None) => tracing::warn!(
                error = %exporter_error.unwrap_or_default(),
                "cannot build the OTLP exporter; traces are off"
            ),
            (Export::Unsupported(name), _) => tracing::warn!(
                exporter = %name,
                "OTEL_TRACES_EXPORTER names no exporter this binary has (only otlp); traces are off"
            ),
            (Export::Off, _) => {}
        }
        Ok(Telemetry { provider })
    }

    /// Flushes buffered spans and stops the exporter (bounded wait).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_LIMIT)
        {
            tracing::warn!(error = %e, "trace flush on exit failed");
        }
    }
}

/// Builds the OTLP/HTTP pipeline: batch export on the SDK's own thread, the
/// node's identity as resource attributes.
fn tracer_provider(node_id: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("palaver");
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("service.instance.id", node_id.to_owned()),
            KeyValue::new("palaver.node", node_id.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The traces endpoint the exporter uses (for the startup log line).
fn otlp_endpoint(get: impl Fn(&str) -> Option<String>) -> String {
    get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| format!("{e}/v1/traces")))
        .unwrap_or_else(|| "http://localhost:4318/v1/traces".into())
}

/// The OTLP protocol asked for (`http/protobuf` when unset).
fn otlp_protocol(get: impl Fn(&str) -> Option<String>) -> String {
    get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into())
}

/// The W3C `traceparent` of `span`, or `None` when the span is not traced
/// (export off, filtered out). Cheap when export is off: no OpenTelemetry
/// layer is found and nothing is formatted.
pub(crate) fn traceparent(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0.remove(TRACEPARENT)
}

/// The `traceparent` of the current span (see [`traceparent`]).
#[cfg(test)]
pub(crate) fn current_traceparent() -> Option<String> {
    traceparent(&Span::current())
}

/// Makes the remote span named by `traceparent` the parent of `span`, which
/// must not have been entered yet. A malformed value leaves `span` a root.
pub(crate) fn set_remote_parent(span: &Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    let mut carrier = Carrier::default();
    carrier.0.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer: then there is no trace to join.
        let _ = span.set_parent(parent);
    }
}

/// A one-header carrier for the W3C propagator.
#[derive(Default)]
struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn logs_skip_per_message_spans_and_keep_their_level() {
        let filter = without_per_message_spans(EnvFilter::new("info"));
        assert_eq!(Filter::<Registry>::max_level_hint(&filter), Some(LevelFilter::INFO));
        let layer = tracing_subscriber::layer::Identity::new().with_filter(filter);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::info_span!("publish", room = "r").is_disabled());
            assert!(tracing::info_span!("deliver", room = "r").is_disabled());
            assert!(!tracing::info_span!("join", room = "r").is_disabled());
            assert!(!tracing::info_span!("connection").is_disabled());
            assert!(tracing::debug_span!("connection").is_disabled(), "below the level");
        });
    }

    #[test]
    fn export_is_off_unless_configured() {
        assert_eq!(Export::from_env(env(&[])), Export::Off);
        assert_eq!(Export::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])), Export::Off);
        assert_eq!(
            Export::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Export::Otlp
        );
        assert_eq!(
            Export::from_env(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/x")])),
            Export::Otlp
        );
        assert_eq!(Export::from_env(env(&[("OTEL_TRACES_EXPORTER", "otlp")])), Export::Otlp);
        assert_eq!(
            Export::from_env(env(&[
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
            ])),
            Export::Off
        );
        assert_eq!(
            Export::from_env(env(&[
                ("OTEL_SDK_DISABLED", "TRUE"),
                ("OTEL_TRACES_EXPORTER", "otlp")
            ])),
            Export::Off
        );
        assert_eq!(
            Export::from_env(env(&[("OTEL_TRACES_EXPORTER", "zipkin")])),
            Export::Unsupported("zipkin".into())
        );
    }

    #[test]
    fn untraced_spans_have_no_traceparent() {
        // No subscriber with an OpenTelemetry layer here: nothing to propagate.
        let span = tracing::info_span!("publish");
        assert_eq!(traceparent(&span), None);
        set_remote_parent(&span, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    }

    #[test]
    fn traceparent_round_trips_through_spans() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let deliver = tracing::info_span!("deliver");
            set_remote_parent(&deliver, remote);
            let _entered = deliver.enter();
            let own = current_traceparent().expect("a traced span has a traceparent");
            let parts: Vec<&str> = own.split('-').collect();
            assert_eq!(parts.len(), 4, "{own}");
            assert_eq!(
                parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
                "same trace as the remote parent"
            );
            assert_ne!(parts[2], "00f067aa0ba902b7", "its own span id");
        });
    }
}
