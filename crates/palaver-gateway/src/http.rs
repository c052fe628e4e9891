//! The HTTP accept loop: HTTP/1.1 over hyper, with a deadline for request
//! heads, the peer address for the routes, and graceful shutdown.
//!
//! `axum::serve` gives a connection unlimited time to send its request, so a
//! client that connects and says nothing (or trickles its headers byte by
//! byte) holds a socket and a task forever. Here every request head must
//! arrive within `--header-timeout` from when the server starts waiting for
//! it (on connect, and again between keep-alive requests); an upgraded
//! WebSocket is then governed by the connection's own read deadline.

use std::{io, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// Largest request head (request line and headers) accepted, however it
/// arrives; larger ones get 431. URL tokens fit easily.
const MAX_HEAD: usize = 64 * 1024;
/// Pause after an accept error that is not about one connection (e.g. out
/// of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown`, then stops accepting,
/// lets in-flight requests finish, and returns. Handlers can read the peer
/// address with `ConnectInfo<SocketAddr>`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    // Both limits: the buffer's catches a head that arrives in pieces, the
    // head's one a head that arrives in one read (the buffer may then hold
    // up to twice its limit before hyper checks it).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Chat frames are small and latency-bound: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = shutdown.cancelled() => {
                    // Idle connections close now; a request in flight finishes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
        });
    }
    connections.close();
    // Requests in flight finish; a head still trickling in is cut by its
    // timeout at the latest.
    let _ = tokio::time::timeout(header_timeout, connections.wait()).await;
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
