//! The delivery checker: what a client received against the ground truth
//! (the committed writes, in commit order). Fails on any gap not covered by
//! a `resync`, any duplicate, any out-of-order or phantom signal — except
//! that after a `resume_unavailable` resync (the client came back to a node
//! that cannot replay, e.g. another node), signals it already saw may come
//! again: that node's live stream can run behind the old one's, and the
//! client has started over anyway.
//!
//! A `resync` tells the client to refetch: it covers what the client missed
//! before it, not what commits after it. So it covers the signals missing
//! between the last one delivered before it and the next one delivered after
//! it, and — when the recording says when it was received
//! ([`Seen::Committed`]) — only those committed by then. A resync after the
//! last delivered signal covers the missing tail only when the recording
//! says when it was received: otherwise nothing bounds it.

use std::collections::BTreeSet;

/// What a client saw on the checked channel, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Signal(i64),
    Resync(String),
    /// Recorded right after a `resync`: when it was received, no write after
    /// `n` had committed (so it cannot cover a later one).
    Committed(i64),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub delivered: usize,
    pub resyncs: usize,
    /// Committed signals the client did not get, each covered by a resync.
    pub covered: usize,
    /// Signals seen again after a `resume_unavailable` resync.
    pub redelivered: usize,
}

/// What the resyncs since the last delivered signal cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// No resync since the last delivered signal: nothing.
    Nothing,
    /// Up to the next delivered signal, however late the writes.
    UntilNext,
    /// Up to the next delivered signal, and no write after this one.
    UpTo(i64),
}

/// Checks `seen` against `truth` (sorted, in commit order). With `window`,
/// only truth from the first signal seen up to the last one seen is
/// expected (a client that came and went); otherwise all of it.
pub fn check(seen: &[Seen], truth: &[i64], window: bool) -> Result<Report, String> {
    let truth_set: BTreeSet<i64> = truth.iter().copied().collect();
    let mut report = Report::default();
    let mut last: Option<i64> = None;
    let mut cover = Cover::Nothing;
    let mut may_repeat = false;
    let first_seen = seen.iter().find_map(|s| match s {
        Seen::Signal(n) => Some(*n),
        _ => None,
    });
    let lower = if window { first_seen } else { None };
    let missing_between = |after: Option<i64>, before: Option<i64>| -> Vec<i64> {
        truth_set
            .iter()
            .copied()
            .filter(|t| lower.is_none_or(|l| *t >= l))
            .filter(|t| after.is_none_or(|a| *t > a) && before.is_none_or(|b| *t < b))
            .collect()
    };
    // Whether `cover` covers `missing`; the error names what it does not.
    let covers = |cover: Cover, missing: &[i64], tail: bool| -> Result<(), String> {
        let Some(first) = missing.first() else {
            return Ok(());
        };
        match cover {
            Cover::Nothing => Err(format!(
                "{} signal(s) from {first} on missing without a resync",
                missing.len()
            )),
            Cover::UntilNext if tail => Err(format!(
                "{} signal(s) from {first} on missing after the last delivered one, \
                 behind a resync with nothing to say when it was received",
                missing.len()
            )),
            Cover::UntilNext => Ok(()),
            Cover::UpTo(bound) => match missing.iter().find(|t| **t > bound) {
                Some(late) => Err(format!(
                    "signal {late} committed after the resync was received (writes up to {bound} \
                     then) and was never delivered"
                )),
                None => Ok(()),
            },
        }
    };
    for (i, s) in seen.iter().enumerate() {
        match s {
            Seen::Resync(reason) => {
                report.resyncs += 1;
                cover = Cover::UntilNext;
                may_repeat |= reason == "resume_unavailable";
            }
            Seen::Committed(bound) => {
                if cover == Cover::Nothing {
                    return Err(format!(
                        "frame {i}: a mark of what committed, after no resync"
                    ));
                }
                cover = Cover::UpTo(*bound);
            }
            Seen::Signal(n) => {
                if !truth_set.contains(n) {
                    return Err(format!("frame {i}: signal {n} was never committed"));
                }
                if let Some(l) = last
                    && *n <= l
                {
                    if may_repeat {
                        report.redelivered += 1;
                        continue;
                    }
                    return Err(format!(
                        "frame {i}: signal {n} after {l}: duplicate or out of order"
                    ));
                }
                may_repeat = false;
                let missing = missing_between(last, Some(*n));
                covers(cover, &missing, false)
                    .map_err(|e| format!("frame {i}: between {last:?} and {n}: {e}"))?;
                report.covered += missing.len();
                report.delivered += 1;
                last = Some(*n);
                cover = Cover::Nothing;
            }
        }
    }
    if !window {
        let missing = missing_between(last, None);
        covers(cover, &missing, true).map_err(|e| format!("after {last:?}: {e}"))?;
        report.covered += missing.len();
    }
    Ok(report)
}
