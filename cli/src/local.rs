//! Which node this host is, read from local files (docker asks its daemon; shoal's CLI
//! reads the same directories the node's processes keep their identity in):
//!
//! - a worker's (or joined node's) state dir: `certificates/swarm-node.crt`, whose
//!   subject names the node id and role;
//! - a manager's state dir: the file `node-id` (next to its `control.sock`);
//! - the CLI's `cert_dir`: the file `node-id` that `swarm init` writes with the id of
//!   the manager node it created for this host.

use std::path::{Path, PathBuf};

use shoal_pki::{CertInfo, Role};

use crate::config::CliConfig;

/// The file holding a node id (the manager's state dir, the CLI's cert dir).
pub const NODE_ID_FILE: &str = "node-id";

/// The worker's default state dir (relative to the working directory).
pub const DEFAULT_WORKER_STATE_DIR: &str = ".shoal-worker";

/// A node identity found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub node_id: String,
    pub role: Role,
    /// The directory it was found in.
    pub dir: PathBuf,
    /// How it is kept there.
    pub kind: Kept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// A node certificate under `certificates/`.
    Certificate,
    /// A `node-id` file of a manager process.
    ManagerNodeId,
    /// The `node-id` file `swarm init` left in the CLI's cert dir.
    InitNodeId,
}

fn read_node_id(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(NODE_ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The node whose identity is kept in `dir` (a worker or manager state dir).
pub fn node_in(dir: &Path) -> Option<LocalNode> {
    if dir.as_os_str().is_empty() {
        return None;
    }
    let cert = shoal_pki::certs_dir(dir).join(shoal_pki::NODE_CERT_FILE);
    if let Ok(pem) = std::fs::read_to_string(&cert)
        && let Ok(info) = CertInfo::from_pem(&pem)
        && info.role != Role::Admin
    {
        return Some(LocalNode {
            node_id: info.node_id,
            role: info.role,
            dir: dir.to_path_buf(),
            kind: Kept::Certificate,
        });
    }
    read_node_id(dir).map(|node_id| LocalNode {
        node_id,
        role: Role::Manager,
        dir: dir.to_path_buf(),
        kind: Kept::ManagerNodeId,
    })
}

/// The directory of the configured control socket (a manager's state dir).
fn socket_dir(cfg: &CliConfig) -> Option<PathBuf> {
    if cfg.socket.as_os_str().is_empty() {
        return None;
    }
    cfg.socket
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| Some(PathBuf::from(".")))
}

/// Which node this host is: the configured `state_dir`, then the state dir of the
/// manager whose socket is configured, then what `swarm init` recorded in `cert_dir`.
pub fn this_node(cfg: &CliConfig) -> Option<LocalNode> {
    if let Some(node) = node_in(&cfg.state_dir) {
        return Some(node);
    }
    if let Some(node) = socket_dir(cfg).and_then(|d| node_in(&d)) {
        return Some(node);
    }
    read_node_id(&cfg.cert_dir).map(|node_id| LocalNode {
        node_id,
        role: Role::Manager,
        dir: cfg.cert_dir.clone(),
        kind: Kept::InitNodeId,
    })
}

/// The node `swarm leave` acts on: the configured `state_dir` (or the worker's default
/// one), else the manager whose socket is configured.
pub fn leaving_node(cfg: &CliConfig) -> Option<LocalNode> {
    let state_dir = if cfg.state_dir.as_os_str().is_empty() {
        PathBuf::from(DEFAULT_WORKER_STATE_DIR)
    } else {
        cfg.state_dir.clone()
    };
    node_in(&state_dir).or_else(|| socket_dir(cfg).and_then(|d| node_in(&d)))
}

/// The state dir `swarm join` writes the identity into.
pub fn join_state_dir(cfg: &CliConfig) -> PathBuf {
    if cfg.state_dir.as_os_str().is_empty() {
        PathBuf::from(DEFAULT_WORKER_STATE_DIR)
    } else {
        cfg.state_dir.clone()
    }
}

/// Records the id of the node `swarm init` made this host into `cert_dir`.
pub fn record_init_node(cert_dir: &Path, node_id: &str) -> std::io::Result<()> {
    let path = cert_dir.join(NODE_ID_FILE);
    let tmp = cert_dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{node_id}\n"))?;
    std::fs::rename(&tmp, &path)
}

/// Drops a node's identity from this host: its certificate and key (a running worker
/// notices and ends its session) or a manager's node id. Also forgets the id `swarm
/// init` recorded in `cert_dir` when it is this node.
pub fn forget(node: &LocalNode, cert_dir: &Path) -> std::io::Result<()> {
    let remove = |path: PathBuf| match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("cannot remove {}: {e}", path.display()),
        )),
    };
    match node.kind {
        Kept::Certificate => {
            let certs = shoal_pki::certs_dir(&node.dir);
            // The certificate goes first: without it the identity is gone even if a
            // later removal fails.
            remove(certs.join(shoal_pki::NODE_CERT_FILE))?;
            remove(certs.join(shoal_pki::NODE_KEY_FILE))?;
            remove(certs.join(shoal_pki::ROOT_CA_FILE))?;
            let _ = std::fs::remove_dir(&certs);
        }
        Kept::ManagerNodeId | Kept::InitNodeId => remove(node.dir.join(NODE_ID_FILE))?,
    }
    if read_node_id(cert_dir).as_deref() == Some(node.node_id.as_str()) {
        remove(cert_dir.join(NODE_ID_FILE))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use shoal_pki::{NodeCredentials, NodeKey, RootCa};

    use super::*;

    fn store_creds(dir: &Path, node_id: &str, role: Role) {
        let ca = RootCa::generate(Duration::from_secs(3600)).unwrap();
        let key = NodeKey::generate();
        let cert_pem = ca
            .issue(
                &key.csr_pem().unwrap(),
                node_id,
                role,
                "cluster1",
                Duration::from_secs(600),
                &[],
            )
            .unwrap();
        NodeCredentials {
            cert_pem,
            key_pem: key.key_pem(),
            ca_pem: ca.cert_pem().to_string(),
        }
        .store(dir)
        .unwrap();
    }

    #[test]
    fn finds_worker_manager_and_init_identities() {
        let worker = tempfile::tempdir().unwrap();
        let manager = tempfile::tempdir().unwrap();
        let certs = tempfile::tempdir().unwrap();
        store_creds(worker.path(), "w1", Role::Worker);
        std::fs::write(manager.path().join("node-id"), "m1\n").unwrap();
        record_init_node(certs.path(), "m0").unwrap();

        let mut cfg = CliConfig {
            cert_dir: certs.path().to_path_buf(),
            ..CliConfig::default()
        };
        assert_eq!(this_node(&cfg).unwrap().node_id, "m0");
        cfg.socket = manager.path().join("control.sock");
        let m = this_node(&cfg).unwrap();
        assert_eq!((m.node_id.as_str(), m.role), ("m1", Role::Manager));
        cfg.state_dir = worker.path().to_path_buf();
        let w = this_node(&cfg).unwrap();
        assert_eq!((w.node_id.as_str(), w.role), ("w1", Role::Worker));
        assert_eq!(leaving_node(&cfg).unwrap().node_id, "w1");

        forget(&w, certs.path()).unwrap();
        assert!(node_in(worker.path()).is_none());
        // The worker gone, the manager of the socket is next.
        assert_eq!(leaving_node(&cfg).unwrap().node_id, "m1");
        let m = leaving_node(&cfg).unwrap();
        std::fs::write(certs.path().join("node-id"), "m1\n").unwrap();
        forget(&m, certs.path()).unwrap();
        assert!(node_in(manager.path()).is_none());
        assert!(!certs.path().join("node-id").exists());
    }

    #[test]
    fn admin_certificates_are_not_nodes() {
        let dir = tempfile::tempdir().unwrap();
        store_creds(dir.path(), "admin-1", Role::Admin);
        assert!(node_in(dir.path()).is_none());
    }
}
