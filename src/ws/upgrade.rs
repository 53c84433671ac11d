//! The WebSocket handshake (RFC 6455 §4.2): the checks of the client's
//! request, the 101 answer, and then the raw TCP socket — the fan-out writes
//! its ready-made frames to the socket itself, so no WebSocket library sits
//! between them.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request is no WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAHandshake {
    /// A plain HTTP request: no `Upgrade: websocket`, or not a GET.
    NoUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    Version,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
}

/// A valid handshake, ready to be answered.
pub struct Handshake {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Checks `request` as axum does (method, `Connection`, `Upgrade`, version,
/// key) and takes the upgrade hyper offers for it.
pub fn handshake(request: &mut Request) -> Result<Handshake, NotAHandshake> {
    let headers = request.headers();
    let upgrade = has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket");
    if request.method() != Method::GET || !upgrade {
        return Err(NotAHandshake::NoUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(NotAHandshake::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or(NotAHandshake::MissingKey)?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(NotAHandshake::NoUpgrade)?;
    Ok(Handshake { key, on_upgrade })
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Handshake {
    /// Answers 101 (with `Sec-WebSocket-Protocol: bearer` when `bearer`) and,
    /// once the client has it, hands `serve` (which must not block: it starts
    /// the connection's own task) the socket and any bytes the
    /// client sent after its request.
    pub fn accept<F>(self, bearer: bool, serve: F) -> Response
    where
        F: FnOnce(TcpStream, Bytes) + Send + 'static,
    {
        let accept = accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(error = %crate::logging::error(&err), "WebSocket upgrade failed");
                    return;
                }
            };
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    // What the client sent after its request is a slice of
                    // hyper's read buffer: copied, so that buffer is freed.
                    let early = Bytes::copy_from_slice(&parts.read_buf);
                    drop(parts.read_buf);
                    serve(parts.io.into_inner(), early);
                }
                Err(_) => tracing::error!("WebSocket upgrade: not a TCP connection"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if bearer {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("bearer"),
            );
        }
        response
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455, 4.2.2):
/// base64 of the SHA-1 of the key and the protocol's GUID.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_is_the_rfc_6455_example() {
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
