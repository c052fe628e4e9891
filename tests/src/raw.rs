//! Raw sockets for tests that misbehave below the WebSocket library: upgrade
//! requests written by hand, half-open connections, hand-built frames
//! (fragments, bad opcodes, lying lengths, invalid UTF-8).

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// Frame opcodes (RFC 6455 §5.2).
pub mod op {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text data.
    pub const TEXT: u8 = 0x1;
    /// Binary data.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// A WebSocket upgrade request for `target` (path and query) with extra headers.
pub fn upgrade_request(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Sends an upgrade request; returns the response status and the socket,
/// positioned right after the response head (upgraded when the status is 101).
pub async fn upgrade(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> io::Result<(u16, TcpStream)> {
    upgrade_over(TcpStream::connect(addr).await?, addr, target, headers).await
}

/// Like [`upgrade`], over a socket whose kernel receive buffer is about
/// `bytes`: a client that never reads then backs the server up after a few
/// KiB, instead of after the megabytes the kernel would otherwise take.
pub async fn upgrade_with_receive_buffer(
    addr: SocketAddr,
    target: &str,
    bytes: u32,
) -> io::Result<(u16, TcpStream)> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(bytes)?;
    upgrade_over(socket.connect(addr).await?, addr, target, &[]).await
}

async fn upgrade_over(
    mut stream: TcpStream,
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> io::Result<(u16, TcpStream)> {
    stream.write_all(upgrade_request(addr, target, headers).as_bytes()).await?;
    let head = read_head(&mut stream).await?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, stream))
}

/// The status an upgrade request gets (the socket is dropped).
pub async fn upgrade_status(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> io::Result<u16> {
    upgrade(addr, target, headers).await.map(|(status, _)| status)
}

/// Reads an HTTP response head byte by byte, so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response head"));
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("response head too long"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A client frame: masked, as clients must send them.
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame_with(opcode, fin, 0, true, payload)
}

/// A frame with every bit chosen: `rsv` (0–7) and masking included.
pub fn frame_with(opcode: u8, fin: bool, rsv: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(opcode, fin, rsv, masked, payload.len() as u64);
    if masked {
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The masking key of every frame built here.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Only a frame's header (with the masking key when `masked`), announcing
/// `len` payload bytes, which need never come.
pub fn frame_header(opcode: u8, fin: bool, rsv: u8, masked: bool, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
    }
    out
}

/// One frame from the server: opcode and payload.
pub async fn read_frame(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 1 << 24 {
        return Err(io::Error::other("server frame too long for a test"));
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0f, payload))
}

/// How a raw connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEnd {
    /// A close frame with this code (1005 when it had none).
    Closed(u16),
    /// EOF or reset without a close frame.
    Dropped,
    /// Still open when the limit passed.
    Open,
}

/// Reads (and discards) server frames until a close frame or EOF, within `limit`.
pub async fn ended(stream: &mut TcpStream, limit: Duration) -> RawEnd {
    let read = async {
        loop {
            match read_frame(stream).await {
                Ok((op::CLOSE, payload)) => {
                    let code = payload.get(..2).map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
                    return RawEnd::Closed(code);
                }
                Ok(_) => continue,
                Err(_) => return RawEnd::Dropped,
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(RawEnd::Open)
}

/// Whether the server closed a (non-WebSocket) socket within `limit`:
/// reading reaches EOF or an error. Bytes the server sends first are skipped.
pub async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}
