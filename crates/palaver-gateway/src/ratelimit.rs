//! Rate limits: frames per connection, and connections per client IP.
//!
//! Both use `governor`'s GCRA (a token bucket without a refill task): a rate
//! and a burst. A connection over its frame rate gets `rate_limited` errors;
//! one that keeps going (more than `strikes` refusals within a window) is
//! closed with 1008. A client IP over its new-connection rate, or holding
//! its maximum of open connections, is refused with HTTP 429 before the
//! upgrade. IPv6 clients are counted per /64, the block one subscriber
//! usually holds.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// Keyed-limiter checks between sweeps of idle IPs' state.
const SWEEP_EVERY: u64 = 4096;

/// A rate such as `20/s`, `600/m`, `1000/h`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate(Option<(NonZeroU32, Duration)>);

impl Rate {
    /// No limit.
    pub(crate) const OFF: Rate = Rate(None);

    /// The governor quota for this rate with `burst` (0: the rate's own count).
    pub(crate) fn quota(self, burst: u32) -> Option<Quota> {
        let (count, period) = self.0?;
        let quota = Quota::with_period(period / count.get())?;
        Some(quota.allow_burst(NonZeroU32::new(burst).unwrap_or(count)))
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(Rate::OFF);
        }
        let (count, unit) = s.split_once('/').unwrap_or((s, "s"));
        let period = match unit {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("unknown unit {other:?}: use /s, /m or /h")),
        };
        let count: u32 =
            count.trim().parse().map_err(|_| format!("not a rate: {s:?} (e.g. 20/s)"))?;
        Ok(Rate(NonZeroU32::new(count).map(|c| (c, period))))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some((count, period)) => write!(f, "{count}/{}s", period.as_secs()),
        }
    }
}

/// What to do with a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate.
    Admit,
    /// Over the rate: refuse with `rate_limited`.
    Refuse,
    /// Over the rate again and again: close the connection (1008).
    Abuse,
}

/// One connection's frame budget.
pub(crate) struct FrameBudget {
    limiter: Option<DefaultDirectRateLimiter>,
    max_strikes: u32,
    window: Duration,
    strikes: u32,
    window_start: Instant,
}

impl FrameBudget {
    /// A budget of `rate` with `burst`; more than `max_strikes` refusals
    /// within `window` is abuse (0: never).
    pub(crate) fn new(rate: Rate, burst: u32, max_strikes: u32, window: Duration) -> FrameBudget {
        FrameBudget {
            limiter: rate.quota(burst).map(RateLimiter::direct),
            max_strikes,
            window,
            strikes: 0,
            window_start: Instant::now(),
        }
    }

    /// Spends one frame.
    pub(crate) fn check(&mut self) -> Verdict {
        let Some(limiter) = &self.limiter else { return Verdict::Admit };
        if limiter.check().is_ok() {
            return Verdict::Admit;
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) > self.window {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.max_strikes > 0 && self.strikes > self.max_strikes {
            Verdict::Abuse
        } else {
            Verdict::Refuse
        }
    }
}

/// Why a client IP may not open another connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRefusal {
    /// It holds `--max-conns-per-ip` open connections.
    TooManyConnections,
    /// It opened connections faster than `--conn-rate-per-ip`.
    TooFast,
}

/// Per-IP connection accounting, shared by the whole node.
pub(crate) struct PeerLimits {
    max_conns: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl fmt::Debug for PeerLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerLimits")
            .field("max_conns", &self.max_conns)
            .field("rate", &self.rate.is_some())
            .finish()
    }
}

impl PeerLimits {
    /// At most `max_conns` open connections per IP (0: no limit), opened at
    /// most at `rate` with `burst`.
    pub(crate) fn new(max_conns: u32, rate: Rate, burst: u32) -> PeerLimits {
        PeerLimits {
            max_conns,
            open: Mutex::new(HashMap::new()),
            rate: rate.quota(burst).map(RateLimiter::keyed),
            checks: AtomicU64::new(0),
        }
    }

    /// Admits one more connection from `ip`, or says why not. The slot is
    /// held for the connection's life and frees itself when dropped.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<PeerSlot, PeerRefusal> {
        let key = peer_key(ip);
        if let Some(rate) = &self.rate {
            if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                // Forget IPs whose bucket is full again, so the map tracks
                // recent clients only.
                rate.retain_recent();
                rate.shrink_to_fit();
            }
            if rate.check_key(&key).is_err() {
                return Err(PeerRefusal::TooFast);
            }
        }
        if self.max_conns == 0 {
            return Ok(PeerSlot { limits: None, key });
        }
        let mut open = self.open.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= self.max_conns {
            return Err(PeerRefusal::TooManyConnections);
        }
        *count += 1;
        Ok(PeerSlot { limits: Some(self.clone()), key })
    }

    /// Open connections counted for `ip`.
    #[cfg(test)]
    pub(crate) fn open(&self, ip: IpAddr) -> u32 {
        self.open.lock().get(&peer_key(ip)).copied().unwrap_or(0)
    }
}

/// One admitted connection's place in its IP's count.
pub(crate) struct PeerSlot {
    limits: Option<Arc<PeerLimits>>,
    key: IpAddr,
}

impl PeerSlot {
    /// The address the connection is counted under.
    pub(crate) fn key(&self) -> IpAddr {
        self.key
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let Some(limits) = &self.limits else { return };
        let mut open = limits.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The `id` (else the `type`) of a frame refused unread, for the error's `ref`.
pub(crate) fn frame_reference(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: Option<String>,
        id: Option<String>,
    }
    let head: Head = serde_json::from_str(text).ok()?;
    Some(head.id.or(head.kind)?.chars().take(64).collect())
}

/// The key an address is counted under: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64.
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().expect("valid rate")
    }

    #[test]
    fn rates_parse() {
        assert_eq!(rate("off"), Rate::OFF);
        assert_eq!(rate("0"), Rate::OFF);
        assert_eq!(
            rate("20/s"),
            Rate(Some((NonZeroU32::new(20).expect("20"), Duration::from_secs(1))))
        );
        assert_eq!(rate("20"), rate("20/s"));
        assert_eq!(rate("600/m").to_string(), "600/60s");
        assert!("fast".parse::<Rate>().is_err());
        assert!("5/d".parse::<Rate>().is_err());
        assert!("-1/s".parse::<Rate>().is_err());
    }

    #[test]
    fn frame_budget_refuses_then_calls_abuse() {
        let mut budget = FrameBudget::new(rate("1/h"), 3, 5, Duration::from_secs(60));
        let verdicts: Vec<Verdict> = (0..10).map(|_| budget.check()).collect();
        assert_eq!(&verdicts[..3], &[Verdict::Admit; 3]);
        assert_eq!(&verdicts[3..8], &[Verdict::Refuse; 5]);
        assert_eq!(verdicts[8], Verdict::Abuse);
        let mut free = FrameBudget::new(Rate::OFF, 0, 1, Duration::from_secs(1));
        assert!((0..1000).all(|_| free.check() == Verdict::Admit));
    }

    #[test]
    fn peer_limits_count_and_release() {
        let limits = Arc::new(PeerLimits::new(2, Rate::OFF, 0));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = limits.admit(ip).expect("first");
        let _b = limits.admit(ip).expect("second");
        assert_eq!(limits.admit(ip).err(), Some(PeerRefusal::TooManyConnections));
        assert!(limits.admit("10.0.0.2".parse().expect("ip")).is_ok());
        drop(a);
        assert_eq!(limits.open(ip), 1);
        assert!(limits.admit(ip).is_ok());
    }

    #[test]
    fn peer_rate() {
        let limits = Arc::new(PeerLimits::new(0, rate("1/h"), 3));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(limits.admit(ip).is_ok());
        }
        assert_eq!(limits.admit(ip).err(), Some(PeerRefusal::TooFast));
    }

    #[test]
    fn references() {
        assert_eq!(frame_reference(r#"{"type":"send","id":"c-1"}"#).as_deref(), Some("c-1"));
        assert_eq!(frame_reference(r#"{"type":"join"}"#).as_deref(), Some("join"));
        assert_eq!(frame_reference("not json"), None);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(peer_key(a), peer_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(peer_key(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }
}
