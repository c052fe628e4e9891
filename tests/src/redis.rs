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
    /// Extra `redis-server` arguments (persistence settings), kept for restarts.
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl RedisServer {
    /// Starts a server without persistence on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments, e.g. `["--appendonly", "yes"]`
    /// (they override the defaults; restarts keep them).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("palaver-redis-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut server = RedisServer { child: None, port: free_port(), dir, extra };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.extra)
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

    /// Writes an RDB snapshot now (`SAVE`): a later [`RedisServer::crash`] and
    /// [`RedisServer::restart`] come back exactly as of this moment, behind
    /// every write acknowledged since (what an RDB-only Redis does).
    pub fn snapshot(&self) {
        assert_eq!(self.command(&["SAVE"]).as_deref(), Some("+OK"), "SAVE failed");
    }

    /// Kills the server with SIGKILL, keeping whatever it persisted (a crash).
    pub fn crash(&mut self) {
        self.kill();
    }

    /// Copies the server's persisted files (RDB and AOF directory) aside, as
    /// the disk would hold them if only what was written so far had reached
    /// it: [`RedisServer::crash_to_checkpoint`] brings the server back there.
    pub fn checkpoint(&self) {
        let saved = self.dir.join("checkpoint");
        let _ = std::fs::remove_dir_all(&saved);
        std::fs::create_dir_all(&saved).expect("checkpoint dir");
        copy_tree(&self.dir, &saved, "checkpoint");
    }

    /// SIGKILL, then the persisted files roll back to the last checkpoint and
    /// the server restarts from them: what a machine crash does to an
    /// `appendfsync everysec` Redis (the page cache's last second is gone).
    pub fn crash_to_checkpoint(&mut self) {
        self.kill();
        let saved = self.dir.join("checkpoint");
        for entry in std::fs::read_dir(&self.dir).expect("redis dir").flatten() {
            if entry.file_name() != "checkpoint" {
                let path = entry.path();
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        copy_tree(&saved, &self.dir, "");
        self.spawn();
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

/// Copies the files and directories of `from` into `to`, skipping `skip`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path, skip: &str) {
    for entry in std::fs::read_dir(from).expect("readable dir").flatten() {
        if entry.file_name() == skip {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::create_dir_all(&target).expect("copy dir");
            copy_tree(&entry.path(), &target, "");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
