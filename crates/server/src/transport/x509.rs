//! The two facts about a client certificate that authentication needs: its
//! SHA-256 fingerprint and its subject common name.
//!
//! The certificate has already been verified by rustls (webpki) against the
//! listener's client CA when we look at it, so it is well-formed DER. The
//! subject is read with the small DER reader of `switchyard-x509` (shared
//! with the client's `wss://` verifier); malformed input yields `None`,
//! never a panic.

use switchyard_x509::{element, subject, tlv};

/// SHA-256 of the DER bytes, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The subject's common name (OID 2.5.4.3); the last one if there are
/// several (the most specific, by convention). `None` if the subject has no
/// CN or the certificate cannot be read.
pub fn common_name(der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

    let mut subject = subject(der)?;
    let mut found = None;
    // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)
    while !subject.is_empty() {
        let (mut rdn, next) = element(subject, SET)?;
        subject = next;
        while !rdn.is_empty() {
            let (atv, next) = element(rdn, SEQUENCE)?;
            rdn = next;
            let (oid, value) = element(atv, OID)?;
            if oid == CN_OID {
                let (tag, content, _) = tlv(value)?;
                found = Some(string_value(tag, content)?);
            }
        }
    }
    found
}

/// A DirectoryString as text.
fn string_value(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, VisibleString
        0x0C | 0x13 | 0x16 | 0x1A => String::from_utf8(content.to_vec()).ok(),
        // TeletexString: in practice Latin-1.
        0x14 => Some(content.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UTF-16BE.
        0x1E => {
            if !content.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a DER element.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else if n < 0x100 {
            out.extend([0x81, n as u8]);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn atv(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        der(
            0x31,
            &der(0x30, &[der(0x06, oid), der(tag, value)].concat()),
        )
    }

    /// A certificate skeleton with the given subject RDNs.
    fn cert(subject_rdns: &[Vec<u8>]) -> Vec<u8> {
        let tbs = [
            der(0xA0, &der(0x02, &[2])),
            der(0x02, &[1, 2, 3]),
            der(0x30, &der(0x06, &[1, 2])),
            der(0x30, &atv(&[0x55, 0x04, 0x03], 0x0C, b"Issuer CA")),
            der(
                0x30,
                &[der(0x17, b"250101000000Z"), der(0x17, b"350101000000Z")].concat(),
            ),
            der(0x30, &subject_rdns.concat()),
            der(0x30, &[0u8; 200]),
        ]
        .concat();
        der(
            0x30,
            &[der(0x30, &tbs), der(0x30, &[]), der(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn reads_the_subject_cn_not_the_issuers() {
        let c = cert(&[
            atv(&[0x55, 0x04, 0x06], 0x13, b"DE"),
            atv(&[0x55, 0x04, 0x03], 0x0C, "sensor-7 ü".as_bytes()),
        ]);
        assert_eq!(common_name(&c).as_deref(), Some("sensor-7 ü"));
    }

    #[test]
    fn string_kinds() {
        let bmp: Vec<u8> = "Zoë".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        let c = cert(&[atv(&[0x55, 0x04, 0x03], 0x1E, &bmp)]);
        assert_eq!(common_name(&c).as_deref(), Some("Zoë"));
        let c = cert(&[atv(&[0x55, 0x04, 0x03], 0x13, b"printable")]);
        assert_eq!(common_name(&c).as_deref(), Some("printable"));
    }

    #[test]
    fn no_cn_and_garbage_give_none() {
        assert_eq!(
            common_name(&cert(&[atv(&[0x55, 0x04, 0x0A], 0x0C, b"Org")])),
            None
        );
        let good = cert(&[atv(&[0x55, 0x04, 0x03], 0x0C, b"x")]);
        for cut in 0..good.len() {
            // Truncations must not panic (most give None).
            let _ = common_name(&good[..cut]);
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(common_name(&[0x30, 0x80, 0, 0]), None);
    }

    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
