//! API keys: parsed from the config, checked in constant time, and each
//! with its own request budget.
//!
//! Several keys can be valid at once so that one can be rotated without
//! downtime (add the new one, move the callers, drop the old one). A key is
//! compared with every configured key, always all of them and each in
//! constant time (`subtle`), so the time a refusal takes says nothing about
//! how much of a guess was right, nor which key matched.

use std::{fmt, str::FromStr, sync::Arc};

use axum::http::{HeaderMap, header};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use subtle::ConstantTimeEq;

use crate::ratelimit::Rate;

/// Shortest key accepted: anything shorter is guessable.
pub(crate) const MIN_KEY_LEN: usize = 16;

/// One API key from the config; never printed.
#[derive(Clone)]
pub(crate) struct ApiKey(Arc<str>);

impl FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() < MIN_KEY_LEN {
            return Err(format!("an API key must be at least {MIN_KEY_LEN} characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains(',') {
            return Err("an API key is printable ASCII without spaces or commas".into());
        }
        Ok(ApiKey(Arc::from(s)))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization: Bearer`, or not a configured key.
    Unauthorized,
    /// The key is over its request rate.
    RateLimited,
}

/// The configured keys and their budgets.
pub(crate) struct ApiKeys {
    keys: Vec<ApiKey>,
    /// Keyed by the index of the matching key.
    budgets: Option<DefaultKeyedRateLimiter<usize>>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// `keys` (none: the API is off), each allowed `rate` requests with `burst`.
    pub(crate) fn new(keys: Vec<ApiKey>, rate: Rate, burst: u32) -> Self {
        ApiKeys { keys, budgets: rate.quota(burst).map(RateLimiter::keyed) }
    }

    /// Whether any key is configured (else the API is not served).
    pub(crate) fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Which configured key the presented one is, compared in constant time.
    fn find(&self, presented: &[u8]) -> Option<usize> {
        let mut found = None;
        // Every key is compared, matching or not: no early exit.
        for (index, key) in self.keys.iter().enumerate() {
            if bool::from(key.0.as_bytes().ct_eq(presented)) {
                found = Some(index);
            }
        }
        found
    }

    /// Lets a request in if it carries a configured key within its budget.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or(Denied::Unauthorized)?;
        let index = self.find(presented.as_bytes()).ok_or(Denied::Unauthorized)?;
        match &self.budgets {
            Some(budgets) if budgets.check_key(&index).is_err() => Err(Denied::RateLimited),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rate: &str, burst: u32) -> ApiKeys {
        let parse = |s: &str| s.parse::<ApiKey>().expect("valid key");
        let rate = rate.parse().expect("rate");
        ApiKeys::new(vec![parse("old-key-0123456789"), parse("new-key-0123456789")], rate, burst)
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn keys_must_be_long_and_plain() {
        assert!("short".parse::<ApiKey>().is_err());
        assert!("has space 0123456789".parse::<ApiKey>().is_err());
        assert!(" padded-0123456789abc ".parse::<ApiKey>().is_ok());
        assert_eq!(
            format!("{:?}", "secret-0123456789".parse::<ApiKey>()),
            "Ok(ApiKey(<redacted>))"
        );
    }

    #[test]
    fn every_configured_key_is_accepted() {
        let keys = keys("off", 0);
        assert!(keys.enabled());
        assert_eq!(keys.admit(&bearer("Bearer old-key-0123456789")), Ok(()));
        assert_eq!(keys.admit(&bearer("bearer new-key-0123456789")), Ok(()));
        for refused in ["Bearer new-key-012345678", "Bearer new-key-0123456789x", "Basic x", ""] {
            assert_eq!(keys.admit(&bearer(refused)), Err(Denied::Unauthorized), "{refused:?}");
        }
        assert_eq!(keys.admit(&HeaderMap::new()), Err(Denied::Unauthorized));
        assert!(!ApiKeys::new(Vec::new(), Rate::OFF, 0).enabled());
    }

    #[test]
    fn each_key_has_its_own_budget() {
        let keys = keys("1/h", 2);
        let old = bearer("Bearer old-key-0123456789");
        assert_eq!(keys.admit(&old), Ok(()));
        assert_eq!(keys.admit(&old), Ok(()));
        assert_eq!(keys.admit(&old), Err(Denied::RateLimited));
        assert_eq!(keys.admit(&bearer("Bearer new-key-0123456789")), Ok(()));
    }
}
