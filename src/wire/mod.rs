//! What goes over the wire, at the bottom of the crate: a change signal and
//! the topics that want it, positions and epochs, the rules for channel and
//! entity names (the SQL kit's too), and the frames every client gets —
//! signals, resyncs, heartbeats — made once as complete WebSocket frames
//! ([`frame`] is the RFC 6455 framing). The listener and the WAL stream make
//! [`Signal`]s, the hub orders and fans them out, `ws` speaks the rest of the
//! protocol; none of this module knows any of them.

pub mod frame;
pub mod position;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use position::{Epoch, Position, Written};

/// Longest channel name, shared with the SQL kit's check.
pub const MAX_CHANNEL_LEN: usize = 64;
/// Longest entity id a client may filter on.
pub const MAX_ENTITY_LEN: usize = 256;

/// One server → client WebSocket frame, complete (header and payload) and
/// shared by every recipient.
pub type Frame = bytes::Bytes;

/// A change signal as it came from Postgres.
#[derive(Debug)]
pub struct Signal {
    /// The channel it was published on.
    pub channel: String,
    /// What happened, as the trigger named it (`insert`, `update`, ...).
    pub event: String,
    /// `None` means "something (possibly many things) in this channel changed".
    pub entity_id: Option<String>,
    /// The client-facing payload object (`entity_id`, `txid`, `table`, `op`, ...).
    pub payload: Box<RawValue>,
}

/// What a client subscribes to: a whole channel, or one entity in it (`order:123`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    /// The channel.
    pub channel: String,
    /// One entity of it, or `None` for the whole channel.
    pub entity: Option<String>,
}

impl Topic {
    /// Does a signal on `channel` about `entity` concern this topic? A
    /// channel-wide signal (no entity) concerns every entity topic too.
    pub fn wants(&self, channel: &str, entity: Option<&str>) -> bool {
        self.channel == channel
            && (self.entity.is_none() || entity.is_none() || self.entity.as_deref() == entity)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.entity {
            Some(entity) => write!(f, "{}:{entity}", self.channel),
            None => f.write_str(&self.channel),
        }
    }
}

/// Why a client is told to resync a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResyncReason {
    /// The LISTEN connection was re-established; signals may have been missed meanwhile.
    ListenerReconnected,
    /// The client's outbound queue was full.
    SlowConsumer,
    /// The client asked to resume, and this node cannot replay what it missed.
    ResumeUnavailable,
    /// A notification for this channel could not be read as a signal.
    InvalidSignal,
    /// The node's replication slot was gone (dropped, or lost to
    /// `max_slot_wal_keep_size`) and was made anew: what committed in
    /// between cannot be read.
    SlotLost,
}

impl ResyncReason {
    /// The name clients see in `resync` frames.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::ListenerReconnected => "listener_reconnected",
            ResyncReason::SlowConsumer => "slow_consumer",
            ResyncReason::ResumeUnavailable => "resume_unavailable",
            ResyncReason::InvalidSignal => "invalid_signal",
            ResyncReason::SlotLost => "slot_lost",
        }
    }
}

/// `{"epoch": "...", "seq": 42}`: the last signal a client saw (`seq` is
/// text in a WAL epoch, see [`position`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// The epoch of the client's last connection.
    pub epoch: String,
    /// The last position the client saw in it.
    #[serde(deserialize_with = "deserialize_seq")]
    pub seq: Position,
}

fn deserialize_seq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Position, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Seq {
        Number(u64),
        Text(String),
    }
    match Seq::deserialize(d)? {
        Seq::Number(n) => Ok(Position::counter(n)),
        Seq::Text(text) => Position::parse_wal(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a position this server wrote"))
        }),
    }
}

/// The rule the SQL kit enforces too (`^[A-Za-z0-9_./-]{1,64}$`).
pub fn valid_channel(channel: &str) -> Result<(), &'static str> {
    if channel.is_empty() {
        return Err("empty");
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Err("longer than 64 bytes");
    }
    if !channel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
    {
        return Err("allowed characters are A-Z a-z 0-9 _ . / -");
    }
    Ok(())
}

/// `{"channel","event","payload","seq","epoch"}`: the signal frame, serialized once per signal.
pub fn signal_frame(signal: &Signal, seq: &Written, epoch: &str) -> Frame {
    #[derive(Serialize)]
    struct SignalFrame<'a> {
        channel: &'a str,
        event: &'a str,
        payload: &'a RawValue,
        seq: &'a Written,
        epoch: &'a str,
    }
    json_frame(&SignalFrame {
        channel: &signal.channel,
        event: &signal.event,
        payload: &signal.payload,
        seq,
        epoch,
    })
}

/// `{"type":"heartbeat"}`, with the node's position (`"epoch"`, `"seq"`)
/// when one is given: what a client whose subscriptions were quiet may
/// resume from, so its position keeps up with the history window.
pub fn heartbeat_frame(at: Option<(&str, &Written)>) -> Frame {
    #[derive(Serialize)]
    struct Heartbeat<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<&'a Written>,
    }
    json_frame(&Heartbeat {
        r#type: "heartbeat",
        epoch: at.map(|(epoch, _)| epoch),
        seq: at.map(|(_, seq)| seq),
    })
}

/// `resync` carries no `entity_id`: an old client invalidates the whole channel.
pub fn resync_frame(channel: &str, reason: ResyncReason) -> Frame {
    json_frame(&serde_json::json!({
        "channel": channel,
        "event": "resync",
        "payload": { "reason": reason.as_str() },
    }))
}

/// `value` as JSON in a WebSocket text frame.
pub fn json_frame<T: Serialize>(value: &T) -> Frame {
    // Serializing these types (strings, numbers, raw JSON) cannot fail.
    let json = serde_json::to_vec(value).expect("frame serializes");
    frame::text(&json)
}
