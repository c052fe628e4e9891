//! The node's security policy, built once from the config, and the admission
//! of a WebSocket upgrade: who may connect (per-IP limits, origin), and who
//! the connection is (token or guest).
//!
//! Everything here is decided before the upgrade and answered with a plain
//! HTTP status (429, 403, 401, 400), except a token sent in the first frame,
//! which is awaited right after the upgrade (refusal: close 4001).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    http::{HeaderMap, HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
};

use palaver_protocol::NameError;

use crate::{
    access::Access,
    api::keys::ApiKeys,
    config::Config,
    identity::{self, Identity},
    metrics::Refusal,
    origin::Origins,
    ratelimit::{FrameBudget, PeerLimits, PeerRefusal, PeerSlot},
    token::{AuthError, AuthMode, Verifier},
};

/// Everything the node checks about a connection, from the config.
#[derive(Debug)]
pub(crate) struct Security {
    /// Guests allowed, or tokens only.
    pub(crate) mode: AuthMode,
    /// Checks tokens; `None` when no key is configured.
    pub(crate) verifier: Option<Verifier>,
    /// Which rooms are private.
    pub(crate) access: Access,
    /// Which pages may open a WebSocket.
    pub(crate) origins: Origins,
    /// Per-IP connection counts and rates.
    pub(crate) peers: Arc<PeerLimits>,
    /// Server API keys and their budgets.
    pub(crate) api: ApiKeys,
    client_ip_header: Option<HeaderName>,
}

/// How a connection will be identified once upgraded.
pub(crate) enum Credentials {
    /// Already known from the request (a verified URL token, or a guest name).
    Known(Identity),
    /// Token mode without a URL token: the first frame must be `auth`.
    AwaitFrame,
}

/// An admitted upgrade: its credentials and its place in its IP's count.
pub(crate) struct Admission {
    pub(crate) credentials: Credentials,
    pub(crate) slot: PeerSlot,
}

/// Why an upgrade was refused; each becomes a plain HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// 429: the client IP is over a limit.
    Peer(PeerRefusal),
    /// 403: the page's origin is not allowed.
    Origin,
    /// 401: the URL token is missing (never: it is awaited), invalid or expired.
    Auth(AuthError),
    /// 400: the guest name breaks the rules.
    Name(NameError),
}

impl Refused {
    /// The `reason` label of the `upgrades_refused` metric.
    pub(crate) fn metric_reason(&self) -> Refusal {
        match self {
            Refused::Peer(PeerRefusal::TooFast) => Refusal::Rate,
            Refused::Peer(PeerRefusal::TooManyConnections) => Refusal::Connections,
            Refused::Origin => Refusal::Origin,
            Refused::Auth(_) => Refusal::Auth,
            Refused::Name(_) => Refusal::Name,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Peer(refusal) => {
                let message = match refusal {
                    PeerRefusal::TooFast => {
                        "too many connection attempts from your address; retry later"
                    }
                    PeerRefusal::TooManyConnections => {
                        "too many open connections from your address"
                    }
                };
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], message)
                    .into_response()
            }
            Refused::Origin => (StatusCode::FORBIDDEN, "origin not allowed").into_response(),
            Refused::Auth(error) => {
                let challenge = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    error.reason()
                );
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, challenge)],
                    error.to_string(),
                )
                    .into_response()
            }
            Refused::Name(e) => {
                (StatusCode::BAD_REQUEST, format!("invalid name: {e}")).into_response()
            }
        }
    }
}

/// Refuses configurations that could not admit anyone sensibly.
pub(crate) fn check(config: &Config) -> anyhow::Result<()> {
    let has_key = config.jwt_secret.is_some() || config.jwt_public_key.is_some();
    if config.auth == AuthMode::Token && !has_key {
        anyhow::bail!("--auth token needs --jwt-secret or --jwt-public-key");
    }
    if config.api_listen.is_some() && config.api_keys.is_empty() {
        anyhow::bail!("--api-listen needs at least one --api-key");
    }
    if !config.private_rooms.is_empty() && !has_key {
        tracing::warn!("private rooms are configured but no token key: nobody can enter them");
    }
    Ok(())
}

impl Security {
    /// The policy the config describes.
    pub(crate) fn from_config(config: &Config) -> Security {
        Security {
            mode: config.auth,
            verifier: Verifier::new(
                config.jwt_secret.as_ref(),
                config.jwt_public_key.as_ref(),
                config.jwt_audience.as_deref(),
                config.jwt_issuer.as_deref(),
                config.jwt_leeway,
            ),
            access: Access::new(config.private_rooms.clone()),
            origins: Origins::new(&config.allowed_origins),
            peers: Arc::new(PeerLimits::new(
                config.max_conns_per_ip,
                config.conn_rate_per_ip,
                config.conn_burst_per_ip,
            )),
            api: ApiKeys::new(config.api_keys.clone(), config.api_rate, config.api_burst),
            client_ip_header: config.client_ip_header.clone(),
        }
    }

    /// A fresh frame budget for one connection.
    pub(crate) fn frame_budget(config: &Config) -> FrameBudget {
        FrameBudget::new(
            config.rate_limit,
            config.rate_burst,
            config.rate_strikes,
            config.rate_strike_window,
        )
    }

    /// Decides an upgrade request. `Err` is the HTTP response refusing it.
    pub(crate) fn admit(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        params: &HashMap<String, String>,
    ) -> Result<Admission, Refused> {
        let ip = self.client_ip(peer, headers);
        let slot = self.peers.admit(ip).map_err(|refusal| {
            tracing::debug!(%ip, ?refusal, "connection refused");
            Refused::Peer(refusal)
        })?;
        if !self.origins.allows(headers.get(header::ORIGIN), headers.get(header::HOST)) {
            tracing::debug!(%ip, origin = ?headers.get(header::ORIGIN), "origin refused");
            return Err(Refused::Origin);
        }
        let token = params.get("token").map(String::as_str).or_else(|| bearer(headers));
        let credentials = match (token, self.mode) {
            (Some(token), _) => {
                let verified = match &self.verifier {
                    Some(verifier) => verifier.verify(token),
                    None => Err(AuthError::NotConfigured),
                };
                Credentials::Known(verified.map_err(|e| {
                    tracing::debug!(%ip, reason = %e, "token refused");
                    Refused::Auth(e)
                })?)
            }
            (None, AuthMode::Token) => Credentials::AwaitFrame,
            (None, AuthMode::Guest) => {
                let name = params.get("name").map(String::as_str);
                Credentials::Known(
                    identity::guest(name, self.verifier.is_some()).map_err(Refused::Name)?,
                )
            }
        };
        Ok(Admission { credentials, slot })
    }

    /// The client's address: the socket peer, or with `--client-ip-header`
    /// (behind a trusted proxy) the last address in that header.
    fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.client_ip_header
            .as_ref()
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').map(str::trim).find_map(parse_ip))
            .unwrap_or(peer.ip())
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// `Authorization: Bearer <token>`, for clients that can set headers.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn security(args: &[&str]) -> Security {
        let config = Config::try_parse_from(std::iter::once("palaver").chain(args.iter().copied()))
            .expect("valid flags");
        check(&config).expect("consistent config");
        Security::from_config(&config)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"))
            })
            .collect()
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);

    fn status(result: Result<Admission, Refused>) -> StatusCode {
        result.map_or_else(|r| r.into_response().status(), |_| StatusCode::OK)
    }

    #[test]
    fn token_mode_needs_a_key() {
        let config = Config::try_parse_from(["palaver", "--auth", "token"]).expect("parses");
        assert!(check(&config).is_err());
    }

    #[test]
    fn guest_names_are_marked_only_beside_tokens() {
        let name = |s: &Security| match s.admit(PEER, &headers(&[]), &params(&[("name", "ann")])) {
            Ok(Admission { credentials: Credentials::Known(identity), .. }) => {
                identity.user.to_string()
            }
            _ => panic!("admitted as a guest"),
        };
        assert_eq!(name(&security(&[])), "ann");
        assert_eq!(name(&security(&["--jwt-secret", "k"])), "~ann");
    }

    #[test]
    fn refusals_have_their_statuses() {
        let s = security(&["--auth", "token", "--jwt-secret", "k", "--max-conns-per-ip", "1"]);
        let none = headers(&[]);
        assert_eq!(
            status(s.admit(PEER, &none, &params(&[("token", "garbage")]))),
            StatusCode::UNAUTHORIZED
        );
        let cross = headers(&[("origin", "https://evil.example"), ("host", "chat.example")]);
        assert_eq!(status(s.admit(PEER, &cross, &params(&[]))), StatusCode::FORBIDDEN);
        let held = s.admit(PEER, &none, &params(&[])).expect("first connection");
        assert!(matches!(held.credentials, Credentials::AwaitFrame));
        assert_eq!(status(s.admit(PEER, &none, &params(&[]))), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn client_ip_header_is_used_only_when_configured() {
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7")]);
        let direct = security(&[]);
        assert_eq!(direct.client_ip(PEER, &forwarded), PEER.ip());
        let proxied = security(&["--client-ip-header", "X-Forwarded-For"]);
        assert_eq!(
            proxied.client_ip(PEER, &forwarded),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(proxied.client_ip(PEER, &headers(&[])), PEER.ip());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
    }
}
