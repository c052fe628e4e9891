//! Hostile input against a real node over real WebSockets:
//! - a checked-in corpus of nasty inputs (`tests/corpus/hostile.json`),
//!   replayed with the exact answer each must get;
//! - a property-based fuzzer feeding arbitrary frames (JSON-shaped, mangled,
//!   random text and bytes, hand-built raw frames) to one connection, and
//!   checking after every input that the server still answers that
//!   connection (or closed it with a documented code, for raw frames only)
//!   and that other clients in a room still chat.
//!
//! The fuzzer runs 256 inputs by default; `PROPTEST_CASES` changes that.

use std::cell::RefCell;

use futures_util::{SinkExt, StreamExt};
use palaver_protocol::ServerFrame;
use palaver_tests::{
    Node, PATIENCE, WsClient,
    client::Ended,
    raw::{self, op},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::{MaybeTlsStream, tungstenite::Message};

const DEFAULT_CASES: u32 = 256;

/// `from` posts to `room` and `to` receives it.
async fn still_chatting(from: &mut WsClient, to: &mut WsClient, id: &str) {
    let text = format!("still here {id}");
    from.say("lobby", id, &text).await;
    to.expect(move |f| matches!(f, ServerFrame::Message { text: t, .. } if *t == text)).await;
    from.clear();
    to.clear();
}

async fn chatting_pair(node: &Node) -> (WsClient, WsClient) {
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join("lobby").await;
    (ann, bob)
}

/// Writes bytes straight into the client's socket, below the WebSocket library.
async fn write_raw(client: &mut WsClient, bytes: &[u8]) -> std::io::Result<()> {
    match client.raw().get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp.write_all(bytes).await,
        _ => unreachable!("tests connect without TLS"),
    }
}

fn frame_type(frame: &ServerFrame) -> String {
    serde_json::to_value(frame)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

// ---- the corpus ----

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex in the corpus"))
        .collect()
}

/// The bytes of one frame described in the corpus (see its `about`).
fn corpus_frame(spec: &Value) -> Vec<u8> {
    let payload = match (spec["text"].as_str(), spec["hex"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(h)) => hex(h),
        (None, None) => Vec::new(),
    };
    let payload = payload.repeat(spec["repeat"].as_u64().unwrap_or(1) as usize);
    let opcode = match &spec["op"] {
        Value::Null => op::TEXT,
        Value::Number(n) => n.as_u64().expect("opcode number") as u8,
        Value::String(s) => match s.as_str() {
            "text" => op::TEXT,
            "binary" => op::BINARY,
            "continuation" => op::CONTINUATION,
            "ping" => op::PING,
            "pong" => op::PONG,
            "close" => op::CLOSE,
            other => panic!("unknown op {other:?} in the corpus"),
        },
        other => panic!("bad op {other:?} in the corpus"),
    };
    let fin = spec["fin"].as_bool().unwrap_or(true);
    let rsv = spec["rsv"].as_u64().unwrap_or(0) as u8;
    let masked = !spec["unmasked"].as_bool().unwrap_or(false);
    match spec["announce"].as_u64() {
        Some(len) => raw::frame_header(opcode, fin, rsv, masked, len),
        None => raw::frame_with(opcode, fin, rsv, masked, &payload),
    }
}

#[tokio::test]
async fn the_corpus_of_nasty_inputs_gets_documented_answers() {
    let path = format!("{}/corpus/hostile.json", env!("CARGO_MANIFEST_DIR"));
    let corpus: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("corpus"))
        .expect("corpus JSON");
    let node = Node::start(&[]);
    let (mut ann, mut bob) = chatting_pair(&node).await;
    let cases = corpus["cases"].as_array().expect("cases");
    assert!(cases.len() > 50, "the corpus lost its cases");
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().expect("name");
        // Printed so a failure (which may panic deep in the client) names its case.
        eprintln!("corpus case: {name}");
        let mut client = WsClient::connect(&node.ws_url("corpus")).await;
        if let Some(room) = case["join"].as_str() {
            client.join(room).await;
        }
        let bytes: Vec<u8> = case["send"]
            .as_array()
            .expect("send is a list")
            .iter()
            .flat_map(corpus_frame)
            .collect();
        write_raw(&mut client, &bytes).await.expect("write");
        let expect = &case["expect"];
        if let Some(code) = expect["error"].as_str() {
            match client.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
                ServerFrame::Error { code: got, .. } => assert_eq!(got.as_str(), code, "{name}"),
                _ => unreachable!(),
            }
        } else if expect["error_any"].as_bool() == Some(true) {
            client.expect(|f| matches!(f, ServerFrame::Error { .. })).await;
        } else if let Some(code) = expect["close"].as_u64() {
            assert_eq!(client.ended(PATIENCE).await, Ended::Closed(code as u16), "{name}");
        } else if let Some(kind) = expect["reply"].as_str() {
            client.expect(|f| frame_type(f) == kind).await;
        } else if let Some(text) = expect["message"].as_str() {
            client.expect(|f| matches!(f, ServerFrame::Message { text: t, .. } if t == text)).await;
        } else {
            panic!("{name}: unknown expectation {expect}");
        }
        still_chatting(&mut ann, &mut bob, &format!("c{i}")).await;
    }
}

// ---- the fuzzer ----

/// One input to the fuzzed connection.
#[derive(Debug, Clone)]
enum Input {
    /// A text frame (sent by the WebSocket library, so well-formed).
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A frame built by hand: any opcode, flags, masking and payload.
    Raw { opcode: u8, fin: bool, rsv: u8, masked: bool, payload: Vec<u8> },
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame shaped like a request: a known or random type, and each field
/// either absent, plausible, or anything at all.
fn request() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        4 => prop::sample::select(vec!["join", "leave", "send", "typing", "history", "ping", "auth"])
            .prop_map(Value::from),
        1 => json_value(),
    ];
    let room = prop_oneof![
        3 => prop::sample::select(vec!["f1", "f2", "lobby"]).prop_map(Value::from),
        1 => "[ -~]{0,70}".prop_map(Value::from),
        1 => json_value(),
    ];
    let text = prop_oneof![3 => any::<String>().prop_map(Value::from), 1 => json_value()];
    let id = prop_oneof![3 => "[!-~]{1,70}".prop_map(Value::from), 1 => json_value()];
    let number = prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        json_value(),
    ];
    let since = prop_oneof![
        (".{0,20}", any::<u64>()).prop_map(|(epoch, seq)| json!({"epoch": epoch, "seq": seq})),
        json_value(),
    ];
    fn field<S: Strategy<Value = Value>>(s: S) -> impl Strategy<Value = Option<Value>> {
        prop::option::weighted(0.6, s)
    }
    (
        kind,
        field(room),
        field(text),
        field(id),
        field(since),
        field(number.clone()),
        field(number.clone()),
        field(number),
        field(".{0,40}".prop_map(Value::from)),
    )
        .prop_map(|(kind, room, text, id, since, before, after, limit, token)| {
            let mut object = Map::new();
            object.insert("type".into(), kind);
            for (key, value) in [
                ("room", room),
                ("text", text),
                ("id", id),
                ("since", since),
                ("before", before),
                ("after", after),
                ("limit", limit),
                ("token", token),
            ] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            Value::Object(object).to_string()
        })
}

fn input() -> impl Strategy<Value = Input> {
    let mangled =
        (request(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, at, c)| {
            let cut = s
                .char_indices()
                .map(|(i, _)| i)
                .nth(at.index(s.chars().count().max(1)))
                .unwrap_or(0);
            format!("{}{c}{}", &s[..cut], &s[cut..])
        });
    let truncated = (request(), any::<prop::sample::Index>())
        .prop_map(|(s, at)| s.chars().take(at.index(s.chars().count().max(1))).collect());
    prop_oneof![
        6 => request().prop_map(Input::Text),
        2 => mangled.prop_map(Input::Text),
        1 => truncated.prop_map(Input::Text),
        1 => any::<String>().prop_map(Input::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Input::Binary),
        3 => (
            0u8..16,
            prop::bool::weighted(0.8),
            prop_oneof![4 => Just(0u8), 1 => 0u8..8],
            prop::bool::weighted(0.9),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(opcode, fin, rsv, masked, payload)| Input::Raw {
                opcode,
                fin,
                rsv,
                masked,
                payload
            }),
    ]
}

/// The node under fuzz, the fuzzed connection (reopened after a close), and
/// two bystanders who must keep chatting.
struct Fuzz {
    node: Node,
    client: Option<WsClient>,
    ann: WsClient,
    bob: WsClient,
    inputs: usize,
}

enum Outcome {
    Answered,
    Closed(Option<u16>),
}

impl Fuzz {
    async fn client(&mut self) -> &mut WsClient {
        if self.client.is_none() {
            let mut client = WsClient::connect(&self.node.ws_url("fuzz")).await;
            client.join("f1").await;
            client.clear();
            self.client = Some(client);
        }
        self.client.as_mut().expect("just connected")
    }

    /// Feeds one input, then a probe only this input's answer can match
    /// (an unknown type whose error echoes a fresh id); every frame on the
    /// way must be a valid server frame.
    async fn feed(&mut self, input: &Input) -> Result<Outcome, TestCaseError> {
        let probe = format!("probe-{}", self.inputs);
        let client = self.client().await;
        let _ = match input {
            Input::Text(text) => {
                client.raw().send(Message::Text(text.clone().into())).await.map_err(drop)
            }
            Input::Binary(bytes) => {
                client.raw().send(Message::Binary(bytes.clone().into())).await.map_err(drop)
            }
            Input::Raw { opcode, fin, rsv, masked, payload } => {
                let frame = raw::frame_with(*opcode, *fin, *rsv, *masked, payload);
                write_raw(client, &frame).await.map_err(drop)
            }
        };
        let ping = Message::Text(json!({"type":"probe","id":probe}).to_string().into());
        let _ = client.raw().send(ping).await;
        loop {
            let next = tokio::time::timeout(PATIENCE, client.raw().next()).await;
            match next {
                Err(_) => return Err(TestCaseError::fail("neither answer nor close in time")),
                Ok(None | Some(Err(_))) => return Ok(Outcome::Closed(None)),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ok(Outcome::Closed(frame.map(|f| u16::from(f.code))));
                }
                Ok(Some(Ok(Message::Text(text)))) => match ServerFrame::decode(&text) {
                    Ok(ServerFrame::Error { reference: Some(r), .. }) if r == probe => {
                        return Ok(Outcome::Answered);
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(TestCaseError::fail(format!("bad frame {text}: {e}"))),
                },
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    async fn case(&mut self, input: Input) -> Result<(), TestCaseError> {
        let result = self.try_case(&input).await;
        if let Err(e) = &result {
            // Shrinking replays against the same node: the first failure is the telling one.
            eprintln!("input {} failed: {e}\n{input:?}", self.inputs);
        }
        result
    }

    async fn try_case(&mut self, input: &Input) -> Result<(), TestCaseError> {
        self.inputs += 1;
        match self.feed(input).await? {
            Outcome::Answered => {}
            Outcome::Closed(code) => {
                self.client = None;
                let Input::Raw { opcode, .. } = *input else {
                    return Err(TestCaseError::fail(format!(
                        "a well-formed frame closed the connection ({code:?})"
                    )));
                };
                // A client's own close is answered in kind; anything else
                // must be a documented protocol close.
                prop_assert!(
                    opcode == op::CLOSE || matches!(code, Some(1002 | 1007 | 1009)),
                    "raw frame closed with {code:?}"
                );
            }
        }
        let n = self.inputs;
        still_chatting(&mut self.ann, &mut self.bob, &format!("w{n}")).await;
        Ok(())
    }
}

#[test]
fn fuzzed_frames_never_break_the_node_or_its_other_clients() {
    let cases =
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let node = Node::start(&[]);
    let (ann, bob) = rt.block_on(chatting_pair(&node));
    let fuzz = RefCell::new(Fuzz { node, client: None, ann, bob, inputs: 0 });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking replays against the live node; keep it bounded.
        max_shrink_iters: 256,
        ..Config::default()
    });
    let result = runner.run(&input(), |input| rt.block_on(fuzz.borrow_mut().case(input)));
    if let Err(e) = result {
        panic!("{e}");
    }
    let mut fuzz = fuzz.into_inner();
    assert!(fuzz.inputs >= cases as usize);
    // The node is still healthy at the end.
    rt.block_on(still_chatting(&mut fuzz.bob, &mut fuzz.ann, "end"));
}
