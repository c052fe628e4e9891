//! A `palaver` node process on an ephemeral port.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A running gateway process; killed on drop.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its node id.
    pub id: String,
    /// Where it serves the server API when started with `--api-listen`.
    pub api: Option<SocketAddr>,
}

/// Path of the `palaver` binary built by `cargo test --workspace`
/// (override with `PALAVER_BIN`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PALAVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let bin = dir.join(format!("palaver{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (it builds the binary) or set PALAVER_BIN",
        bin.display()
    );
    bin
}

impl Node {
    /// Starts a node with extra flags (`--listen 127.0.0.1:0` is added).
    pub fn start(args: &[&str]) -> Node {
        Self::start_on("127.0.0.1:0", args)
    }

    /// Starts a node on a given address (to restart on the same port).
    pub fn start_on(listen: &str, args: &[&str]) -> Node {
        Self::start_with_env(listen, args, &[])
    }

    /// Starts a node with extra environment variables (e.g. `OTEL_*`).
    pub fn start_with_env(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut child = Command::new(binary())
            .arg("--listen")
            .arg(listen)
            .args(args)
            .env("RUST_LOG", std::env::var("PALAVER_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            // The abuse limits' defaults would trip tests that hammer a node
            // from 127.0.0.1 on purpose (floods, slow consumers, many
            // clients). Tests of the limits pass flags, which win over these.
            .env("PALAVER_RATE_LIMIT", "off")
            .env("PALAVER_CONN_RATE_PER_IP", "off")
            .env("PALAVER_MAX_CONNS_PER_IP", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn palaver");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the listening line");
        // "palaver listening on http://ADDR node=ID" (then " api=http://ADDR"
        // with --api-listen)
        let rest = line
            .trim()
            .strip_prefix("palaver listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line from palaver: {line:?}"));
        let (addr, rest) = rest.split_once(" node=").expect("node id on the listening line");
        let (id, api) = match rest.split_once(" api=http://") {
            Some((id, api)) => (id, Some(api.parse().expect("api socket address"))),
            None => (rest, None),
        };
        Node { child, addr: addr.parse().expect("socket address"), id: id.to_owned(), api }
    }

    /// WebSocket URL for a user name.
    pub fn ws_url(&self, name: &str) -> String {
        format!("ws://{}/ws?name={name}", self.addr)
    }

    /// HTTP URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes; Linux only.
    pub fn peak_memory(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends SIGTERM and waits for the exit, at most `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        signal(self.pid(), "TERM");
        self.wait(limit)
    }

    /// SIGKILL, immediately (a crashed node).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with `kill(1)` (no unsafe FFI in tests).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// A minimal HTTP GET over a raw socket: returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
