//! Logs, traces and trace-context propagation for every shoal process.
//!
//! [`init`] installs the one global `tracing` subscriber a process has: human or JSON
//! logs on stderr, filtered by `EnvFilter` directives, and — when an OTLP endpoint is
//! configured — an OpenTelemetry layer that batches spans to a collector over gRPC.
//! The returned [`TelemetryGuard`] flushes them before the process exits.
//!
//! The rest of the crate moves the W3C trace context (`traceparent` / `tracestate`)
//! across every boundary a request crosses: gRPC metadata ([`TraceInterceptor`],
//! [`GrpcTraceLayer`]), NATS headers ([`inject_nats`], [`extract_nats`]) and objects
//! stored in etcd ([`current_trace_context`], [`context_from_stored`]). Helpers always
//! read the OpenTelemetry context of the *current tracing span*, so callers only have to
//! be inside the right span.
//!
//! Boundaries: this crate knows nothing about shoal's objects beyond the stored
//! `TraceContext` message, and it never exports metrics or logs over OTLP.

mod grpc;
mod propagation;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use grpc::{GrpcTraceLayer, GrpcTraceService, TraceInterceptor, extract_grpc, inject_grpc};
pub use propagation::{
    context_from_stored, current_trace_context, current_trace_id, extract_nats, inject_nats,
    install_propagator, set_parent,
};

/// How long a flush on shutdown may take before spans are given up.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Telemetry settings of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans, e.g. `shoal-manager`.
    pub service_name: String,
    /// OTLP gRPC endpoint (`http://127.0.0.1:4317`); `None` or empty: no span export.
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    /// `EnvFilter` directives (`info`, `shoal_store=debug,info`); `RUST_LOG` wins if set.
    pub log_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "shoal".to_owned(),
            otlp_endpoint: None,
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
        }
    }
}

/// Format of the log lines written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("telemetry must be initialised inside a tokio runtime (the OTLP exporter runs on it)")]
    NoRuntime,
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInitialized(#[from] tracing_subscriber::util::TryInitError),
    #[error("flushing spans to the OTLP collector failed: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync + 'static>;

/// Installs the global subscriber (logs, optional OTLP span export) and the global W3C
/// trace-context propagator. Call once per process, inside a tokio runtime, and keep
/// the guard alive until the process ends.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    install_propagator();

    let filter = env_filter(&cfg.log_filter)?;
    let fmt_layer: BoxedLayer = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only for a person at a terminal, never into log files.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![fmt_layer];

    let endpoint = cfg
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let provider = match endpoint {
        Some(endpoint) => {
            let provider = tracer_provider(&cfg.service_name, endpoint)?;
            let tracer = provider.tracer("shoal");
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(exporter_machinery_off())
                    .boxed(),
            );
            opentelemetry::global::set_tracer_provider(provider.clone());
            Some(provider)
        }
        None => None,
    };

    tracing_subscriber::registry().with(layers).try_init()?;
    Ok(TelemetryGuard { provider })
}

/// `RUST_LOG` (when set and not empty) overrides the configured directives.
fn env_filter(configured: &str) -> Result<EnvFilter, Error> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => env,
        _ => configured.to_owned(),
    };
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(&directives)
        .map_err(|source| Error::Filter {
            filter: directives,
            source,
        })
}

/// Spans exported over OTLP: INFO and above whatever the log filter says (a CLI that
/// logs only warnings still exports its command's span), minus the gRPC/HTTP machinery
/// that the exporter itself drives: tracing those would feed every export back into
/// the next batch.
fn exporter_machinery_off() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("tonic::transport", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
}

fn tracer_provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, Error> {
    // tonic needs a scheme; operators often write `host:4317`.
    let endpoint = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| Error::Exporter { endpoint, source })?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Keeps span export alive; flushes and shuts the exporter down when dropped.
///
/// Prefer `guard.shutdown().await` at the end of `main`: it works on every tokio
/// runtime flavour. Dropping the guard flushes synchronously, which on a
/// current-thread runtime can only be started in the background (the exporter needs
/// that very thread to make progress).
#[must_use = "dropping the guard stops span export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// True when spans are exported over OTLP.
    pub fn exports_spans(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now, keeping the exporter running.
    pub async fn flush(&self) -> Result<(), Error> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        // The batch processor blocks until its export is done; the export itself runs
        // on this runtime, so wait on a blocking thread.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|_| {
                Error::Shutdown(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "flush task panicked".to_owned(),
                ))
            })??;
        Ok(())
    }

    /// Flushes the remaining spans and stops the exporter.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
            .await
            .map_err(|_| {
                Error::Shutdown(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "shutdown task panicked".to_owned(),
                ))
            })??;
        Ok(())
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let shutdown = move || {
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                eprintln!("telemetry: flushing spans on exit failed: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => {
                    // Blocking here would starve the exporter of the only runtime thread.
                    drop(handle.spawn_blocking(shutdown));
                }
                _ => tokio::task::block_in_place(shutdown),
            },
            Err(_) => shutdown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_lowercase_formats_and_defaults() -> Result<(), serde_json::Error> {
        let cfg: TelemetryConfig =
            serde_json::from_str(r#"{"service_name":"shoal-manager","log_format":"json"}"#)?;
        assert_eq!(cfg.service_name, "shoal-manager");
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.log_filter, "info");
        assert_eq!(cfg.otlp_endpoint, None);
        assert!(serde_json::from_str::<LogFormat>(r#""Json""#).is_err());
        assert_eq!(serde_json::to_string(&LogFormat::Text)?, r#""text""#);
        Ok(())
    }

    #[test]
    fn init_outside_a_runtime_is_refused() {
        assert!(matches!(
            init(&TelemetryConfig::default()),
            Err(Error::NoRuntime)
        ));
    }
}
