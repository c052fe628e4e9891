//! The web chat in a real browser (headless Debian `chromium` over
//! `chromedriver`), against real `palaver` nodes: one node, two nodes sharing
//! a Redis, a node killed under a browser, a browser that goes offline,
//! hostile message text, and the README's screenshot.

use std::path::PathBuf;

use palaver_tests::{
    Node, RedisServer,
    browser::{Browser, ChromeDriver, Shown, TcpProxy, driver::WINDOW},
};

/// `(seq, user, text)` for comparing message lists briefly.
fn rows(messages: &[Shown]) -> Vec<(u64, &str, &str)> {
    messages.iter().map(|m| (m.seq, m.user.as_str(), m.text.as_str())).collect()
}

fn member(user: &str) -> String {
    format!("document.querySelector('#members li[data-user=\"{user}\"]') !== null")
}

/// Opens Ann's page at `ann_url` and Bob's at `bob_url`; both join `lobby`.
async fn ann_and_bob_in_lobby(
    driver: &ChromeDriver,
    ann_url: &str,
    bob_url: &str,
) -> (Browser, Browser) {
    let ann = driver.open(ann_url).await;
    let bob = driver.open(bob_url).await;
    ann.join("ann", "lobby").await;
    bob.join("bob", "lobby").await;
    (ann, bob)
}

/// Ann and Bob, both in `lobby`, see each other arrive and type, and exchange
/// two messages, which both pages hold and show once, in order.
async fn converse(ann: &Browser, bob: &Browser) {
    ann.wait_for("bob in ann's member list", &member("bob")).await;
    bob.wait_for("ann in bob's member list", &member("ann")).await;

    ann.type_text("hello").await;
    bob.wait_text("#typing", "ann is typing").await;
    ann.say("hello bob").await;
    bob.type_text("hi").await;
    ann.wait_text("#typing", "bob is typing").await;
    bob.say("hi ann").await;

    let expected = vec![(1, "ann", "hello bob"), (2, "bob", "hi ann")];
    for page in [ann, bob] {
        assert_eq!(rows(&page.wait_messages("lobby", 2).await), expected);
        assert_eq!(rows(&page.shown().await), expected);
    }
}

#[tokio::test]
async fn two_browsers_on_one_node_chat_and_see_presence_and_typing() {
    let node = Node::start(&[]);
    let driver = ChromeDriver::start().await;
    let (ann, bob) = ann_and_bob_in_lobby(&driver, &node.url("/"), &node.url("/")).await;
    converse(&ann, &bob).await;
}

#[tokio::test]
async fn two_browsers_on_two_nodes_sharing_redis_chat_and_see_presence_and_typing() {
    let redis = RedisServer::start();
    let a = Node::start(&["--redis-url", &redis.url()]);
    let b = Node::start(&["--redis-url", &redis.url()]);
    let driver = ChromeDriver::start().await;
    let (ann, bob) = ann_and_bob_in_lobby(&driver, &a.url("/"), &b.url("/")).await;
    converse(&ann, &bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whose_node_is_killed_reconnects_to_another_and_misses_nothing() {
    let redis = RedisServer::start();
    let mut a = Node::start(&["--redis-url", &redis.url()]);
    let b = Node::start(&["--redis-url", &redis.url()]);
    // Bob reaches the cluster through the "load balancer": node A while it lives.
    let proxy = TcpProxy::start(vec![a.addr, b.addr]).await;
    let driver = ChromeDriver::start().await;
    let (ann, bob) = ann_and_bob_in_lobby(&driver, &b.url("/"), &proxy.url("/")).await;
    for i in 1..=3 {
        ann.say(&format!("before {i}")).await;
    }
    bob.wait_messages("lobby", 3).await;

    // A crashes; the balancer has no node for Bob for a while, during which
    // Ann goes on talking.
    bob.record_connection_states().await;
    proxy.refuse(true);
    a.kill();
    bob.wait_text("#conn-state", "reconnecting").await;
    for i in 4..=6 {
        ann.say(&format!("meanwhile {i}")).await;
    }
    assert_eq!(bob.messages("lobby").await.len(), 3, "bob cannot have heard these yet");
    // What Bob writes meanwhile waits in his outbox, shown as pending.
    bob.send("sent while away").await;
    bob.wait_for("a pending message", "document.querySelector('#messages li.msg.pending')").await;
    proxy.refuse(false);

    // Bob lands on B, resumes with `since`, gets exactly what he missed, and
    // his pending message goes out once.
    bob.wait_for(
        "bob back in lobby with nothing pending",
        "(() => { const s = window.palaver.state(); const r = s.rooms.lobby;
            return s.connection === 'connected' && r.joined && r.pending.length === 0; })()",
    )
    .await;
    ann.say("after").await;
    let got = bob.wait_messages("lobby", 8).await;
    let texts: Vec<(&str, String)> = (1..=3)
        .map(|i| ("ann", format!("before {i}")))
        .chain((4..=6).map(|i| ("ann", format!("meanwhile {i}"))))
        .chain([("bob", "sent while away".to_owned()), ("ann", "after".to_owned())])
        .collect();
    let expected: Vec<(u64, &str, &str)> =
        texts.iter().zip(1..).map(|((user, text), seq)| (seq, *user, text.as_str())).collect();
    assert_eq!(rows(&got), expected, "seqs 1..=8 once each, in order");
    assert_eq!(rows(&bob.shown().await), expected, "the page shows each message once");
    assert_eq!(bob.eval("document.querySelectorAll('#messages li').length").await, 8);
    assert_eq!(rows(&ann.wait_messages("lobby", 8).await), expected, "ann agrees");

    let states = bob.connection_states().await;
    let down = states.iter().position(|s| s == "reconnecting").expect("showed reconnecting");
    assert!(states[down..].iter().any(|s| s == "connected"), "connected again: {states:?}");
    // Recovered from history, so no "messages may be missing" notice.
    assert_eq!(bob.eval("document.getElementById('room-notice').hidden").await, true);
}

#[tokio::test]
async fn a_browser_that_goes_offline_says_so_and_catches_up_once_back_online() {
    let node = Node::start(&[]);
    let driver = ChromeDriver::start().await;
    let (ann, bob) = ann_and_bob_in_lobby(&driver, &node.url("/"), &node.url("/")).await;
    ann.say("before").await;
    bob.wait_messages("lobby", 1).await;

    // The browser's `offline` event drops the socket at once (no waiting for
    // TCP to notice) and no reconnect is tried until `online`.
    bob.set_offline(true).await;
    bob.wait_text("#conn-state", "offline").await;
    ann.say("while offline").await;
    assert_eq!(bob.messages("lobby").await.len(), 1, "bob cannot have heard it");
    bob.set_offline(false).await;
    bob.wait_for(
        "bob back in lobby",
        "(() => { const s = window.palaver.state();
            return s.connection === 'connected' && s.rooms.lobby.joined; })()",
    )
    .await;
    ann.say("after").await;
    let expected = vec![(1, "ann", "before"), (2, "ann", "while offline"), (3, "ann", "after")];
    assert_eq!(rows(&bob.wait_messages("lobby", 3).await), expected, "once each, in order");
    assert_eq!(rows(&bob.shown().await), expected);
}

#[tokio::test]
async fn markup_in_messages_is_shown_as_text_and_never_run() {
    let node = Node::start(&[]);
    let driver = ChromeDriver::start().await;
    let (ann, bob) = ann_and_bob_in_lobby(&driver, &node.url("/"), &node.url("/")).await;

    let hostile =
        r#"<script>alert(1)</script> and <b>bold</b> <img src=x onerror="window.pwned=1">"#;
    ann.say(hostile).await;
    for page in [&ann, &bob] {
        let shown = page.wait_messages("lobby", 1).await;
        assert_eq!(rows(&shown), vec![(1, "ann", hostile)]);
        assert_eq!(rows(&page.shown().await), vec![(1, "ann", hostile)], "literal text");
        let elements =
            "document.querySelectorAll('#messages script, #messages b, #messages img').length";
        assert_eq!(page.eval(elements).await, 0, "no element made from the text");
        assert!(page.text("#messages").await.contains("<b>bold</b>"));
        assert_eq!(page.eval("window.pwned === undefined").await, true, "no handler ran");
        assert!(page.client().get_alert_text().await.is_err(), "no alert is open");
    }
}

#[tokio::test]
async fn screenshot_of_a_conversation() {
    let node = Node::start(&[]);
    let driver = ChromeDriver::start().await;
    let (ann, bob) = ann_and_bob_in_lobby(&driver, &node.url("/"), &node.url("/")).await;
    bob.add_room("release").await;
    bob.switch_room("lobby").await;
    ann.add_room("release").await;
    ann.switch_room("lobby").await;

    ann.say("Morning! Is the cluster build green?").await;
    bob.say("Yes: two nodes, one Redis, every message in order.").await;
    ann.say("Then I'll kill node A and see if my tab notices.").await;
    bob.say("It will show \"reconnecting\" and catch up from history.").await;
    ann.switch_room("release").await;
    ann.say("Release notes are up for review.").await;
    ann.switch_room("lobby").await;
    bob.wait_text("#room-list li[data-room=\"release\"] .unread", "1").await;
    // Typing notices go out at most once a second per room (client and
    // server), so a notice right after the last one is held back: keep
    // typing, as a person does, until Bob's page shows it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    ann.type_text("Nice").await;
    while !bob.text("#typing").await.contains("ann is typing") {
        assert!(std::time::Instant::now() < deadline, "bob never saw ann typing");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        ann.type_text("!").await;
    }
    bob.wait_messages("lobby", 4).await;

    let png = bob.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((size(16), size(20)), WINDOW, "the window's size");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let artifact = root.join("target/browser/screenshot.png");
    std::fs::create_dir_all(artifact.parent().expect("a parent")).expect("create target/browser");
    std::fs::write(&artifact, &png).expect("write the screenshot");
    // The README's copy is replaced only on request (or when missing), so a
    // test run does not leave a changed tracked file behind.
    let readme_copy = root.join("docs/screenshot.png");
    if std::env::var_os("PALAVER_UPDATE_SCREENSHOT").is_some() || !readme_copy.exists() {
        std::fs::write(&readme_copy, &png).expect("write docs/screenshot.png");
    }
}

/// A big room in the page: the cluster-wide count, the first page of names,
/// and "Show more" reading the next page from the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_room_shows_its_count_and_more_members_on_demand() {
    const MEMBERS: usize = 150;
    let node = Node::start(&["--queue-frames", "4096"]);
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut c = palaver_tests::WsClient::connect(&node.ws_url(&format!("m{i:03}"))).await;
        c.join("big").await;
        members.push(c);
    }
    let driver = ChromeDriver::start().await;
    let page = driver.open(&node.url("/")).await;
    page.join("viewer", "big").await;
    let shown = "document.querySelectorAll('#members li').length";
    page.wait_text("#member-count", &format!("({})", MEMBERS + 1)).await;
    page.wait_for("the first page of names", &format!("{shown} === 100")).await;
    page.wait_for("a Show more button", "!document.getElementById('more-members').hidden").await;
    page.eval("document.getElementById('more-members').click()").await;
    page.wait_for("every name after Show more", &format!("{shown} === {}", MEMBERS + 1)).await;
    page.wait_for("no more to show", "document.getElementById('more-members').hidden").await;
    let state = page.state().await;
    assert_eq!(state["rooms"]["big"]["memberCount"], MEMBERS + 1);
    drop(members);
}
