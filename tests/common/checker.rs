//! The delivery checker: what a client received against the ground truth
//! (the committed writes, in commit order). Fails on any gap not covered by
//! a `resync`, any duplicate, any out-of-order or phantom signal — except
//! that after a `resume_unavailable` resync (the client came back to a node
//! that cannot replay, e.g. another node), signals it already saw may come
//! again: that node's live stream can run behind the old one's, and the
//! client has started over anyway.

use std::collections::BTreeSet;

/// What a client saw on the checked channel, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Signal(i64),
    Resync(String),
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

/// Checks `seen` against `truth` (sorted, in commit order). With `window`,
/// only truth from the first signal seen up to the last one seen is
/// expected (a client that came and went); otherwise all of it.
pub fn check(seen: &[Seen], truth: &[i64], window: bool) -> Result<Report, String> {
    let truth_set: BTreeSet<i64> = truth.iter().copied().collect();
    let mut report = Report::default();
    let mut last: Option<i64> = None;
    let mut resync_since_last = false;
    let mut may_repeat = false;
    let first_seen = seen.iter().find_map(|s| match s {
        Seen::Signal(n) => Some(*n),
        Seen::Resync(_) => None,
    });
    let lower = if window { first_seen } else { None };
    let missing_between = |after: Option<i64>, before: Option<i64>| -> usize {
        truth_set
            .iter()
            .filter(|t| lower.is_none_or(|l| **t >= l))
            .filter(|t| after.is_none_or(|a| **t > a) && before.is_none_or(|b| **t < b))
            .count()
    };
    for (i, s) in seen.iter().enumerate() {
        match s {
            Seen::Resync(reason) => {
                report.resyncs += 1;
                resync_since_last = true;
                may_repeat |= reason == "resume_unavailable";
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
                if missing > 0 && !resync_since_last {
                    return Err(format!(
                        "frame {i}: {missing} signal(s) between {last:?} and {n} missing without a resync"
                    ));
                }
                report.covered += missing;
                report.delivered += 1;
                last = Some(*n);
                resync_since_last = false;
            }
        }
    }
    if !window {
        let missing = missing_between(last, None);
        if missing > 0 && !resync_since_last {
            return Err(format!(
                "{missing} signal(s) after {last:?} missing without a resync"
            ));
        }
        report.covered += missing;
    }
    Ok(report)
}
