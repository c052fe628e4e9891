//! Who a new connection speaks for: a guest with a nickname from `?name=`
//! (or a generated one), or a user whose token [`crate::auth`] verified.

use std::{sync::Arc, time::SystemTime};

use palaver_protocol::{NameError, UserName};

use crate::access::RoomPatterns;

/// The identity a connection was admitted with. Fixed for the connection's life.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// The name others see (`welcome.user`, `message.user`, presence).
    pub(crate) user: UserName,
    /// The token's `sub`, for logs; `None` for guests.
    pub(crate) subject: Option<Arc<str>>,
    /// Private rooms the token grants (its `rooms` claim); none for guests.
    pub(crate) grants: Arc<RoomPatterns>,
    /// When the token expires; the connection is closed (4001) then.
    pub(crate) expires: Option<SystemTime>,
}

/// The user the server API posts as when the caller names none. Reserved:
/// no guest may pick it (any case), so a message from it came through the API
/// (or from a token the application minted with that name).
pub(crate) const SYSTEM_USER: &str = "system";

/// A guest from the `name` query parameter. `marked`: token users share the
/// node, so the guest's name carries the guest mark (`~ann`) and can never
/// pass for theirs.
pub(crate) fn guest(name: Option<&str>, marked: bool) -> Result<Identity, NameError> {
    let generated;
    let name = match name {
        Some(name) => name,
        None => {
            generated = format!("guest-{:04x}", rand::random::<u16>());
            &generated
        }
    };
    if name.trim().eq_ignore_ascii_case(SYSTEM_USER) {
        return Err(NameError::Reserved);
    }
    let user = if marked { UserName::guest(name)? } else { UserName::parse_unmarked(name)? };
    Ok(Identity { user, subject: None, grants: Arc::default(), expires: None })
}

/// A fresh session id.
pub(crate) fn new_session_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names() {
        let name = |n: Option<&str>, marked| guest(n, marked).map(|i| i.user.to_string());
        assert_eq!(name(Some(" ann "), false).expect("valid"), "ann");
        assert!(name(Some("<b>"), false).is_err());
        assert!(name(None, false).expect("generated").starts_with("guest-"));
        assert_eq!(name(Some("ann"), true).expect("valid"), "~ann");
        assert!(name(None, true).expect("generated").starts_with("~guest-"));
        // Nobody picks the mark themselves, marked or not.
        assert!(name(Some("~ann"), false).is_err());
        assert!(name(Some("~ann"), true).is_err());
        // The server API's default user is not for guests.
        assert_eq!(guest(Some(" System"), false).err(), Some(NameError::Reserved));
        assert_eq!(guest(Some("system"), true).err(), Some(NameError::Reserved));
    }
}
