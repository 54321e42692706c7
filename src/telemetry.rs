//! Logs and traces: the global subscriber (`text` or `json` lines on stderr) and, when
//! `otlp_endpoint` is set, OpenTelemetry spans exported over OTLP (HTTP + protobuf).
//!
//! Spans are ordinary `tracing` spans. The request span (`http/envelope.rs`) is INFO and
//! continues the caller's W3C `traceparent`; the spans under it (storage, Redis, the model
//! server, the `/api` backend) are DEBUG, so with tracing off and the default `info` log
//! filter their call sites stay disabled and cost nothing. With tracing on, the exporter's
//! own filter enables them, but only inside a span it exports: a background worker's storage
//! calls do not start a trace of their own every poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{self, EnvFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The `service.name` of exported spans (unless `OTEL_SERVICE_NAME` says otherwise).
pub const SERVICE_NAME: &str = "gatehouse";

/// Whether spans are exported; read on the request path, so a plain flag.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (`otlp_endpoint` is set and the exporter started).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter, while it runs. [`Telemetry::shutdown`] sends the spans still queued.
#[must_use = "call shutdown() before the process exits, or queued spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes the spans still queued and stops the exporter (blocks up to a few seconds).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("gatehouse: could not send the last spans: {e}");
            }
        }
    }
}

/// Installs the global subscriber: `text` or `json` lines on stderr filtered by `filter`,
/// and, when `otlp_endpoint` is set, the OTLP exporter.
pub fn init(filter: &str, format: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let log_filter = || EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = log_filter();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let fmt = if format == "json" {
        fmt.json()
            .map_event_format(WithTraceId)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (otel, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let provider = provider(endpoint)?;
            let tracer = provider.tracer(SERVICE_NAME);
            // The span's own fields only: no thread, source location or busy/idle times.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(exported_filter())
                .boxed();
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        // The trace ids are kept for the log lines, so only for the spans the log shows:
        // unfiltered, this layer would have every span built (each request's included) even
        // when the log shows none of them and no exporter runs.
        .with(TraceIds.with_filter(log_filter()))
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    // A second `init` in one process (tests) keeps the first subscriber; its exporter, if any,
    // is the one that runs.
    ENABLED.store(installed && provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// The OTLP/HTTP endpoint of traces: `otlp_endpoint` is the collector's base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is, and `/v1/traces` is added unless it is already there.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_http_client(ExportClient::default())
        .build()
        .map_err(|e| anyhow::anyhow!("otlp_endpoint: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Longest wait for the collector to take one batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the exporter's batches with reqwest's blocking client. Written here because
/// `opentelemetry-http`'s own reqwest client is for reqwest 0.13, a second HTTP stack beside
/// the 0.12 Gatehouse uses. Blocking, because the batch exporter runs on its own thread,
/// outside the tokio runtime; the client is built there on first use, since a blocking client
/// may not be used from inside the runtime.
#[derive(Debug, Default)]
struct ExportClient(std::sync::OnceLock<reqwest::blocking::Client>);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<opentelemetry_http::Bytes>,
    ) -> Result<http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let client = match self.0.get() {
            Some(c) => c,
            None => {
                let built = reqwest::blocking::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .build()?;
                self.0.get_or_init(|| built)
            }
        };
        let (parts, body) = request.into_parts();
        let res = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()?;
        let mut out = http::Response::builder().status(res.status());
        if let Some(h) = out.headers_mut() {
            *h = res.headers().clone();
        }
        Ok(out.body(res.bytes()?)?)
    }
}

/// The name of the request span of a health check or metrics scrape ([`is_probe`]): not
/// exported, nor is anything under it, so probers do not fill the traces.
pub const PROBE_SPAN: &str = "probe";

/// Whether `route` (a route pattern) is a health check or the metrics scrape.
pub fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// What the exporter sees: Gatehouse's own spans and INFO events (not a probe's span). A DEBUG span (storage,
/// Redis, an outgoing call) only inside an exported span, so it is always part of a trace
/// that began with a request or a webhook delivery.
fn exported_filter<S>() -> impl tracing_subscriber::layer::Filter<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn ours(meta: &Metadata<'_>) -> bool {
        meta.target().starts_with("gatehouse") && *meta.level() <= Level::DEBUG
    }
    filter::dynamic_filter_fn(|meta, cx| {
        if !ours(meta) {
            return false;
        }
        if meta.is_span() {
            if meta.name() == PROBE_SPAN {
                return false;
            }
            *meta.level() <= Level::INFO || cx.lookup_current().is_some()
        } else {
            *meta.level() <= Level::INFO
        }
    })
    .with_callsite_filter(|meta| {
        if ours(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    })
}

/// Continues the caller's trace in `span` (not yet entered): its parent becomes the
/// `traceparent` (and `tracestate`) of `headers` when they are valid, and its `trace_id`
/// field, which the logs carry, is recorded. With tracing off the header is only parsed, so
/// the logs still carry the caller's trace id.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    // Without an exporter the only use of the caller's trace is the log's `trace_id`.
    if !enabled() && (span.is_disabled() || !headers.contains_key("traceparent")) {
        return;
    }
    let extractor = opentelemetry_http::HeaderExtractor(headers);
    let parent = if headers.contains_key("traceparent") {
        TraceContextPropagator::new().extract(&extractor)
    } else {
        opentelemetry::Context::new()
    };
    if enabled() {
        let _ = span.set_parent(parent);
        record_trace_id(span);
    } else {
        let remote = parent.span().span_context().clone();
        if remote.is_valid() {
            span.record("trace_id", tracing::field::display(remote.trace_id()));
        }
    }
}

/// Records the trace id of `span` (a root span with a `trace_id` field) for the logs.
pub fn record_trace_id(span: &tracing::Span) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// Sets an attribute on the exported span (`http.response.status_code`, …); nothing when
/// tracing is off. Never a header, a path or a body.
pub fn attribute(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// Marks the exported span as failed (a 5xx answer, a failed delivery).
pub fn failed(span: &tracing::Span, why: &'static str) {
    if enabled() {
        span.set_status(opentelemetry::trace::Status::error(why));
    }
}

/// The `traceparent` (and `tracestate`) of the current span, for a request going out to
/// the model server, the `/api` backend or a webhook endpoint. Empty when tracing is off.
pub fn outgoing() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if enabled() {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
    }
    headers
}

/// The trace id a span's `trace_id` field holds, kept where the JSON formatter finds it.
struct TraceId(String);

/// Keeps each recorded `trace_id` field in its span's extensions.
struct TraceIds;

impl<S> Layer<S> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Visit(Option<String>);
        impl tracing::field::Visit for Visit {
            fn record_debug(&mut self, field: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if field.name() == "trace_id" {
                    self.0 = Some(format!("{v:?}"));
                }
            }
        }
        let mut visit = Visit(None);
        values.record(&mut visit);
        if let (Some(found), Some(span)) = (visit.0, ctx.span(id)) {
            span.extensions_mut().replace(TraceId(found));
        }
    }
}

/// The JSON event format with `"trace_id"` first when the event happened inside a trace, so
/// a log search can jump from a log line to its trace.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let trace_id = ctx.event_scope().and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<TraceId>().map(|t| t.0.clone()))
        });
        match (trace_id, line.strip_prefix('{')) {
            // A trace id is 32 hex digits: nothing to escape.
            (Some(id), Some(rest)) => write!(writer, "{{\"trace_id\":\"{id}\",{rest}"),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_to_a_base_url_once() {
        assert_eq!(
            traces_url("http://c:4318"),
            "http://c:4318/v1/traces".to_string()
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c/otlp/v1/traces"),
            "http://c/otlp/v1/traces"
        );
    }
}
