//! Swarm's PKI for shoal, as a library.
//!
//! What it does:
//! - the cluster's root CA ([`RootCa`]): an ECDSA P-256 self-signed `swarm-ca`
//!   certificate that signs node certificate requests, setting the node's identity
//!   itself (CN = node id, OU = [`Role`], O = cluster id) whatever the request says;
//! - node keys and requests ([`NodeKey`]);
//! - reading certificates back ([`CertInfo`], [`verify_issued_by`]) and choosing when
//!   to renew them ([`renewal_delay`]: a random point between 50% and 80% of the
//!   lifetime, as Swarm does);
//! - join tokens in Swarm's exact format `SWMTKN-1-<50 char CA digest>-<25 char
//!   secret>` ([`JoinToken`], [`ca_digest`]), compared in constant time;
//! - sealing the CA key (or any secret) at rest with AES-256-GCM under a
//!   key-encryption key ([`Kek`], [`seal`], [`open`]), and secrets' payloads under a
//!   key derived from it ([`SecretSealer`]);
//! - a node's credentials on disk under Swarm's file names and as tonic mTLS
//!   configuration ([`NodeCredentials`], [`peer_info`]).
//!
//! What it does not do: no network and no etcd. Issuing certificates over gRPC,
//! storing the sealed CA key and the tokens in etcd, rotating them, and checking a
//! presented token against the current one are the manager's and dispatcher's job;
//! this crate is pure cryptography and formats. All crypto is `ring` (through
//! rcgen, x509-parser and tonic's `tls-ring`); nothing here pulls in aws-lc.

mod ca;
mod creds;
mod error;
mod fsutil;
mod info;
mod pemutil;
mod seal;
mod secrets;
mod token;

pub use ca::{
    CA_COMMON_NAME, CLOCK_SKEW_BACKDATE, DEFAULT_CA_VALIDITY, DEFAULT_NODE_VALIDITY, NodeKey, Role,
    RootCa, San,
};
pub use creds::{
    CERTS_DIR, NODE_CERT_FILE, NODE_KEY_FILE, NodeCredentials, ROOT_CA_FILE, certs_dir, peer_info,
};
pub use error::{Error, Result};
pub use info::{
    CertInfo, MIN_RENEWAL_WAIT, renewal_delay, renewal_wait, verify_issued_by, verify_issued_by_at,
};
pub use seal::{Kek, SEAL_VERSION, open, seal};
pub use secrets::SecretSealer;
pub use token::{
    DIGEST_LEN, JoinToken, SECRET_LEN, TOKEN_LEN, TOKEN_PREFIX, TOKEN_VERSION, ca_digest,
};
