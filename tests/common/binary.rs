//! The real binary, run as an operator runs it, with its log (stderr)
//! captured so tests can read what an operator would read.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::PATIENCE;

pub const BIN: &str = env!("CARGO_BIN_EXE_pgbroadcast");

/// `pgbroadcast serve|demo` against a database, serving on a free port.
pub struct Served {
    child: Child,
    /// `host:port` it serves on.
    pub addr: String,
    log: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Served {
    /// Starts `pgbroadcast <args>` with `DATABASE_URL=database_url` and
    /// `envs`, and waits until it is ready (the LISTEN is in effect).
    pub async fn start(database_url: &str, args: &[&str], envs: &[(&str, &str)]) -> Served {
        let mut command = Command::new(BIN);
        command.args(args).envs(envs.iter().copied());
        Served::spawn(command, database_url).await
    }

    /// The same, started by `sh -c script` (for `ulimit` and the like); the
    /// script must `exec` the binary.
    pub async fn start_via_shell(database_url: &str, script: &str) -> Served {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        Served::spawn(command, database_url).await
    }

    async fn spawn(mut command: Command, database_url: &str) -> Served {
        command
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = tokio::time::timeout(PATIENCE, stdout.next_line())
                .await
                .expect("the server printed no address in time")
                .unwrap()
                .unwrap_or_else(|| panic!("the server exited:\n{}", log.lock().unwrap()));
            if let Some(rest) = line.strip_prefix("listening on http://") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        let served = Served {
            child,
            addr,
            log,
            reader,
        };
        served.wait_ready().await;
        served
    }

    async fn wait_ready(&self) {
        let readyz = format!("http://{}/readyz", self.addr);
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
        .expect("the server never became ready");
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/broadcast", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Stops the server (SIGKILL) and returns its whole log: everything it
    /// wrote before it died, read to end-of-file.
    pub async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        tokio::time::timeout(PATIENCE, &mut self.reader)
            .await
            .expect("the log was not read to its end")
            .unwrap();
        let log = self.log.lock().unwrap().clone();
        assert!(
            log.contains("LISTEN in effect"),
            "the log was not captured:\n{log}"
        );
        log
    }
}
