//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `shoal-pki`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen refused to build or sign a certificate or request.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),

    /// Text that should hold a PEM object of the given kind does not.
    #[error("invalid {what} PEM: {reason}")]
    Pem {
        /// What was expected ("certificate", "private key", ...).
        what: &'static str,
        /// Why it could not be read.
        reason: String,
    },

    /// DER that does not parse as an X.509 certificate, or a certificate unfit for its use.
    #[error("invalid certificate: {0}")]
    Certificate(String),

    /// A certificate signing request that does not parse or whose signature is wrong.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),

    /// A node certificate lacks a subject field the swarm relies on.
    #[error("certificate subject has no {0}")]
    MissingField(&'static str),

    /// A role string that is none of the known ones.
    #[error("unknown role {0:?} (expected swarm-worker, swarm-manager or shoal-admin)")]
    UnknownRole(String),

    /// A node id or cluster id that cannot go into a certificate.
    #[error("invalid {field}: {reason}")]
    InvalidName {
        /// "node id" or "cluster id".
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// A subject alternative name rcgen cannot encode.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),

    /// A validity period that cannot be represented.
    #[error("invalid validity period: {0}")]
    Validity(String),

    /// The private key is not the one the certificate was issued for.
    #[error("the private key does not match the certificate")]
    KeyMismatch,

    /// The certificate was not signed by the given CA.
    #[error("certificate was not issued by this CA: {0}")]
    NotIssuedBy(String),

    /// The certificate's validity period has not started yet.
    #[error("certificate is not valid yet")]
    NotYetValid,

    /// The certificate's validity period is over.
    #[error("certificate has expired")]
    Expired,

    /// A join token that does not start with `SWMTKN`.
    #[error("invalid join token: it must start with \"SWMTKN-\"")]
    TokenPrefix,

    /// A join token of a version other than 1.
    #[error("invalid join token: unsupported version {0:?} (expected 1)")]
    TokenVersion(String),

    /// A join token that does not have the shape `SWMTKN-1-<digest>-<secret>`.
    #[error("invalid join token: expected SWMTKN-1-<50 character CA digest>-<25 character secret>")]
    TokenFormat,

    /// A join token part of the wrong length.
    #[error("invalid join token: the {part} must be {expected} characters, got {actual}")]
    TokenLength {
        /// "CA digest" or "secret".
        part: &'static str,
        /// The length Swarm's format requires.
        expected: usize,
        /// The length found.
        actual: usize,
    },

    /// A join token part with characters outside base 36 (`0-9a-z`).
    #[error("invalid join token: the {part} must contain only 0-9 and a-z")]
    TokenCharset {
        /// "CA digest" or "secret".
        part: &'static str,
    },

    /// A key-encryption key that is not 32 bytes of hex.
    #[error("invalid key-encryption key: {0}")]
    Kek(String),

    /// A key-encryption key file that others can read.
    #[error(
        "{}: key file is accessible by group or others (mode {mode:03o}); run chmod 600 on it",
        path.display()
    )]
    KekPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// Sealed data shorter than version + nonce + tag.
    #[error("sealed data is too short ({0} bytes)")]
    SealedTooShort(usize),

    /// Sealed data of a format version this crate does not know.
    #[error("sealed data has unsupported version {0}")]
    SealedVersion(u8),

    /// Authentication failed: the wrong key-encryption key, or the data was altered.
    #[error("cannot open sealed data: wrong key-encryption key or tampered data")]
    Decrypt,

    /// AES-GCM refused to seal (input too large).
    #[error("cannot seal data: {0}")]
    Encrypt(String),

    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
