//! The WebSocket endpoint: [`protocol`] (pure message types) and [`session`]
//! (the per-connection loop).

pub mod access;
pub mod protocol;
pub mod session;
