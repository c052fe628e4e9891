//! A private `redis-server` on an ephemeral port, so tests can stop, kill and
//! restart it without touching anyone else's Redis.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `redis-server`; killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl RedisServer {
    /// Starts a server without persistence on a free port.
    pub fn start() -> RedisServer {
        let dir = std::env::temp_dir().join(format!("palaver-redis-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer { child: None, port: free_port(), dir };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let start = Instant::now();
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server keeping its data in memory dump: `SAVE` then SIGKILL,
    /// so a [`RedisServer::restart`] comes back with the data (an outage).
    pub fn stop_keeping_data(&mut self) {
        let _ = self.command(&["SAVE"]);
        self.kill();
    }

    /// Kills the server and deletes its data (Redis restarted empty).
    pub fn stop_losing_data(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (loading `dump.rdb` if kept).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command over RESP and returns the first reply line
    /// (`+OK`, `:3`, `$5` …) or the bulk/array payload flattened by spaces.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buf).ok()?;
        let reply = String::from_utf8_lossy(&buf[..n]).to_string();
        Some(reply.lines().next().unwrap_or_default().to_owned()).map(|first| {
            if first.starts_with('*') || first.starts_with('$') { reply } else { first }
        })
    }

    /// Number of subscribers of a channel (`PUBSUB NUMSUB`).
    pub fn numsub(&self, channel: &str) -> i64 {
        let reply = self.command(&["PUBSUB", "NUMSUB", channel]).unwrap_or_default();
        // *2\r\n$len\r\nchannel\r\n:N\r\n
        reply.lines().find_map(|l| l.strip_prefix(':')).and_then(|n| n.parse().ok()).unwrap_or(-1)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
