//! The HTTP in front of each connection: the listen address serves `GET /metrics` and the
//! WebSocket upgrade. The request head is read here (bounded, parsed by `httparse`), so
//! both share one port, TLS or not.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The largest request head taken.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request asks for.
pub enum Request {
    /// `GET /metrics`.
    Metrics,
    /// A WebSocket upgrade, with its key and the bytes read past the head.
    Upgrade {
        /// `Sec-WebSocket-Key`.
        key: String,
        /// What the client sent after the head (nothing, for a well-behaved client).
        rest: Vec<u8>,
    },
    /// Anything else, answered with this status line and reason.
    Other(&'static str),
}

/// Reads and parses one request head.
pub async fn read_request(socket: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(classify(&request, &buf[len..])),
            Ok(httparse::Status::Partial) if buf.len() < HEAD_BYTES_MAX => {}
            Ok(httparse::Status::Partial) => {
                return Ok(Request::Other("431 Request Header Fields Too Large"));
            }
            Err(_) => return Ok(Request::Other("400 Bad Request")),
        }
    }
}

fn classify(request: &httparse::Request<'_, '_>, rest: &[u8]) -> Request {
    let header = |name: &str| {
        (request.headers.iter())
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if request.method != Some("GET") {
        return Request::Other("405 Method Not Allowed");
    }
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match (request.path, upgrade, header("sec-websocket-key")) {
        (_, true, Some(key)) => Request::Upgrade {
            key: key.trim().to_string(),
            rest: rest.to_vec(),
        },
        (Some("/metrics"), false, _) => Request::Metrics,
        (_, true, None) => Request::Other("400 Bad Request"),
        _ => Request::Other("404 Not Found"),
    }
}

/// Answers the upgrade: the WebSocket protocol starts after it.
pub async fn accept_upgrade(
    socket: &mut (impl AsyncWrite + Unpin),
    key: &str,
) -> std::io::Result<()> {
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    socket.write_all(response.as_bytes()).await?;
    socket.flush().await
}

/// A whole plain response, after which the connection closes.
pub async fn respond(
    socket: &mut (impl AsyncWrite + Unpin),
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}
