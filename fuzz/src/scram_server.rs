//! `scram_server`: the SCRAM-SHA-256 server exchange (`protocol::auth::scram`) fed an arbitrary
//! client-first-message and an arbitrary client-final-message, checked against an independent
//! computation of the proof (RFC 5802 with `hmac` + `sha2`, not the code under test).
//!
//! Input: `[flags][client-first up to a NUL][client-final template]`. In the template `%n`
//! stands for the combined nonce the server chose, which the fuzzer cannot guess. Flags:
//! bit 0 uses a mock verifier (an unknown user), bit 1 replaces the template with the correct
//! client-final-message, bit 2 appends `,p=` and the correct proof for the template.
//!
//! Invariants: success only with the right proof, never for a mock verifier, and always with
//! the correct client-final-message; a correct proof is never refused as a wrong one; the
//! server-final signature is the right one; verifiers parse back from what they print.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use pgpivot_protocol::auth::scram::{server_first, ScramError, ScramVerifier};
use sha2::{Digest, Sha256};

use super::common::Input;

const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"fuzz salt";

/// The real verifier (one PBKDF2 round, so an execution stays cheap) and the client's keys,
/// derived independently.
struct Keys {
    verifier: ScramVerifier,
    mock: ScramVerifier,
    client_key: [u8; 32],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        // PBKDF2 with one iteration is U1 = HMAC(password, salt || INT(1)).
        let salted = hmac(PASSWORD.as_bytes(), &[SALT, &1u32.to_be_bytes()]);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let keys = Keys {
            verifier: ScramVerifier::with_salt(PASSWORD, SALT, 1),
            mock: ScramVerifier::mock_for("nobody", b"fuzz server secret"),
            client_key,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        };
        let want = format!(
            "SCRAM-SHA-256$1:{}${}:{}",
            STANDARD.encode(SALT),
            STANDARD.encode(keys.stored_key),
            STANDARD.encode(keys.server_key)
        );
        assert_eq!(
            keys.verifier.to_string(),
            want,
            "the oracle derives the same keys"
        );
        keys
    })
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let client_first = input.until(0);
    let template = input.rest();
    verifier_strings(client_first);
    verifier_strings(template);

    let k = keys();
    let mock = flags & 1 != 0;
    let verifier = if mock { &k.mock } else { &k.verifier };
    let (state, first) = match server_first(verifier, client_first) {
        Ok(ok) => ok,
        Err(e) => {
            assert!(e.sqlstate().len() == 5);
            return;
        }
    };
    let first = String::from_utf8(first).expect("server-first is ASCII");
    let client_nonce = client_first
        .split(|&b| b == b',')
        .nth(3)
        .and_then(|a| a.strip_prefix(b"r="))
        .expect("server_first accepted a nonce");
    let nonce = first
        .strip_prefix("r=")
        .and_then(|r| r.split(',').next())
        .expect("server-first starts with the nonce");
    assert!(nonce.as_bytes().starts_with(client_nonce));
    assert_eq!(
        nonce.len(),
        client_nonce.len() + 24,
        "18 random bytes in base64"
    );
    assert!(first.ends_with(&format!(
        ",s={},i={}",
        STANDARD.encode(verifier.salt()),
        verifier.iterations()
    )));
    // Accepted client-first messages start with the gs2 header `n,,` or `y,,`.
    let bare = &client_first[3..];
    let auth_message =
        |without_proof: &[u8]| [bare, b",", first.as_bytes(), b",", without_proof].concat();
    let proof_for = |without_proof: &[u8]| -> String {
        let sig = hmac(&k.stored_key, &[&auth_message(without_proof)]);
        let proof: Vec<u8> = k.client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        STANDARD.encode(proof)
    };

    let (message, proof_is_right) = if flags & 2 != 0 {
        let binding = if client_first[0] == b'y' {
            "eSws"
        } else {
            "biws"
        };
        let without = format!("c={binding},r={nonce}");
        (
            format!("{without},p={}", proof_for(without.as_bytes())).into_bytes(),
            true,
        )
    } else {
        let mut m = replace(template, b"%n", nonce.as_bytes());
        if flags & 4 != 0 {
            let p = proof_for(&m);
            m.extend_from_slice(b",p=");
            m.extend_from_slice(p.as_bytes());
        }
        (m, flags & 4 != 0)
    };

    match state.verify_final(&message) {
        Ok(server_final) => {
            assert!(!mock, "a mock verifier never authenticates");
            let at = find(&message, b",p=").expect("accepted message has a proof");
            let (without, proof) = (&message[..at], &message[at + 3..]);
            assert_eq!(
                proof,
                proof_for(without).as_bytes(),
                "accepted a wrong proof"
            );
            let sig = hmac(&k.server_key, &[&auth_message(without)]);
            assert_eq!(
                server_final,
                format!("v={}", STANDARD.encode(sig)).into_bytes()
            );
        }
        Err(e) => {
            assert!(
                flags & 2 == 0 || mock,
                "the correct client-final-message was refused: {e:?}"
            );
            if proof_is_right && !mock {
                assert_ne!(e, ScramError::InvalidProof, "a correct proof was refused");
            }
        }
    }
}

/// Stored verifier strings: whatever parses prints as something that parses to the same.
fn verifier_strings(s: &[u8]) {
    let s = String::from_utf8_lossy(s);
    if let Ok(v) = ScramVerifier::parse(&s) {
        let again = ScramVerifier::parse(&v.to_string()).expect("printed verifier parses");
        assert_eq!(again, v);
        assert!(!v.is_mock() && v.iterations() > 0 && !v.salt().is_empty());
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    while let Some(i) = find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
