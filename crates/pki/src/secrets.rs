//! Sealing of Swarm secrets' payloads at rest.
//!
//! etcd has no per-key encryption, so the payload of every secret is sealed by the
//! manager before it is stored and opened only by control-plane processes that hold
//! the KEK (the dispatcher, to put it into the assignments of the nodes that need it).
//! The data key is derived from the KEK with HKDF-SHA256 under its own label, so the
//! CA key's sealing and the secrets' never share a key, and the secret's name is the
//! associated data: a sealed payload copied onto another secret does not open.
//!
//! Format: `version (1 byte, = 1) || nonce (12) || AES-256-GCM ciphertext || tag (16)`.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

use crate::error::{Error, Result};
use crate::seal::Kek;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const INFO: &[u8] = b"shoal secret data v1";

/// Seals and opens secret payloads with a key derived from the KEK. `Debug` never shows
/// the key.
pub struct SecretSealer {
    key: LessSafeKey,
}

impl fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSealer(<redacted>)")
    }
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

impl SecretSealer {
    pub fn new(kek: &Kek) -> Result<SecretSealer> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"shoal").extract(kek.as_bytes());
        let mut bytes = [0u8; 32];
        prk.expand(&[INFO], KeyLen)
            .and_then(|okm| okm.fill(&mut bytes))
            .map_err(|_| Error::Kek("cannot derive the secret data key".into()))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map(LessSafeKey::new)
            .map_err(|_| Error::Kek("rejected by AES-256-GCM".into()))?;
        Ok(SecretSealer { key })
    }

    /// Seals `plaintext` for the secret called `name` under a fresh random nonce.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                &mut body,
            )
            .map_err(|_| Error::Encrypt("input too large for AES-256-GCM".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reverses [`SecretSealer::seal`] for the same `name`. A wrong key, another
    /// secret's name or any altered byte gives [`Error::Decrypt`].
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(Error::SealedTooShort(sealed.len()));
        }
        let (version, rest) = sealed.split_at(1);
        if version[0] != VERSION {
            return Err(Error::SealedVersion(version[0]));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Decrypt)?;
        let mut buf = ciphertext.to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad(name)), &mut buf)
            .map_err(|_| Error::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut aad = vec![VERSION];
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let kek = Kek::generate();
        let s = SecretSealer::new(&kek).unwrap();
        let sealed = s.seal("db_pw", b"hunter2").unwrap();
        assert_eq!(s.open("db_pw", &sealed).unwrap(), b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        // Another secret's name, another KEK, the CA sealing: none opens it.
        assert!(matches!(s.open("other", &sealed), Err(Error::Decrypt)));
        let other = SecretSealer::new(&Kek::generate()).unwrap();
        assert!(matches!(other.open("db_pw", &sealed), Err(Error::Decrypt)));
        assert!(crate::open(&kek, &sealed).is_err());
        // Same KEK, new sealer: same key.
        let again = SecretSealer::new(&kek).unwrap();
        assert_eq!(again.open("db_pw", &sealed).unwrap(), b"hunter2");
        assert_ne!(s.seal("a", b"x").unwrap(), s.seal("a", b"x").unwrap());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(s.open("db_pw", &t).is_err(), "byte {i}");
        }
        assert_eq!(format!("{s:?}"), "SecretSealer(<redacted>)");
    }
}
