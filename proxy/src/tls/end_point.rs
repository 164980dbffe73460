//! `tls-server-end-point` channel binding data (RFC 5929 §4.1): the hash of the server's
//! certificate, with the hash of its signature algorithm — SHA-256 when that is MD5 or SHA-1.
//! Certificates signed otherwise (Ed25519, RSA-PSS) have none, as in PostgreSQL, and then
//! `SCRAM-SHA-256-PLUS` is not offered.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// DER object identifiers (contents only) of the signature algorithms, by hash.
const SHA256_LIKE: &[&[u8]] = &[
    // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
    // ecdsa-with-SHA1, ecdsa-with-SHA256
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
];
const SHA384_LIKE: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
];
const SHA512_LIKE: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
];

/// The binding data for a DER certificate, if its signature algorithm names a usable hash.
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_oid(cert)?;
    if SHA256_LIKE.contains(&oid) {
        Some(Sha256::digest(cert).to_vec())
    } else if SHA384_LIKE.contains(&oid) {
        Some(Sha384::digest(cert).to_vec())
    } else if SHA512_LIKE.contains(&oid) {
        Some(Sha512::digest(cert).to_vec())
    } else {
        None
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`: the OID of
/// `signatureAlgorithm`.
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = tlv(body)?; // tbsCertificate
    let (tag, alg, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_garbage_input_has_no_hash() {
        for b in [
            &b""[..],
            b"\x30",
            b"\x30\x85\0\0\0\0\0",
            b"\x30\x03\x30\x01",
            b"\x04\x00",
        ] {
            assert_eq!(end_point_hash(b), None);
        }
    }
}
