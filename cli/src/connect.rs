//! Connections from the CLI to shoal's gRPC services, with trace context on every call.

use std::time::Duration;

use shoal_proto::v1::control_client::ControlClient;
use shoal_telemetry::TraceInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub type Control = ControlClient<InterceptedService<Channel, TraceInterceptor>>;

/// `HOST:PORT` (or a full http(s) URL) as a URI tonic accepts.
pub fn endpoint_uri(host: &str) -> Result<String, String> {
    let uri = if host.starts_with("http://") || host.starts_with("https://") {
        host.to_string()
    } else {
        format!("http://{host}")
    };
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("\"{host}\" is not HOST:PORT: {e}"))?;
    if parsed.port_u16().is_none() {
        return Err(format!("\"{host}\" has no port (HOST:PORT)"));
    }
    Ok(uri)
}

pub async fn channel(host: &str) -> anyhow::Result<Channel> {
    let uri = endpoint_uri(host).map_err(anyhow::Error::msg)?;
    let channel = Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!("Cannot connect to the shoal manager at {host}. Is it running? ({e})")
        })?;
    Ok(channel)
}

pub async fn control(host: &str) -> anyhow::Result<Control> {
    Ok(ControlClient::with_interceptor(
        channel(host).await?,
        TraceInterceptor,
    ))
}
