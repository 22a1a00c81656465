//! PEM in and out, and small encodings shared by the modules.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::error::{Error, Result};

/// The first `CERTIFICATE` block of `pem`, as DER.
pub(crate) fn cert_der_from_pem(pem: &str) -> Result<Vec<u8>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| Error::Pem {
            what: "certificate",
            reason: e.to_string(),
        })
}

/// The first `CERTIFICATE REQUEST` block of `pem`, as DER.
pub(crate) fn csr_der_from_pem(pem: &str) -> Result<Vec<u8>> {
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| Error::Pem {
            what: "certificate request",
            reason: e.to_string(),
        })
}

/// `der` as one PEM block with LF line endings.
pub(crate) fn to_pem(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

/// A private key from PEM (PKCS#8, as written by [`rcgen::KeyPair::serialize_pem`]).
pub(crate) fn key_pair_from_pem(pem: &str) -> Result<rcgen::KeyPair> {
    rcgen::KeyPair::from_pem(pem).map_err(|e| Error::Pem {
        what: "private key",
        reason: e.to_string(),
    })
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `bytes` read as a big-endian unsigned integer, written in base 36 (lowercase) and
/// left-padded with `0` to at least `width` characters — Go's
/// `fmt.Sprintf("%0*s", width, new(big.Int).SetBytes(bytes).Text(36))`.
pub(crate) fn base36(bytes: &[u8], width: usize) -> String {
    let mut num: Vec<u8> = bytes.to_vec();
    let mut digits: Vec<u8> = Vec::new();
    loop {
        let start = num.iter().position(|&b| b != 0);
        let Some(start) = start else { break };
        num.drain(..start);
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            // cur < 36 * 256, so the quotient fits in a byte.
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(BASE36[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes hex (either case); `None` on odd length or a non-hex character.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// Equality of two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_small_values() {
        assert_eq!(base36(&[], 0), "");
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 0), "z");
        assert_eq!(base36(&[1, 0], 0), "74"); // 256 = 7*36 + 4
        assert_eq!(base36(&[0, 0, 1, 0], 5), "00074");
    }

    #[test]
    fn base36_max_values_fit_swarm_widths() {
        assert_eq!(base36(&[0xff; 32], 50).len(), 50);
        assert_eq!(base36(&[0xff; 16], 25).len(), 25);
        // 2^128 - 1 in base 36, checked with Python's int -> base 36.
        assert_eq!(base36(&[0xff; 16], 25), "f5lxx1zz5pnorynqglhzmsp33");
    }

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001ABff"), Some(b.to_vec()));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
