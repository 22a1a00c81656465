//! What a node says about itself: hostname, platform, resources, the Docker Engine (if
//! one answers) and the executors it can run tasks with. Workers send it when they open
//! a session; a manager describes its own node the same way.

use std::time::Duration;

use shoal_pki::NodeCredentials;
use shoal_proto::v1::executor_description::Kind;
use shoal_proto::v1::{
    EngineDescription, ExecutorDescription, NodeDescription, NodeTlsInfo, Platform, Resources,
};

/// How long the Docker Engine may take to say its version before the node is
/// described without it.
pub const DOCKER_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The node's description. `creds` fills in the TLS info (trust root and issuer).
pub async fn node_description(hostname: &str, creds: Option<&NodeCredentials>) -> NodeDescription {
    let docker = docker_version().await;
    let mut executors = Vec::with_capacity(2);
    if let Some(version) = &docker {
        executors.push(ExecutorDescription {
            kind: Kind::Docker as i32,
            version: version.clone(),
        });
    }
    executors.push(ExecutorDescription {
        kind: Kind::Process as i32,
        version: env!("CARGO_PKG_VERSION").to_string(),
    });
    NodeDescription {
        hostname: hostname.to_string(),
        platform: Some(platform()),
        resources: Some(resources()),
        engine: Some(EngineDescription {
            engine_version: docker.unwrap_or_default(),
            ..Default::default()
        }),
        executors,
        tls_info: creds.and_then(tls_info),
    }
}

/// The host's name from the kernel, `localhost` if it has none.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `std::env::consts` OS and architecture (`linux`, `x86_64`), as Swarm reports them.
pub fn platform() -> Platform {
    Platform {
        architecture: std::env::consts::ARCH.to_string(),
        os: std::env::consts::OS.to_string(),
    }
}

/// CPUs (in 1e-9 units) and memory of the host.
pub fn resources() -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Resources {
        nano_cpus: i64::try_from(cpus)
            .unwrap_or(i64::MAX / 1_000_000_000)
            .saturating_mul(1_000_000_000),
        memory_bytes: memory_bytes().unwrap_or(0),
        pids: 0,
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn memory_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: i64 = parts.next()?.parse().ok()?;
    let scale = match parts.next() {
        Some("kB") | Some("KB") | Some("kb") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

/// The Docker Engine's version, if an engine answers on the local socket soon.
pub async fn docker_version() -> Option<String> {
    let docker = bollard::Docker::connect_with_local_defaults().ok()?;
    match tokio::time::timeout(DOCKER_PROBE_TIMEOUT, docker.version()).await {
        Ok(Ok(v)) => v.version.filter(|v| !v.is_empty()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no Docker Engine: running processes only");
            None
        }
        Err(_) => {
            tracing::debug!("the Docker Engine did not answer in time: running processes only");
            None
        }
    }
}

/// The node's trust root and its certificate's issuer (subject and public key).
fn tls_info(creds: &NodeCredentials) -> Option<NodeTlsInfo> {
    let ca_der = creds.ca_der().ok()?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).ok()?;
    Some(NodeTlsInfo {
        trust_root: creds.ca_pem.clone().into_bytes(),
        cert_issuer_subject: ca.subject().as_raw().to_vec(),
        cert_issuer_public_key: ca.public_key().raw.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_mem_total(text), Some(16_318_412 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 1 GB\n"), None);
    }
}

#[cfg(test)]
mod docker_tests {
    /// Where an engine answers the CLI, the description finds it too (API version
    /// negotiated: an older engine refuses a client that asks for a newer API).
    #[tokio::test]
    async fn an_answering_engine_is_described() {
        let cli = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output();
        let Ok(out) = cli else {
            eprintln!("NOTICE: no docker CLI; skipped");
            return;
        };
        if !out.status.success() {
            eprintln!("NOTICE: no Docker engine answers; skipped");
            return;
        }
        let want = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            super::docker_version().await.as_deref(),
            Some(want.as_str())
        );
    }
}
