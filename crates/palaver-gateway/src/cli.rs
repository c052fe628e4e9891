//! `palaver publish`, `palaver history`, `palaver disconnect`: thin clients of
//! the server API (`crate::api`), for scripts and operators. Each sends one
//! request to a node, prints the JSON answer on stdout, and on an error
//! answer prints `code: message` on stderr and exits non-zero.
//!
//! The HTTP client is hyper's (already the server's HTTP stack), over plain
//! HTTP like the API itself: put TLS in front of the API listener if it
//! crosses an untrusted network.

use std::{io::Read, time::Duration};

use anyhow::{Context, bail};
use axum::body::Body;
use clap::{Args, Parser, Subcommand};
use hyper::{Method, Request, header};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

/// Whole request deadline, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (a history page of 200 long messages fits).
const MAX_ANSWER: usize = 8 << 20;

/// The subcommands, for `main` to recognise.
const COMMANDS: [&str; 3] = ["publish", "history", "disconnect"];

/// Whether the command line asks for one of the API clients.
pub fn requested() -> bool {
    std::env::args().nth(1).is_some_and(|arg| COMMANDS.contains(&arg.as_str()))
}

#[derive(Debug, Parser)]
#[command(name = "palaver", bin_name = "palaver", about = "Clients of a node's server API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which node, with which key.
#[derive(Debug, Args)]
struct Target {
    /// The node's API base URL (its `--listen`, or `--api-listen`).
    #[arg(long, env = "PALAVER_API_URL", default_value = "http://127.0.0.1:8080")]
    url: String,

    /// An API key of the node (of a comma-separated list, the first is used).
    #[arg(long, env = "PALAVER_API_KEY", hide_env_values = true)]
    api_key: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a message into a room (idempotent: retry with the same --id).
    #[command(after_help = "Example: palaver publish ops 'deploy 42 finished' --id deploy-42")]
    Publish {
        #[command(flatten)]
        target: Target,
        /// The room.
        room: String,
        /// The text; `-` reads it from stdin.
        text: String,
        /// Message id (default: a random one; give your own to make retries safe).
        #[arg(long)]
        id: Option<String>,
        /// Sender shown to members (default: `system`).
        #[arg(long)]
        user: Option<String>,
    },
    /// Print a page of a room's history (JSON).
    History {
        #[command(flatten)]
        target: Target,
        /// The room.
        room: String,
        /// Messages below this sequence number (default: the latest).
        #[arg(long, conflicts_with = "after")]
        before: Option<u64>,
        /// Messages above this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many (1–200, default 50).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Close every connection of a user on every node.
    Disconnect {
        #[command(flatten)]
        target: Target,
        /// The user.
        user: String,
        /// Close code: 1000, 1008 or 4000–4999 (default 4002).
        #[arg(long)]
        code: Option<u16>,
        /// Close reason shown to the user's clients.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs the subcommand on the command line.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (target, method, path, body) = match cli.command {
        Command::Publish { target, room, text, id, user } => {
            let text = if text == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("read the text from stdin")?;
                text
            } else {
                text
            };
            let id = id.unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
            let mut body = json!({"text": text, "id": id});
            if let Some(user) = user {
                body["user"] = json!(user);
            }
            (target, Method::POST, format!("/rooms/{}/messages", escape(&room)), Some(body))
        }
        Command::History { target, room, before, after, limit } => {
            let query: Vec<String> =
                [("before", before), ("after", after), ("limit", limit.map(u64::from))]
                    .into_iter()
                    .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
                    .collect();
            let path = format!("/rooms/{}/history?{}", escape(&room), query.join("&"));
            (target, Method::GET, path, None)
        }
        Command::Disconnect { target, user, code, reason } => {
            let mut body = json!({});
            if let Some(code) = code {
                body["code"] = json!(code);
            }
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            (target, Method::POST, format!("/users/{}/disconnect", escape(&user)), Some(body))
        }
    };
    let answer = call(&target, method, &path, body).await?;
    println!("{answer}");
    Ok(())
}

/// Sends one request; the JSON answer, or an error carrying the API's `code: message`.
async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let key = target.api_key.split(',').next().unwrap_or_default().trim();
    let url = format!("{}{}{path}", target.url.trim_end_matches('/'), crate::api::PREFIX);
    let mut request = Request::builder()
        .method(method)
        .uri(&url)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let request = request.body(body).with_context(|| format!("invalid URL {url}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER).await?;
        anyhow::Ok((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("{url}: no answer within {TIMEOUT:?}"))?
        .with_context(|| format!("{url}: request failed"))?;
    let answer: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{url}: answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        let code = answer["code"].as_str().unwrap_or("error");
        let message = answer["message"].as_str().unwrap_or_default();
        bail!("{code}: {message} (HTTP {status})");
    }
    Ok(answer)
}

/// Percent-encodes a path segment (user names may hold spaces and any letter).
fn escape(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b':') {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("team:eng.ops"), "team:eng.ops");
        assert_eq!(escape("Zoë 2"), "Zo%C3%AB%202");
        assert_eq!(escape("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from([
            "palaver",
            "history",
            "lobby",
            "--api-key",
            "k",
            "--after",
            "5",
            "--limit",
            "2",
        ])
        .expect("parses");
        assert!(matches!(cli.command, Command::History { after: Some(5), limit: Some(2), .. }));
        let both =
            ["palaver", "history", "lobby", "--api-key", "k", "--before", "1", "--after", "2"];
        assert!(Cli::try_parse_from(both).is_err());
    }
}
