//! The WebSocket endpoint: [`upgrade`] (the handshake, then the raw
//! socket), [`protocol`] (client messages and control frames, pure),
//! [`session`] (a connection's reading side) and [`access`] (its standing).
//! The framing and the frames every client gets are [`crate::wire`]'s.

pub mod access;
pub mod protocol;
pub mod session;
pub mod upgrade;
