//! Token verification: the JWTs a node accepts, the claims it reads, and
//! minting (for `palaver token`). No I/O: the first-frame `auth` handshake
//! that uses it is [`crate::auth`].
//!
//! A token is a JWT signed with the node's shared secret (HS256/384/512) or
//! with the private half of its configured public key (RS*/PS*, ES256/384,
//! EdDSA). The token's header picks the algorithm, but only among those of a
//! key the node holds, so an RSA public key can never be used as an HMAC
//! secret. Claims: `sub` and `exp` required; `name` (display name, else
//! `sub`); `aud`/`iss` checked when configured; `rooms` grants private rooms.

use std::{
    fmt,
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind,
};
use palaver_protocol::{NameError, UserName};
use serde::{Deserialize, Serialize};

use crate::{
    access::{PatternError, RoomPatterns},
    identity::Identity,
};

/// Longest token accepted, in bytes (a claim granting many rooms stays well below).
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AuthMode {
    /// Nicknames from `?name=`; tokens too when a key is configured (guests' names get `~`).
    Guest,
    /// Every connection needs a valid token; no guests.
    Token,
}

/// A shared secret from the config; never printed.
#[derive(Clone)]
pub(crate) struct Secret(Arc<str>);

impl Secret {
    /// The secret's bytes.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the secret must not be empty".into());
        }
        Ok(Secret(Arc::from(s)))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A public key read from a PEM file at startup (RSA, EC or Ed25519).
#[derive(Clone)]
pub(crate) struct PublicKey {
    key: DecodingKey,
    family: AlgorithmFamily,
    path: PathBuf,
}

impl PublicKey {
    /// Reads and parses the PEM file; the key's type decides the algorithms accepted.
    pub(crate) fn load(path: &str) -> Result<PublicKey, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let parsed = [
            (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem(&pem)),
            (AlgorithmFamily::Ec, DecodingKey::from_ec_pem(&pem)),
            (AlgorithmFamily::Ed, DecodingKey::from_ed_pem(&pem)),
        ];
        parsed
            .into_iter()
            .find_map(|(family, key)| key.ok().map(|key| (family, key)))
            .map(|(family, key)| PublicKey { key, family, path: PathBuf::from(path) })
            .ok_or_else(|| format!("{path} holds no RSA, EC or Ed25519 public key in PEM form"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("path", &self.path).field("family", &self.family).finish()
    }
}

/// The claims Palaver reads from, and writes into, a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user's stable id (logged; not shown to others).
    pub(crate) sub: String,
    /// Display name, validated as a user name; `sub` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub(crate) exp: u64,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iat: Option<u64>,
    /// Audience (string or list), checked against `--jwt-audience`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) aud: Option<serde_json::Value>,
    /// Issuer, checked against `--jwt-issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iss: Option<String>,
    /// Room names or patterns (`team-*`, `*`) this user may enter when private.
    #[serde(default)]
    pub(crate) rooms: Vec<String>,
}

/// Why a connection was not authenticated. The `Display` text is the HTTP 401
/// body; [`AuthError::reason`] is the (short) close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No token was given (in token mode), or the first frame was not `auth`.
    #[error("authentication required: give ?token= or send an auth frame first")]
    Missing,
    /// No `auth` frame within `--auth-timeout`.
    #[error("no auth frame in time")]
    TimedOut,
    /// The client went away during the handshake.
    #[error("disconnected before authenticating")]
    Disconnected,
    /// A token was given but this node has no key to check it.
    #[error("this node does not accept tokens (no --jwt-secret or --jwt-public-key)")]
    NotConfigured,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` missing or not the configured audience.
    #[error("token audience not accepted")]
    Audience,
    /// `iss` missing or not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// Bad signature, unknown algorithm, malformed token or claims.
    #[error("invalid token")]
    Invalid,
    /// The `name` (or `sub`) is not a valid user name.
    #[error("token name is not a valid user name: {0}")]
    Name(NameError),
    /// The `rooms` claim holds a malformed pattern.
    #[error("token rooms claim is invalid: {0}")]
    Rooms(PatternError),
}

impl AuthError {
    /// The reason sent with close code 4001 (at most 123 bytes).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "authentication required",
            AuthError::TimedOut => "authentication timed out",
            AuthError::Disconnected => "",
            AuthError::NotConfigured => "tokens not accepted",
            AuthError::TooLong => "token too long",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not valid yet",
            AuthError::Audience => "token audience not accepted",
            AuthError::Issuer => "token issuer not accepted",
            AuthError::Invalid => "invalid token",
            AuthError::Name(_) => "invalid name in token",
            AuthError::Rooms(_) => "invalid rooms in token",
        }
    }
}

/// Checks tokens against the node's keys and turns them into identities.
pub(crate) struct Verifier {
    keys: Vec<(DecodingKey, Validation)>,
    leeway: Duration,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<_> = self.keys.iter().map(|(_, v)| &v.algorithms).collect();
        f.debug_struct("Verifier").field("algorithms", &algorithms).finish()
    }
}

impl Verifier {
    /// A verifier for the configured keys; `None` when there are none.
    /// `leeway` is the clock skew tolerated on `exp` and `nbf`.
    pub(crate) fn new(
        secret: Option<&Secret>,
        public: Option<&PublicKey>,
        audience: Option<&str>,
        issuer: Option<&str>,
        leeway: Duration,
    ) -> Option<Verifier> {
        let validation = |family: AlgorithmFamily| {
            let mut v = Validation::new_for_family(family);
            v.leeway = leeway.as_secs();
            v.validate_nbf = true;
            let mut required = vec!["exp", "sub"];
            if let Some(audience) = audience {
                v.set_audience(&[audience]);
                required.push("aud");
            }
            if let Some(issuer) = issuer {
                v.set_issuer(&[issuer]);
                required.push("iss");
            }
            v.set_required_spec_claims(&required);
            v
        };
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            keys.push((
                DecodingKey::from_secret(secret.expose()),
                validation(AlgorithmFamily::Hmac),
            ));
        }
        if let Some(public) = public {
            keys.push((public.key.clone(), validation(public.family)));
        }
        (!keys.is_empty()).then_some(Verifier { keys, leeway })
    }

    /// Verifies a token and derives the connection's identity from its claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let (key, validation) = self
            .keys
            .iter()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .ok_or(AuthError::Invalid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::Audience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::Issuer,
                _ => AuthError::Invalid,
            })?
            .claims;
        let user = UserName::parse_unmarked(claims.name.as_deref().unwrap_or(&claims.sub))
            .map_err(AuthError::Name)?;
        let grants = RoomPatterns::from_claim(&claims.rooms).map_err(AuthError::Rooms)?;
        Ok(Identity {
            user,
            subject: Some(Arc::from(claims.sub)),
            grants: Arc::new(grants),
            expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp) + self.leeway),
        })
    }
}

/// A key to sign tokens with, for `palaver token` and tests.
pub(crate) struct SigningKey {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl SigningKey {
    /// HS256 with a shared secret.
    pub(crate) fn secret(secret: &Secret) -> SigningKey {
        SigningKey { key: EncodingKey::from_secret(secret.expose()), algorithm: Algorithm::HS256 }
    }

    /// A private key in PEM form: RSA signs RS256, EC (P-256) ES256, Ed25519 EdDSA.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let parsed = [
            (Algorithm::RS256, EncodingKey::from_rsa_pem(pem)),
            (Algorithm::ES256, EncodingKey::from_ec_pem(pem)),
            (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem)),
        ];
        parsed
            .into_iter()
            .find_map(|(algorithm, key)| key.ok().map(|key| SigningKey { key, algorithm }))
            .ok_or_else(|| "no RSA, EC or Ed25519 private key in PEM form".into())
    }

    /// Signs the claims.
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(|e| format!("cannot sign the token: {e}"))
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEEWAY: Duration = Duration::from_secs(30);

    fn secret(s: &str) -> Secret {
        s.parse().expect("non-empty")
    }

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            name: Some("Alice".into()),
            exp: unix_now() + 600,
            iat: Some(unix_now()),
            aud: None,
            iss: None,
            rooms: vec!["team-*".into()],
        }
    }

    fn sign(secret_text: &str, claims: &Claims) -> String {
        SigningKey::secret(&secret(secret_text)).sign(claims).expect("signs")
    }

    #[test]
    fn valid_token_gives_identity() {
        let verifier =
            Verifier::new(Some(&secret("s3cret")), None, None, None, LEEWAY).expect("a key");
        let identity = verifier.verify(&sign("s3cret", &claims("u1"))).expect("valid");
        assert_eq!(identity.user.as_str(), "Alice");
        assert_eq!(identity.subject.as_deref(), Some("u1"));
        assert!(identity.grants.matches("team-a"));
        assert!(!identity.grants.matches("staff"));
        assert!(identity.expires.is_some());
    }

    #[test]
    fn refusals() {
        let verifier =
            Verifier::new(Some(&secret("s3cret")), None, Some("chat"), Some("idp"), LEEWAY)
                .expect("a key");
        let good = Claims {
            aud: Some(serde_json::json!("chat")),
            iss: Some("idp".into()),
            ..claims("u1")
        };
        assert!(verifier.verify(&sign("s3cret", &good)).is_ok());
        let check = |c: &Claims, key: &str| verifier.verify(&sign(key, c)).map(|_| ());
        assert_eq!(check(&good, "other"), Err(AuthError::Invalid));
        let expired = Claims { exp: unix_now() - 3600, ..good.clone() };
        assert_eq!(check(&expired, "s3cret"), Err(AuthError::Expired));
        let wrong_aud = Claims { aud: Some(serde_json::json!("other")), ..good.clone() };
        assert_eq!(check(&wrong_aud, "s3cret"), Err(AuthError::Audience));
        let no_aud = Claims { aud: None, ..good.clone() };
        assert_eq!(check(&no_aud, "s3cret"), Err(AuthError::Audience));
        let wrong_iss = Claims { iss: Some("evil".into()), ..good.clone() };
        assert_eq!(check(&wrong_iss, "s3cret"), Err(AuthError::Issuer));
        let marked = Claims { name: Some("~Alice".into()), ..good.clone() };
        assert!(matches!(check(&marked, "s3cret"), Err(AuthError::Name(_))));
        let bad_rooms = Claims { rooms: vec!["a b".into()], ..good.clone() };
        assert!(matches!(check(&bad_rooms, "s3cret"), Err(AuthError::Rooms(_))));
        assert_eq!(verifier.verify("not.a.token").err(), Some(AuthError::Invalid));
        assert_eq!(verifier.verify(&"x".repeat(MAX_TOKEN_LEN + 1)).err(), Some(AuthError::TooLong));
    }

    #[test]
    fn unsigned_and_foreign_algorithms_are_refused() {
        let verifier =
            Verifier::new(Some(&secret("s3cret")), None, None, None, LEEWAY).expect("a key");
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let body = sign("s3cret", &claims("u1"));
        let payload = body.split('.').nth(1).expect("three parts");
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(verifier.verify(&none).err(), Some(AuthError::Invalid));
    }

    #[test]
    fn tokens_without_aud_are_fine_when_no_audience_is_configured() {
        let verifier = Verifier::new(Some(&secret("k")), None, None, None, LEEWAY).expect("a key");
        assert!(verifier.verify(&sign("k", &claims("u1"))).is_ok());
        // A token meant for someone else is not ours to accept.
        let foreign = Claims { aud: Some(serde_json::json!("elsewhere")), ..claims("u1") };
        assert_eq!(verifier.verify(&sign("k", &foreign)).map(|_| ()), Err(AuthError::Audience));
    }

    #[test]
    fn secrets_are_not_printed() {
        assert!(!format!("{:?}", secret("hunter2")).contains("hunter2"));
    }
}
