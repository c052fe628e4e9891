//! Opening one load client: TCP (from a chosen loopback source address when
//! asked), the WebSocket upgrade, and for palaver the `welcome` and `join`.
//!
//! Every failure is classified into a short, stable kind (`tcp: ECONNREFUSED`,
//! `upgrade: HTTP 503`, `welcome: timeout`...) so a run can report where
//! connections failed without printing thousands of error messages.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::{
    net::{TcpSocket, TcpStream},
    time::{Instant, timeout_at},
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{self, Message, http::Uri, protocol::WebSocketConfig},
};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{Common, Protocol},
    wire::{self, ServerEvent},
};

/// A client's WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Read buffer per client. Load frames are small; tungstenite's 128 KiB
/// default would cost gigabytes at tens of thousands of connections.
const READ_BUFFER: usize = 8 * 1024;
/// Clients per source address when spreading automatically.
const CLIENTS_PER_SOURCE_IP: usize = 10_000;

/// One server node to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The WebSocket URL as given.
    pub url: String,
    /// Its resolved socket address.
    pub addr: SocketAddr,
}

/// Parses a `ws://` URL and resolves its host.
pub async fn resolve(url: &str) -> anyhow::Result<Target> {
    let uri: Uri = url.parse().with_context(|| format!("invalid URL {url:?}"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("{url}: only ws:// URLs are supported (loopback benchmarking needs no TLS)");
    }
    let host = uri.host().with_context(|| format!("{url}: no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} resolved to no address"))?;
    Ok(Target { url: url.to_owned(), addr })
}

/// Why a client could not be opened: a short kind for grouping, and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError {
    /// Stage and cause, e.g. `tcp: ECONNREFUSED`.
    pub kind: String,
    /// The full error text.
    pub detail: String,
}

impl DialError {
    fn new(stage: &str, cause: &str, detail: impl ToString) -> Self {
        DialError { kind: format!("{stage}: {cause}"), detail: detail.to_string() }
    }

    fn timeout(stage: &str) -> Self {
        DialError::new(stage, "timeout", format!("{stage} did not finish in time"))
    }

    fn ws(stage: &str, error: tungstenite::Error) -> Self {
        let cause = match &error {
            tungstenite::Error::Io(e) => io_cause(e),
            tungstenite::Error::Http(response) => format!("HTTP {}", response.status().as_u16()),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                "closed".to_owned()
            }
            tungstenite::Error::Protocol(_) => "protocol error".to_owned(),
            _ => "websocket error".to_owned(),
        };
        DialError::new(stage, &cause, error)
    }
}

/// A short name for an I/O error, naming the errno when there is one.
pub fn io_cause(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(24) => "EMFILE (loadgen out of file descriptors)".to_owned(),
        Some(23) => "ENFILE (system out of file descriptors)".to_owned(),
        Some(99) => "EADDRNOTAVAIL (no free source port)".to_owned(),
        Some(98) => "EADDRINUSE".to_owned(),
        Some(111) => "ECONNREFUSED".to_owned(),
        Some(104) => "ECONNRESET".to_owned(),
        Some(110) => "ETIMEDOUT".to_owned(),
        Some(11) => "EAGAIN".to_owned(),
        Some(code) => format!("errno {code}"),
        None => format!("{:?}", e.kind()),
    }
}

/// A freshly opened client, ready for its mode's work.
pub struct Opened {
    /// The WebSocket.
    pub ws: Ws,
    /// The room's sequence number at join (palaver), else 0.
    pub joined_seq: u64,
    /// Time from the first TCP packet to ready.
    pub elapsed: Duration,
}

/// Opens clients against the targets, round-robin.
pub struct Dialer {
    targets: Vec<Target>,
    protocol: Protocol,
    source_ips: u32,
    timeout: Duration,
    config: WebSocketConfig,
    /// Target of each client when not round-robin (see [`Dialer::with_placement`]).
    placement: Option<Vec<usize>>,
}

impl Dialer {
    /// A dialer for up to `clients` clients with the shared options.
    pub fn new(common: &Common, targets: Vec<Target>, clients: usize) -> anyhow::Result<Self> {
        let loopback =
            targets.iter().all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
        let source_ips = match common.source_ips {
            0 if loopback => clients.div_ceil(CLIENTS_PER_SOURCE_IP).clamp(1, 250) as u32,
            0 => 1,
            k if k > 1 && !loopback => bail!("--source-ips needs IPv4 loopback targets"),
            k => k.min(250),
        };
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        Ok(Dialer {
            targets,
            protocol: common.protocol,
            source_ips,
            timeout: common.connect_timeout,
            config,
            placement: None,
        })
    }

    /// Places client `i` on target `placement[i]` (modulo the targets) instead of
    /// `i` round-robin, e.g. so the members of one room sit on different nodes.
    pub fn with_placement(mut self, placement: Vec<usize>) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Source addresses in use (1 means the kernel chooses).
    pub fn source_ips(&self) -> u32 {
        self.source_ips
    }

    /// The target client `i` connects to.
    pub fn target_of(&self, i: usize) -> usize {
        let slot = self.placement.as_ref().and_then(|p| p.get(i).copied()).unwrap_or(i);
        slot % self.targets.len()
    }

    /// Connects client `i` and, for palaver, waits for `welcome` and joins `room`.
    pub async fn open(&self, i: usize, room: Option<&str>) -> Result<Opened, DialError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let target = &self.targets[self.target_of(i)];
        let tcp = timeout_at(deadline, self.tcp(i, target.addr))
            .await
            .map_err(|_| DialError::timeout("tcp"))?
            .map_err(|e| DialError::new("tcp", &io_cause(&e), e))?;
        let url = match self.protocol {
            Protocol::Palaver => {
                let sep = if target.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}name=lg{i}", target.url)
            }
            Protocol::Raw => target.url.clone(),
        };
        let (mut ws, _) =
            timeout_at(deadline, client_async_with_config(url, tcp, Some(self.config)))
                .await
                .map_err(|_| DialError::timeout("upgrade"))?
                .map_err(|e| DialError::ws("upgrade", e))?;
        let mut joined_seq = 0;
        if self.protocol == Protocol::Palaver {
            timeout_at(deadline, await_event(&mut ws, |e| matches!(e, ServerEvent::Welcome)))
                .await
                .map_err(|_| DialError::timeout("welcome"))?
                .map_err(|e| e.at("welcome"))?;
            if let Some(room) = room {
                let mut frame = String::new();
                wire::write_join(&mut frame, room);
                ws.send(Message::Text(frame.into())).await.map_err(|e| DialError::ws("join", e))?;
                let joined = timeout_at(
                    deadline,
                    await_event(&mut ws, |e| matches!(e, ServerEvent::Joined { .. })),
                )
                .await
                .map_err(|_| DialError::timeout("join"))?
                .map_err(|e| e.at("join"))?;
                if let Some(ServerEvent::Joined { seq }) = wire::scan(&joined) {
                    joined_seq = seq;
                }
            }
        }
        Ok(Opened { ws, joined_seq, elapsed: started.elapsed() })
    }

    async fn tcp(&self, i: usize, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if self.source_ips > 1 {
            let host = 2 + (i % self.source_ips as usize) as u8;
            socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0))?;
        }
        let stream = socket.connect(addr).await?;
        // Small frames, latency measured: no Nagle delay.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A frame that ended a handshake step early.
enum StepError {
    Ws(tungstenite::Error),
    Closed(Option<u16>),
    Refused(String),
}

impl StepError {
    fn at(self, stage: &str) -> DialError {
        match self {
            StepError::Ws(e) => DialError::ws(stage, e),
            StepError::Closed(Some(code)) => {
                DialError::new(stage, &format!("closed {code}"), "server closed the connection")
            }
            StepError::Closed(None) => DialError::new(stage, "closed", "connection ended"),
            StepError::Refused(code) => {
                DialError::new(stage, &format!("error {code}"), "server refused the request")
            }
        }
    }
}

/// Reads until a text frame matching `want` (returned), skipping others.
async fn await_event(
    ws: &mut Ws,
    want: impl Fn(&ServerEvent<'_>) -> bool,
) -> Result<String, StepError> {
    loop {
        match ws.next().await {
            None => return Err(StepError::Closed(None)),
            Some(Err(e)) => return Err(StepError::Ws(e)),
            Some(Ok(Message::Text(text))) => match wire::scan(text.as_str()) {
                Some(ServerEvent::Error { code, .. }) => {
                    return Err(StepError::Refused(code.to_owned()));
                }
                Some(event) if want(&event) => return Ok(text.as_str().to_owned()),
                _ => {}
            },
            Some(Ok(Message::Close(frame))) => {
                return Err(StepError::Closed(frame.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// How a connection ended on its own (before the run asked it to).
pub fn ended_reason(item: Option<&Result<Message, tungstenite::Error>>) -> String {
    match item {
        None => "eof".to_owned(),
        Some(Err(tungstenite::Error::Io(e))) => format!("io {}", io_cause(e)),
        Some(Err(tungstenite::Error::Protocol(_))) => "protocol error".to_owned(),
        Some(Err(e)) => format!("error {e}"),
        Some(Ok(Message::Close(Some(frame)))) => format!("close {}", u16::from(frame.code)),
        Some(Ok(Message::Close(None))) => "close (no code)".to_owned(),
        Some(Ok(_)) => "unexpected frame".to_owned(),
    }
}

/// Sends a close frame and reads until the server's close or EOF, bounded.
pub async fn close<K, R>(sink: &mut K, stream: &mut R)
where
    K: futures_util::Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let limit = Duration::from_secs(2);
    let _ = tokio::time::timeout(limit, async {
        if sink.send(Message::Close(None)).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Holds a connection open, reading (and so answering pings), until `stop`;
/// `Some(why)` if the server ended it first.
pub async fn hold(ws: Ws, stop: CancellationToken) -> Option<String> {
    let (mut sink, mut stream) = ws.split();
    loop {
        let item = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(
                Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_),
            )) => {}
            other => return Some(ended_reason(other.as_ref())),
        }
    }
    close(&mut sink, &mut stream).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_ws_urls_only() {
        let t = resolve("ws://127.0.0.1:9000/ws").await.expect("resolves");
        assert_eq!(t.addr, "127.0.0.1:9000".parse().expect("addr"));
        let t = resolve("ws://localhost/ws").await.expect("resolves");
        assert_eq!(t.addr.port(), 80);
        assert!(resolve("wss://127.0.0.1/ws").await.is_err());
        assert!(resolve("not a url").await.is_err());
    }

    #[test]
    fn io_causes_name_the_errno() {
        assert_eq!(io_cause(&io::Error::from_raw_os_error(111)), "ECONNREFUSED");
        assert!(io_cause(&io::Error::from_raw_os_error(24)).starts_with("EMFILE"));
        assert_eq!(io_cause(&io::Error::other("x")), "Other");
    }
}
