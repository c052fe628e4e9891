//! The project's load balancer (`deploy/haproxy.cfg`, unchanged) in front of
//! test nodes: a real `haproxy` on an ephemeral port.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Path of a file in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// Whether `haproxy` is installed. Tests that need it skip (saying so) when it
/// is not; `.ci/run` installs it.
pub fn haproxy_installed() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The environment `deploy/haproxy.cfg` reads, for three gateways on this machine.
pub fn haproxy_env(bind: &str, stats: &str, gateways: [SocketAddr; 3]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PALAVER_LB_BIND".to_owned(), bind.to_owned()),
        ("PALAVER_LB_STATS_BIND".to_owned(), stats.to_owned()),
        // Fast checks so tests see a draining node leave the pool quickly.
        ("PALAVER_LB_CHECK_INTERVAL".to_owned(), "200ms".to_owned()),
        ("PALAVER_LB_MAXCONN".to_owned(), "1000".to_owned()),
    ];
    for (i, addr) in gateways.iter().enumerate() {
        env.push((format!("PALAVER_GATEWAY_{}", i + 1), addr.to_string()));
    }
    env
}

/// A running `haproxy`; killed on drop.
pub struct Balancer {
    child: Child,
    /// The public (chat) address.
    pub addr: SocketAddr,
}

fn free_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("free port")
}

impl Balancer {
    /// Starts `haproxy -f deploy/haproxy.cfg` in front of three gateways and
    /// waits until it accepts connections.
    pub fn start(gateways: [SocketAddr; 3]) -> Balancer {
        // Both held while choosing, so the kernel cannot hand out one port twice.
        let (a, b) = (free_listener(), free_listener());
        let addr: SocketAddr = a.local_addr().expect("bound");
        let stats = b.local_addr().expect("bound").to_string();
        drop((a, b));
        let verbose = std::env::var_os("PALAVER_TEST_LOG").is_some();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(repo_path("deploy/haproxy.cfg"))
            .envs(haproxy_env(&addr.to_string(), &stats, gateways))
            .stdout(if verbose { Stdio::inherit() } else { Stdio::null() })
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn haproxy (apt-get install haproxy)");
        let mut balancer = Balancer { child, addr };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = balancer.child.try_wait() {
                panic!("haproxy exited at start: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(10), "haproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        balancer
    }

    /// WebSocket URL through the balancer.
    pub fn ws_url(&self, name: &str) -> String {
        format!("ws://{}/ws?name={name}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
