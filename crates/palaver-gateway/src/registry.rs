//! The node's open connections by user, so that an operator's disconnect
//! (server API, carried to every node as a control order) reaches every
//! connection of the user on this node, whatever rooms it is in.
//!
//! One mutex, held for a map update only: connects and disconnects touch it,
//! the message path never does. A disconnect also leaves the close reason
//! the operator chose, which the connection's write task picks up for its
//! close frame (only those connections hold one, so it costs nothing per
//! idle connection).

use std::{collections::HashMap, sync::Arc};

use palaver_hub::Client;
use palaver_protocol::UserName;
use parking_lot::Mutex;

/// Open connections of this node, by user.
#[derive(Default)]
pub(crate) struct Registry {
    users: Mutex<HashMap<UserName, Vec<Arc<Client>>>>,
    /// Close reasons of connections being disconnected, by session.
    farewells: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

impl Registry {
    /// Records an open connection.
    pub(crate) fn register(&self, client: &Arc<Client>) {
        self.users.lock().entry(client.user().clone()).or_default().push(client.clone());
    }

    /// Forgets a connection that has ended.
    pub(crate) fn unregister(&self, client: &Client) {
        let mut users = self.users.lock();
        if let Some(clients) = users.get_mut(client.user()) {
            clients.retain(|c| c.session() != client.session());
            if clients.is_empty() {
                users.remove(client.user());
            }
        }
        drop(users);
        self.farewells.lock().remove(client.session());
    }

    /// Closes every connection of `user` with `code` and `reason`; returns
    /// how many there were.
    pub(crate) fn disconnect(&self, user: &UserName, code: u16, reason: &str) -> usize {
        let clients = self.users.lock().get(user).cloned().unwrap_or_default();
        let reason: Arc<str> = Arc::from(reason);
        for client in &clients {
            self.farewells.lock().insert(client.session().clone(), reason.clone());
            client.close_with(code);
        }
        clients.len()
    }

    /// The reason an operator gave for closing this connection, if one did.
    pub(crate) fn farewell(&self, session: &str) -> Option<Arc<str>> {
        self.farewells.lock().get(session).cloned()
    }

    /// Open connections of `user` on this node.
    #[cfg(test)]
    pub(crate) fn connections_of(&self, user: &UserName) -> usize {
        self.users.lock().get(user).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_hub::ClientConfig;
    use tokio_util::sync::CancellationToken;

    fn client(session: &str, user: &str) -> Arc<Client> {
        let user = UserName::parse(user).expect("valid");
        let token = CancellationToken::new();
        Client::new(Arc::from(session), user, ClientConfig::default(), token).0
    }

    #[test]
    fn disconnects_every_connection_of_one_user_only() {
        let registry = Registry::default();
        let (ann1, ann2, bob) = (client("s1", "ann"), client("s2", "ann"), client("s3", "bob"));
        for c in [&ann1, &ann2, &bob] {
            registry.register(c);
        }
        let ann = ann1.user().clone();
        assert_eq!(registry.disconnect(&ann, 4002, "spam"), 2);
        assert!(ann1.is_closing() && ann2.is_closing() && !bob.is_closing());
        assert_eq!(ann1.close_code(), Some(4002));
        assert_eq!(registry.farewell("s2").as_deref(), Some("spam"));
        assert_eq!(registry.farewell("s3"), None);
        registry.unregister(&ann1);
        registry.unregister(&ann2);
        assert_eq!(registry.connections_of(&ann), 0);
        assert_eq!(registry.farewell("s2"), None);
        assert_eq!(registry.disconnect(&ann, 4002, "again"), 0);
    }
}
