//! The web chat in a real browser: Debian's headless `chromium`, driven over
//! WebDriver (`chromedriver`) with `fantoccini`. A test starts one
//! [`ChromeDriver`], opens a [`Browser`] per user, and reads what the page shows
//! through its ids and `window.palaver.state()`.
//!
//! Nothing here downloads a browser: without `chromium` and `chromedriver`
//! installed the tests fail and say how to install them.

pub mod driver;
pub mod proxy;

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

pub use driver::ChromeDriver;
pub use proxy::TcpProxy;

/// "Eventually" in browser tests: a page, its WebSocket and a reconnect on two
/// busy cores. A bound so a broken test ends, never a performance assertion.
pub const BROWSER_PATIENCE: Duration = Duration::from_secs(30);

/// One browser session showing the chat page.
pub struct Browser {
    client: Client,
    /// The `chromedriver` this session runs under, for its Chromium-only commands.
    driver_port: u16,
}

/// A message as the page's state holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Sequence number in the room.
    pub seq: u64,
    /// Author.
    pub user: String,
    /// Text, as sent.
    pub text: String,
}

impl Browser {
    pub(crate) fn new(client: Client, driver_port: u16) -> Browser {
        Browser { client, driver_port }
    }

    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Fills the start form, clicks Join, and waits until the room is joined.
    pub async fn join(&self, name: &str, room: &str) {
        self.fill("#name", name).await;
        self.fill("#room", room).await;
        self.find("#join-btn").await.click().await.expect("click #join-btn");
        let ready = format!(
            "(() => {{ const s = window.palaver.state(); const r = s.rooms[{room}];
                return s.connection === 'connected' && r && r.joined; }})()",
            room = json!(room)
        );
        self.wait_for(&format!("{name} joined {room}"), &ready).await;
    }

    /// Types into the composer without sending (the page sends `typing`).
    pub async fn type_text(&self, text: &str) {
        self.find("#composer").await.send_keys(text).await.expect("type into #composer");
    }

    /// Sends a message through the composer (replacing what it held), without
    /// waiting for the server.
    pub async fn send(&self, text: &str) {
        self.fill("#composer", text).await;
        self.find("#send-btn").await.click().await.expect("click #send-btn");
    }

    /// Sends a message through the composer and waits for its sequence number.
    pub async fn say(&self, text: &str) -> u64 {
        self.send(text).await;
        let acked = format!(
            "(() => {{ const s = window.palaver.state(); const r = s.rooms[s.current];
                const m = r.messages.find((m) => m.user === s.user && m.text === {text});
                return m ? m.seq : null; }})()",
            text = json!(text)
        );
        let seq = self.wait_for(&format!("ack of {text:?}"), &acked).await;
        seq.as_u64().expect("seq is a number")
    }

    /// Joins another room through the sidebar form (it becomes the current room).
    pub async fn add_room(&self, room: &str) {
        self.fill("#new-room", room).await;
        self.find("#add-room-btn").await.click().await.expect("click #add-room-btn");
        let joined = format!("window.palaver.state().rooms[{}]?.joined", json!(room));
        self.wait_for(&format!("joined {room}"), &joined).await;
    }

    /// Switches to a joined room by clicking it in the room list.
    pub async fn switch_room(&self, room: &str) {
        let selector = format!("#room-list li[data-room={}] .room-btn", json!(room));
        self.find(&selector).await.click().await.expect("click a room");
        let current = format!("window.palaver.state().current === {}", json!(room));
        self.wait_for(&format!("{room} current"), &current).await;
    }

    /// `window.palaver.state()`.
    pub async fn state(&self) -> Value {
        self.eval("window.palaver.state()").await
    }

    /// The messages of `room` in the page's state, in order.
    pub async fn messages(&self, room: &str) -> Vec<Shown> {
        let state = self.state().await;
        let list = state["rooms"][room]["messages"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|m| Shown {
                seq: m["seq"].as_u64().expect("seq"),
                user: m["user"].as_str().expect("user").to_owned(),
                text: m["text"].as_str().expect("text").to_owned(),
            })
            .collect()
    }

    /// The sequenced messages shown in `#messages` (the current room), in DOM order.
    pub async fn shown(&self) -> Vec<Shown> {
        let rows = self
            .eval(
                "[...document.querySelectorAll('#messages li.msg[data-seq]')].map((li) =>
                    [Number(li.dataset.seq), li.dataset.user, li.querySelector('.body').textContent])",
            )
            .await;
        rows.as_array()
            .expect("an array of rows")
            .iter()
            .map(|row| Shown {
                seq: row[0].as_u64().expect("data-seq"),
                user: row[1].as_str().expect("data-user").to_owned(),
                text: row[2].as_str().expect("body text").to_owned(),
            })
            .collect()
    }

    /// Waits until the current room's state holds `count` messages.
    pub async fn wait_messages(&self, room: &str, count: usize) -> Vec<Shown> {
        let js = format!(
            "(() => {{ const r = window.palaver.state().rooms[{room}];
                return r && r.messages.length >= {count}; }})()",
            room = json!(room)
        );
        self.wait_for(&format!("{count} messages in {room}"), &js).await;
        self.messages(room).await
    }

    /// Text content of the first element matching a CSS selector ("" if none).
    pub async fn text(&self, selector: &str) -> String {
        let js = format!("document.querySelector({})?.textContent ?? ''", json!(selector));
        self.eval(&js).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element matching `selector` exists and its text contains `needle`.
    pub async fn wait_text(&self, selector: &str, needle: &str) {
        let js = format!(
            "(document.querySelector({s})?.textContent ?? '').includes({n})",
            s = json!(selector),
            n = json!(needle)
        );
        self.wait_for(&format!("{selector} to show {needle:?}"), &js).await;
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluate {expression}: {e}"))
    }

    /// Polls a JavaScript expression until it is truthy, within
    /// [`BROWSER_PATIENCE`]; returns its value. Panics with the page's state if not.
    pub async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + BROWSER_PATIENCE;
        loop {
            let value = self.eval(expression).await;
            if truthy(&value) {
                return value;
            }
            if Instant::now() > deadline {
                let state = self.state().await;
                panic!("waited {BROWSER_PATIENCE:?} for {what}; page state: {state:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records every text `#conn-state` shows from now on (a `MutationObserver`),
    /// so brief states such as "reconnecting" cannot be missed by polling.
    pub async fn record_connection_states(&self) {
        self.eval(
            "(() => { const el = document.getElementById('conn-state');
                window.__connStates = [el.textContent];
                new MutationObserver(() => window.__connStates.push(el.textContent))
                    .observe(el, { childList: true, characterData: true, subtree: true });
                return true; })()",
        )
        .await;
    }

    /// The texts recorded since [`Browser::record_connection_states`].
    pub async fn connection_states(&self) -> Vec<String> {
        let states = self.eval("window.__connStates || []").await;
        serde_json::from_value(states).expect("an array of strings")
    }

    /// Takes the browser off the network or puts it back (Chromium's network
    /// emulation: `navigator.onLine` changes and the page gets `offline` /
    /// `online` events, as when a laptop loses its Wi-Fi).
    pub async fn set_offline(&self, offline: bool) {
        let session = self.client.session_id().await.ok().flatten().expect("a session id");
        let body = json!({ "network_conditions": {
            "offline": offline, "latency": 0, "download_throughput": -1, "upload_throughput": -1,
        }});
        let path = format!("/session/{session}/chromium/network_conditions");
        let status = driver::post(self.driver_port, &path, &body.to_string()).await;
        assert_eq!(status, 200, "chromedriver refused {path}");
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("screenshot")
    }

    /// Ends the session (the browser quits); dropping the driver also ends it.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }

    async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("find {selector}: {e}"))
    }

    async fn fill(&self, selector: &str, text: &str) {
        let input = self.find(selector).await;
        input.clear().await.unwrap_or_else(|e| panic!("clear {selector}: {e}"));
        input.send_keys(text).await.unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
