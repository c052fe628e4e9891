//! Who may enter which room: room patterns, the private rooms of the node's
//! config, and the grants a token carries.
//!
//! A room is *private* when it matches `--private-rooms`; entering one (join,
//! history, send, typing, leave) needs a grant from the connection's token
//! (its `rooms` claim). Every other room is open to every connection. The
//! check is local (config + token), so every node of a cluster gives the same
//! answer without asking anyone.

use std::{fmt, str::FromStr};

use palaver_protocol::{RoomName, names::MAX_ROOM_LEN};

/// Most patterns one token's `rooms` claim may carry.
pub(crate) const MAX_GRANTS: usize = 256;

/// A room name, or a glob over room names where `*` matches any run of
/// characters (`team-*`, `*:ops`, `*`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RoomPattern(String);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatternError {
    /// Empty pattern.
    #[error("empty room pattern")]
    Empty,
    /// Longer than any room name could match.
    #[error("room pattern longer than {0} characters")]
    TooLong(usize),
    /// A character no room name contains.
    #[error("room pattern contains {0:?}; use room-name characters and `*`")]
    BadChar(char),
}

impl RoomPattern {
    /// Validates a pattern: room-name characters plus `*`.
    pub(crate) fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s.len() > MAX_ROOM_LEN * 2 {
            return Err(PatternError::TooLong(MAX_ROOM_LEN * 2));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '*')))
        {
            return Err(PatternError::BadChar(c));
        }
        Ok(RoomPattern(s.to_owned()))
    }

    /// Whether the room matches. Linear in practice; at worst
    /// pattern length × name length, both bounded.
    pub(crate) fn matches(&self, room: &str) -> bool {
        glob(self.0.as_bytes(), room.as_bytes())
    }
}

impl FromStr for RoomPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        RoomPattern::parse(s)
    }
}

impl fmt::Debug for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*`-glob matching with one backtrack point (the last `*`), which is
/// enough for globs without `?` or classes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A set of patterns: the node's private rooms, or one token's grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoomPatterns(Vec<RoomPattern>);

impl RoomPatterns {
    /// Patterns from a list.
    #[cfg(test)]
    pub(crate) fn new(patterns: Vec<RoomPattern>) -> Self {
        RoomPatterns(patterns)
    }

    /// Parses a token's `rooms` claim, refusing malformed or too many entries.
    pub(crate) fn from_claim(claim: &[String]) -> Result<Self, PatternError> {
        if claim.len() > MAX_GRANTS {
            return Err(PatternError::TooLong(MAX_GRANTS));
        }
        claim.iter().map(|s| RoomPattern::parse(s)).collect::<Result<_, _>>().map(RoomPatterns)
    }

    /// Whether any pattern matches the room.
    pub(crate) fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| p.matches(room))
    }

    /// No patterns at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for RoomPatterns {
    type Err = PatternError;
    /// A comma-separated list; empty entries (and an empty list) are allowed.
    fn from_str(s: &str) -> Result<Self, PatternError> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(RoomPattern::parse)
            .collect::<Result<_, _>>()
            .map(RoomPatterns)
    }
}

/// The node's rule for rooms: which are private.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    private: RoomPatterns,
}

impl Access {
    /// The rule for these private-room patterns.
    pub(crate) fn new(private: RoomPatterns) -> Self {
        Access { private }
    }

    /// Whether a connection holding `grants` may enter the room.
    pub(crate) fn allows(&self, grants: &RoomPatterns, room: &RoomName) -> bool {
        !self.private.matches(room.as_str()) || grants.matches(room.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> RoomPattern {
        RoomPattern::parse(s).expect("valid pattern")
    }

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).expect("valid room")
    }

    #[test]
    fn globs() {
        assert!(pattern("lobby").matches("lobby"));
        assert!(!pattern("lobby").matches("lobby2"));
        assert!(pattern("team-*").matches("team-a"));
        assert!(pattern("team-*").matches("team-"));
        assert!(!pattern("team-*").matches("teams"));
        assert!(pattern("*").matches("anything"));
        assert!(pattern("*:ops").matches("eng:ops"));
        assert!(!pattern("*:ops").matches("eng:ops2"));
        assert!(pattern("a*b*c").matches("axxbyyc"));
        assert!(!pattern("a*b*c").matches("axxbyy"));
        assert!(pattern("**x").matches("x"));
        // Worst case stays cheap: no exponential backtracking.
        let long = "a".repeat(64);
        assert!(!pattern(&format!("{}b", "*a".repeat(40))).matches(&long));
    }

    #[test]
    fn patterns_are_validated() {
        assert_eq!(RoomPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(RoomPattern::parse("a b"), Err(PatternError::BadChar(' ')));
        assert_eq!(RoomPattern::parse("team-?"), Err(PatternError::BadChar('?')));
        assert!(RoomPattern::parse(&"a".repeat(200)).is_err());
        assert!(RoomPatterns::from_claim(&vec!["x".to_owned(); MAX_GRANTS + 1]).is_err());
        assert_eq!("".parse::<RoomPatterns>(), Ok(RoomPatterns::default()));
        assert_eq!(" a, ,b ".parse::<RoomPatterns>().map(|p| p.0.len()), Ok(2));
        assert!("a,b c".parse::<RoomPatterns>().is_err());
    }

    #[test]
    fn private_rooms_need_a_grant() {
        let access: Access = Access::new("team-*, staff".parse().expect("patterns"));
        let none = RoomPatterns::default();
        let team = RoomPatterns::new(vec![pattern("team-*")]);
        let all = RoomPatterns::new(vec![pattern("*")]);
        assert!(access.allows(&none, &room("lobby")));
        assert!(!access.allows(&none, &room("team-a")));
        assert!(!access.allows(&none, &room("staff")));
        assert!(access.allows(&team, &room("team-a")));
        assert!(!access.allows(&team, &room("staff")));
        assert!(access.allows(&all, &room("staff")));
        assert!(Access::default().allows(&none, &room("team-a")));
    }
}
