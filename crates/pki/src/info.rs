//! Reading node certificates: identity, validity, issuer check and renewal timing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use crate::ca::{CLOCK_SKEW_BACKDATE, Role};
use crate::error::{Error, Result};
use crate::pemutil;

/// Who a node certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertInfo {
    /// Subject CN.
    pub node_id: String,
    /// Subject OU.
    pub role: Role,
    /// Subject O.
    pub cluster_id: String,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Certificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn first_attr<'a>(
    mut iter: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    field: &'static str,
) -> Result<String> {
    let attr = iter.next().ok_or(Error::MissingField(field))?;
    attr.as_str()
        .map(str::to_string)
        .map_err(|e| Error::Certificate(format!("{field}: {e}")))
}

/// `(not_before, not_after)` of a certificate.
pub(crate) fn validity_of(der: &[u8]) -> Result<(SystemTime, SystemTime)> {
    let cert = parse(der)?;
    Ok((
        system_time(cert.validity().not_before),
        system_time(cert.validity().not_after),
    ))
}

impl CertInfo {
    /// Reads a node certificate in DER. Fails if CN, OU or O is missing or OU is not
    /// a known [`Role`].
    pub fn from_der(der: &[u8]) -> Result<CertInfo> {
        let cert = parse(der)?;
        let subject = cert.subject();
        let node_id = first_attr(subject.iter_common_name(), "common name (node id)")?;
        let role = first_attr(
            subject.iter_organizational_unit(),
            "organizational unit (role)",
        )?
        .parse()?;
        let cluster_id = first_attr(subject.iter_organization(), "organization (cluster id)")?;
        Ok(CertInfo {
            node_id,
            role,
            cluster_id,
            not_before: system_time(cert.validity().not_before),
            not_after: system_time(cert.validity().not_after),
            serial_hex: pemutil::hex(cert.raw_serial()),
        })
    }

    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<CertInfo> {
        Self::from_der(&pemutil::cert_der_from_pem(pem)?)
    }

    /// `not_after - not_before` (zero if inverted).
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// Checks that `cert_der` was signed by the CA certificate `ca_der` (issuer name and
/// signature) and that both are within their validity periods now.
pub fn verify_issued_by(cert_der: &[u8], ca_der: &[u8]) -> Result<()> {
    verify_issued_by_at(cert_der, ca_der, SystemTime::now())
}

/// [`verify_issued_by`] at a given time.
pub fn verify_issued_by_at(cert_der: &[u8], ca_der: &[u8], now: SystemTime) -> Result<()> {
    let cert = parse(cert_der)?;
    let ca = parse(ca_der)?;
    if !ca.is_ca() {
        return Err(Error::NotIssuedBy(
            "the issuer certificate is not a CA".into(),
        ));
    }
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(Error::NotIssuedBy(format!(
            "issuer {} is not the CA's subject {}",
            cert.issuer(),
            ca.subject()
        )));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| Error::NotIssuedBy(format!("signature check failed: {e}")))?;
    for c in [&cert, &ca] {
        if now < system_time(c.validity().not_before) {
            return Err(Error::NotYetValid);
        }
        if now > system_time(c.validity().not_after) {
            return Err(Error::Expired);
        }
    }
    Ok(())
}

/// How long to wait before renewing: a uniformly random point between 50% and 80%
/// of the certificate's lifetime (counted from `not_before`), minus the time already
/// elapsed at `now`; zero if that point has passed. (Swarm's `calculateRandomExpiry`.)
pub fn renewal_delay(info: &CertInfo, now: SystemTime) -> Duration {
    renewal_delay_at_fraction(info, now, rand::random_range(0.5..0.8))
}

/// How long to wait before renewing a certificate described by `info`.
///
/// Certificates are back-dated by [`CLOCK_SKEW_BACKDATE`] for nodes with lagging
/// clocks; that margin is not part of the lifetime the cluster asked for, so the
/// 50–80 % window is counted from the issuance (never later than now), not from
/// `not_before`. Without this a certificate of a few minutes would be renewed the
/// moment it arrives, again and again.
pub fn renewal_wait(info: &CertInfo, now: SystemTime) -> Duration {
    let issued = (info.not_before + CLOCK_SKEW_BACKDATE)
        .min(now)
        .max(info.not_before)
        .min(info.not_after);
    let counted = CertInfo {
        not_before: issued,
        ..info.clone()
    };
    renewal_delay(&counted, now).max(MIN_RENEWAL_WAIT)
}

/// The shortest wait between renewals, so a clock far off never makes a renewal loop.
pub const MIN_RENEWAL_WAIT: Duration = Duration::from_secs(1);

fn renewal_delay_at_fraction(info: &CertInfo, now: SystemTime, fraction: f64) -> Duration {
    let target = info.not_before + info.lifetime().mul_f64(fraction);
    target.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{DEFAULT_CA_VALIDITY, NodeKey, RootCa};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn info_with(not_before: SystemTime, life: Duration) -> CertInfo {
        CertInfo {
            node_id: "n".into(),
            role: Role::Worker,
            cluster_id: "c".into(),
            not_before,
            not_after: not_before + life,
            serial_hex: "01".into(),
        }
    }

    #[test]
    fn renewal_delay_bounds_fresh_cert() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let info = info_with(start, 100 * DAY);
        for _ in 0..2000 {
            let d = renewal_delay(&info, start);
            assert!(d >= 50 * DAY && d <= 80 * DAY, "{d:?}");
        }
        assert_eq!(renewal_delay_at_fraction(&info, start, 0.5), 50 * DAY);
        assert_eq!(renewal_delay_at_fraction(&info, start, 0.8), 80 * DAY);
    }

    #[test]
    fn renewal_delay_subtracts_elapsed_time() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let info = info_with(start, 100 * DAY);
        let now = start + 30 * DAY;
        for _ in 0..2000 {
            let d = renewal_delay(&info, now);
            assert!(d >= 20 * DAY && d <= 50 * DAY, "{d:?}");
        }
        // Inside the window: somewhere between zero and the 80% point.
        let now = start + 60 * DAY;
        for _ in 0..2000 {
            let d = renewal_delay(&info, now);
            assert!(d <= 20 * DAY, "{d:?}");
        }
        // Past 80%, or expired: renew now.
        assert_eq!(renewal_delay(&info, start + 81 * DAY), Duration::ZERO);
        assert_eq!(renewal_delay(&info, start + 200 * DAY), Duration::ZERO);
    }

    #[test]
    fn renewal_delay_spreads() {
        let start = UNIX_EPOCH;
        let info = info_with(start, 100 * DAY);
        let delays: Vec<_> = (0..200).map(|_| renewal_delay(&info, start)).collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > 10 * DAY, "{min:?}..{max:?}");
    }

    #[test]
    fn verify_issued_by_our_ca_not_another() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let other = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let csr = NodeKey::generate().csr_pem().unwrap();
        let pem = ca.issue(&csr, "w1", Role::Worker, "c", DAY, &[]).unwrap();
        let der = pemutil::cert_der_from_pem(&pem).unwrap();
        verify_issued_by(&der, ca.cert_der()).unwrap();
        let r = verify_issued_by(&der, other.cert_der());
        // Same subject (swarm-ca), so it is the signature that fails.
        assert!(
            matches!(r, Err(Error::NotIssuedBy(ref m)) if m.contains("signature")),
            "{r:?}"
        );
        // A leaf is not an issuer.
        let r = verify_issued_by(&der, &der);
        assert!(matches!(r, Err(Error::NotIssuedBy(_))), "{r:?}");
        // Validity period.
        let r = verify_issued_by_at(&der, ca.cert_der(), SystemTime::now() + 2 * DAY);
        assert!(matches!(r, Err(Error::Expired)), "{r:?}");
        let r = verify_issued_by_at(&der, ca.cert_der(), SystemTime::now() - DAY);
        assert!(matches!(r, Err(Error::NotYetValid)), "{r:?}");
        // Garbage.
        let r = verify_issued_by(b"junk", ca.cert_der());
        assert!(matches!(r, Err(Error::Certificate(_))), "{r:?}");
    }

    #[test]
    fn cert_info_of_ca_has_no_role() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let r = CertInfo::from_der(ca.cert_der());
        assert!(matches!(r, Err(Error::MissingField(_))), "{r:?}");
        assert!(CertInfo::from_pem("not pem").is_err());
    }

    #[test]
    fn cert_info_times_bracket_now() {
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
        let csr = NodeKey::generate().csr_pem().unwrap();
        let pem = ca.issue(&csr, "a", Role::Admin, "c", DAY, &[]).unwrap();
        let info = CertInfo::from_pem(&pem).unwrap();
        let now = SystemTime::now();
        assert!(info.not_before < now && now < info.not_after);
        assert_eq!(info.role, Role::Admin);
        let d = renewal_delay(&info, now);
        assert!(
            d > Duration::from_secs(11 * 3600) && d < Duration::from_secs(20 * 3600),
            "{d:?}"
        );
    }
}
