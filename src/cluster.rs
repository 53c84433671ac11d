//! A private Postgres cluster: `initdb` into a temp dir, its own port and
//! socket directory, removed when the [`Cluster`] is dropped. `serve` uses it
//! when no `DATABASE_URL` is given; the integration tests use it too.
//!
//! Postgres runs under a small guardian shell whose stdin is a pipe from this
//! process. When the pipe closes — on drop, on exit, even on `SIGKILL` — the
//! guardian stops Postgres (fast shutdown) and deletes the directory, so no
//! cluster outlives its owner.
//!
//! Everything in the directory is accessible to its owner only (directories
//! 0700, files 0600, the socket too): the password file initdb reads is
//! created that way, not restricted afterwards.
//!
//! [`Builder::start_cancellable`] can be stopped from another thread while it
//! runs (a signal during `serve`'s start-up): it stops initdb or Postgres and
//! removes the directory before returning.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid, User};

/// Why a private cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `initdb`/`postgres` executables were found.
    #[error(
        "no PostgreSQL server binaries found (looked in $PGBROADCAST_PG_BIN, /usr/lib/postgresql/*/bin, `pg_config --bindir`, $PATH); install the `postgresql` package or set PGBROADCAST_PG_BIN"
    )]
    BinariesNotFound,
    /// Running as root with no user (named here) to run Postgres as.
    #[error(
        "running as root, and initdb refuses to run as root; no user {0:?} to run Postgres as (create one, or set PGBROADCAST_PG_USER)"
    )]
    NoUnprivilegedUser(String),
    /// A step such as `initdb` failed.
    #[error("{step} failed: {detail}")]
    Command {
        /// The step that failed.
        step: &'static str,
        /// Its exit status and output.
        detail: String,
    },
    /// Postgres did not accept connections in time; holds the wait and its log.
    #[error("postgres did not become ready within {0:?}; log:\n{1}")]
    NotReady(Duration, String),
    /// The start was cancelled (shutdown came first).
    #[error("start of the private cluster cancelled")]
    Cancelled,
    /// A file, directory or process could not be used.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Settings for a private cluster; see [`Cluster::builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    settings: Vec<(String, String)>,
}

impl Builder {
    /// A `postgres -c name=value` setting, e.g. `("fsync", "off")` for tests.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs `initdb` and starts the server; blocks until it accepts connections.
    pub fn start(self) -> Result<Cluster, Error> {
        self.start_cancellable(&Cancel::default())
    }

    /// [`Builder::start`], but returns [`Error::Cancelled`] soon after
    /// `cancel` is triggered, having stopped initdb or Postgres and removed
    /// the directory.
    pub fn start_cancellable(self, cancel: &Cancel) -> Result<Cluster, Error> {
        let bin = find_binaries().ok_or(Error::BinariesNotFound)?;
        let owner = unprivileged_owner()?;
        cancel.check()?;
        let base = tempfile::Builder::new()
            .prefix("pgbroadcast-pg-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?
            .keep();
        // From here on, dropping `cluster` (on an error, a cancel, a panic)
        // removes the directory.
        let mut cluster = Cluster {
            bin,
            base,
            owner,
            password: format!("{:032x}", rand::random::<u128>()),
            port: 0,
            settings: self.settings,
            guardian: None,
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&cluster.base, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        cluster.initdb(cancel)?;
        cluster.start_with(cancel)?;
        Ok(cluster)
    }
}

/// Stops a [`Builder::start_cancellable`] running on another thread.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the start to stop; it returns [`Error::Cancelled`] soon after.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

/// A running (or stopped) private Postgres cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    base: PathBuf,
    owner: Option<(Uid, Gid)>,
    /// The superuser's password: other local users must not get in.
    password: String,
    port: u16,
    settings: Vec<(String, String)>,
    guardian: Option<Guardian>,
}

#[derive(Debug)]
struct Guardian {
    child: Child,
    stdin: ChildStdin,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Settings for a cluster, to be adjusted and then started.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the data directory, the socket and `postgres.log`.
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// Connection URL for `dbname`, as the superuser `postgres` with its password.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{dbname}",
            self.password, self.port
        )
    }

    /// Connection settings for `dbname`.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(&self.password)
            .dbname(dbname);
        config
    }

    /// Runs one of the server's tools (e.g. `pg_resetwal`) as the cluster's
    /// owner with `-D <data dir>` appended; the server should be stopped for
    /// tools that need that.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args).arg("-D").arg(self.base.join("data"));
        self.as_owner(&mut cmd);
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(Error::Command {
                step: "tool",
                detail: format!("{tool}: {}", String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server and keeps the data; [`Cluster::start`] brings it back on the same port.
    pub fn stop(&mut self) -> Result<(), Error> {
        if let Some(mut guardian) = self.guardian.take() {
            // "keep": the guardian stops Postgres but leaves the directory.
            writeln!(guardian.stdin, "keep")?;
            drop(guardian.stdin);
            guardian.child.wait()?;
        }
        Ok(())
    }

    /// Starts the server (again). The first start picks a free port; restarts reuse it.
    pub fn start(&mut self) -> Result<(), Error> {
        self.start_with(&Cancel::default())
    }

    fn start_with(&mut self, cancel: &Cancel) -> Result<(), Error> {
        if self.guardian.is_some() {
            return Ok(());
        }
        let fixed_port = self.port != 0;
        for _ in 0..5 {
            if !fixed_port {
                self.port = free_port()?;
            }
            match self.spawn_and_wait(cancel) {
                Err(Error::NotReady(_, log)) if !fixed_port && log.contains("could not bind") => {}
                other => return other,
            }
        }
        Err(Error::Command {
            step: "postgres",
            detail: "no free port found after 5 attempts".into(),
        })
    }

    fn initdb(&self, cancel: &Cancel) -> Result<(), Error> {
        let pwfile = self.base.join("pwfile");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)?
            .write_all(self.password.as_bytes())?;
        self.give_to_owner(&pwfile)?;
        let mut cmd = Command::new(self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(self.base.join("data"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        self.as_owner(&mut cmd);
        let result = run_cancellable(cmd, cancel);
        std::fs::remove_file(&pwfile)?;
        let (success, stderr) = result?;
        if !success {
            return Err(Error::Command {
                step: "initdb",
                detail: stderr,
            });
        }
        let sock = self.base.join("sock");
        std::fs::DirBuilder::new().mode(0o700).create(&sock)?;
        self.give_to_owner(&sock)?;
        Ok(())
    }

    fn give_to_owner(&self, path: &Path) -> std::io::Result<()> {
        match self.owner {
            Some((uid, gid)) => {
                std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            }
            None => Ok(()),
        }
    }

    fn spawn_and_wait(&mut self, cancel: &Cancel) -> Result<(), Error> {
        cancel.check()?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(GUARDIAN)
            .arg("pgbroadcast-pg-guardian")
            .arg(self.bin.join("postgres"))
            .arg(&self.base)
            .arg(self.port.to_string());
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            // Both transports work out of the box (the `wal` one decodes the WAL).
            ("wal_level", "logical"),
            ("max_connections", "300"),
            ("unix_socket_permissions", "0700"),
        ];
        for (name, value) in defaults
            .iter()
            .copied()
            .chain(self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a terminal's Ctrl-C reaches only us, and we
            // stop Postgres after our own connections are closed.
            .process_group(0);
        self.as_owner(&mut cmd);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        self.guardian = Some(Guardian { child, stdin });

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if cancel.is_cancelled() {
                // EOF without "keep": the guardian stops Postgres and removes
                // what it can of the directory; dropping the cluster the rest.
                if let Some(mut guardian) = self.guardian.take() {
                    drop(guardian.stdin);
                    let _ = guardian.child.wait();
                }
                return Err(Error::Cancelled);
            }
            if self.postmaster_ready() {
                return Ok(());
            }
            let exited = self
                .guardian
                .as_mut()
                .map(|g| g.child.try_wait())
                .transpose()?
                .flatten()
                .is_some();
            if exited || Instant::now() > deadline {
                let log = self.log_tail();
                if let Some(mut guardian) = self.guardian.take() {
                    let _ = writeln!(guardian.stdin, "keep");
                    drop(guardian.stdin);
                    let _ = guardian.child.wait();
                }
                return Err(Error::NotReady(READY_TIMEOUT, log));
            }
            // Polling an external process's status file; there is no event to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The postmaster writes its status ("ready") as the last line of postmaster.pid.
    fn postmaster_ready(&self) -> bool {
        std::fs::read_to_string(self.base.join("data/postmaster.pid"))
            .map(|pid| pid.lines().nth(7).is_some_and(|s| s.trim() == "ready"))
            .unwrap_or(false)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.base.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn as_owner(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // EOF on its stdin: the guardian stops Postgres and removes the directory.
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin);
            let _ = guardian.child.wait();
        }
        // What is left, if anything: the directory itself when the guardian
        // runs as another user and may not write to TMPDIR, or all of it when
        // no guardian ran.
        remove_all(&self.base);
    }
}

/// Removes `dir` and everything in it. A process killed a moment ago may
/// still be finishing a file operation in it, so a failure is retried for a
/// short while before it is logged.
fn remove_all(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "could not remove the private cluster");
                return;
            }
        }
    }
}

/// Runs `cmd` (in a process group of its own) to its end, or until `cancel`:
/// then the whole group is killed (initdb and the Postgres processes it
/// runs), and this returns [`Error::Cancelled`] once none of them can touch
/// the directory any more. Returns whether it succeeded, and its stderr.
fn run_cancellable(mut cmd: Command, cancel: &Cancel) -> Result<(bool, String), Error> {
    cancel.check()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group: a terminal's Ctrl-C reaches only us, and a cancel
        // reaches the processes initdb starts as well.
        .process_group(0);
    let mut child = cmd.spawn()?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Ends when every process holding the pipe has exited: initdb and the
    // Postgres processes it starts (they inherit its stderr).
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if cancel.is_cancelled() && !killed {
            // The child is not reaped yet, so its group id is still its own.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            killed = true;
        }
        // Waiting for either the child's exit or a cancel, which share no
        // event to wait on: both are polled.
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().unwrap_or_default();
    if killed {
        return Err(Error::Cancelled);
    }
    Ok((status.success(), stderr))
}

/// `$1` postgres binary, `$2` base dir, `$3` port, then `-c name=value` pairs.
const GUARDIAN: &str = r#"
postgres=$1 base=$2 port=$3
shift 3
umask 077
"$postgres" -D "$base/data" -p "$port" -k "$base/sock" "$@" >>"$base/postgres.log" 2>&1 &
pg=$!
trap '' INT TERM HUP
read -r cmd
# SIGINT: fast shutdown. A command started with & by sh begins with SIGINT
# ignored, until Postgres installs its handlers early in its start; SIGTERM
# stops it in that window (its default action), and is a no-op once a fast
# shutdown is under way (Postgres only escalates shutdown modes).
kill -INT "$pg" 2>/dev/null
kill -TERM "$pg" 2>/dev/null
wait "$pg"
if [ "$cmd" != keep ]; then rm -rf "$base"; fi
"#;

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// When run as root, the user Postgres runs as (initdb refuses root).
fn unprivileged_owner() -> Result<Option<(Uid, Gid)>, Error> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let name = std::env::var("PGBROADCAST_PG_USER").unwrap_or_else(|_| "postgres".into());
    match User::from_name(&name) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some((user.uid, user.gid))),
        _ => Err(Error::NoUnprivilegedUser(name)),
    }
}

/// Finds the directory holding `initdb` and `postgres`.
pub fn find_binaries() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PGBROADCAST_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    from_pg_config.filter(|d| has_server(d)).or_else(|| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .find(|d| has_server(d))
    })
}
