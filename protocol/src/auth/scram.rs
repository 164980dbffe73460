//! SCRAM-SHA-256 (RFC 5802/7677), server side, as PostgreSQL implements it.
//!
//! Why not pgwire's `ScramServerAuth`: it can be driven without its connection plumbing, but it
//! compares the final proof with `==` (not constant time), reports every failure as a
//! stringly-typed `PgWireError`, and keeps no notion of a mock verifier. The exchange itself is
//! ~150 lines with `hmac` + `sha2`, so it lives here. pgwire is still used for the one piece that
//! needs a new dependency otherwise: SASLprep + PBKDF2 (`gen_salted_password`), which falls back to
//! the raw password when SASLprep fails, exactly like PostgreSQL.
//!
//! Channel binding `tls-server-end-point` (RFC 5929) when the proxy offers
//! `SCRAM-SHA-256-PLUS` over TLS ([`Binding`]): the gs2 flags are judged as PostgreSQL's
//! auth-scram.c does — `p` only with PLUS chosen, `y` (the client could bind but believes the
//! server cannot) accepted only when PLUS was not offered, otherwise a downgrade.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sqlstate;

/// Iteration count for new verifiers (PostgreSQL's `scram_iterations` default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
/// Raw server nonce length, as in PostgreSQL (`SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;
const PREFIX: &str = "SCRAM-SHA-256$";

/// Why a SCRAM exchange (or a stored verifier) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Authorization identities and mandatory extensions, which PostgreSQL refuses too.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// A gs2 flag that does not fit what was offered and chosen (see [`Binding`]) or a `c=` that does not match the gs2 header.
    #[error("SCRAM channel binding check failed")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// Wrong password, or a mock verifier (unknown user): deliberately indistinguishable.
    #[error("password authentication failed")]
    InvalidProof,
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
}

impl ScramError {
    /// `28P01` for a failed proof (and a broken stored verifier, which PostgreSQL also reports as a
    /// plain authentication failure), `0A000` for unsupported features, `08P01` otherwise.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramError::InvalidProof | ScramError::InvalidVerifier(_) => sqlstate::INVALID_PASSWORD,
            ScramError::Unsupported(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            ScramError::Malformed(_) | ScramError::ChannelBinding | ScramError::NonceMismatch => {
                sqlstate::PROTOCOL_VIOLATION
            }
        }
    }
}

/// A stored SCRAM-SHA-256 secret: enough to verify a client, not enough to impersonate one.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
    /// Set by [`ScramVerifier::mock_for`]: the exchange runs normally but the proof always fails.
    mock: bool,
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("keys", &"<redacted>")
            .field("mock", &self.mock)
            .finish()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // Infallible: HMAC accepts keys of any length (and keys here are ours, not peer input).
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl ScramVerifier {
    /// New verifier with a random 16-byte salt and 4096 iterations, like `CREATE ROLE ... PASSWORD`.
    pub fn from_password(password: &str) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Self::with_salt(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Deterministic derivation (SASLprep, then PBKDF2-HMAC-SHA256); `iterations` of 0 is
    /// treated as 1.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = pgwire::api::auth::sasl::scram::gen_salted_password(
            password,
            salt,
            iterations as usize,
        );
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
            mock: false,
        }
    }

    /// Parses PostgreSQL's stored form
    /// `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let bad = ScramError::InvalidVerifier;
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or(bad("missing SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or(bad("missing '$'"))?;
        let (iterations, salt) = params.split_once(':').ok_or(bad("missing salt"))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(bad("missing server key"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("invalid iteration count"))?;
        if iterations == 0 {
            return Err(bad("iteration count must be positive"));
        }
        let salt = STANDARD.decode(salt).map_err(|_| bad("invalid salt"))?;
        if salt.is_empty() {
            return Err(bad("empty salt"));
        }
        let key = |b64: &str| -> Result<[u8; 32], ScramError> {
            let raw = STANDARD.decode(b64).map_err(|_| bad("invalid key"))?;
            <[u8; 32]>::try_from(raw).map_err(|_| bad("key is not 32 bytes"))
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
            mock: false,
        })
    }

    /// A fake verifier for a user that does not exist, so the exchange looks exactly like a real
    /// one (same salt for every attempt, same iteration count) and fails only at the proof: the
    /// client cannot tell unknown users from wrong passwords. Derived from `server_secret` (a
    /// per-deployment random value) so the fake salt cannot be predicted either.
    pub fn mock_for(user: &str, server_secret: &[u8]) -> Self {
        let derive = |label: &[u8]| hmac(server_secret, &[label, b"\0", user.as_bytes()]);
        let salt = derive(b"pgpivot scram mock salt");
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt.get(..SALT_LEN).unwrap_or(&salt).to_vec(),
            stored_key: derive(b"pgpivot scram mock stored key"),
            server_key: derive(b"pgpivot scram mock server key"),
            mock: true,
        }
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// True for verifiers made by [`ScramVerifier::mock_for`].
    pub fn is_mock(&self) -> bool {
        self.mock
    }
}

/// PostgreSQL's stored form. A mock verifier prints like a real one (its keys still match no
/// password anyone knows).
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Server state between the server-first and client-final messages.
pub struct ScramServerState {
    /// Expected `c=` value: base64 of the gs2 header ("biws" for `n,,`, "eSws" for `y,,`) and,
    /// with PLUS, the binding data.
    channel_binding: String,
    /// Client nonce + server nonce.
    nonce: String,
    client_first_bare: Vec<u8>,
    server_first: String,
    stored_key: [u8; 32],
    server_key: [u8; 32],
    mock: bool,
}

impl fmt::Debug for ScramServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerState")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// `attr=value` attribute with a single-letter name (RFC 5802 `attr-val`).
fn is_attr(a: &[u8]) -> bool {
    matches!(a, [name, b'=', ..] if name.is_ascii_alphabetic())
}

/// Printable ASCII except ',' (RFC 5802 `printable`), the only bytes allowed in a nonce.
fn is_nonce(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Handles the client-first-message (the data of SASLInitialResponse) and returns the state to
/// keep plus the server-first-message to send in AuthenticationSASLContinue.
pub fn server_first(
    verifier: &ScramVerifier,
    client_first: &[u8],
) -> Result<(ScramServerState, Vec<u8>), ScramError> {
    server_first_bound(verifier, client_first, Binding::NotOffered)
}

/// What the server offered and the client chose, for the gs2 header check.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// Only `SCRAM-SHA-256` was offered (no TLS, or no usable certificate hash).
    NotOffered,
    /// `SCRAM-SHA-256-PLUS` was offered, the client chose `SCRAM-SHA-256`.
    OfferedNotChosen,
    /// The client chose `SCRAM-SHA-256-PLUS`: the `tls-server-end-point` data (the hash of the
    /// server's certificate).
    Chosen(&'a [u8]),
}

/// The gs2 header prefix PLUS requires.
const TLS_SERVER_END_POINT: &[u8] = b"p=tls-server-end-point,";

/// [`server_first`] knowing what was offered and chosen.
pub fn server_first_bound(
    verifier: &ScramVerifier,
    client_first: &[u8],
    binding: Binding<'_>,
) -> Result<(ScramServerState, Vec<u8>), ScramError> {
    let (channel_binding, after_flag) = match (client_first, binding) {
        ([b'n', b',', rest @ ..], Binding::NotOffered | Binding::OfferedNotChosen) => {
            ("biws".to_string(), rest)
        }
        ([b'y', b',', rest @ ..], Binding::NotOffered) => ("eSws".to_string(), rest),
        // The client could bind and we offered it: someone removed PLUS from the offer.
        ([b'y', b',', ..], Binding::OfferedNotChosen) => return Err(ScramError::ChannelBinding),
        (cf, Binding::Chosen(data)) if cf.starts_with(TLS_SERVER_END_POINT) => {
            // The header as sent (`p=tls-server-end-point,,`; an authzid is refused below).
            let header = client_first
                .get(..TLS_SERVER_END_POINT.len() + 1)
                .ok_or(ScramError::Malformed("invalid gs2 header"))?;
            let mut cbind = header.to_vec();
            cbind.extend_from_slice(data);
            (
                STANDARD.encode(cbind),
                &client_first[TLS_SERVER_END_POINT.len()..],
            )
        }
        // PLUS chosen without binding data, binding data without PLUS, another binding type.
        ([b'n' | b'y', b',', ..], Binding::Chosen(_)) | ([b'p', b'=', ..], _) => {
            return Err(ScramError::ChannelBinding)
        }
        _ => return Err(ScramError::Malformed("invalid gs2 channel-binding flag")),
    };
    let bare = match after_flag {
        [b',', bare @ ..] => bare,
        [b'a', b'=', ..] => return Err(ScramError::Unsupported("authorization identity")),
        _ => return Err(ScramError::Malformed("invalid gs2 header")),
    };
    if bare.starts_with(b"m=") {
        return Err(ScramError::Unsupported("mandatory extension"));
    }
    let mut attrs = bare.split(|&b| b == b',');
    // The user name is ignored, as in PostgreSQL: the startup packet's `user` is authoritative.
    if !attrs.next().is_some_and(|a| a.starts_with(b"n=")) {
        return Err(ScramError::Malformed("expected username attribute"));
    }
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix(b"r="))
        .filter(|n| is_nonce(n))
        .ok_or(ScramError::Malformed("expected nonce attribute"))?;
    if !attrs.all(is_attr) {
        return Err(ScramError::Malformed("invalid extension attribute"));
    }
    // `is_nonce` guarantees ASCII, so this conversion cannot fail.
    let client_nonce = std::str::from_utf8(client_nonce)
        .map_err(|_| ScramError::Malformed("expected nonce attribute"))?;

    let mut raw = [0u8; SERVER_NONCE_LEN];
    rand::rng().fill_bytes(&mut raw);
    let nonce = format!("{client_nonce}{}", STANDARD.encode(raw));
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&verifier.salt),
        verifier.iterations
    );
    let message = server_first.clone().into_bytes();
    let state = ScramServerState {
        channel_binding,
        nonce,
        client_first_bare: bare.to_vec(),
        server_first,
        stored_key: verifier.stored_key,
        server_key: verifier.server_key,
        mock: verifier.mock,
    };
    Ok((state, message))
}

impl ScramServerState {
    /// Handles the client-final-message (the SASLResponse data). On success returns the
    /// server-final-message (`v=<ServerSignature>`) for AuthenticationSASLFinal.
    pub fn verify_final(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let proof_at = client_final
            .windows(3)
            .position(|w| w == b",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let (without_proof, proof) = client_final.split_at(proof_at);
        let proof = proof.get(3..).unwrap_or_default();
        if proof.contains(&b',') {
            return Err(ScramError::Malformed("proof must be the last attribute"));
        }
        let mut attrs = without_proof.split(|&b| b == b',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix(b"c="))
            .ok_or(ScramError::Malformed("expected channel-binding attribute"))?;
        // Constant time, though nothing secret is compared: the expected value is the gs2
        // header and the served certificate's hash, both known to the client.
        if !bool::from(binding.ct_eq(self.channel_binding.as_bytes())) {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix(b"r="))
            .ok_or(ScramError::Malformed("expected nonce attribute"))?;
        // The whole nonce must match, which also checks the client's own prefix.
        if nonce != self.nonce.as_bytes() {
            return Err(ScramError::NonceMismatch);
        }
        if !attrs.all(is_attr) {
            return Err(ScramError::Malformed("invalid extension attribute"));
        }
        let proof = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or(ScramError::Malformed("invalid proof"))?;

        let auth_message: [&[u8]; 5] = [
            &self.client_first_bare,
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof,
        ];
        let client_signature = hmac(&self.stored_key, &auth_message);
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature))
        {
            *k = p ^ s;
        }
        let matches: bool = sha256(&client_key).ct_eq(&self.stored_key).into();
        if !matches || self.mock {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "scram_binding_tests.rs"]
mod binding_tests;
