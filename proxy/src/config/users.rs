//! The users clients may log in as: the main user and the custom users, with their passwords.

use super::nodes::split_list;
use super::source::RawSettings;
use super::{ConfigError, User};

pub fn collect_users(raw: &RawSettings) -> Result<Vec<User>, ConfigError> {
    let mut users = Vec::new();
    let main = raw
        .get("postgres_username")
        .map(|v| v.value.clone())
        .unwrap_or_else(|| "postgres".into());
    if let Some(pw) = raw.get("postgres_password") {
        users.push(User {
            name: main,
            password: pw.value.clone(),
        });
    }
    let names = raw.get("postgres_custom_users");
    let pws = raw.get("postgres_custom_passwords");
    match (names, pws) {
        (None, None) => {}
        (Some(n), Some(p)) => {
            let (ns, ps) = (split_list(&n.value), split_list(&p.value));
            if ns.len() != ps.len() {
                return Err(ConfigError::Invalid {
                    origin: p.origin.clone(),
                    reason: format!(
                        "{} users but {} passwords (lists must have the same length)",
                        ns.len(),
                        ps.len()
                    ),
                });
            }
            for (name, password) in ns.into_iter().zip(ps) {
                match users.iter().find(|u: &&User| u.name == name) {
                    // Repeated with the same password: harmless.
                    Some(u) if u.password == password => {}
                    // One of the two passwords would be silently wrong for every login.
                    Some(_) => {
                        return Err(ConfigError::Invalid {
                            origin: n.origin.clone(),
                            reason: format!(
                                "user `{name}` is given twice with different passwords \
                                 (as PGPOOL_POSTGRES_USERNAME or twice in the list)"
                            ),
                        })
                    }
                    None => users.push(User {
                        name: name.to_string(),
                        password: password.to_string(),
                    }),
                }
            }
        }
        (Some(_), None) => return Err(ConfigError::Missing("PGPOOL_POSTGRES_CUSTOM_PASSWORDS")),
        (None, Some(_)) => return Err(ConfigError::Missing("PGPOOL_POSTGRES_CUSTOM_USERS")),
    }
    if users.is_empty() {
        return Err(ConfigError::Missing("PGPOOL_POSTGRES_PASSWORD"));
    }
    Ok(users)
}
