//! MD5 password authentication (`AuthenticationMD5Password`), kept for old clients and servers.
//!
//! The client sends `"md5" + md5hex(md5hex(password + user) + salt)`. PostgreSQL stores the inner
//! part as `"md5" + md5hex(password + user)`, so the proxy can check a client (or answer a
//! backend) from that stored form without ever knowing the cleartext password.

use std::fmt::Write;

use subtle::ConstantTimeEq;

/// What a client sends for `password` as `user` given the server's `salt`.
pub fn md5_salted(user: &str, password: &str, salt: [u8; 4]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
}

/// The same response computed from a stored `"md5<32 lowercase hex>"` secret (the `rolpassword`
/// form). `None` if `stored` is not in that form, e.g. a SCRAM verifier.
pub fn md5_salted_from_stored(stored: &str, salt: [u8; 4]) -> Option<String> {
    let hex = stored.strip_prefix("md5")?;
    // PostgreSQL only recognises lowercase hex (see `get_password_type`).
    if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut ctx = md5::Context::new();
    ctx.consume(hex.as_bytes());
    ctx.consume(salt);
    let mut out = String::with_capacity(35);
    // Writing to a String cannot fail.
    let _ = write!(out, "md5{:x}", ctx.finalize());
    Some(out)
}

/// Checks a PasswordMessage payload (without its NUL) against the expected `md5...` string in
/// constant time, so response timing reveals nothing about the expected hash.
pub fn verify_md5_response(expected: &str, response: &[u8]) -> bool {
    expected.as_bytes().ct_eq(response).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 4] = [0x2a, 0x3d, 0x8f, 0xe0];

    #[test]
    fn known_vector() {
        // Same vector as postgres-protocol's own test.
        assert_eq!(
            md5_salted("md5_user", "password", SALT),
            "md562af4dd09bbb41884907a838a3233294"
        );
    }

    #[test]
    fn stored_form_gives_the_same_response() {
        let stored = postgres_protocol::password::md5(b"s3cret", "alice");
        let from_stored = md5_salted_from_stored(&stored, SALT);
        assert_eq!(
            from_stored.as_deref(),
            Some(md5_salted("alice", "s3cret", SALT).as_str())
        );
        let other_salt = md5_salted_from_stored(&stored, [0, 0, 0, 0]);
        assert_ne!(from_stored, other_salt);
    }

    #[test]
    fn stored_form_is_validated() {
        for bad in [
            "",
            "md5",
            "md5abc",
            "md5ABCDEF0123456789abcdef0123456789",
            "md5zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "md50123456789abcdef0123456789abcdef0",
            "SCRAM-SHA-256$4096:c2FsdA==$a:b",
            "md5é123456789abcdef0123456789abcde",
        ] {
            assert_eq!(md5_salted_from_stored(bad, SALT), None, "{bad}");
        }
    }

    #[test]
    fn verify_response() {
        let expected = md5_salted("u", "p", SALT);
        assert!(verify_md5_response(&expected, expected.as_bytes()));
        assert!(!verify_md5_response(
            &expected,
            md5_salted("u", "q", SALT).as_bytes()
        ));
        assert!(!verify_md5_response(&expected, &expected.as_bytes()[..34]));
        assert!(!verify_md5_response(&expected, b""));
        assert!(!verify_md5_response(&expected, b"p"));
    }
}
