//! WebSocket framing (RFC 6455 §5) on the server's side. A frame out is
//! built once as complete bytes — header and payload — and the same bytes
//! are written to every socket that gets it (server frames are never
//! masked). Frames in are parsed incrementally from whatever the socket
//! gave, unmasked, reassembled when fragmented, and checked: a broken frame
//! fails the connection with the close code the RFC names (§7.4.1).

use bytes::{BufMut, Bytes, BytesMut};

const FIN: u8 = 0x80;
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close codes this server sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure, as when answering a client's close frame.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown, heartbeat timeout).
    pub const AWAY: u16 = 1001;
    /// The client broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// A text message was not valid UTF-8.
    pub const INVALID: u16 = 1007;
    /// A message was larger than allowed.
    pub const SIZE: u16 = 1009;
    /// Try again later: the client stayed behind for too long.
    pub const AGAIN: u16 = 1013;
}

/// A text frame carrying `payload` (which must be UTF-8).
pub fn text(payload: &[u8]) -> Bytes {
    encode(OP_TEXT, payload)
}

/// A ping frame carrying `payload`.
pub fn ping(payload: &[u8]) -> Bytes {
    encode(OP_PING, payload)
}

/// A pong frame echoing `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

/// A close frame; the reason is cut to the 123 bytes a control frame allows
/// (at a character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload)
}

fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    frame.put_u8(FIN | opcode);
    match payload.len() {
        n if n < 126 => frame.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.put_u8(126);
            frame.put_u16(n as u16);
        }
        n => {
            frame.put_u8(127);
            frame.put_u64(n as u64);
        }
    }
    frame.put_slice(payload);
    frame.freeze()
}

fn header_len(payload: usize) -> usize {
    match payload {
        n if n < 126 => 2,
        n if n <= usize::from(u16::MAX) => 4,
        _ => 10,
    }
}

/// The payload of a frame built here (for tests and logs).
pub fn payload(frame: &[u8]) -> &[u8] {
    let len = frame.get(1).map_or(0, |b| b & 0x7f);
    let start = match len {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(start..).unwrap_or_default()
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (reassembled from its fragments).
    Text(String),
    /// A binary message, which this server does not take.
    Binary,
    /// A ping with its payload, to be answered with a pong.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client's close frame: its code and reason, if it gave one.
    Close(Option<(u16, String)>),
}

/// Why the connection must be failed: the close code and a reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The close code to send (see [`close_code`]).
    pub code: u16,
    /// The close reason to send.
    pub reason: String,
}

fn violation(code: u16, reason: impl Into<String>) -> Violation {
    Violation {
        code,
        reason: reason.into(),
    }
}

/// Parses what a client sends. Holds bytes only while a frame or a
/// fragmented message is incomplete; otherwise it owns nothing.
#[derive(Debug)]
pub struct Reader {
    /// What is incomplete, if anything: boxed, as most connections are
    /// quiet between whole messages (8 bytes each then, not 56).
    #[allow(clippy::box_collection)]
    unfinished: Option<Box<Unfinished>>,
    max_message: usize,
}

#[derive(Debug, Default)]
struct Unfinished {
    /// Bytes of a frame not yet complete.
    partial: Vec<u8>,
    /// A fragmented message being reassembled: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
}

impl Reader {
    /// `max_message`: the largest message (and frame) taken; larger ones
    /// fail the connection with 1009.
    pub fn new(max_message: usize) -> Reader {
        Reader {
            unfinished: None,
            max_message,
        }
    }

    /// Parses `data` (what the socket gave after earlier calls' bytes) and
    /// appends each complete message to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Incoming>) -> Result<(), Violation> {
        let mut state = self.unfinished.take().map(|b| *b).unwrap_or_default();
        state.feed(data, out, self.max_message)?;
        if !state.partial.is_empty() || state.message.is_some() {
            self.unfinished = Some(Box::new(state));
        }
        Ok(())
    }
}

impl Unfinished {
    fn feed(
        &mut self,
        data: &[u8],
        out: &mut Vec<Incoming>,
        max_message: usize,
    ) -> Result<(), Violation> {
        if self.partial.is_empty() {
            let used = self.parse(data, out, max_message)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buffered = std::mem::take(&mut self.partial);
            buffered.extend_from_slice(data);
            let used = self.parse(&buffered, out, max_message)?;
            buffered.drain(..used);
            self.partial = buffered;
        }
        if self.partial.is_empty() {
            // Nothing is owed memory between messages.
            self.partial = Vec::new();
        }
        Ok(())
    }

    /// Parses whole frames from `data`; returns how many bytes they took.
    fn parse(
        &mut self,
        data: &[u8],
        out: &mut Vec<Incoming>,
        max_message: usize,
    ) -> Result<usize, Violation> {
        let mut at = 0;
        while let Some((header, len)) = self.header(&data[at..], max_message)? {
            let Some(frame) = data.get(at + header..at + header + len) else {
                break;
            };
            let mask = [
                data[at + header - 4],
                data[at + header - 3],
                data[at + header - 2],
                data[at + header - 1],
            ];
            let payload: Vec<u8> = frame
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            let first = data[at];
            at += header + len;
            if let Some(message) = self.frame(first, payload)? {
                out.push(message);
            }
        }
        Ok(at)
    }

    /// The header of the frame at the start of `data`: its length and the
    /// payload's, once all of it is there.
    fn header(&self, data: &[u8], max_message: usize) -> Result<Option<(usize, usize)>, Violation> {
        let [first, second, ..] = *data else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(violation(
                close_code::PROTOCOL,
                "protocol error: reserved bits set without an extension",
            ));
        }
        let opcode = first & 0x0f;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(violation(
                close_code::PROTOCOL,
                format!("protocol error: reserved opcode {opcode}"),
            ));
        }
        if second & 0x80 == 0 {
            return Err(violation(
                close_code::PROTOCOL,
                "protocol error: a client's frames must be masked",
            ));
        }
        let (len, extra) = match second & 0x7f {
            126 => match data.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Ok(None),
            },
            127 => match data.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 8),
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        if opcode >= OP_CLOSE {
            if first & FIN == 0 {
                return Err(violation(
                    close_code::PROTOCOL,
                    "protocol error: a control frame may not be fragmented",
                ));
            }
            if len > 125 {
                return Err(violation(
                    close_code::PROTOCOL,
                    "protocol error: a control frame carries at most 125 bytes",
                ));
            }
        }
        let so_far = self.message.as_ref().map_or(0, |(_, p)| p.len()) as u64;
        if len.saturating_add(so_far) > max_message as u64 {
            return Err(violation(
                close_code::SIZE,
                format!("message too big: the limit is {max_message} bytes"),
            ));
        }
        let header = 2 + extra + 4;
        if data.len() < header {
            return Ok(None);
        }
        Ok(Some((header, len as usize)))
    }

    /// One complete frame: a message, or a part of one.
    fn frame(&mut self, first: u8, payload: Vec<u8>) -> Result<Option<Incoming>, Violation> {
        let fin = first & FIN != 0;
        match first & 0x0f {
            OP_PING => Ok(Some(Incoming::Ping(Bytes::from(payload)))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => close_frame(&payload).map(|c| Some(Incoming::Close(c))),
            OP_CONTINUATION => {
                let Some((opcode, mut so_far)) = self.message.take() else {
                    return Err(violation(
                        close_code::PROTOCOL,
                        "protocol error: a continuation frame without a message to continue",
                    ));
                };
                so_far.extend_from_slice(&payload);
                if fin {
                    message(opcode, so_far).map(Some)
                } else {
                    self.message = Some((opcode, so_far));
                    Ok(None)
                }
            }
            opcode => {
                if self.message.is_some() {
                    return Err(violation(
                        close_code::PROTOCOL,
                        "protocol error: a new message before the last one was finished",
                    ));
                }
                if fin {
                    message(opcode, payload).map(Some)
                } else {
                    self.message = Some((opcode, payload));
                    Ok(None)
                }
            }
        }
    }
}

fn message(opcode: u8, payload: Vec<u8>) -> Result<Incoming, Violation> {
    match opcode {
        OP_TEXT => String::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| violation(close_code::INVALID, "invalid UTF-8 in a text message")),
        _ => Ok(Incoming::Binary),
    }
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(violation(
            close_code::PROTOCOL,
            "protocol error: a close frame with a one-byte payload",
        )),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(violation(
                    close_code::PROTOCOL,
                    format!("protocol error: close code {code} may not be sent"),
                ));
            }
            let reason = String::from_utf8(reason.to_vec())
                .map_err(|_| violation(close_code::INVALID, "invalid UTF-8 in a close reason"))?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as clients must send them.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn read_all(reader: &mut Reader, data: &[u8]) -> Result<Vec<Incoming>, Violation> {
        let mut out = Vec::new();
        reader.feed(data, &mut out)?;
        Ok(out)
    }

    #[test]
    fn server_frames_have_the_shortest_length_form() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let medium = text(&[b'x'; 200]);
        assert_eq!(&medium[..4], &[0x81, 126, 0, 200]);
        assert_eq!(payload(&medium).len(), 200);
        let large = text(&vec![b'x'; 70_000]);
        assert_eq!(large[1], 127);
        assert_eq!(payload(&large).len(), 70_000);
        assert_eq!(&ping(b"")[..], &[0x89, 0]);
        let closing = close(1001, "bye");
        assert_eq!(&closing[..], &[0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
        // A reason is cut to what a control frame can carry.
        assert_eq!(close(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn messages_are_read_whatever_the_pieces_the_socket_gives() {
        let mut stream = client(0x81, b"{\"subscribe\": [\"order\"]}");
        stream.extend(client(0x89, b"p"));
        stream.extend(client(0x01, b"hel"));
        stream.extend(client(0x8a, b""));
        stream.extend(client(0x80, b"lo"));
        stream.extend(client(0x82, &[1, 2]));
        stream.extend(client(0x88, &[0x03, 0xe8, b'o', b'k']));
        let big = "y".repeat(70_000);
        stream.extend(client(0x81, big.as_bytes()));
        let expected = vec![
            Incoming::Text("{\"subscribe\": [\"order\"]}".into()),
            Incoming::Ping(Bytes::from_static(b"p")),
            Incoming::Pong,
            Incoming::Text("hello".into()),
            Incoming::Binary,
            Incoming::Close(Some((1000, "ok".into()))),
            Incoming::Text(big),
        ];
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut reader = Reader::new(100_000);
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                reader.feed(chunk, &mut got).unwrap();
            }
            assert_eq!(got, expected, "in pieces of {piece}");
            // Between whole messages it holds nothing.
            assert!(reader.unfinished.is_none());
        }
    }

    #[test]
    fn broken_frames_name_the_rule_and_its_close_code() {
        let code = |data: Vec<u8>| read_all(&mut Reader::new(1000), &data).unwrap_err().code;
        // Unmasked.
        assert_eq!(code(vec![0x81, 0x02, b'h', b'i']), 1002);
        // Reserved opcode, reserved bits, fragmented control frame, long control frame.
        assert_eq!(code(client(0x83, b"x")), 1002);
        assert_eq!(code(client(0x8b, b"")), 1002);
        assert_eq!(code(client(0xc1, b"x")), 1002);
        assert_eq!(code(client(0x09, b"x")), 1002);
        assert_eq!(code(client(0x89, &[0; 126])), 1002);
        // Continuation without a start, a new message inside a fragmented one.
        assert_eq!(code(client(0x80, b"x")), 1002);
        let mut interleaved = client(0x01, b"a");
        interleaved.extend(client(0x81, b"b"));
        assert_eq!(code(interleaved), 1002);
        // Invalid UTF-8, in a message and in a close reason.
        assert_eq!(code(client(0x81, &[0xff, 0xfe])), 1007);
        assert_eq!(code(client(0x88, &[0x03, 0xe8, 0xff])), 1007);
        // Close codes a peer may not send.
        assert_eq!(code(client(0x88, &[0x03, 0xed])), 1002);
        assert_eq!(code(client(0x88, &[0x03])), 1002);
        // Over the limit: refused from the header, before the payload is there.
        let mut huge = client(0x81, &[b'x'; 2000]);
        huge.truncate(20);
        assert_eq!(code(huge), 1009);
        let mut parts = client(0x01, &[b'x'; 600]);
        parts.extend(client(0x80, &[b'x'; 600]));
        assert_eq!(code(parts), 1009);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut reader = Reader::new(256);
            let mut out = Vec::new();
            for chunk in bytes.chunks(17) {
                if reader.feed(chunk, &mut out).is_err() {
                    break;
                }
            }
        }
    }
}
