//! The root CA digest and Swarm's join tokens.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::pemutil::{base36, ct_eq};

/// Join token prefix.
pub const TOKEN_PREFIX: &str = "SWMTKN";
/// Join token format version.
pub const TOKEN_VERSION: &str = "1";
/// Length of the base-36 CA digest in a token.
pub const DIGEST_LEN: usize = 50;
/// Length of the base-36 secret in a token.
pub const SECRET_LEN: usize = 25;
/// Length of a whole token: `SWMTKN-1-` + 50 + `-` + 25.
pub const TOKEN_LEN: usize =
    TOKEN_PREFIX.len() + 1 + TOKEN_VERSION.len() + 1 + DIGEST_LEN + 1 + SECRET_LEN;

/// The SHA-256 of the CA certificate's DER, as a base-36 number (`0-9a-z`)
/// zero-padded to 50 characters: the digest part of a join token.
pub fn ca_digest(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    base36(digest.as_ref(), DIGEST_LEN)
}

/// `SWMTKN-1-<ca digest>-<secret>`: what a node presents to join, proving it knows
/// the secret and pinning the root CA it should trust.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JoinToken {
    /// [`ca_digest`] of the root CA certificate (50 base-36 characters).
    pub ca_digest: String,
    /// 128 random bits in base 36, zero-padded to 25 characters.
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl JoinToken {
    /// A new token for the CA with digest `ca_digest` and a fresh 128-bit secret.
    pub fn generate(ca_digest: impl Into<String>) -> JoinToken {
        let secret: [u8; 16] = rand::random();
        JoinToken {
            ca_digest: ca_digest.into(),
            secret: base36(&secret, SECRET_LEN),
        }
    }

    /// Whether `presented` equals this (the expected) token. Both parts are compared
    /// in constant time, and both are always compared.
    pub fn verify(&self, presented: &JoinToken) -> bool {
        let digest_ok = ct_eq(self.ca_digest.as_bytes(), presented.ca_digest.as_bytes());
        let secret_ok = ct_eq(self.secret.as_bytes(), presented.secret.as_bytes());
        digest_ok & secret_ok
    }

    /// Whether this token pins the CA whose certificate DER is `ca_cert_der`.
    pub fn matches_ca(&self, ca_cert_der: &[u8]) -> bool {
        ct_eq(ca_digest(ca_cert_der).as_bytes(), self.ca_digest.as_bytes())
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{}",
            self.ca_digest, self.secret
        )
    }
}

fn check_part(part: &'static str, value: &str, expected: usize) -> Result<()> {
    if value.len() != expected {
        return Err(Error::TokenLength {
            part,
            expected,
            actual: value.len(),
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Err(Error::TokenCharset { part });
    }
    Ok(())
}

impl FromStr for JoinToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let mut parts = s.split('-');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(Error::TokenPrefix);
        }
        match parts.next() {
            Some(TOKEN_VERSION) => {}
            Some(v) => return Err(Error::TokenVersion(v.to_string())),
            None => return Err(Error::TokenFormat),
        }
        let (Some(digest), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::TokenFormat);
        };
        check_part("CA digest", digest, DIGEST_LEN)?;
        check_part("secret", secret, SECRET_LEN)?;
        Ok(JoinToken {
            ca_digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{DEFAULT_CA_VALIDITY, RootCa};

    #[test]
    fn digest_is_sha256_in_base36() {
        // sha256("abc") in base 36, padded to 50 (checked with Python).
        assert_eq!(
            ca_digest(b"abc"),
            "4nb7oofka9ml8nasnokxxc1unhmtpr1wxsuwhpd9km3vt5as31"
        );
        assert_eq!(ca_digest(b"").len(), DIGEST_LEN);
    }

    #[test]
    fn digest_is_stable_across_reload() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let d = ca_digest(ca.cert_der());
        assert_eq!(d, ca.digest());
        assert_eq!(d.len(), DIGEST_LEN);
        let reloaded = RootCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.digest(), d);
        let token = JoinToken::generate(d);
        assert!(token.matches_ca(reloaded.cert_der()));
        let other = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        assert!(!token.matches_ca(other.cert_der()));
    }

    #[test]
    fn token_round_trip_and_lengths() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let token = JoinToken::generate(ca.digest());
        let text = token.to_string();
        assert_eq!(text.len(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 9 + 50 + 1 + 25);
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(&text[9..59], ca.digest());
        assert_eq!(&text[59..60], "-");
        assert_eq!(text[60..].len(), SECRET_LEN);
        let parsed: JoinToken = text.parse().unwrap();
        assert_eq!(parsed, token);
        assert!(token.verify(&parsed));
        assert!(format!("{token:?}").contains("redacted"));
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn secrets_differ() {
        let a = JoinToken::generate("x");
        let b = JoinToken::generate("x");
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), SECRET_LEN);
    }

    #[test]
    fn verify_rejects_other_secret_or_digest() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let t = JoinToken::generate(ca.digest());
        let other_secret = JoinToken::generate(ca.digest());
        assert!(!t.verify(&other_secret));
        let other_digest = JoinToken {
            ca_digest: "0".repeat(DIGEST_LEN),
            secret: t.secret.clone(),
        };
        assert!(!t.verify(&other_digest));
        let short = JoinToken {
            ca_digest: t.ca_digest.clone(),
            secret: t.secret[1..].to_string(),
        };
        assert!(!t.verify(&short));
    }

    #[test]
    fn parse_errors_are_typed() {
        let d = "a".repeat(50);
        let s = "b".repeat(25);
        let ok = format!("SWMTKN-1-{d}-{s}");
        assert!(ok.parse::<JoinToken>().is_ok());
        assert!(format!("  {ok}\n").parse::<JoinToken>().is_ok());

        let err = |t: &str| t.parse::<JoinToken>().unwrap_err();
        assert!(matches!(
            err(&format!("SWMTKX-1-{d}-{s}")),
            Error::TokenPrefix
        ));
        assert!(matches!(err(""), Error::TokenPrefix));
        assert!(matches!(
            err(&format!("swmtkn-1-{d}-{s}")),
            Error::TokenPrefix
        ));
        assert!(matches!(err(&format!("SWMTKN-2-{d}-{s}")), Error::TokenVersion(v) if v == "2"));
        assert!(matches!(err("SWMTKN"), Error::TokenFormat));
        assert!(matches!(err(&format!("SWMTKN-1-{d}")), Error::TokenFormat));
        assert!(matches!(
            err(&format!("SWMTKN-1-{d}-{s}-x")),
            Error::TokenFormat
        ));
        assert!(matches!(
            err(&format!("SWMTKN-1-{}-{s}", &d[1..])),
            Error::TokenLength {
                part: "CA digest",
                expected: 50,
                actual: 49
            }
        ));
        assert!(matches!(
            err(&format!("SWMTKN-1-{d}-{s}b")),
            Error::TokenLength {
                part: "secret",
                expected: 25,
                actual: 26
            }
        ));
        assert!(matches!(
            err(&format!("SWMTKN-1-{}A-{s}", &d[1..])),
            Error::TokenCharset { part: "CA digest" }
        ));
        assert!(matches!(
            err(&format!("SWMTKN-1-{d}-{}_", &s[1..])),
            Error::TokenCharset { part: "secret" }
        ));
        // messages are readable
        let msg = err(&format!("SWMTKN-1-{d}-x")).to_string();
        assert!(msg.contains("secret must be 25 characters, got 1"), "{msg}");
    }
}
