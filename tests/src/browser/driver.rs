//! One `chromedriver` per test, on a free port, and the headless Chromium
//! sessions it starts. Everything it started is killed on drop.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use fantoccini::ClientBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{BROWSER_PATIENCE, Browser};

/// Browser tests run one at a time (each runs one or two Chromiums): on two
/// cores, two at a time took as long in total and only added contention.
static TURNS: Semaphore = Semaphore::const_new(1);

/// Viewport of every browser: a normal laptop window, and the screenshot's size.
pub const WINDOW: (u32, u32) = (1000, 700);

/// A running `chromedriver`. Sessions opened through it get a fresh profile
/// each. On drop its whole process group (chromedriver and every Chromium it
/// launched) is killed and the profiles are removed.
pub struct ChromeDriver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    profiles: Mutex<Vec<PathBuf>>,
    sessions: Mutex<Vec<String>>,
    _turn: SemaphorePermit<'static>,
}

impl ChromeDriver {
    /// Starts `chromedriver` on a free port and waits until it accepts
    /// connections. Panics, saying what to install, when `chromium` or
    /// `chromedriver` is missing.
    pub async fn start() -> ChromeDriver {
        let chromium = program("CHROMIUM", &["chromium", "chromium-browser"]);
        let chromedriver = program("CHROMEDRIVER", &["chromedriver"]);
        let turn = TURNS.acquire().await.expect("the semaphore is never closed");
        let port = free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can kill the browsers too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", chromedriver.display()));
        let driver = ChromeDriver {
            child,
            port,
            chromium,
            profiles: Mutex::default(),
            sessions: Mutex::default(),
            _turn: turn,
        };
        let deadline = Instant::now() + BROWSER_PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// Starts a headless Chromium with a fresh profile and opens `url`.
    pub async fn open(&self, url: &str) -> Browser {
        let profile = fresh_profile_dir();
        self.profiles.lock().expect("not poisoned").push(profile.clone());
        let (width, height) = WINDOW;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("start a Chromium session through chromedriver: {e}"));
        if let Ok(Some(id)) = client.session_id().await {
            self.sessions.lock().expect("not poisoned").push(id);
        }
        client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
        // `--window-size` sizes the window with its (invisible) browser chrome:
        // grow it by that much so the page's viewport is exactly WINDOW.
        let chrome = client
            .execute("return [outerWidth - innerWidth, outerHeight - innerHeight];", vec![])
            .await
            .expect("read the window's chrome size");
        let extra = |i: usize| u32::try_from(chrome[i].as_u64().unwrap_or(0)).unwrap_or(0);
        if extra(0) > 0 || extra(1) > 0 {
            client
                .set_window_size(width + extra(0), height + extra(1))
                .await
                .expect("resize the window");
        }
        Browser::new(client, self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Quit each browser properly first (it cannot be awaited from drop, and
        // the test's runtime is ending): killed, Chromium leaves stray helpers.
        for session in self.sessions.lock().expect("not poisoned").drain(..) {
            delete_session(self.port, &session);
        }
        // The group id is chromedriver's pid (`process_group(0)`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for profile in self.profiles.lock().expect("not poisoned").drain(..) {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// `DELETE /session/{id}`: chromedriver closes that Chromium and answers.
fn delete_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // The answer comes once the browser has quit; its first bytes are enough.
        let _ = stream.read(&mut [0; 1024]);
    }
}

/// `POST path` with a JSON body to chromedriver, for commands fantoccini does
/// not wrap; returns the HTTP status.
pub(crate) async fn post(port: u16, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to chromedriver");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write to chromedriver");
    // The status line is all we need (chromedriver may keep the connection open).
    let mut response = Vec::new();
    let status_line = async {
        let mut chunk = [0; 1024];
        while !response.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(BROWSER_PATIENCE, status_line).await;
    let response = String::from_utf8_lossy(&response);
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The program named by the environment variable `var`, else the first of
/// `names` found on `PATH`; panics with the install command otherwise.
fn program(var: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "browser tests need Debian's chromium and chromedriver, and {} is not on PATH: \
                 run `apt-get install chromium chromium-driver` (.ci/run does), or set {var}",
                names[0]
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn fresh_profile_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "palaver-chromium-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a Chromium profile directory");
    dir
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound address").port()
}
