//! The node's recent signals, bounded by count and age, so a client that
//! reconnects can resume from the last `seq` it saw. Every position the node
//! assigns after `complete_after` is here — signals, and gaps
//! (moments when signals may have been missed) — so a replay can prove it is
//! complete.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::{Frame, Position, Topic};

#[derive(Debug)]
enum Entry {
    Signal {
        seq: Position,
        at: Instant,
        channel: String,
        entity: Option<String>,
        frame: Frame,
    },
    /// Signals may have been missed here: on `channel`, or on every channel.
    Gap {
        seq: Position,
        at: Instant,
        channel: Option<String>,
    },
}

impl Entry {
    fn seq(&self) -> Position {
        match self {
            Entry::Signal { seq, .. } | Entry::Gap { seq, .. } => *seq,
        }
    }

    fn at(&self) -> Instant {
        match self {
            Entry::Signal { at, .. } | Entry::Gap { at, .. } => *at,
        }
    }
}

/// The recent signals and gaps a resuming client can be replayed from,
/// bounded in length and age.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<Entry>,
    max_len: usize,
    max_age: Duration,
    /// Every position after this one is in `entries`: where the node began
    /// (its stream's start), or the newest evicted entry.
    complete_after: Position,
}

impl History {
    /// An empty history keeping at most `max_len` entries, none older than `max_age`.
    pub fn new(max_len: usize, max_age: Duration) -> History {
        History {
            entries: VecDeque::new(),
            max_len,
            max_age,
            complete_after: Position::default(),
        }
    }

    /// Starts over: nothing is known up to `from`, everything after it
    /// will be pushed (a new epoch begins there).
    pub fn reset(&mut self, from: Position) {
        self.entries.clear();
        self.complete_after = from;
    }

    /// Nothing up to `from` can be replayed any more (a stretch of the
    /// stream before it was never read).
    pub fn skip_to(&mut self, from: Position) {
        self.complete_after = self.complete_after.max(from);
    }

    /// Records the signal at `seq` with the frame that was sent for it.
    pub fn push_signal(
        &mut self,
        seq: Position,
        channel: &str,
        entity: Option<&str>,
        frame: &Frame,
    ) {
        self.push(Entry::Signal {
            seq,
            at: Instant::now(),
            channel: channel.to_owned(),
            entity: entity.map(str::to_owned),
            frame: frame.clone(),
        });
    }

    /// Records a gap at `seq`: signals on `channel` (or on every channel,
    /// if `None`) may have been missed there.
    pub fn push_gap(&mut self, seq: Position, channel: Option<&str>) {
        self.push(Entry::Gap {
            seq,
            at: Instant::now(),
            channel: channel.map(str::to_owned),
        });
    }

    fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
        self.evict();
    }

    fn evict(&mut self) {
        let now = Instant::now();
        while self.entries.len() > self.max_len
            || self
                .entries
                .front()
                .is_some_and(|e| now.duration_since(e.at()) > self.max_age)
        {
            if let Some(gone) = self.entries.pop_front() {
                self.complete_after = self.complete_after.max(gone.seq());
            }
        }
    }

    /// The frames after `after` (up to `current`, the node's latest seq) on
    /// `topics`, in order; `None` when completeness cannot be proven: the
    /// history no longer reaches back to `after`, `after` is from the future,
    /// or a gap lies in between on one of the topics' channels.
    pub fn replay(
        &mut self,
        after: Position,
        current: Position,
        topics: &[Topic],
    ) -> Option<Vec<Frame>> {
        self.evict();
        if after > current {
            return None;
        }
        if after == current {
            return Some(Vec::new());
        }
        if after < self.complete_after {
            return None;
        }
        let mut frames = Vec::new();
        for entry in self.entries.iter().filter(|e| e.seq() > after) {
            match entry {
                Entry::Gap { channel, .. } => {
                    if topics
                        .iter()
                        .any(|t| channel.as_deref().is_none_or(|c| c == t.channel))
                    {
                        return None;
                    }
                }
                Entry::Signal {
                    channel,
                    entity,
                    frame,
                    ..
                } => {
                    if topics.iter().any(|t| t.wants(channel, entity.as_deref())) {
                        frames.push(frame.clone());
                    }
                }
            }
        }
        Some(frames)
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> Position {
        Position::counter(n)
    }

    fn topic(channel: &str, entity: Option<&str>) -> Topic {
        Topic {
            channel: channel.into(),
            entity: entity.map(Into::into),
        }
    }

    fn filled(max_len: usize) -> History {
        let mut h = History::new(max_len, Duration::from_secs(60));
        h.push_signal(c(1), "order", Some("1"), &Frame::from("o1"));
        h.push_signal(c(2), "contact", Some("9"), &Frame::from("c9"));
        h.push_signal(c(3), "order", Some("2"), &Frame::from("o2"));
        h.push_signal(c(4), "order", None, &Frame::from("o*"));
        h
    }

    fn texts(frames: Option<Vec<Frame>>) -> Option<Vec<String>> {
        frames.map(|f| {
            f.iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
    }

    #[test]
    fn replays_what_came_after_on_the_topics_in_order() {
        let mut h = filled(10);
        let order = [topic("order", None)];
        assert_eq!(
            texts(h.replay(c(0), c(4), &order)),
            Some(vec!["o1".into(), "o2".into(), "o*".into()])
        );
        assert_eq!(
            texts(h.replay(c(1), c(4), &order)),
            Some(vec!["o2".into(), "o*".into()])
        );
        assert_eq!(texts(h.replay(c(4), c(4), &order)), Some(vec![]));
        // An entity topic gets its entity and channel-wide signals.
        let one = [topic("order", Some("1"))];
        assert_eq!(
            texts(h.replay(c(0), c(4), &one)),
            Some(vec!["o1".into(), "o*".into()])
        );
    }

    #[test]
    fn cannot_replay_what_was_evicted_or_is_from_the_future() {
        let mut h = filled(2);
        let order = [topic("order", None)];
        assert_eq!(h.len(), 2);
        assert_eq!(
            texts(h.replay(c(2), c(4), &order)),
            Some(vec!["o2".into(), "o*".into()])
        );
        assert_eq!(h.replay(c(1), c(4), &order), None);
        assert_eq!(h.replay(c(5), c(4), &order), None);
    }

    #[test]
    fn a_gap_on_a_requested_channel_forbids_replay() {
        let mut h = filled(10);
        h.push_gap(c(5), Some("contact"));
        h.push_signal(c(6), "order", Some("3"), &Frame::from("o3"));
        assert_eq!(
            texts(h.replay(c(4), c(6), &[topic("order", None)])),
            Some(vec!["o3".into()])
        );
        assert_eq!(h.replay(c(4), c(6), &[topic("contact", None)]), None);
        h.push_gap(c(7), None);
        assert_eq!(h.replay(c(4), c(7), &[topic("order", None)]), None);
        assert_eq!(
            texts(h.replay(c(7), c(7), &[topic("order", None)])),
            Some(vec![])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_entries_age_out() {
        let mut h = History::new(100, Duration::from_secs(60));
        h.push_signal(c(1), "order", None, &Frame::from("a"));
        tokio::time::advance(Duration::from_secs(61)).await;
        h.push_signal(c(2), "order", None, &Frame::from("b"));
        assert_eq!(h.len(), 1);
        assert_eq!(h.replay(c(0), c(2), &[topic("order", None)]), None);
        assert_eq!(
            texts(h.replay(c(1), c(2), &[topic("order", None)])),
            Some(vec!["b".into()])
        );
    }
}
