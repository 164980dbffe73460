//! SQLSTATE codes the proxy itself reports.
//!
//! Clients and drivers branch on these five-character codes (retry on `57P01`, re-authenticate on
//! `28P01`, ...), so errors the proxy synthesises must use the same codes PostgreSQL would.
//! Kept as `&'static str` because that is what goes on the wire in the `C` field.

/// `08P01`: the peer broke the wire protocol (bad length, unexpected message).
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `08000`: generic connection problem.
pub const CONNECTION_EXCEPTION: &str = "08000";
/// `08006`: an established connection (e.g. to the backend) failed.
pub const CONNECTION_FAILURE: &str = "08006";
/// `08001`: the proxy could not open a connection to a backend.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
/// `28P01`: wrong password (also used for unknown users, so they are indistinguishable).
pub const INVALID_PASSWORD: &str = "28P01";
/// `28000`: missing or unacceptable user / role.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// `0A000`: a protocol feature the proxy does not offer (replication, protocol 2, ...).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `53300`: connection limit reached.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `54000`: a message or value exceeds a configured limit.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `57P01`: the proxy is shutting down; clients treat this as "reconnect later".
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57P02`: the server ended the session because another backend crashed.
pub const CRASH_SHUTDOWN: &str = "57P02";
/// `57P03`: not accepting connections right now (starting up, draining).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// `57014`: the statement was cancelled (cancel request or timeout).
pub const QUERY_CANCELED: &str = "57014";
/// `XX000`: a bug or unexpected state inside the proxy.
pub const INTERNAL_ERROR: &str = "XX000";
/// `25006`: a write was attempted on a read-only route.
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// `22023`: a parameter (startup option, admin command argument) has an invalid value.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// `22021`: a byte sequence that is not valid in the encoding (a non-UTF-8 startup parameter).
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// `42601`: a statement the proxy parses itself (admin console) is malformed.
pub const SYNTAX_ERROR: &str = "42601";
/// `55000`: an admin action that the current state does not allow (e.g. detaching the primary).
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// `42501`: not allowed for this user or on this port.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_five_uppercase_alphanumerics() {
        for code in [
            PROTOCOL_VIOLATION,
            CONNECTION_EXCEPTION,
            CONNECTION_FAILURE,
            SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            INVALID_PASSWORD,
            INVALID_AUTHORIZATION_SPECIFICATION,
            FEATURE_NOT_SUPPORTED,
            TOO_MANY_CONNECTIONS,
            PROGRAM_LIMIT_EXCEEDED,
            ADMIN_SHUTDOWN,
            CRASH_SHUTDOWN,
            CANNOT_CONNECT_NOW,
            QUERY_CANCELED,
            INTERNAL_ERROR,
            READ_ONLY_SQL_TRANSACTION,
            INVALID_PARAMETER_VALUE,
            CHARACTER_NOT_IN_REPERTOIRE,
            SYNTAX_ERROR,
            OBJECT_NOT_IN_PREREQUISITE_STATE,
            INSUFFICIENT_PRIVILEGE,
        ] {
            assert_eq!(code.len(), 5, "{code}");
            assert!(code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        }
    }
}
