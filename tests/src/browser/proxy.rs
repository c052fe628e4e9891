//! A tiny TCP proxy standing in for a load balancer: browsers connect to the
//! page's own host, so to let one move to another node after a crash, it
//! loads the page through this proxy, which sends each new connection to the
//! first node in its list that accepts.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// A proxy on an ephemeral port; stops (and drops every forwarded connection) on drop.
pub struct TcpProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `backends`, tried in order for every new connection.
    pub async fn start(backends: Vec<SocketAddr>) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("bound address");
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = refusing.clone();
        let task = tokio::spawn(async move {
            // Owning the connections here means aborting this task ends them all.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { continue };
                        if refuse.load(Ordering::Relaxed) {
                            continue; // dropped: the client sees its connection fail
                        }
                        connections.spawn(forward(inbound, backends.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        TcpProxy { addr, refusing, task }
    }

    /// While set, new connections are closed at once (no node reachable);
    /// connections already forwarded are untouched.
    pub fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::Relaxed);
    }

    /// HTTP URL of a path, through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways between the client and the first live backend; a
/// connection nobody accepts is closed.
async fn forward(mut inbound: TcpStream, backends: Vec<SocketAddr>) {
    for backend in backends {
        if let Ok(mut outbound) = TcpStream::connect(backend).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}
