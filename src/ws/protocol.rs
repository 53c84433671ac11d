//! Protocol v1 as data: parsing client messages (with the error a client is
//! told) and serializing server frames. Pure functions, no I/O.
//!
//! Compatible with the SYNC-009 reference client: `{"subscribe": [...]}`,
//! `{"unsubscribe": [...]}` in, `{"channel", "event", "payload"}` out. Control
//! frames carry `"type"` and no `"channel"`, so such clients ignore them.

use serde::Serialize;
use serde_json::Value;

use crate::config::Limits;
use crate::wire::{Frame, MAX_ENTITY_LEN, Resume, Topic, Written, json_frame, valid_channel};

/// Protocol version announced in `welcome`.
pub const VERSION: u32 = 1;

/// A valid client request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `{"subscribe": [...]}`: start receiving signals for these topics.
    Subscribe {
        /// The topics asked for.
        topics: Vec<Topic>,
        /// Where the client left off on a previous connection.
        resume: Option<Resume>,
    },
    /// `{"unsubscribe": [...]}`: stop receiving signals for these topics.
    Unsubscribe(Vec<Topic>),
    /// `{"auth": "<jwt>"}`: the first message, or a refresh before expiry.
    Auth(String),
}

/// Error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not JSON.
    InvalidJson,
    /// The message is JSON but not a request.
    InvalidMessage,
    /// A channel name is empty, too long or has characters not allowed.
    InvalidChannel,
    /// One message names more channels than allowed.
    TooManyChannels,
    /// The subscription would exceed the connection's limit.
    SubscriptionLimit,
    /// The message is larger than allowed.
    MessageTooLarge,
    /// Binary messages are not taken.
    BinaryNotSupported,
    /// The client sent more messages per second than allowed.
    RateLimited,
    /// Nothing but `{"auth": ...}` is accepted before authenticating.
    AuthRequired,
    /// A token was refused (the reason is in the message; the token never is).
    Unauthorized,
    /// The claims may not subscribe to these topics.
    Forbidden,
    /// The database could not be asked; nothing was subscribed.
    AuthorizationUnavailable,
}

/// Why a client message was refused; becomes an `error` frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    /// What kind of refusal it is.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// Parses one text message. A message is applied whole or not at all.
pub fn parse(text: &str, limits: &Limits) -> Result<Request, Rejection> {
    if text.len() > limits.max_message_bytes {
        return Err(reject(
            ErrorCode::MessageTooLarge,
            format!(
                "message is {} bytes; the limit is {}",
                text.len(),
                limits.max_message_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| reject(ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(reject(
            ErrorCode::InvalidMessage,
            r#"expected an object like {"subscribe": ["order"]}"#,
        ));
    };
    if let Some(auth) = object.remove("auth") {
        return match auth {
            Value::String(token) if object.is_empty() => Ok(Request::Auth(token)),
            Value::String(_) => Err(reject(
                ErrorCode::InvalidMessage,
                "send auth as a message of its own",
            )),
            // Never echo what was sent: it may be a credential.
            _ => Err(reject(
                ErrorCode::InvalidMessage,
                r#"auth must be a string: {"auth": "<jwt>"}"#,
            )),
        };
    }
    let key = match (
        object.contains_key("subscribe"),
        object.contains_key("unsubscribe"),
    ) {
        (true, false) => "subscribe",
        (false, true) => "unsubscribe",
        (true, true) => {
            return Err(reject(
                ErrorCode::InvalidMessage,
                "send subscribe and unsubscribe as separate messages",
            ));
        }
        (false, false) => {
            return Err(reject(
                ErrorCode::InvalidMessage,
                r#"unknown message; expected {"subscribe": [...]} or {"unsubscribe": [...]}"#,
            ));
        }
    };
    let resume = match object.remove("resume") {
        None | Some(Value::Null) => None,
        Some(_) if key == "unsubscribe" => {
            return Err(reject(
                ErrorCode::InvalidMessage,
                "resume goes with subscribe",
            ));
        }
        Some(value) => Some(serde_json::from_value::<Resume>(value).map_err(|e| {
            reject(
                ErrorCode::InvalidMessage,
                format!(
                    r#"resume must be {{"epoch": "<from welcome>", "seq": <last seq seen>}}: {e}"#
                ),
            )
        })?),
    };
    let Some(Value::Array(items)) = object.remove(key) else {
        return Err(reject(
            ErrorCode::InvalidMessage,
            format!("{key:?} must be an array of channel names"),
        ));
    };
    if items.len() > limits.max_channels_per_message {
        return Err(reject(
            ErrorCode::TooManyChannels,
            format!(
                "{} channels in one message; the limit is {}",
                items.len(),
                limits.max_channels_per_message
            ),
        ));
    }
    let topics = items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => parse_topic(s),
            other => Err(reject(
                ErrorCode::InvalidChannel,
                format!("{key}[{i}] must be a string, got {}", json_type(other)),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match key {
        "subscribe" => Request::Subscribe { topics, resume },
        _ => Request::Unsubscribe(topics),
    })
}

/// `order` or `order:123`. Channel names: 1–64 of `A-Z a-z 0-9 _ . / -`;
/// entity ids: 1–256 characters, no control characters.
pub fn parse_topic(s: &str) -> Result<Topic, Rejection> {
    let (channel, entity) = match s.split_once(':') {
        Some((c, e)) => (c, Some(e)),
        None => (s, None),
    };
    valid_channel(channel).map_err(|why| {
        reject(
            ErrorCode::InvalidChannel,
            format!("invalid channel {:?}: {why}", truncate(s)),
        )
    })?;
    if let Some(entity) = entity
        && (entity.is_empty()
            || entity.len() > MAX_ENTITY_LEN
            || entity.chars().any(char::is_control))
    {
        return Err(reject(
            ErrorCode::InvalidChannel,
            format!(
                "invalid entity in {:?}: must be 1 to {MAX_ENTITY_LEN} bytes without control characters",
                truncate(s)
            ),
        ));
    }
    Ok(Topic {
        channel: channel.to_owned(),
        entity: entity.map(str::to_owned),
    })
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Control frames: `{"type": ...}`, never a `"channel"` key.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control<'a> {
    /// The first frame of every connection.
    Welcome {
        /// The protocol version.
        protocol: u32,
        /// `"required"`: send `{"auth": "<jwt>"}` first; `"none"`: no authentication.
        auth: &'static str,
        /// The node's epoch, for `resume`.
        epoch: &'a str,
        /// The node's latest seq: resume from here if nothing arrives before a reconnect.
        seq: Written,
        /// The limits of this connection.
        limits: WelcomeLimits,
    },
    /// The topics are now subscribed.
    Subscribed {
        /// The topics, as `channel` or `channel:entity`.
        channels: Vec<String>,
    },
    /// The topics are no longer subscribed.
    Unsubscribed {
        /// The topics, as `channel` or `channel:entity`.
        channels: Vec<String>,
        /// Set when the server ended the subscription (`"revoked"`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// A request was refused or failed.
    Error {
        /// What kind of error it is.
        code: ErrorCode,
        /// What went wrong, for people.
        message: &'a str,
        /// The topics the error is about, if any.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        topics: Vec<String>,
        /// `rate_limited`: how many messages were dropped since the last notice.
        #[serde(skip_serializing_if = "Option::is_none")]
        dropped: Option<u64>,
    },
    /// A token was accepted; it holds until `expires_at` (Unix seconds).
    Authenticated {
        /// When the token expires, in Unix seconds.
        expires_at: u64,
    },
    /// The token runs out soon: send `{"auth": "<new jwt>"}` before `expires_at`.
    AuthExpiring {
        /// When the token expires, in Unix seconds.
        expires_at: u64,
    },
}

/// The limits a `welcome` frame announces; see [`Limits`].
#[derive(Debug, Serialize)]
pub struct WelcomeLimits {
    /// Most topics one connection may hold.
    pub max_subscriptions: usize,
    /// Most channels one message may name.
    pub max_channels_per_message: usize,
    /// Largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Most messages a client may send per second.
    pub max_messages_per_second: usize,
    /// How often a heartbeat is sent, in milliseconds.
    pub heartbeat_ms: u128,
    /// How far back (in signals and in time) a resume can reach.
    pub history_size: usize,
    /// How far back in time a resume can reach, in milliseconds.
    pub history_age_ms: u128,
}

impl From<&Limits> for WelcomeLimits {
    fn from(l: &Limits) -> Self {
        WelcomeLimits {
            max_subscriptions: l.max_subscriptions,
            max_channels_per_message: l.max_channels_per_message,
            max_message_bytes: l.max_message_bytes,
            max_messages_per_second: l.max_messages_per_second,
            heartbeat_ms: l.heartbeat.as_millis(),
            history_size: l.history_size,
            history_age_ms: l.history_age.as_millis(),
        }
    }
}

impl Control<'_> {
    /// The frame that carries it.
    pub fn frame(&self) -> Frame {
        json_frame(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Position, ResyncReason, Signal, Written, resync_frame, signal_frame};

    fn limits() -> Limits {
        Limits::default()
    }

    fn topic(channel: &str, entity: Option<&str>) -> Topic {
        Topic {
            channel: channel.into(),
            entity: entity.map(Into::into),
        }
    }

    #[test]
    fn sync009_messages_parse() {
        assert_eq!(
            parse(r#"{"subscribe": ["order", "contact"]}"#, &limits()),
            Ok(Request::Subscribe {
                topics: vec![topic("order", None), topic("contact", None)],
                resume: None
            })
        );
        assert_eq!(
            parse(r#"{"unsubscribe": ["order"]}"#, &limits()),
            Ok(Request::Unsubscribe(vec![topic("order", None)]))
        );
    }

    #[test]
    fn resume_is_parsed_and_checked() {
        assert_eq!(
            parse(
                r#"{"subscribe": ["order"], "resume": {"epoch": "ab", "seq": 42}}"#,
                &limits()
            ),
            Ok(Request::Subscribe {
                topics: vec![topic("order", None)],
                resume: Some(Resume {
                    epoch: "ab".into(),
                    seq: Position::counter(42)
                })
            })
        );
        assert_eq!(
            code(r#"{"subscribe": ["order"], "resume": {"seq": 1}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"subscribe": ["order"], "resume": {"epoch": "a", "seq": -1}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"unsubscribe": ["order"], "resume": {"epoch": "a", "seq": 1}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn entity_topics_split_at_the_first_colon() {
        assert_eq!(parse_topic("order:123"), Ok(topic("order", Some("123"))));
        assert_eq!(parse_topic("doc:a:b"), Ok(topic("doc", Some("a:b"))));
        assert_eq!(topic("order", Some("123")).to_string(), "order:123");
    }

    fn code(text: &str) -> ErrorCode {
        parse(text, &limits()).unwrap_err().code
    }

    #[test]
    fn bad_input_gets_a_code() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"hello": 1}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"subscribe": "order"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"subscribe": ["a"], "unsubscribe": ["b"]}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(r#"{"subscribe": [""]}"#), ErrorCode::InvalidChannel);
        assert_eq!(code(r#"{"subscribe": [42]}"#), ErrorCode::InvalidChannel);
        assert_eq!(code(r#"{"subscribe": ["a b"]}"#), ErrorCode::InvalidChannel);
        assert_eq!(
            code(r#"{"subscribe": ["order:"]}"#),
            ErrorCode::InvalidChannel
        );
        let long = format!(r#"{{"subscribe": ["{}"]}}"#, "x".repeat(65));
        assert_eq!(code(&long), ErrorCode::InvalidChannel);
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        let many = serde_json::json!({ "subscribe": many }).to_string();
        assert_eq!(code(&many), ErrorCode::TooManyChannels);
        let huge = format!(r#"{{"subscribe": ["{}"]}}"#, "x".repeat(70_000));
        assert_eq!(code(&huge), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn one_bad_channel_rejects_the_whole_message() {
        let err = parse(r#"{"subscribe": ["order", 7]}"#, &limits()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidChannel);
        assert!(err.message.contains("subscribe[1]"), "{}", err.message);
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let signal = Signal {
            channel: "order".into(),
            event: "item_added".into(),
            entity_id: Some("123".into()),
            payload: serde_json::value::RawValue::from_string(
                r#"{"entity_id":"123","txid":7561,"table":"order_items","op":"INSERT"}"#.into(),
            )
            .unwrap(),
        };
        let frame = signal_frame(&signal, &Written::Number(43), "3f2a");
        assert_eq!(frame[0], 0x81, "a text frame");
        assert_eq!(
            crate::wire::frame::payload(&frame),
            br#"{"channel":"order","event":"item_added","payload":{"entity_id":"123","txid":7561,"table":"order_items","op":"INSERT"},"seq":43,"epoch":"3f2a"}"#
        );
        let json = |f: &Frame| -> Value {
            serde_json::from_slice(crate::wire::frame::payload(f)).unwrap()
        };
        let resync = json(&resync_frame("order", ResyncReason::SlowConsumer));
        assert_eq!(
            resync,
            serde_json::json!({"channel": "order", "event": "resync", "payload": {"reason": "slow_consumer"}})
        );
        let error: Value = json(
            &Control::Error {
                code: ErrorCode::InvalidJson,
                message: "x",
                topics: Vec::new(),
                dropped: None,
            }
            .frame(),
        );
        assert_eq!(
            error,
            serde_json::json!({"type": "error", "code": "invalid_json", "message": "x"})
        );
        assert!(error.get("channel").is_none());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                any::<i64>().prop_map(|i| serde_json::json!(i)),
                ".{0,80}".prop_map(Value::String),
                Just(Value::String("subscribe".into())),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("subscribe".to_owned()),
                            Just("unsubscribe".to_owned()),
                            Just("resume".to_owned()),
                            Just("epoch".to_owned()),
                            Just("seq".to_owned()),
                            ".{0,10}"
                        ],
                        inner,
                        0..4
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(&String::from_utf8_lossy(&bytes), &Limits::default());
            }

            #[test]
            fn arbitrary_json_never_panics(value in json()) {
                let _ = parse(&value.to_string(), &Limits::default());
            }

            #[test]
            fn valid_topics_round_trip(
                topics in prop::collection::vec("[A-Za-z0-9_./-]{1,64}(:[a-zA-Z0-9 :é-]{1,30})?", 1..20)
            ) {
                let message = serde_json::json!({ "subscribe": topics }).to_string();
                match parse(&message, &Limits::default()) {
                    Ok(Request::Subscribe { topics: parsed, resume: None }) => {
                        let back: Vec<String> = parsed.iter().map(ToString::to_string).collect();
                        prop_assert_eq!(back, topics);
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
