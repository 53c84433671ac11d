//! The server process as the kernel sees it: CPU time and resident memory,
//! read from `/proc/<pid>` (Linux).

use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone.
pub fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Reading {
        cpu: cpu_time(&stat)?,
        rss: rss_bytes(&status)?,
    })
}

/// CPU time the whole machine has been busy (every core, all but idle and
/// iowait), from `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    busy_time(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn busy_time(stat: &str) -> Option<Duration> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(Duration::from_secs_f64(
        busy as f64 / clock_ticks_per_second() as f64,
    ))
}

/// utime + stime (fields 14 and 15), after the `(comm)` field, which may hold spaces.
fn cpu_time(stat: &str) -> Option<Duration> {
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (pg broadcast) S 1 4242 4242 0 -1 4194560 1795 0 0 0 250 50 0 0 20 0 9 0 3358 1000 500";
        let ticks = clock_ticks_per_second() as f64;
        assert_eq!(cpu_time(stat), Some(Duration::from_secs_f64(300.0 / ticks)));
        assert_eq!(
            rss_bytes("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
    }

    #[test]
    fn parses_proc_stat() {
        let stat = "cpu  100 5 50 1000 30 1 2 3 7 0\ncpu0 50 2 25 500 15 0 1 1 0 0\n";
        let ticks = clock_ticks_per_second() as f64;
        assert_eq!(
            busy_time(stat),
            Some(Duration::from_secs_f64(161.0 / ticks))
        );
        assert!(machine_busy().is_some());
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap();
        assert!(me.rss > 0);
    }
}
