//! Encryption at rest of the CA key (and other secrets) with a key-encryption key.
//!
//! Sealed format: `version (1 byte, = 1) || nonce (12 bytes) || AES-256-GCM
//! ciphertext || tag (16 bytes)`; the version byte is also the associated data, so
//! it cannot be altered without detection.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::pemutil::{hex, unhex};

/// Current sealed-data format version.
pub const SEAL_VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// A 256-bit key-encryption key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Kek([u8; 32]);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// A fresh random key.
    pub fn generate() -> Kek {
        Kek(rand::random())
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Kek {
        Kek(bytes)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Kek> {
        let s = s.trim();
        let bytes = unhex(s).ok_or_else(|| Error::Kek("not hex".into()))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            Error::Kek(format!(
                "expected 32 bytes (64 hex characters), got {}",
                b.len()
            ))
        })?;
        Ok(Kek(bytes))
    }

    /// The key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads a key written by [`Kek::to_file`]. Refuses a file that group or others
    /// can access.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Kek> {
        let path = path.as_ref();
        let meta = fs::metadata(path).map_err(Error::io(path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::KekPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(Error::io(path))?;
        Kek::from_hex(&text).map_err(|e| match e {
            Error::Kek(reason) => Error::Kek(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// Writes the key as hex to `path` (mode 0600, atomically).
    pub fn to_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut text = self.to_hex();
        text.push('\n');
        write_atomic(path.as_ref(), text.as_bytes(), 0o600)
    }

    fn aead_key(&self) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| Error::Kek("rejected by AES-256-GCM".into()))
    }
}

/// Encrypts and authenticates `plaintext` with `kek` under a fresh random nonce.
/// Fails only for inputs too large for AES-GCM (about 64 GiB).
pub fn seal(kek: &Kek, plaintext: &[u8]) -> Result<Vec<u8>> {
    let key = kek.aead_key()?;
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(1 + NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from([SEAL_VERSION]),
        &mut body,
    )
    .map_err(|_| Error::Encrypt("input too large for AES-256-GCM".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reverses [`seal`]. A wrong key or any altered byte gives [`Error::Decrypt`].
pub fn open(kek: &Kek, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(Error::SealedTooShort(sealed.len()));
    }
    let (version, rest) = sealed.split_at(1);
    if version[0] != SEAL_VERSION {
        return Err(Error::SealedVersion(version[0]));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Decrypt)?;
    let key = kek.aead_key()?;
    let mut buf = ciphertext.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from([SEAL_VERSION]), &mut buf)
        .map_err(|_| Error::Decrypt)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let kek = Kek::generate();
        for msg in [&b""[..], b"x", &[7u8; 5000]] {
            let sealed = seal(&kek, msg).unwrap();
            assert_eq!(sealed.len(), msg.len() + 29);
            assert_eq!(sealed[0], SEAL_VERSION);
            assert_eq!(open(&kek, &sealed).unwrap(), msg);
        }
        // Fresh nonce every time.
        assert_ne!(seal(&kek, b"same").unwrap(), seal(&kek, b"same").unwrap());
    }

    #[test]
    fn wrong_kek_fails() {
        let sealed = seal(&Kek::generate(), b"ca key").unwrap();
        assert!(matches!(
            open(&Kek::generate(), &sealed),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn tampering_fails() {
        let kek = Kek::generate();
        let sealed = seal(&kek, b"the CA private key").unwrap();
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(matches!(open(&kek, &t), Err(Error::Decrypt)), "byte {i}");
        }
        let mut t = sealed.clone();
        t[0] = 2;
        assert!(matches!(open(&kek, &t), Err(Error::SealedVersion(2))));
        assert!(matches!(
            open(&kek, &sealed[..28]),
            Err(Error::SealedTooShort(28))
        ));
        assert!(matches!(
            open(&kek, &sealed[..sealed.len() - 1]),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn hex_and_debug() {
        let kek = Kek::generate();
        let h = kek.to_hex();
        assert_eq!(h.len(), 64);
        assert_eq!(Kek::from_hex(&format!(" {h}\n")).unwrap(), kek);
        assert_eq!(Kek::from_bytes(*kek.as_bytes()), kek);
        assert!(matches!(Kek::from_hex("abcd"), Err(Error::Kek(_))));
        assert!(matches!(Kek::from_hex(&"g".repeat(64)), Err(Error::Kek(_))));
        assert_eq!(format!("{kek:?}"), "Kek(<redacted>)");
    }

    #[test]
    fn file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let kek = Kek::generate();
        kek.to_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Kek::from_file(&path).unwrap(), kek);
        // Overwrite keeps 0600.
        let kek2 = Kek::generate();
        kek2.to_file(&path).unwrap();
        assert_eq!(Kek::from_file(&path).unwrap(), kek2);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let r = Kek::from_file(&path);
        assert!(
            matches!(r, Err(Error::KekPermissions { mode: 0o640, .. })),
            "{r:?}"
        );
        assert!(r.unwrap_err().to_string().contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        assert!(matches!(
            Kek::from_file(&path),
            Err(Error::KekPermissions { .. })
        ));

        let missing = Kek::from_file(dir.path().join("missing"));
        assert!(matches!(missing, Err(Error::Io { .. })));

        let bad = dir.path().join("bad");
        fs::write(&bad, "nothex").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Kek::from_file(&bad), Err(Error::Kek(_))));
    }
}
