//! Who a new connection speaks for. Today: a validated nickname from
//! `?name=`, or a generated guest name.

use palaver_protocol::{NameError, UserName};

/// Resolves the connection's user from the `name` query parameter.
pub fn guest(name: Option<&str>) -> Result<UserName, NameError> {
    match name {
        Some(name) => UserName::parse(name),
        None => UserName::parse(&format!("guest-{:04x}", rand::random::<u16>())),
    }
}

/// A fresh session id.
pub fn new_session_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names() {
        assert_eq!(guest(Some(" ann ")).expect("valid").as_str(), "ann");
        assert!(guest(Some("<b>")).is_err());
        assert!(guest(None).expect("generated").as_str().starts_with("guest-"));
    }
}
