//! The few facts Switchyard reads from X.509 certificates, with a tiny
//! bounds-checked DER reader instead of a full X.509 crate (x509-parser would
//! add nom, asn1-rs, der-parser and more for a name and two dates). Shared by
//! the client's `wss://` verifier (validity dates) and the router's client-
//! certificate authentication (subject common name). Every read is checked:
//! malformed input yields `None`, never a panic.
//!
//! Why a crate of its own: both TLS sides read certificates, and neither
//! should depend on the other for it (the server used to import this from
//! the client crate). It is not WAMP, so it is not `switchyard-proto`'s.
//! `switchyard_client::der` re-exports it under its old name.

/// One DER element: (tag, content, rest).
pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1F == 0x1F {
        return None; // high tag numbers do not occur where we look
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None; // indefinite (not DER) or absurdly long
        }
        let bytes = input.get(2..2 + n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let content = input.get(header..end)?;
    Some((tag, content, input.get(end..)?))
}

/// The content of an element with tag `tag`, and what follows it.
pub fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(input)?;
    (t == tag).then_some((content, rest))
}

/// What follows the first element.
pub fn skip(input: &[u8]) -> Option<&[u8]> {
    tlv(input).map(|(_, _, rest)| rest)
}

const SEQUENCE: u8 = 0x30;

/// A certificate's TBSCertificate from its `validity` on (validity, subject,
/// ...): the version, serial number, signature algorithm and issuer skipped.
fn from_validity(cert: &[u8]) -> Option<&[u8]> {
    let (cert, _) = element(cert, SEQUENCE)?;
    let (tbs, _) = element(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = skip(rest)?; // [0] version
    }
    rest = skip(rest)?; // serialNumber
    rest = skip(rest)?; // signature AlgorithmIdentifier
    skip(rest) // issuer
}

/// The content of a certificate's subject Name (a SEQUENCE OF
/// RelativeDistinguishedName).
pub fn subject(cert: &[u8]) -> Option<&[u8]> {
    let rest = skip(from_validity(cert)?)?;
    element(rest, SEQUENCE).map(|(subject, _)| subject)
}

/// notBefore and notAfter of a certificate, in seconds since the Unix epoch.
pub fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (validity, _) = element(from_validity(cert)?, SEQUENCE)?;
    let (t1, v1, rest) = tlv(validity)?;
    let (t2, v2, _) = tlv(rest)?;
    Some((time(t1, v1)?, time(t2, v2)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950..2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) as seconds since the Unix epoch.
pub fn time(tag: u8, content: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<u8>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = i32::from(num(&digits[..2])?);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse::<i32>().ok()?, &digits[4..]),
        _ => return None,
    };
    let month = time::Month::try_from(num(&rest[..2])?).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(&rest[2..4])?).ok()?;
    let (h, m, s) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    let at = date.with_hms(h, m, s).ok()?.assume_utc();
    u64::try_from(at.unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"260101000000Z"), Some(1_767_225_600));
        assert_eq!(time(0x18, b"20260101000000Z"), Some(1_767_225_600));
        assert_eq!(time(0x18, b"20240229123456Z"), Some(1_709_210_096));
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        assert_eq!(time(0x18, b"260101000000Z"), None); // GeneralizedTime: 4-digit years
        assert_eq!(time(0x17, b"261301000000Z"), None);
        assert_eq!(time(0x17, b"2601010000Z"), None);
        assert_eq!(time(0x17, b"260101000000"), None);
    }
}
