//! End-to-end tests of what hostile (or merely unusual) clients get, against
//! real `palaver` processes over real sockets: replies bounded by the
//! client's queue (memory under clients that never read), history pages cut
//! to fit it, the closing handshake, the request head limit, and the order
//! and edges of validation that `docs/protocol.md` documents.

use palaver_tests::{Node, PATIENCE, raw};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// An upgrade request whose head is exactly `len` bytes.
fn head_of(node: &Node, len: usize) -> String {
    let bare = raw::upgrade_request(node.addr, "/ws?name=big", &[("X-Pad", "")]);
    raw::upgrade_request(node.addr, "/ws?name=big", &[("X-Pad", &"p".repeat(len - bare.len()))])
}
async fn head_status(node: &Node, head: &str, piece: usize) -> u16 {
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    for chunk in head.as_bytes().chunks(piece) {
        if stream.write_all(chunk).await.is_err() {
            break; // refused before the end; the status is waiting
        }
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}
#[tokio::test]
async fn request_heads_over_64_kib_are_refused_however_they_arrive() {
    let node = Node::start(&[]);
    for len in [71_683, 112_663] {
        let head = head_of(&node, len);
        assert_eq!(head.len(), len);
        assert_eq!(head_status(&node, &head, len).await, 431, "{len} bytes in one write");
        assert_eq!(head_status(&node, &head, 1024).await, 431, "{len} bytes in 1 KiB pieces");
    }
    let fits = head_of(&node, 64 * 1024);
    assert_eq!(head_status(&node, &fits, fits.len()).await, 101, "exactly 64 KiB");
    assert_eq!(head_status(&node, &fits, 1024).await, 101, "exactly 64 KiB in pieces");
}
