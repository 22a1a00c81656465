//! The root CA, node roles, node keys and certificate signing requests.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::pemutil;

/// Common name of the root CA certificate (Swarm's).
pub const CA_COMMON_NAME: &str = "swarm-ca";

/// Default lifetime of a root CA: 20 years, as in Swarm.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);

/// Default lifetime of a node certificate: 90 days, as in Swarm.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// How far in the past every certificate's `not_before` is put, so that nodes whose
/// clocks lag a little still accept a fresh certificate.
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What a node is allowed to do; carried in its certificate's subject OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs tasks; talks to dispatchers. OU `swarm-worker`.
    Worker,
    /// Runs the control plane. OU `swarm-manager`.
    Manager,
    /// The CLI's client certificate. OU `shoal-admin`.
    Admin,
}

impl Role {
    /// The OU string: `swarm-worker`, `swarm-manager` or `shoal-admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "swarm-worker",
            Role::Manager => "swarm-manager",
            Role::Admin => "shoal-admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "swarm-worker" => Ok(Role::Worker),
            "swarm-manager" => Ok(Role::Manager),
            "shoal-admin" => Ok(Role::Admin),
            other => Err(Error::UnknownRole(other.to_string())),
        }
    }
}

/// An extra subject alternative name for an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address (a manager's listen address, so clients can verify it by IP).
    Ip(IpAddr),
}

impl From<IpAddr> for San {
    fn from(ip: IpAddr) -> Self {
        San::Ip(ip)
    }
}

impl San {
    fn to_rcgen(&self) -> Result<SanType> {
        match self {
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            San::Dns(name) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| Error::InvalidSan(name.clone())),
        }
    }
}

/// The cluster's root certificate authority: an ECDSA P-256 self-signed CA.
pub struct RootCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
    not_after: OffsetDateTime,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and no leading zero byte: always 16 bytes, 126 random bits.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn validity_window(
    now: OffsetDateTime,
    validity: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let to_time = |d: Duration| {
        time::Duration::try_from(d).map_err(|e| Error::Validity(format!("{d:?}: {e}")))
    };
    let not_before = now
        .checked_sub(to_time(CLOCK_SKEW_BACKDATE)?)
        .ok_or_else(|| Error::Validity("not_before out of range".into()))?;
    let not_after = now
        .checked_add(to_time(validity)?)
        .ok_or_else(|| Error::Validity(format!("{validity:?} is too long")))?;
    if not_after.year() > 9999 {
        return Err(Error::Validity(format!("{validity:?} is too long")));
    }
    if validity.is_zero() {
        return Err(Error::Validity("validity must be positive".into()));
    }
    Ok((not_before, not_after))
}

fn check_name(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidName {
            field,
            reason: "empty".into(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            field,
            reason: "contains control characters".into(),
        });
    }
    Ok(())
}

/// Whether `s` is one DNS label (letters, digits, inner hyphens, at most 63 bytes).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl RootCa {
    /// A new self-signed root CA (CN `swarm-ca`, CA basic constraint, key usage
    /// certSign + cRLSign) valid from a few minutes ago until `now + validity`.
    pub fn generate(validity: Duration) -> Result<RootCa> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (not_before, not_after) = validity_window(OffsetDateTime::now_utc(), validity)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().to_vec();
        Ok(RootCa {
            cert_pem: pemutil::to_pem("CERTIFICATE", &cert_der),
            cert_der,
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// Reloads a CA from its certificate and PKCS#8 private key in PEM. Fails if the
    /// certificate is not a CA or the key is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa> {
        let cert_der = pemutil::cert_der_from_pem(cert_pem)?;
        let key = pemutil::key_pair_from_pem(key_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        if !x509.is_ca() {
            return Err(Error::Certificate(
                "not a CA certificate (no CA basic constraint)".into(),
            ));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::KeyMismatch);
        }
        let not_after = x509.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)?;
        Ok(RootCa {
            cert_pem: pemutil::to_pem("CERTIFICATE", &cert_der),
            cert_der,
            issuer,
            not_after,
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key in PEM (PKCS#8). Seal it before it goes anywhere.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// [`ca_digest`](crate::ca_digest) of this CA's certificate.
    pub fn digest(&self) -> String {
        crate::token::ca_digest(&self.cert_der)
    }

    /// Signs `csr_pem` and returns the certificate in PEM.
    ///
    /// Only the CSR's public key (and its self-signature) is used: the subject is set
    /// to CN = `node_id`, OU = `role`, O = `cluster_id`; extended key usage is client
    /// and server auth; subject alternative names are the role string (Swarm's
    /// `swarm-manager` / `swarm-worker`), the node id when it is a DNS label, and
    /// `extra_sans`. The certificate is valid from a few minutes ago
    /// ([`CLOCK_SKEW_BACKDATE`]) until `now + validity`, capped at the CA's own expiry,
    /// with a random serial.
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
        extra_sans: &[San],
    ) -> Result<String> {
        check_name("node id", node_id)?;
        check_name("cluster id", cluster_id)?;
        let public_key = csr_public_key(csr_pem)?;

        let now = OffsetDateTime::now_utc();
        let (not_before, mut not_after) = validity_window(now, validity)?;
        if not_after > self.not_after {
            not_after = self.not_after;
        }
        if not_after <= now {
            return Err(Error::Validity(
                "the CA certificate has expired; rotate the root CA".into(),
            ));
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());

        let mut sans = vec![San::Dns(role.as_str().to_string()).to_rcgen()?];
        if is_dns_label(node_id) && node_id != role.as_str() {
            sans.push(San::Dns(node_id.to_string()).to_rcgen()?);
        }
        for san in extra_sans {
            let san = san.to_rcgen()?;
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;

        let cert = params.signed_by(&public_key, &self.issuer)?;
        Ok(pemutil::to_pem("CERTIFICATE", cert.der()))
    }
}

/// Parses a CSR, checks its self-signature and returns its public key. Extensions
/// and subject are ignored.
fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo> {
    let der = pemutil::csr_der_from_pem(csr_pem)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| Error::Csr(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Csr("trailing bytes after the request".into()));
    }
    csr.verify_signature()
        .map_err(|e| Error::Csr(format!("bad signature: {e}")))?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| Error::Csr(format!("unsupported public key: {e}")))
}

/// A node's private key (ECDSA P-256). The node keeps it; only CSRs leave.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A fresh ECDSA P-256 key.
    ///
    /// # Panics
    /// Only if the operating system's random number generator fails.
    #[allow(clippy::expect_used)]
    pub fn generate() -> NodeKey {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .expect("ECDSA P-256 key generation failed: OS random number generator unavailable");
        NodeKey { key }
    }

    /// The key in PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Loads a key written by [`NodeKey::key_pem`].
    pub fn from_pem(key_pem: &str) -> Result<NodeKey> {
        Ok(NodeKey {
            key: pemutil::key_pair_from_pem(key_pem)?,
        })
    }

    /// A certificate signing request for this key, in PEM. Its subject is a
    /// placeholder: the CA decides the node's identity.
    pub fn csr_pem(&self) -> Result<String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "swarm-node");
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }

    /// Whether `cert_pem` certifies this key.
    pub fn matches_cert_pem(&self, cert_pem: &str) -> Result<bool> {
        let der = pemutil::cert_der_from_pem(cert_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(x509.public_key().subject_public_key.data.as_ref() == self.key.public_key_raw())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{CertInfo, verify_issued_by};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn role_strings_round_trip() {
        for role in [Role::Worker, Role::Manager, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(Role::Worker.as_str(), "swarm-worker");
        assert_eq!(Role::Manager.as_str(), "swarm-manager");
        assert_eq!(Role::Admin.as_str(), "shoal-admin");
        assert!(matches!("boss".parse::<Role>(), Err(Error::UnknownRole(r)) if r == "boss"));
    }

    #[test]
    fn generated_ca_is_a_ca() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert!(x.is_ca());
        let cn = x
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "swarm-ca");
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(ca.key_pem().contains("BEGIN PRIVATE KEY"));
        // self-signed
        x.verify_signature(None).unwrap();
        let years = x.validity().time_to_expiration().unwrap().whole_days() / 365;
        assert!((19..=20).contains(&years), "{years}");
    }

    #[test]
    fn issue_sets_identity_from_arguments_not_csr() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let key = NodeKey::generate();
        let cert = ca
            .issue(
                &key.csr_pem().unwrap(),
                "node1abc",
                Role::Manager,
                "cluster9",
                DEFAULT_NODE_VALIDITY,
                &[
                    San::Ip("127.0.0.1".parse().unwrap()),
                    San::Dns("m1.local".into()),
                ],
            )
            .unwrap();
        let info = CertInfo::from_pem(&cert).unwrap();
        assert_eq!(info.node_id, "node1abc");
        assert_eq!(info.role, Role::Manager);
        assert_eq!(info.cluster_id, "cluster9");
        assert_eq!(info.serial_hex.len(), 32);
        let life = info.not_after.duration_since(info.not_before).unwrap();
        assert_eq!(life, DEFAULT_NODE_VALIDITY + CLOCK_SKEW_BACKDATE);
        assert!(key.matches_cert_pem(&cert).unwrap());
        assert!(!NodeKey::generate().matches_cert_pem(&cert).unwrap());

        let der = pemutil::cert_der_from_pem(&cert).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!x.is_ca());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        let sans: Vec<String> = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            sans,
            [
                "DNSName(swarm-manager)",
                "DNSName(node1abc)",
                "IPAddress(7f:00:00:01)",
                "DNSName(m1.local)"
            ]
        );
        verify_issued_by(&der, ca.cert_der()).unwrap();
    }

    #[test]
    fn issue_rejects_bad_input() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let csr = NodeKey::generate().csr_pem().unwrap();
        let r = ca.issue("nope", "n", Role::Worker, "c", DAY, &[]);
        assert!(matches!(r, Err(Error::Pem { .. })), "{r:?}");
        let r = ca.issue(&csr, "", Role::Worker, "c", DAY, &[]);
        assert!(matches!(r, Err(Error::InvalidName { .. })), "{r:?}");
        let r = ca.issue(&csr, "n", Role::Worker, "c", Duration::ZERO, &[]);
        assert!(matches!(r, Err(Error::Validity(_))), "{r:?}");
        let r = ca.issue(
            &csr,
            "n",
            Role::Worker,
            "c",
            DAY,
            &[San::Dns("bad\u{e9}".into())],
        );
        assert!(matches!(r, Err(Error::InvalidSan(_))), "{r:?}");
        // A CSR whose signature does not match its key.
        let der = pemutil::csr_der_from_pem(&csr).unwrap();
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        let r = ca.issue(
            &pemutil::to_pem("CERTIFICATE REQUEST", &bad),
            "n",
            Role::Worker,
            "c",
            DAY,
            &[],
        );
        assert!(matches!(r, Err(Error::Csr(_))), "{r:?}");
    }

    #[test]
    fn expired_or_absurd_validity_is_refused() {
        assert!(matches!(
            RootCa::generate(Duration::MAX),
            Err(Error::Validity(_))
        ));
        assert!(matches!(
            RootCa::generate(Duration::from_secs(20_000 * 365 * 86_400)),
            Err(Error::Validity(_))
        ));
        let ca = RootCa::generate(Duration::from_secs(1)).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        let csr = NodeKey::generate().csr_pem().unwrap();
        let r = ca.issue(&csr, "n1", Role::Worker, "c", DAY, &[]);
        assert!(
            matches!(r, Err(Error::Validity(ref m)) if m.contains("expired")),
            "{r:?}"
        );
    }

    #[test]
    fn node_cert_never_outlives_ca() {
        let ca = RootCa::generate(DAY).unwrap();
        let csr = NodeKey::generate().csr_pem().unwrap();
        let cert = ca
            .issue(&csr, "n1", Role::Worker, "c", DEFAULT_NODE_VALIDITY, &[])
            .unwrap();
        let info = CertInfo::from_pem(&cert).unwrap();
        let ca_info = crate::info::validity_of(ca.cert_der()).unwrap();
        assert!(info.not_after <= ca_info.1);
    }

    #[test]
    fn reloaded_ca_issues_verifiable_certs() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let reloaded = RootCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.cert_der(), ca.cert_der());
        assert_eq!(reloaded.digest(), ca.digest());
        let key = NodeKey::from_pem(&NodeKey::generate().key_pem()).unwrap();
        let cert = reloaded
            .issue(&key.csr_pem().unwrap(), "w1", Role::Worker, "c1", DAY, &[])
            .unwrap();
        let der = pemutil::cert_der_from_pem(&cert).unwrap();
        verify_issued_by(&der, ca.cert_der()).unwrap();
        verify_issued_by(&der, reloaded.cert_der()).unwrap();
        // The authority key identifier matches the CA's subject key identifier.
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.clone()
                }
                _ => None,
            })
            .unwrap();
        let ski = root
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.clone())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(aki.0, ski.0);
    }

    #[test]
    fn from_pem_refuses_wrong_key_and_non_ca() {
        let ca = RootCa::generate(DAY).unwrap();
        let other = RootCa::generate(DAY).unwrap();
        let r = RootCa::from_pem(ca.cert_pem(), &other.key_pem());
        assert!(matches!(r, Err(Error::KeyMismatch)), "{r:?}");
        let key = NodeKey::generate();
        let leaf = ca
            .issue(&key.csr_pem().unwrap(), "n", Role::Worker, "c", DAY, &[])
            .unwrap();
        let r = RootCa::from_pem(&leaf, &key.key_pem());
        assert!(matches!(r, Err(Error::Certificate(_))), "{r:?}");
        let r = RootCa::from_pem("garbage", &ca.key_pem());
        assert!(matches!(r, Err(Error::Pem { .. })), "{r:?}");
        let r = RootCa::from_pem(ca.cert_pem(), "garbage");
        assert!(matches!(r, Err(Error::Pem { .. })), "{r:?}");
    }
}
