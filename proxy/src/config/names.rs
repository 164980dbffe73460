//! What an environment variable with our prefixes is: a setting, its `_FILE` form, a name the
//! binary reads itself, or a Kubernetes service link — anything else under `PGPIVOT_` is a typo.

use super::settings::SETTINGS;

/// Variables read outside the settings table (clap reads `PGPIVOT_CONFIG` for `--config`).
pub const EXTRA_NAMES: &[&str] = &["PGPIVOT_CONFIG"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// A setting's own name, or a name in [`EXTRA_NAMES`].
    Known,
    /// `NAME_FILE` of a setting.
    FileOf(&'static str),
    /// Injected by Kubernetes for a Service named `pgpivot` (or `pgpool`); not ours to read.
    ServiceLink,
    Unknown,
}

/// Classifies `name` (with its value, which tells a service link from a mistyped setting).
/// The full name is looked up before its `_FILE` form: `PGPOOL_TLS_CERT_FILE` is a setting.
pub fn classify(name: &str, value: &str) -> Name {
    if SETTINGS.iter().any(|s| s.env == name) || EXTRA_NAMES.contains(&name) {
        return Name::Known;
    }
    if let Some(base) = name.strip_suffix("_FILE") {
        if let Some(s) = SETTINGS.iter().find(|s| s.env == base) {
            return Name::FileOf(s.env);
        }
    }
    let rest = ["PGPIVOT_", "PGPOOL_"]
        .iter()
        .find_map(|p| name.strip_prefix(p));
    match rest {
        Some(rest) if is_any_service_link(rest, value) => Name::ServiceLink,
        _ => Name::Unknown,
    }
}

/// A service link of the Service `pgpivot` (`rest` is the link itself) or of any Service whose
/// name starts with `pgpivot-` (`rest` is `<REST OF THE NAME>_<link>`, e.g. `METRICS_SERVICE_HOST`
/// for a Service `pgpivot-metrics`).
fn is_any_service_link(rest: &str, value: &str) -> bool {
    std::iter::once(0)
        .chain(rest.match_indices('_').map(|(i, _)| i + 1))
        .any(|start| {
            let service = &rest[..start];
            service
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && is_service_link(&rest[start..], value)
        })
}

/// The docker-links-style variables Kubernetes sets for every Service in the namespace, after the
/// `<SERVICE>_` prefix: `SERVICE_HOST`, `SERVICE_PORT`, `SERVICE_PORT_<PORT NAME>`,
/// `PORT=tcp://…`, `PORT_<n>_<PROTO>=tcp://…` and its `_ADDR`, `_PORT`, `_PROTO`.
fn is_service_link(rest: &str, value: &str) -> bool {
    let url = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|p| value.starts_with(p));
    if rest == "SERVICE_HOST" || rest == "SERVICE_PORT" {
        return true;
    }
    if let Some(port_name) = rest.strip_prefix("SERVICE_PORT_") {
        return !port_name.is_empty()
            && port_name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    }
    if rest == "PORT" {
        return url;
    }
    let Some(link) = rest.strip_prefix("PORT_") else {
        return false;
    };
    let mut parts = link.splitn(3, '_');
    let (Some(num), Some(proto)) = (parts.next(), parts.next()) else {
        return false;
    };
    let num_ok = !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit());
    let proto_ok = matches!(proto, "TCP" | "UDP" | "SCTP");
    if !(num_ok && proto_ok) {
        return false;
    }
    match parts.next() {
        None => url,
        Some(field) => matches!(field, "ADDR" | "PORT" | "PROTO"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_before_their_file_form() {
        for name in [
            "PGPOOL_TLS_CERT_FILE",
            "PGPOOL_TLS_KEY_FILE",
            "PGPOOL_TLS_CA_FILE",
            "PGPOOL_PASSWD_FILE",
            "PGPOOL_USER_CONF_FILE",
            "PGPIVOT_CONFIG",
            "PGPOOL_PORT_NUMBER",
        ] {
            assert_eq!(classify(name, "x"), Name::Known, "{name}");
        }
        assert_eq!(
            classify("PGPOOL_POSTGRES_PASSWORD_FILE", "/x"),
            Name::FileOf("PGPOOL_POSTGRES_PASSWORD")
        );
        assert_eq!(
            classify("PGPOOL_TLS_CERT_FILE_FILE", "/x"),
            Name::FileOf("PGPOOL_TLS_CERT_FILE")
        );
        assert_eq!(classify("PGPIVOT_CONFIG_FILE", "/x"), Name::Unknown);
    }

    #[test]
    fn service_links_of_other_pgpivot_services() {
        for (name, value) in [
            ("PGPIVOT_METRICS_SERVICE_HOST", "10.0.0.8"),
            ("PGPIVOT_METRICS_SERVICE_PORT_HTTP", "9090"),
            ("PGPIVOT_ADMIN_CONSOLE_PORT", "tcp://10.0.0.9:9433"),
            ("PGPIVOT_ADMIN_CONSOLE_PORT_9433_TCP_ADDR", "10.0.0.9"),
        ] {
            assert_eq!(classify(name, value), Name::ServiceLink, "{name}");
        }
        // Not links: a plain value for a bare _PORT, lower case, a real setting's typo.
        for (name, value) in [
            ("PGPIVOT_METRICS_PORT", "9090"),
            ("PGPIVOT_metrics_SERVICE_HOST", "10.0.0.8"),
            ("PGPIVOT_CHECK_INTERVAL", "500"),
        ] {
            assert_eq!(classify(name, value), Name::Unknown, "{name}");
        }
    }

    #[test]
    fn kubernetes_service_links_and_nothing_else() {
        for (name, value) in [
            ("PGPIVOT_SERVICE_HOST", "10.0.0.7"),
            ("PGPIVOT_SERVICE_PORT", "5432"),
            ("PGPIVOT_SERVICE_PORT_POSTGRESQL", "5432"),
            ("PGPIVOT_SERVICE_PORT_METRICS_HTTP", "9090"),
            ("PGPIVOT_PORT", "tcp://10.0.0.7:5432"),
            ("PGPIVOT_PORT_5432_TCP", "tcp://10.0.0.7:5432"),
            ("PGPIVOT_PORT_5432_TCP_ADDR", "10.0.0.7"),
            ("PGPIVOT_PORT_5432_TCP_PORT", "5432"),
            ("PGPIVOT_PORT_5432_TCP_PROTO", "tcp"),
            ("PGPIVOT_PORT_53_UDP", "udp://10.0.0.7:53"),
            ("PGPOOL_SERVICE_HOST", "10.0.0.8"),
            ("PGPOOL_PORT_5432_TCP_ADDR", "10.0.0.8"),
        ] {
            assert_eq!(classify(name, value), Name::ServiceLink, "{name}={value}");
        }
        for (name, value) in [
            // Someone meaning PGPOOL_PORT_NUMBER: not a link's value.
            ("PGPIVOT_PORT", "6432"),
            ("PGPIVOT_PORT_5432_TCP", "10.0.0.7"),
            ("PGPIVOT_PORT_5432_TCP_HOST", "10.0.0.7"),
            ("PGPIVOT_PORT_X_TCP_ADDR", "10.0.0.7"),
            ("PGPIVOT_PORT_5432_HTTP_ADDR", "10.0.0.7"),
            ("PGPIVOT_SERVICE_PORT_", "1"),
            ("PGPIVOT_SERVICE_PORT_lower", "1"),
            ("PGPIVOT_SERVICE_HOSTNAME", "x"),
            ("PGPIVOT_LISTEN_ADRR", "x"),
        ] {
            assert_eq!(classify(name, value), Name::Unknown, "{name}={value}");
        }
    }
}
