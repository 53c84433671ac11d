//! Where a signal sits in the order a node delivers them: the `seq` of the
//! protocol. Two kinds, told apart by the epoch they belong to:
//!
//! - **A counter** (the `notify` transport): 1, 2, 3, … per node run, sent
//!   as a JSON number. Only that node, in that run, can resume from it.
//! - **A WAL position** (the `wal` transport): the commit LSN of the signal's
//!   transaction and the signal's place in it. Every node reading the same
//!   database sees the same signal at the same position, before and after a
//!   restart, so any of them can resume from it. It can exceed what a
//!   JavaScript number holds exactly, so it is sent as a string of fixed
//!   width (`"00000000016B3748.0000000200000000"`) whose text order is its
//!   order.

use std::fmt;

/// A signal's place in its epoch's order (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(u128);

impl Position {
    /// The `n`th of a node's counted positions.
    pub fn counter(n: u64) -> Position {
        Position(u128::from(n))
    }

    /// Signal `index` (from 0) of the transaction whose commit ends at `lsn`.
    pub fn wal(lsn: u64, index: u32) -> Position {
        Position((u128::from(lsn) << 64) | (u128::from(index) << 32))
    }

    /// After every signal of the transaction whose commit ends at `lsn`.
    pub fn after_commit(lsn: u64) -> Position {
        Position((u128::from(lsn) << 64) | u128::from(u64::MAX))
    }

    /// The commit LSN of a WAL position.
    pub fn lsn(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// The next position: after this one, before the next transaction's
    /// (gaps and signals that did not come through the WAL are placed so).
    #[must_use]
    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }

    /// How it is written in a frame: a number, or (`wal`) fixed-width text.
    pub fn written(self, wal: bool) -> Written {
        if wal {
            Written::Text(format!("{:016X}.{:016X}", self.lsn(), self.0 as u64))
        } else {
            Written::Number(self.0 as u64)
        }
    }

    /// Reads a WAL position as [`Position::written`] writes it.
    pub fn parse_wal(text: &str) -> Option<Position> {
        let (lsn, low) = text.split_once('.')?;
        if lsn.len() != 16 || low.len() != 16 {
            return None;
        }
        let lsn = u64::from_str_radix(lsn, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        Some(Position((u128::from(lsn) << 64) | u128::from(low)))
    }
}

/// A position as a frame carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Written {
    /// A counted position.
    Number(u64),
    /// A WAL position, as text.
    Text(String),
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Written::Number(n) => write!(f, "{n}"),
            Written::Text(t) => f.write_str(t),
        }
    }
}

/// Which order a node's positions are in: its epoch's name, and whether it
/// is a WAL epoch (the same on every node of one database, see
/// [`crate::wal`]) or a counted one (this node's run only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// What clients see as `epoch`.
    pub name: std::sync::Arc<str>,
    /// Whether it is a WAL epoch.
    pub wal: bool,
}

impl Epoch {
    /// A new counted epoch, unlike any other.
    pub fn counted() -> Epoch {
        Epoch {
            name: format!("{:016x}", rand::random::<u64>()).into(),
            wal: false,
        }
    }

    /// The epoch of the WAL of one database, read on one timeline, for one
    /// Postgres channel: `wal.<system id>.<timeline>.<database>.<channel>`.
    pub fn wal(system_id: &str, timeline: u32, database: &str, channel: &str) -> Epoch {
        Epoch {
            name: format!("wal.{system_id}.{timeline}.{database}.{channel}").into(),
            wal: true,
        }
    }

    /// Does a client's `resume.epoch` name a WAL epoch (one a node may not
    /// have reached yet, but will)?
    pub fn names_wal(name: &str) -> bool {
        name.starts_with("wal.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_order_by_commit_then_index_and_survive_their_text() {
        let a = Position::wal(0x16B_3748, 0);
        let b = Position::wal(0x16B_3748, 1);
        let between = b.next();
        let c = Position::wal(0x16B_3790, 0);
        assert!(a < b && b < between && between < Position::after_commit(0x16B_3748));
        assert!(Position::after_commit(0x16B_3748) < c);
        for p in [a, b, between, c, Position::wal(u64::MAX, u32::MAX)] {
            let Written::Text(text) = p.written(true) else {
                panic!("a WAL position is text")
            };
            assert_eq!(Position::parse_wal(&text), Some(p));
        }
        // Text order is position order: what a client compares.
        let texts: Vec<String> = [a, b, between, c]
            .iter()
            .map(|p| p.written(true).to_string())
            .collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        assert_eq!(
            a.written(true).to_string(),
            "00000000016B3748.0000000000000000"
        );
        assert_eq!(Position::parse_wal("16B3748.0"), None);
        assert_eq!(
            Position::parse_wal("00000000016B3748-0000000000000000"),
            None
        );
    }

    #[test]
    fn counted_positions_are_numbers() {
        assert_eq!(Position::counter(42).written(false), Written::Number(42));
        assert_eq!(Position::counter(42).next(), Position::counter(43));
    }
}
