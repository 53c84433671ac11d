//! Start-up and exit of the binary as an operator sees them, with no
//! DATABASE_URL (so on a private Postgres): checks that can fail cheaply fail
//! before any cluster is started; SIGTERM at any point of start-up exits 0 and
//! leaves nothing behind; every file of the private cluster is owner-only.
//!
//! Each test gives the binary a TMPDIR of its own, so what it leaves behind
//! can be listed.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::binary::{Exit, Launch, Process};
use nix::sys::signal::Signal;

/// How often file-system conditions are polled: there is no event to wait on
/// for another process creating a file, so the tests look every few ms
/// (always within a deadline).
const POLL: Duration = Duration::from_millis(2);

/// A TMPDIR for one run of the binary. Others may traverse it (not list it):
/// as root, Postgres runs as the `postgres` user, which must reach its
/// directory inside.
fn private_tmpdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgbroadcast-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

/// `pgbroadcast serve <args>` with no DATABASE_URL, TMPDIR set to `tmp`.
fn spawn_serve(tmp: &Path, args: &[&str]) -> Process {
    Launch::new(&["serve"])
        .args(args)
        .env_remove("DATABASE_URL")
        // No authentication, whatever the environment of the tests says.
        .env_remove("PGBROADCAST_JWT_SECRET")
        .env_remove("PGBROADCAST_JWT_PUBLIC_KEYS")
        .env_remove("PGBROADCAST_INSECURE")
        .env("TMPDIR", tmp)
        .spawn()
}

/// Polls `condition` until it holds (see [`POLL`]); panics after the test's
/// patience, or if `serve` exits first.
async fn until(serve: &mut Process, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::PATIENCE;
    while !condition() {
        if let Some(status) = serve.try_wait() {
            panic!(
                "serve exited ({status}) before {what}: {:?}",
                serve.printed()
            );
        }
        assert!(Instant::now() < deadline, "no {what} in time");
        tokio::time::sleep(POLL).await;
    }
}

/// The one entry in `tmp`, once there is one: the private cluster's directory.
fn cluster_dir(tmp: &Path) -> Option<PathBuf> {
    let found = entries(tmp);
    assert!(found.len() <= 1, "more than one entry in TMPDIR: {found:?}");
    found.into_iter().next()
}

/// Live processes whose command line, working directory or environment
/// mention `dir`: initdb, the Postgres it runs, the guardian, the postmaster
/// and its children all do.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.as_os_str().as_bytes();
    let contains = |haystack: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let proc = entry.path();
        if !entry.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
            continue;
        };
        // The state follows the parenthesised command name; zombies are gone but for their exit status.
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
        let cwd = std::fs::read_link(proc.join("cwd")).unwrap_or_default();
        if contains(&cmdline) || contains(&environ) || cwd.starts_with(dir) {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// After the exit: TMPDIR is empty at once, and no process of the cluster
/// outlives it by more than a bounded wait (a killed process takes a moment to go).
async fn assert_nothing_left(tmp: &Path, cluster: &Path, exit: &Exit) {
    assert!(
        entries(tmp).is_empty(),
        "left behind: {:?}; {exit:?}",
        entries(tmp)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_using(cluster);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where in start-up the signal arrives, each recognized by what can be seen.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// The cluster's directory exists in TMPDIR (initdb not yet started, or just).
    DirCreated,
    /// `data/PG_VERSION` exists: initdb is running.
    InitdbRunning,
    /// `postgres.log` exists: Postgres has been started and is coming up.
    PostgresStarting,
    /// "private Postgres" is printed: the SQL kit is being applied.
    ClusterPrinted,
    /// "listening on" is printed: start-up is over.
    Listening,
}

async fn signal_at(point: Point, signal: Signal) {
    let tmp = private_tmpdir();
    let mut serve = spawn_serve(tmp.path(), &["--listen", "127.0.0.1:0"]);
    let file = |name: &'static str| {
        let tmp = tmp.path().to_owned();
        move || cluster_dir(&tmp).is_some_and(|dir| dir.join(name).exists())
    };
    match point {
        Point::DirCreated => {
            let tmp = tmp.path().to_owned();
            until(&mut serve, "cluster directory", || {
                cluster_dir(&tmp).is_some()
            })
            .await
        }
        Point::InitdbRunning => until(&mut serve, "data/PG_VERSION", file("data/PG_VERSION")).await,
        Point::PostgresStarting => until(&mut serve, "postgres.log", file("postgres.log")).await,
        Point::ClusterPrinted => drop(serve.printed_after("private Postgres").await),
        Point::Listening => drop(serve.printed_after("listening on").await),
    }
    let cluster = cluster_dir(tmp.path()).unwrap();
    let exit = serve.stop_with(signal).await;
    assert_eq!(exit.status.code(), Some(0), "{point:?}, {signal}: {exit:?}");
    assert_nothing_left(tmp.path(), &cluster, &exit).await;
    if matches!(point, Point::DirCreated | Point::InitdbRunning) {
        // More than a second of start-up was still ahead: the signal cut it short.
        assert!(
            !exit.stdout.iter().any(|l| l.starts_with("listening on")),
            "{exit:?}"
        );
    }
}

#[tokio::test]
async fn sigterm_when_the_cluster_dir_appears_exits_0_and_leaves_nothing() {
    signal_at(Point::DirCreated, Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigterm_while_initdb_runs_exits_0_and_leaves_nothing() {
    signal_at(Point::InitdbRunning, Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigterm_while_postgres_starts_exits_0_and_leaves_nothing() {
    signal_at(Point::PostgresStarting, Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigterm_while_migrating_exits_0_and_leaves_nothing() {
    signal_at(Point::ClusterPrinted, Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigterm_after_start_up_exits_0_and_leaves_nothing() {
    signal_at(Point::Listening, Signal::SIGTERM).await;
}

/// Ctrl-C in a terminal: SIGINT to the foreground process group, which is
/// pgbroadcast alone (initdb and Postgres run in groups of their own).
#[tokio::test]
async fn sigint_while_initdb_runs_exits_0_and_leaves_nothing() {
    signal_at(Point::InitdbRunning, Signal::SIGINT).await;
}

/// Entries under `dir` (itself included) that group or others may access
/// in any way, with their modes.
fn not_owner_only(dir: &Path, walked: &mut Vec<PathBuf>) -> Vec<String> {
    let mut bad = Vec::new();
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return bad; // removed meanwhile (a temporary file of Postgres)
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bad.push(format!("{} {:o}", dir.display(), mode & 0o7777));
    }
    walked.push(dir.to_owned());
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            bad.extend(not_owner_only(&entry.path(), walked));
        }
    }
    bad
}

#[tokio::test]
async fn the_private_cluster_is_readable_by_its_owner_only() {
    let tmp = private_tmpdir();
    let serve = spawn_serve(tmp.path(), &["--listen", "127.0.0.1:0"]);
    // During start-up: the directory, and the password file for as long as it
    // exists (initdb reads it, then it is removed). See POLL.
    let mut bad = std::collections::BTreeSet::new();
    let mut saw_pwfile = false;
    let deadline = Instant::now() + common::PATIENCE;
    while !serve.has_printed("listening on") {
        assert!(Instant::now() < deadline, "no start within the patience");
        if let Some(dir) = cluster_dir(tmp.path()) {
            let pwfile = dir.join("pwfile");
            for path in [&dir, &pwfile] {
                if let Ok(meta) = std::fs::metadata(path) {
                    let mode = meta.permissions().mode() & 0o7777;
                    saw_pwfile |= path == &pwfile;
                    if mode & 0o077 != 0 {
                        bad.insert(format!("{} {mode:o} during start-up", path.display()));
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(saw_pwfile, "the password file was never seen");

    // While serving: everything under the directory.
    let cluster = cluster_dir(tmp.path()).unwrap();
    let mut walked = Vec::new();
    bad.extend(not_owner_only(&cluster, &mut walked));
    for expected in ["data/PG_VERSION", "postgres.log", "sock"] {
        assert!(
            walked.contains(&cluster.join(expected)),
            "{expected} not found"
        );
    }
    assert!(
        walked
            .iter()
            .any(|p| p.starts_with(cluster.join("sock"))
                && p.to_string_lossy().contains(".s.PGSQL.")),
        "no socket in {walked:?}"
    );
    assert!(bad.is_empty(), "not owner-only: {bad:#?}");

    let exit = serve.terminate().await;
    assert!(exit.status.success(), "{exit:?}");
    assert_nothing_left(tmp.path(), &cluster, &exit).await;
}

/// Runs `pgbroadcast serve <args>` to its exit (expected soon), watching TMPDIR
/// meanwhile: returns what it printed and every entry TMPDIR ever had (see POLL).
async fn serve_expecting_refusal(tmp: &Path, args: &[&str]) -> (Exit, Vec<PathBuf>, Duration) {
    let started = Instant::now();
    let mut serve = spawn_serve(tmp, args);
    let mut seen: Vec<PathBuf> = Vec::new();
    loop {
        for entry in entries(tmp) {
            if !seen.contains(&entry) {
                seen.push(entry);
            }
        }
        if serve.try_wait().is_some() {
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "serve {args:?} is still running"
        );
        tokio::time::sleep(POLL).await;
    }
    let elapsed = started.elapsed();
    (serve.wait().await, seen, elapsed)
}

/// Checks that fail at once: no Postgres was started, nothing was left, no time was lost.
fn assert_refused_before_any_cluster(tmp: &Path, exit: &Exit, seen: &[PathBuf], elapsed: Duration) {
    assert!(!exit.status.success(), "{exit:?}");
    assert!(
        !exit.stdout.iter().any(|l| l.contains("private Postgres")),
        "a cluster was started: {exit:?}"
    );
    assert!(seen.is_empty(), "TMPDIR had {seen:?}");
    assert!(entries(tmp).is_empty(), "left behind: {:?}", entries(tmp));
    // initdb alone takes longer than this; the checks themselves take milliseconds.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn a_busy_port_is_refused_before_any_postgres_is_started() {
    let tmp = private_tmpdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (exit, seen, elapsed) = serve_expecting_refusal(tmp.path(), &["--listen", &addr]).await;
    assert!(
        exit.log.contains(&format!("cannot listen on {addr}")),
        "{exit:?}"
    );
    assert_refused_before_any_cluster(tmp.path(), &exit, &seen, elapsed);
}

#[tokio::test]
async fn a_public_address_without_authentication_is_refused_before_any_postgres_is_started() {
    let tmp = private_tmpdir();
    let (exit, seen, elapsed) =
        serve_expecting_refusal(tmp.path(), &["--listen", "0.0.0.0:0"]).await;
    assert!(
        exit.log
            .contains("refusing to serve 0.0.0.0:0 without authentication"),
        "{exit:?}"
    );
    assert_refused_before_any_cluster(tmp.path(), &exit, &seen, elapsed);
}
