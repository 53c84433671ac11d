//! The WebSocket endpoint: [`upgrade`] (the handshake, then the raw
//! socket), [`frame`] (framing, pure), [`protocol`] (message types, pure),
//! [`session`] (a connection's reading side) and [`access`] (its standing).

pub mod access;
pub mod frame;
pub mod protocol;
pub mod session;
pub mod upgrade;
