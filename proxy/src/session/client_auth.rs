//! Authenticating clients against pgpivot's own user list (SCRAM-SHA-256 or MD5).
//!
//! Unknown users go through the same exchange as known ones (a mock SCRAM verifier, a random MD5
//! salt) and fail with the same `28P01` message, so the answer never reveals who exists.

use std::collections::HashMap;

use bytes::BytesMut;
use pgpivot_protocol::auth::md5::{md5_salted, verify_md5_response};
use pgpivot_protocol::auth::scram::{server_first_bound, Binding, ScramVerifier};
use pgpivot_protocol::build;
use pgpivot_protocol::views;

use super::conn::ClientConn;
use crate::config::{AuthMethod, Config};
use crate::error::SessionError;

const SCRAM: &str = pgpivot_protocol::auth::SCRAM_SHA_256;
const SCRAM_PLUS: &str = pgpivot_protocol::auth::SCRAM_SHA_256_PLUS;

struct Entry {
    password: String,
    scram: ScramVerifier,
}

/// Users and their precomputed SCRAM verifiers (PBKDF2 once at start, not per login).
pub struct UserDb {
    users: HashMap<String, Entry>,
    mock_secret: [u8; 32],
    method: AuthMethod,
}

impl UserDb {
    pub fn new(config: &Config) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    Entry {
                        password: u.password.clone(),
                        scram: ScramVerifier::from_password(&u.password),
                    },
                )
            })
            .collect();
        UserDb {
            users,
            mock_secret: rand::random(),
            method: config.auth_method,
        }
    }

    /// The admin console's single user, always SCRAM.
    pub fn admin(user: &crate::config::User) -> Self {
        let mut users = HashMap::new();
        users.insert(
            user.name.clone(),
            Entry {
                password: user.password.clone(),
                scram: ScramVerifier::from_password(&user.password),
            },
        );
        UserDb {
            users,
            mock_secret: rand::random(),
            method: AuthMethod::ScramSha256,
        }
    }

    pub fn password(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(|e| e.password.as_str())
    }

    /// Runs the exchange on `conn`. Ok means the client proved it knows the password.
    pub async fn authenticate<S>(
        &self,
        conn: &mut ClientConn<S>,
        user: &str,
    ) -> Result<(), SessionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match self.method {
            AuthMethod::ScramSha256 => self.scram(conn, user).await,
            AuthMethod::Md5 => self.md5(conn, user).await,
        }
    }

    async fn scram<S>(&self, conn: &mut ClientConn<S>, user: &str) -> Result<(), SessionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mock;
        let verifier = match self.users.get(user) {
            Some(e) => &e.scram,
            None => {
                mock = ScramVerifier::mock_for(user, &self.mock_secret);
                &mock
            }
        };
        let mut out = BytesMut::with_capacity(256);
        // Over TLS, PLUS first, as PostgreSQL offers them.
        let cb = conn.channel_binding.clone();
        match cb {
            Some(_) => build::auth_sasl(&mut out, &[SCRAM_PLUS, SCRAM]),
            None => build::auth_sasl(&mut out, &[SCRAM]),
        }
        conn.write(&out).await?;
        let f = conn.read_password_message().await?;
        let (mechanism, data) = views::sasl_initial_response(f.body())
            .ok_or_else(|| SessionError::Protocol("malformed SASLInitialResponse".into()))?;
        let binding = match (mechanism, cb.as_deref()) {
            (SCRAM, None) => Binding::NotOffered,
            (SCRAM, Some(_)) => Binding::OfferedNotChosen,
            (SCRAM_PLUS, Some(data)) => Binding::Chosen(data),
            _ => {
                return Err(SessionError::Protocol(format!(
                    "client selected an invalid SASL authentication mechanism {mechanism:?}"
                )))
            }
        };
        // No initial response (length -1): as PostgreSQL, an empty challenge asks for it, and
        // the next message carries it.
        let later;
        let data = match data {
            Some(d) => d,
            None => {
                out.clear();
                build::auth_sasl_continue(&mut out, b"");
                conn.write(&out).await?;
                later = conn.read_password_message().await?;
                views::sasl_response(later.body())
            }
        };
        let (state, first) =
            server_first_bound(verifier, data, binding).map_err(|e| map_scram(e, user))?;
        out.clear();
        build::auth_sasl_continue(&mut out, &first);
        conn.write(&out).await?;
        let f = conn.read_password_message().await?;
        let last = state
            .verify_final(views::sasl_response(f.body()))
            .map_err(|e| map_scram(e, user))?;
        out.clear();
        build::auth_sasl_final(&mut out, &last);
        conn.write(&out).await?;
        Ok(())
    }

    async fn md5<S>(&self, conn: &mut ClientConn<S>, user: &str) -> Result<(), SessionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let salt: [u8; 4] = rand::random();
        let mut out = BytesMut::with_capacity(16);
        build::auth_md5_password(&mut out, salt);
        conn.write(&out).await?;
        let f = conn.read_password_message().await?;
        let response = views::password_message(f.body())
            .ok_or_else(|| SessionError::Protocol("malformed password message".into()))?;
        match self.users.get(user) {
            Some(e) if verify_md5_response(&md5_salted(user, &e.password, salt), response) => {
                Ok(())
            }
            _ => Err(SessionError::AuthFailed(user.to_string())),
        }
    }
}

fn map_scram(e: pgpivot_protocol::auth::scram::ScramError, user: &str) -> SessionError {
    if e.sqlstate() == pgpivot_protocol::sqlstate::INVALID_PASSWORD {
        SessionError::AuthFailed(user.to_string())
    } else {
        SessionError::Protocol(format!("SCRAM: {e}"))
    }
}
