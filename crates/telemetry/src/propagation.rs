//! W3C trace context in and out of carriers: NATS headers, HTTP/gRPC headers and the
//! `TraceContext` stored on objects.

use std::collections::HashMap;
use std::str::FromStr;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use shoal_proto::v1::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Makes W3C TraceContext the global propagator. [`crate::init`] does this; processes
/// and tests that set up tracing themselves call it so the helpers here do something.
pub fn install_propagator() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The OpenTelemetry context of the current tracing span (empty outside any span or
/// without an OpenTelemetry layer).
pub(crate) fn current_context() -> Context {
    tracing::Span::current().context()
}

pub(crate) fn inject_context(cx: &Context, injector: &mut dyn Injector) {
    global::get_text_map_propagator(|propagator| propagator.inject_context(cx, injector));
}

pub(crate) fn extract_context(extractor: &dyn Extractor) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(extractor))
}

/// Writes the current span's trace context into NATS message headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    inject_context(&current_context(), &mut NatsHeaders(headers));
}

/// Reads a trace context from NATS message headers; an empty context when there are
/// none or they are malformed.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>) -> Context {
    match headers {
        Some(headers) => extract_context(&NatsHeadersRef(headers)),
        None => Context::new(),
    }
}

/// The current span's trace context, to store on an object whose work outlives the
/// request (a task is placed and started long after `CreateService` returned).
pub fn current_trace_context() -> TraceContext {
    let mut carrier = HashMap::with_capacity(2);
    inject_context(&current_context(), &mut carrier);
    TraceContext {
        traceparent: carrier.remove(TRACEPARENT).unwrap_or_default(),
        tracestate: carrier.remove(TRACESTATE).unwrap_or_default(),
    }
}

/// The context a stored `TraceContext` describes; empty when it holds none.
pub fn context_from_stored(tc: &TraceContext) -> Context {
    let mut carrier = HashMap::with_capacity(2);
    if !tc.traceparent.is_empty() {
        carrier.insert(TRACEPARENT.to_owned(), tc.traceparent.clone());
        if !tc.tracestate.is_empty() {
            carrier.insert(TRACESTATE.to_owned(), tc.tracestate.clone());
        }
    }
    extract_context(&carrier)
}

/// Makes `cx` the remote parent of `span`. Only works before the span is first entered;
/// a context without a valid span, or a span that cannot take a parent (disabled,
/// already started, no OpenTelemetry layer), is left as it is and logged at debug.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "span keeps its local parent");
    }
}

/// The current span's trace id in lowercase hex, if it belongs to a trace.
pub fn current_trace_id() -> Option<String> {
    let cx = current_context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        // `HeaderMap::insert` panics on invalid names; parse instead.
        let (Ok(name), Ok(value)) = (
            async_nats::header::HeaderName::from_str(key),
            async_nats::HeaderValue::from_str(&value),
        ) else {
            return;
        };
        self.0.insert(name, value);
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let name = async_nats::header::HeaderName::from_str(key).ok()?;
        self.0.get(name).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// HTTP/2 headers, shared by the gRPC client and server sides.
pub(crate) struct HttpHeaders<'a>(pub(crate) &'a mut http::HeaderMap);

impl Injector for HttpHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_str(key),
            http::HeaderValue::from_str(&value),
        ) else {
            return;
        };
        self.0.insert(name, value);
    }
}

pub(crate) struct HttpHeadersRef<'a>(pub(crate) &'a http::HeaderMap);

impl Extractor for HttpHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    /// Runs `f` under a subscriber with an OpenTelemetry layer (no exporter), so spans
    /// get real, sampled trace ids.
    fn with_otel<R>(f: impl FnOnce() -> R) -> R {
        install_propagator();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn trace_id_of(cx: &Context) -> Option<String> {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    #[test]
    fn nats_headers_carry_the_trace_id() {
        with_otel(|| {
            let span = tracing::info_span!("publish");
            let _entered = span.enter();
            let sent = current_trace_id().expect("span has a trace id");

            let mut headers = async_nats::HeaderMap::new();
            inject_nats(&mut headers);
            assert!(headers.get(TRACEPARENT).is_some(), "traceparent injected");

            let received = extract_nats(Some(&headers));
            assert_eq!(trace_id_of(&received), Some(sent));
            assert!(received.span().span_context().is_remote());
        });
    }

    #[test]
    fn grpc_metadata_carries_the_trace_id() {
        with_otel(|| {
            let span = tracing::info_span!("call");
            let _entered = span.enter();
            let sent = current_trace_id().expect("span has a trace id");

            let mut req = tonic::Request::new(());
            crate::inject_grpc(&mut req);
            let received = crate::extract_grpc(req.metadata());
            assert_eq!(trace_id_of(&received), Some(sent));
        });
    }

    #[test]
    fn stored_context_continues_the_trace() {
        with_otel(|| {
            let stored = {
                let span = tracing::info_span!("create_service");
                let _entered = span.enter();
                current_trace_context()
            };
            assert!(stored.traceparent.starts_with("00-"), "{stored:?}");

            let parent = context_from_stored(&stored);
            let child = tracing::info_span!("schedule");
            set_parent(&child, parent);
            let _entered = child.enter();
            let expected = stored.traceparent.split('-').nth(1).map(str::to_owned);
            assert_eq!(current_trace_id(), expected);
        });
    }

    #[test]
    fn missing_or_garbage_context_is_empty() {
        with_otel(|| {
            assert!(trace_id_of(&extract_nats(None)).is_none());
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(TRACEPARENT, "not-a-traceparent");
            assert!(trace_id_of(&extract_nats(Some(&headers))).is_none());
            let stored = TraceContext::default();
            assert!(trace_id_of(&context_from_stored(&stored)).is_none());
        });
    }

    #[test]
    fn outside_any_span_nothing_is_injected() {
        with_otel(|| {
            assert_eq!(current_trace_id(), None);
            let mut headers = async_nats::HeaderMap::new();
            inject_nats(&mut headers);
            assert!(headers.get(TRACEPARENT).is_none());
            assert_eq!(current_trace_context(), TraceContext::default());
        });
    }
}
