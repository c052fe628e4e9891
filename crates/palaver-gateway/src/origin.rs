//! Which web pages may open a WebSocket to the node (the upgrade's `Origin`).
//!
//! Browsers send `Origin` on every WebSocket upgrade and let any page connect
//! anywhere, so the server decides. Allowed: requests without `Origin`
//! (non-browser clients, which can send anything anyway), same-origin pages
//! (`Origin`'s host equals the `Host` header, e.g. the embedded web UI), and
//! the configured `--allowed-origins` (`*` for every page).

use axum::http::HeaderValue;

/// The node's origin policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    any: bool,
    allowed: Vec<AllowedOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowedOrigin {
    /// `https://chat.example.com[:port]`, compared case-insensitively.
    Exact(String),
    /// `https://*.example.com`: any subdomain, same scheme, any port.
    Subdomains { scheme: String, domain: String },
}

impl Origins {
    /// The policy for the configured list (entries as in `--allowed-origins`).
    pub(crate) fn new(list: &[String]) -> Origins {
        let mut origins = Origins::default();
        for entry in list.iter().map(|e| e.trim().trim_end_matches('/').to_ascii_lowercase()) {
            if entry == "*" {
                origins.any = true;
            } else if let Some((scheme, rest)) = entry.split_once("://")
                && let Some(domain) = rest.strip_prefix("*.")
            {
                origins.allowed.push(AllowedOrigin::Subdomains {
                    scheme: scheme.to_owned(),
                    domain: domain.to_owned(),
                });
            } else if !entry.is_empty() {
                origins.allowed.push(AllowedOrigin::Exact(entry));
            }
        }
        origins
    }

    /// Whether an upgrade with these `Origin` and `Host` headers may proceed.
    pub(crate) fn allows(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else { return false };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let Some((scheme, authority)) = origin.split_once("://") else {
            // `null` (sandboxed frames, files) or garbage: only an explicit entry admits it.
            return self.allowed.contains(&AllowedOrigin::Exact(origin));
        };
        if let Some(host) = host.and_then(|h| h.to_str().ok()) {
            let host = host.trim().to_ascii_lowercase();
            if same_authority(scheme, authority, &host) {
                return true;
            }
        }
        self.allowed.iter().any(|allowed| match allowed {
            AllowedOrigin::Exact(exact) => *exact == origin,
            AllowedOrigin::Subdomains { scheme: s, domain } => {
                let hostname = strip_port(authority);
                s == scheme
                    && hostname.len() > domain.len() + 1
                    && hostname.ends_with(domain.as_str())
                    && hostname.as_bytes()[hostname.len() - domain.len() - 1] == b'.'
            }
        })
    }
}

/// `Origin` authority and `Host` name the same place (default ports may be
/// written or left out on either side).
fn same_authority(scheme: &str, authority: &str, host: &str) -> bool {
    let default_port = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority == host,
    };
    let canonical = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_owned();
    canonical(authority) == canonical(host)
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(origins: &Origins, origin: Option<&str>, host: &str) -> bool {
        let origin = origin.map(|o| HeaderValue::from_str(o).expect("header"));
        origins.allows(origin.as_ref(), Some(&HeaderValue::from_str(host).expect("header")))
    }

    #[test]
    fn default_allows_same_origin_and_non_browsers() {
        let o = Origins::new(&[]);
        assert!(allows(&o, None, "chat.example.com"));
        assert!(allows(&o, Some("http://127.0.0.1:8080"), "127.0.0.1:8080"));
        assert!(allows(&o, Some("https://Chat.Example.com"), "chat.example.com"));
        assert!(allows(&o, Some("https://chat.example.com"), "chat.example.com:443"));
        assert!(!allows(&o, Some("https://evil.example"), "chat.example.com"));
        assert!(!allows(&o, Some("http://127.0.0.1:9999"), "127.0.0.1:8080"));
        assert!(!allows(&o, Some("null"), "chat.example.com"));
    }

    #[test]
    fn configured_origins() {
        let o = Origins::new(&["https://app.example.com/".into(), "https://*.example.org".into()]);
        assert!(allows(&o, Some("https://app.example.com"), "gw.internal:8080"));
        assert!(!allows(&o, Some("http://app.example.com"), "gw.internal:8080"));
        assert!(allows(&o, Some("https://a.example.org"), "gw.internal"));
        assert!(allows(&o, Some("https://a.b.example.org:8443"), "gw.internal"));
        assert!(!allows(&o, Some("https://example.org"), "gw.internal"));
        assert!(!allows(&o, Some("https://badexample.org"), "gw.internal"));
        // Same-origin still works beside the list.
        assert!(allows(&o, Some("http://gw.internal"), "gw.internal"));
        let any = Origins::new(&["*".into()]);
        assert!(allows(&any, Some("https://evil.example"), "gw.internal"));
    }
}
