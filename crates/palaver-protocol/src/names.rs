//! Validated names: rooms, users and client message ids.
//!
//! Validation happens once, at the edge, and the newtypes carry the proof, so
//! nothing behind the decoder handles an unchecked name. Each is a cheap-to-clone
//! `Arc<str>` because rooms and users are keys in several maps.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty after trimming.
    #[error("must not be empty")]
    Empty,
    /// Longer than the maximum.
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// Contains a character outside the allowed set.
    #[error("contains a character that is not allowed: {0:?}")]
    BadChar(char),
    /// A name the server keeps for itself (guests may not pick it).
    #[error("is reserved")]
    Reserved,
}

/// Longest room name, in bytes (room names are ASCII).
pub const MAX_ROOM_LEN: usize = 64;
/// Longest user name, in characters.
pub const MAX_USER_CHARS: usize = 32;
/// Longest client message id, in bytes (ids are ASCII).
pub const MAX_ID_LEN: usize = 64;
/// Prefix the server puts on unverified guests' names when token users share
/// the node (see `docs/protocol.md`); no chosen name may contain it.
pub const GUEST_MARK: char = '~';

macro_rules! arc_name {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// The validated name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                $name::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.to_string()
            }
        }
    };
}

arc_name!(RoomName, "A room name: 1 to 64 ASCII letters, digits, `_`, `-`, `.` or `:`.");
arc_name!(
    UserName,
    "A display name: 1 to 32 characters of letters, digits, space, `_`, `-` or `.`, trimmed; \
     the server may prefix a guest's name with [`GUEST_MARK`]."
);
arc_name!(
    ClientMessageId,
    "A client-chosen message id: 1 to 64 printable ASCII characters, no spaces."
);

impl RoomName {
    /// Validates a room name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_ROOM_LEN {
            return Err(NameError::TooLong(MAX_ROOM_LEN));
        }
        if let Some(c) =
            s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        {
            return Err(NameError::BadChar(c));
        }
        Ok(RoomName(Arc::from(s)))
    }
}

impl UserName {
    /// Validates a display name as it travels (in frames, on the bus, in
    /// history): a plain name, or the server's guest mark followed by one.
    /// Surrounding whitespace is trimmed first.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        match s.strip_prefix(GUEST_MARK) {
            Some(nick) => UserName::guest(nick),
            None => UserName::parse_unmarked(s),
        }
    }

    /// Marks a nickname as an unverified guest's (`ann` becomes `~ann`), so it
    /// can never equal the name of a user who proved who they are.
    pub fn guest(nick: &str) -> Result<Self, NameError> {
        let nick = UserName::parse_unmarked(nick)?;
        Ok(UserName(Arc::from(format!("{GUEST_MARK}{nick}"))))
    }

    /// Whether the name carries the guest mark.
    pub fn is_guest(&self) -> bool {
        self.0.starts_with(GUEST_MARK)
    }

    /// Validates a name someone chose (a `?name=` nickname, a token's `name`
    /// claim): the guest mark is refused like any other symbol.
    pub fn parse_unmarked(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.chars().count() > MAX_USER_CHARS {
            return Err(NameError::TooLong(MAX_USER_CHARS));
        }
        if let Some(c) =
            s.chars().find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.')))
        {
            return Err(NameError::BadChar(c));
        }
        Ok(UserName(Arc::from(s)))
    }
}

impl ClientMessageId {
    /// Validates a client message id.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(NameError::TooLong(MAX_ID_LEN));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(NameError::BadChar(c));
        }
        Ok(ClientMessageId(Arc::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::parse("lobby").is_ok());
        assert!(RoomName::parse("team:eng.ops-1_a").is_ok());
        assert_eq!(RoomName::parse(""), Err(NameError::Empty));
        assert_eq!(RoomName::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(RoomName::parse("<x>"), Err(NameError::BadChar('<')));
        assert_eq!(RoomName::parse(&"a".repeat(65)), Err(NameError::TooLong(64)));
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn user_names() {
        assert_eq!(UserName::parse("  Zoë 2 ").expect("valid").as_str(), "Zoë 2");
        assert!(UserName::parse("a\u{0}b").is_err());
        assert!(UserName::parse("<script>").is_err());
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"é".repeat(33)).is_err());
    }

    #[test]
    fn guest_mark() {
        let guest = UserName::guest(" ann ").expect("valid");
        assert_eq!(guest.as_str(), "~ann");
        assert!(guest.is_guest());
        // The mark survives the wire; nobody can choose it.
        assert_eq!(UserName::parse("~ann"), Ok(guest));
        assert_eq!(UserName::parse_unmarked("~ann"), Err(NameError::BadChar('~')));
        assert_eq!(UserName::guest("~ann"), Err(NameError::BadChar('~')));
        assert!(UserName::parse("~").is_err());
        assert!(UserName::parse("~~ann").is_err());
        assert!(!UserName::parse("ann").expect("valid").is_guest());
    }

    #[test]
    fn ids() {
        assert!(ClientMessageId::parse("c-17").is_ok());
        assert!(ClientMessageId::parse("has space").is_err());
        assert!(ClientMessageId::parse("ünï").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: Result<RoomName, _> = serde_json::from_str("\"lobby\"");
        assert!(ok.is_ok());
        let bad: Result<RoomName, _> = serde_json::from_str("\"no spaces\"");
        assert!(bad.is_err());
    }
}
