//! The real binary, run as an operator runs it. What it prints (stdout) and
//! its log (stderr) are read line by line in the background from the start,
//! so tests can read them or wait for a line, and a later print never meets
//! a closed pipe.

use std::ops::Deref;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::PATIENCE;

pub const BIN: &str = env!("CARGO_BIN_EXE_pgbroadcast");

/// How to start the binary: a command line and its environment.
pub struct Launch {
    command: Command,
}

impl Launch {
    /// `pgbroadcast <args>`, in the tests' own environment.
    pub fn new(args: &[&str]) -> Launch {
        let mut command = Command::new(BIN);
        command.args(args);
        Launch { command }
    }

    /// `sh -c script` (for `ulimit` and the like); the script must `exec` the binary.
    pub fn via_shell(script: &str) -> Launch {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        Launch { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Launch {
        self.command.env(name, value);
        self
    }

    pub fn envs(mut self, envs: &[(&str, &str)]) -> Launch {
        self.command.envs(envs.iter().copied());
        self
    }

    pub fn env_remove(mut self, name: &str) -> Launch {
        self.command.env_remove(name);
        self
    }

    /// Against this database (`DATABASE_URL`).
    pub fn database(self, url: &str) -> Launch {
        self.env("DATABASE_URL", url)
    }

    /// Starts it; killed when the [`Process`] is dropped.
    pub fn spawn(mut self) -> Process {
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the binary");
        let stdout = Pipe::read(child.stdout.take().unwrap());
        let log = Pipe::read(child.stderr.take().unwrap());
        Process { child, stdout, log }
    }

    /// Runs it to its exit (within the test's patience).
    pub async fn run(self) -> Exit {
        self.spawn().wait().await
    }

    /// Starts `serve` or `demo` and waits until it is ready (the LISTEN is
    /// in effect); see [`Served`].
    pub async fn serve(self) -> Served {
        let process = self.spawn();
        let addr = process
            .printed_after("listening on http://")
            .await
            .split_whitespace()
            .next()
            .unwrap()
            // Served on every address (`--listen 0.0.0.0:…`): reached over loopback.
            .replace("0.0.0.0:", "127.0.0.1:");
        let served = Served { process, addr };
        served.wait_ready().await;
        served
    }
}

/// What has been read from one pipe so far.
#[derive(Default)]
struct Text {
    lines: Vec<String>,
    /// End-of-file: the process (and any child holding the pipe) closed it.
    ended: bool,
}

/// One of the process's pipes, read line by line by a task of its own;
/// waiters are woken at every line and at end-of-file.
struct Pipe(watch::Receiver<Text>);

impl Pipe {
    fn read(pipe: impl AsyncRead + Unpin + Send + 'static) -> Pipe {
        let (tx, rx) = watch::channel(Text::default());
        tokio::spawn(async move {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match pipe.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        // As `lines()` would, but bytes that are not UTF-8 are kept (replaced), not an end.
                        let text = String::from_utf8_lossy(&line);
                        let text = text.strip_suffix('\n').unwrap_or(&text);
                        let text = text.strip_suffix('\r').unwrap_or(text).to_owned();
                        tx.send_modify(|t| t.lines.push(text));
                    }
                }
            }
            tx.send_modify(|t| t.ended = true);
        });
        Pipe(rx)
    }

    fn lines(&self) -> Vec<String> {
        self.0.borrow().lines.clone()
    }

    fn text(&self) -> String {
        self.0
            .borrow()
            .lines
            .iter()
            .fold(String::new(), |mut text, line| {
                text.push_str(line);
                text.push('\n');
                text
            })
    }

    /// The first line for which `wanted` holds, waited for within the
    /// test's patience; if there is none, why not.
    async fn line(&self, wanted: impl Fn(&str) -> bool) -> Result<String, &'static str> {
        let mut rx = self.0.clone();
        let first = |text: &Text| text.lines.iter().find(|l| wanted(l)).cloned();
        let waited = tokio::time::timeout(
            PATIENCE,
            rx.wait_for(|text| text.ended || first(text).is_some()),
        )
        .await;
        let found = match waited {
            Ok(Ok(text)) => first(&text),
            // The reader is gone: all there will ever be is here.
            Ok(Err(_)) => first(&self.0.borrow()),
            Err(_) => return Err("not within the test's patience"),
        };
        found.ok_or("the pipe was closed first")
    }

    /// Waits (within the test's patience) for end-of-file.
    async fn end(&self) {
        let mut rx = self.0.clone();
        let ended = tokio::time::timeout(PATIENCE, rx.wait_for(|text| text.ended)).await;
        // An error means the reader is gone, and it goes only at the end.
        assert!(ended.is_ok(), "the pipe stayed open:\n{}", self.text());
    }
}

/// A running binary.
pub struct Process {
    child: Child,
    stdout: Pipe,
    log: Pipe,
}

/// How a process ended, with all it printed and logged.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    /// Its stderr, read to end-of-file.
    pub log: String,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The lines it has printed so far.
    pub fn printed(&self) -> Vec<String> {
        self.stdout.lines()
    }

    /// Whether it has printed a line starting with `prefix` by now (does not wait).
    pub fn has_printed(&self, prefix: &str) -> bool {
        self.printed().iter().any(|l| l.starts_with(prefix))
    }

    /// What follows `prefix` on the first printed line that starts with it
    /// (leading spaces aside), trimmed; waited for within the test's patience.
    pub async fn printed_after(&self, prefix: &str) -> String {
        fn after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
            line.trim_start().strip_prefix(prefix).map(str::trim)
        }
        let line = self.stdout.line(|l| after(l, prefix).is_some()).await;
        let line = line.unwrap_or_else(|why| {
            panic!(
                "no line starting with {prefix:?} printed ({why}): {:?}\nlog:\n{}",
                self.printed(),
                self.log()
            )
        });
        after(&line, prefix).unwrap().to_owned()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The first log line holding every one of `needles`, waited for within
    /// the test's patience.
    pub async fn log_line(&self, needles: &[&str]) -> String {
        let line = self
            .log
            .line(|l| needles.iter().all(|n| l.contains(n)))
            .await;
        line.unwrap_or_else(|why| panic!("no log line with {needles:?} ({why}):\n{}", self.log()))
    }

    /// Its exit status if it has exited (does not wait).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for the binary")
    }

    /// Sends `signal` (it need not be the last: `wait` and the stops below
    /// still read everything to its end).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the binary");
    }

    /// Waits for the exit (within the test's patience), then for both pipes
    /// to be read to end-of-file.
    pub async fn wait(mut self) -> Exit {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the binary did not exit in time:\n{}", self.log()))
            .unwrap();
        self.stdout.end().await;
        self.log.end().await;
        Exit {
            status,
            stdout: self.printed(),
            log: self.log(),
        }
    }

    /// Stops it with `signal` and waits for the exit; see [`Process::wait`].
    pub async fn stop_with(self, signal: Signal) -> Exit {
        self.signal(signal);
        self.wait().await
    }

    /// SIGTERM, as an operator stops it.
    pub async fn terminate(self) -> Exit {
        self.stop_with(Signal::SIGTERM).await
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(self) -> Exit {
        self.stop_with(Signal::SIGKILL).await
    }
}

/// `pgbroadcast serve|demo`, serving on the address it printed and ready.
pub struct Served {
    process: Process,
    /// `host:port` it serves on.
    pub addr: String,
}

impl Deref for Served {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl Served {
    /// Starts `pgbroadcast <args>` with `DATABASE_URL=database_url` and
    /// `envs`, and waits until it is ready (the LISTEN is in effect).
    pub async fn start(database_url: &str, args: &[&str], envs: &[(&str, &str)]) -> Served {
        Launch::new(args)
            .database(database_url)
            .envs(envs)
            .serve()
            .await
    }

    /// The same, started by `sh -c script`; see [`Launch::via_shell`].
    pub async fn start_via_shell(database_url: &str, script: &str) -> Served {
        Launch::via_shell(script)
            .database(database_url)
            .serve()
            .await
    }

    /// Waits until `/readyz` answers 200 (the LISTEN is in effect).
    pub async fn wait_ready(&self) {
        let readyz = self.http_url("/readyz");
        tokio::time::timeout(PATIENCE, async {
            loop {
                let status = reqwest::get(&readyz).await.map(|r| r.status().as_u16());
                if status.ok() == Some(200) {
                    return;
                }
                // Another process's state: there is no event to wait on.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server never became ready:\n{}", self.log()));
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/broadcast", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server (SIGKILL) and returns its whole log: everything it
    /// wrote before it died, read to end-of-file.
    pub async fn stop(self) -> String {
        let log = self.process.kill().await.log;
        assert!(
            log.contains("LISTEN in effect"),
            "the log was not captured:\n{log}"
        );
        log
    }

    /// Kills the server (SIGKILL), as a crash would, and waits for the exit.
    pub async fn kill(self) -> Exit {
        self.process.kill().await
    }

    /// Stops the server as an operator does (SIGTERM) and waits for the exit.
    pub async fn terminate(self) -> Exit {
        self.process.terminate().await
    }
}
