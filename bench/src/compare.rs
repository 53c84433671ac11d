//! `pgbroadcast bench compare`: pgbroadcast and the peers under `bench/peers/`
//! (servers speaking the same protocol, written the way other teams would),
//! one at a time against one private Postgres, each measured by the same
//! bench run per scenario, with the machine's floor ([`super::floor`]) beside
//! them; one Markdown table.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::floor::{self, Floor, FloorArgs};
use super::{BenchArgs, Error, Report, Scenario};
use pgbroadcast::cluster::Cluster;

/// `pgbroadcast bench compare` options.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Peers to measure beside pgbroadcast (`bench/peers/NAME`); `none` for pgbroadcast alone.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bun,node")]
    pub peers: Vec<PeerName>,
    /// Scenarios as `NAME:CLIENTS:RATE:SECONDS` (NAME: latency, fanout, idle, …;
    /// RATE: commits per second on one channel, so each reaches every client),
    /// separated by commas or spaces.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1..,
        default_value = "latency:1000:50:15,fanout:5000:10:15,idle:10000:1:10"
    )]
    pub scenarios: Vec<Spec>,
    /// Floor probes as `CLIENTSxRATE`, or `none`; by default one per scenario
    /// (its clients × rate), idle apart.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub floor: Vec<FloorSpec>,
    /// How long each floor probe writes.
    #[arg(long, default_value = "8s", value_parser = pgbroadcast::config::parse_duration)]
    pub floor_duration: Duration,
    /// Where each run's JSON and plot go, and `compare.md` / `compare.json`.
    #[arg(long, default_value = "bench-results/compare")]
    pub out: PathBuf,
    /// The peers' folder (default: `bench/peers` in the current directory or the source tree).
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// The pgbroadcast binary to serve with (default: this one).
    #[arg(long, hide = true)]
    pub server_bin: Option<PathBuf>,
}

/// A peer under `bench/peers/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerName {
    /// `Bun.serve` (uWebSockets), `server.publish` per topic.
    Bun,
    /// Node with `ws`, a hand-written fan-out loop.
    Node,
    /// No peers.
    None,
}

/// One scenario of the comparison: `NAME:CLIENTS:RATE:SECONDS`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spec {
    pub scenario: Scenario,
    pub clients: usize,
    pub rate: f64,
    pub seconds: f64,
}

impl FromStr for Spec {
    type Err = String;

    fn from_str(s: &str) -> Result<Spec, String> {
        let bad = || format!("{s:?}: expected NAME:CLIENTS:RATE:SECONDS, e.g. latency:1000:50:15");
        let parts: Vec<&str> = s.trim().split(':').collect();
        let [name, clients, rate, seconds] = parts[..] else {
            return Err(bad());
        };
        let scenario = Scenario::from_str(name, true).map_err(|_| {
            let names: Vec<_> = Scenario::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_owned())
                .collect();
            format!(
                "{s:?}: unknown scenario {name:?} (one of {})",
                names.join(", ")
            )
        })?;
        let spec = Spec {
            scenario,
            clients: clients.parse().map_err(|_| bad())?,
            rate: rate.parse().map_err(|_| bad())?,
            seconds: seconds.parse().map_err(|_| bad())?,
        };
        let valid = spec.rate.is_finite()
            && spec.rate >= 0.0
            && spec.seconds.is_finite()
            && spec.seconds > 0.0;
        if spec.clients == 0 || !valid {
            return Err(bad());
        }
        Ok(spec)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .scenario
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        write!(f, "{name}:{}:{}:{}", self.clients, self.rate, self.seconds)
    }
}

/// A floor probe: `CLIENTSxRATE`, or `none`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloorSpec {
    Probe { clients: usize, rate: f64 },
    None,
}

impl FromStr for FloorSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<FloorSpec, String> {
        if s.trim() == "none" {
            return Ok(FloorSpec::None);
        }
        let bad = || format!("{s:?}: expected CLIENTSxRATE (e.g. 1000x50) or none");
        let (clients, rate) = s.trim().split_once('x').ok_or_else(bad)?;
        Ok(FloorSpec::Probe {
            clients: clients.parse().map_err(|_| bad())?,
            rate: rate.parse().map_err(|_| bad())?,
        })
    }
}

/// The servers measured, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    Pgbroadcast,
    Peer(PeerName),
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Pgbroadcast => "pgbroadcast",
            Server::Peer(PeerName::Bun) => "Bun (uWebSockets)",
            Server::Peer(PeerName::Node) => "Node `ws`",
            Server::Peer(PeerName::None) => "none",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Server::Pgbroadcast => "pgbroadcast",
            Server::Peer(PeerName::Bun) => "bun",
            Server::Peer(PeerName::Node) => "node",
            Server::Peer(PeerName::None) => "none",
        }
    }
}

/// One server's run of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub spec: String,
    pub server: Server,
    pub report: Option<Report>,
    pub error: Option<String>,
}

/// Everything one comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub command: String,
    pub date: String,
    pub cores: usize,
    pub postgres: String,
    /// Versions of what the peers run on, e.g. "Bun 1.4.5".
    pub peers: Vec<String>,
    pub specs: Vec<Spec>,
    pub rows: Vec<Row>,
    pub floors: Vec<Floor>,
}

/// Runs the comparison; writes `compare.md` and `compare.json` to `--out`.
pub async fn run(args: CompareArgs) -> Result<Comparison, Error> {
    let peers: Vec<PeerName> = {
        let mut peers = Vec::new();
        for p in args.peers.iter().copied().filter(|p| *p != PeerName::None) {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        peers
    };
    let specs = args.scenarios.clone();
    let floors: Vec<(usize, f64)> = if args.floor.is_empty() {
        let mut probes: Vec<(usize, f64)> = Vec::new();
        for s in specs.iter().filter(|s| s.scenario != Scenario::Idle) {
            if !probes.contains(&(s.clients, s.rate)) {
                probes.push((s.clients, s.rate));
            }
        }
        probes
    } else {
        args.floor
            .iter()
            .filter_map(|f| match f {
                FloorSpec::Probe { clients, rate } => Some((*clients, *rate)),
                FloorSpec::None => None,
            })
            .collect()
    };

    // The peers first: what is missing is said before anything is started.
    let server_bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => super::server_bin()?,
    };
    let mut launchers = vec![(Server::Pgbroadcast, Launch::pgbroadcast(&server_bin))];
    let mut versions = Vec::new();
    if !peers.is_empty() {
        let dir = peers_dir(args.peers_dir.as_deref())?;
        for peer in &peers {
            let launch = Launch::peer(*peer, &dir.join(Server::Peer(*peer).slug())).await?;
            versions.push(launch.version.clone());
            launchers.push((Server::Peer(*peer), launch));
        }
    }

    let max_clients = specs.iter().map(|s| s.clients).max().unwrap_or(0);
    // Children inherit it: every server gets room for every client.
    let _ = pgbroadcast::server::raise_fd_limit(Some(2 * max_clients as u64 + 1024));
    std::fs::create_dir_all(&args.out)?;

    eprintln!("starting a private Postgres");
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().start())
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| Error::Setup(format!("private Postgres: {e}")))?;
    let result = compare_on(&cluster, &args, &specs, &floors, &launchers).await;
    let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    let (postgres, rows, floors) = result?;

    let comparison = Comparison {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: time::OffsetDateTime::now_utc().date().to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        postgres,
        peers: versions,
        specs,
        rows,
        floors,
    };
    std::fs::write(args.out.join("compare.md"), markdown(&comparison))?;
    std::fs::write(
        args.out.join("compare.json"),
        serde_json::to_string_pretty(&comparison).expect("comparison serializes"),
    )?;
    Ok(comparison)
}

type Measured = (String, Vec<Row>, Vec<Floor>);

async fn compare_on(
    cluster: &Cluster,
    args: &CompareArgs,
    specs: &[Spec],
    floors: &[(usize, f64)],
    launchers: &[(Server, Launch)],
) -> Result<Measured, Error> {
    let url = cluster.url("postgres");
    let (mut pg, connection) = cluster
        .config("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    pgbroadcast::migrate::run(&mut pg)
        .await
        .map_err(|e| Error::Setup(pgbroadcast::error_chain(&e)))?;
    let version: String = pg
        .query_one("select current_setting('server_version')", &[])
        .await?
        .get(0);
    let postgres = format!(
        "Postgres {} (private cluster; fsync and synchronous_commit on)",
        version.split_whitespace().next().unwrap_or(&version)
    );

    let mut rows = Vec::new();
    let mut measured_floors: Vec<Floor> = Vec::new();
    for spec in specs {
        // The floor probe next to the runs it is held against.
        if let Some(&(clients, rate)) = floors
            .iter()
            .find(|f| **f == (spec.clients, spec.rate) && spec.scenario != Scenario::Idle)
            && !measured_floors
                .iter()
                .any(|f| (f.clients, f.rate) == (clients, rate))
        {
            measured_floors.push(run_floor(clients, rate, args.floor_duration).await?);
        }
        for (server, launch) in launchers {
            eprintln!("{spec} on {}", server.name());
            let out = args
                .out
                .join(spec.to_string().replace(':', "_"))
                .join(server.slug());
            let (report, error) = match measure(spec, launch, &url, &out).await {
                Ok(report) => {
                    eprint!("{}", super::table(&report));
                    (Some(report), None)
                }
                Err(err) => {
                    eprintln!("  failed: {err}");
                    (None, Some(err.to_string()))
                }
            };
            rows.push(Row {
                spec: spec.to_string(),
                server: *server,
                report,
                error,
            });
        }
    }
    for &(clients, rate) in floors {
        if !measured_floors
            .iter()
            .any(|f| (f.clients, f.rate) == (clients, rate))
        {
            measured_floors.push(run_floor(clients, rate, args.floor_duration).await?);
        }
    }
    Ok((postgres, rows, measured_floors))
}

async fn run_floor(clients: usize, rate: f64, duration: Duration) -> Result<Floor, Error> {
    let args = FloorArgs {
        clients,
        rate,
        duration,
    };
    let floor = tokio::task::spawn_blocking(move || floor::run(&args))
        .await
        .map_err(std::io::Error::other)??;
    eprintln!("{}", floor.line());
    Ok(floor)
}

/// Starts the server, runs the bench against it, stops it.
async fn measure(spec: &Spec, launch: &Launch, url: &str, out: &Path) -> Result<Report, Error> {
    std::fs::create_dir_all(out)?;
    let mut running = launch.start(url, out).await?;
    let mut args = BenchArgs::new(spec.scenario);
    args.target = Some(running.ws_url.clone());
    args.database_url = Some(url.to_owned());
    args.server_pid = running.child.id();
    args.clients = Some(spec.clients);
    args.rate = Some(spec.rate);
    args.duration = Some(Duration::from_secs_f64(spec.seconds));
    args.out = out.to_owned();
    let report = super::run(args).await;
    running.stop().await;
    report
}

/// How to start one server.
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    dir: Option<PathBuf>,
    version: String,
}

struct Running {
    child: tokio::process::Child,
    ws_url: String,
}

impl Launch {
    fn pgbroadcast(bin: &Path) -> Launch {
        Launch {
            program: bin.to_owned(),
            args: ["serve", "--no-migrate", "--listen", "127.0.0.1:0"]
                .map(String::from)
                .to_vec(),
            dir: None,
            version: String::new(),
        }
    }

    /// Checks the peer can run here, installing its npm dependencies (`npm ci`) on first use.
    async fn peer(peer: PeerName, dir: &Path) -> Result<Launch, Error> {
        if !dir.join("package-lock.json").is_file() {
            return Err(Error::Setup(format!(
                "no peer at {} (package.json and package-lock.json expected)",
                dir.display()
            )));
        }
        let node = version_of("node", &["--version"]).await.ok_or_else(|| {
            Error::Setup(format!(
                "the {peer:?} peer needs Node.js 20+ with npm to install it, and `node` is not on PATH (Debian: apt-get install nodejs npm; or --peers none)"
            ))
        })?;
        let installed = dir.join("node_modules/.package-lock.json");
        let stale = match (
            std::fs::metadata(&installed).and_then(|m| m.modified()),
            std::fs::metadata(dir.join("package-lock.json")).and_then(|m| m.modified()),
        ) {
            (Ok(installed), Ok(lock)) => lock > installed,
            _ => true,
        };
        if stale {
            eprintln!("installing the {peer:?} peer: npm ci in {}", dir.display());
            let status = tokio::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir)
                .stdout(Stdio::null())
                .status()
                .await
                .map_err(|e| {
                    Error::Setup(format!(
                        "cannot run npm ({e}): the peers need Node.js 20+ with npm (Debian: apt-get install nodejs npm; or --peers none)"
                    ))
                })?;
            if !status.success() {
                return Err(Error::Setup(format!(
                    "npm ci in {} failed ({status})",
                    dir.display()
                )));
            }
        }
        let dep = |name: &str| {
            std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["version"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".into())
        };
        let launch = match peer {
            PeerName::Bun => {
                let bun = dir.join("node_modules/.bin/bun");
                let version = version_of(&bun.to_string_lossy(), &["--version"])
                    .await
                    .ok_or_else(|| {
                        Error::Setup(format!(
                            "{} does not run: the npm package `bun` brings its binary in an install script; run `npm ci` in {} again",
                            bun.display(),
                            dir.display()
                        ))
                    })?;
                Launch {
                    program: bun,
                    args: vec!["server.js".into()],
                    dir: Some(dir.to_owned()),
                    version: format!("Bun {version} with pg {}", dep("pg")),
                }
            }
            PeerName::Node => Launch {
                program: "node".into(),
                args: vec!["server.js".into()],
                dir: Some(dir.to_owned()),
                version: format!("Node {node} with ws {} and pg {}", dep("ws"), dep("pg")),
            },
            PeerName::None => unreachable!("filtered out"),
        };
        Ok(launch)
    }

    /// Starts the server on a free port of 127.0.0.1 and waits (bounded) for
    /// its `listening on … ws://…` line, printed once it LISTENs.
    async fn start(&self, database_url: &str, out: &Path) -> Result<Running, Error> {
        let log = std::fs::File::create(out.join("server.log"))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env("DATABASE_URL", database_url)
            .env("PORT", "0")
            .env("PG_CHANNEL", "pgbroadcast")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Setup(format!("cannot start {}: {e}", self.program.display())))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ws_url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = listening_url(&line) {
                    return Ok(Some(url));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let fail = |why: &str| {
            let log = std::fs::read_to_string(out.join("server.log")).unwrap_or_default();
            Error::Setup(format!(
                "{} {why}; its log:\n{}",
                self.program.display(),
                log.lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        };
        let ws_url = match ws_url {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) => return Err(fail("exited before listening")),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(fail("did not say it was listening within 60 s")),
        };
        // Keep reading so the server never blocks on a full stdout pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Running { child, ws_url })
    }
}

impl Running {
    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `ws://…` in a `listening on …` line: pgbroadcast's
/// `listening on http://ADDR (WebSocket: ws://ADDR/ws/broadcast)`, the peers'
/// `listening on ws://ADDR/ws/broadcast`.
fn listening_url(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")?..];
    let url = &rest[rest.find("ws://")?..];
    let end = url
        .find(|c: char| c.is_whitespace() || c == ')')
        .unwrap_or(url.len());
    Some(url[..end].to_owned())
}

/// The first line a program prints for `args`, if it runs and succeeds.
async fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    })
}

/// `bench/peers`: as given, else in the current directory, else in the source tree.
fn peers_dir(given: Option<&Path>) -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = match given {
        Some(dir) => vec![dir.to_owned()],
        None => vec![
            PathBuf::from("bench/peers"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("peers"),
        ],
    };
    candidates
        .iter()
        .find_map(|d| std::fs::canonicalize(d).ok().filter(|d| d.is_dir()))
        .ok_or_else(|| {
            Error::Setup(format!(
                "no peers folder at {}: run from the repository root, pass --peers-dir, or --peers none",
                candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        })
}

/// Per figure of one row: the value, and whether lower is better.
struct Figures {
    deliveries_per_s: f64,
    p50: f64,
    p99: f64,
    last_p99: Option<f64>,
    cpu_percent: Option<f64>,
    cpu_per_100k: Option<f64>,
    rss_mib: Option<f64>,
    rss_per_conn: Option<f64>,
}

impl Figures {
    fn of(r: &Report) -> Figures {
        Figures {
            deliveries_per_s: r.deliveries_per_s,
            p50: r.latency.p50_ms,
            p99: r.latency.p99_ms,
            last_p99: (r.last_client_latency.count > 0).then_some(r.last_client_latency.p99_ms),
            cpu_percent: r.server_cpu_percent,
            cpu_per_100k: cpu_per_100k(r),
            rss_mib: r.server_rss_mib,
            rss_per_conn: r.server_rss_per_connection_kib,
        }
    }
}

/// The machine's busy CPU less the server's and the load generator's (% of
/// one core): Postgres, and anything else running on the machine.
pub fn rest_of_machine(r: &Report) -> Option<f64> {
    Some((r.machine_cpu_percent? - r.server_cpu_percent? - r.load_cpu_percent?).max(0.0))
}

/// Server CPU seconds per 100,000 deliveries.
pub fn cpu_per_100k(r: &Report) -> Option<f64> {
    let cpu = r.server_cpu_s?;
    (r.deliveries > 0).then(|| cpu / r.deliveries as f64 * 1e5)
}

/// The best of the peers' values: the lowest, or the highest with `higher`.
fn best(values: impl Iterator<Item = Option<f64>>, higher: bool) -> Option<f64> {
    values
        .flatten()
        .filter(|v| *v > 0.0)
        .reduce(|a, b| if (b > a) == higher { b } else { a })
}

fn ratio(value: Option<f64>, best: Option<f64>) -> String {
    match (value, best) {
        (Some(v), Some(b)) if b > 0.0 => format!(" ({:.1}×)", v / b),
        _ => String::new(),
    }
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The comparison as Markdown: a header, one table, the floor probes, a legend.
pub fn markdown(c: &Comparison) -> String {
    let mut out = format!(
        "`{}` — {}, {} cores, {}; peers: {}.\n\n",
        c.command,
        c.date,
        c.cores,
        c.postgres,
        if c.peers.is_empty() {
            "none".to_owned()
        } else {
            c.peers.join("; ")
        }
    );
    out.push_str(
        "| scenario | server | deliveries/s | p50 / p90 / p99 / max ms | last client p99 ms | lost | resyncs | server CPU | CPU-s per 100k deliveries | × floor | RSS MiB | RSS per connection KiB | rest of machine CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let dash = || "—".to_owned();
    for spec in &c.specs {
        let name = spec.to_string();
        let rows: Vec<&Row> = c.rows.iter().filter(|r| r.spec == name).collect();
        let peers: Vec<Figures> = rows
            .iter()
            .filter(|r| r.server != Server::Pgbroadcast)
            .filter_map(|r| r.report.as_ref().map(Figures::of))
            .collect();
        let best_of = |f: fn(&Figures) -> Option<f64>, higher| best(peers.iter().map(f), higher);
        let b_deliveries = best_of(|f| Some(f.deliveries_per_s), true);
        let b_p50 = best_of(|f| Some(f.p50), false);
        let b_p99 = best_of(|f| Some(f.p99), false);
        let b_last = best_of(|f| f.last_p99, false);
        let b_cpu = best_of(|f| f.cpu_percent, false);
        let b_per100k = best_of(|f| f.cpu_per_100k, false);
        let b_rss = best_of(|f| f.rss_mib, false);
        let b_conn = best_of(|f| f.rss_per_conn, false);
        let floor = c.floors.iter().find(|f| {
            (f.clients, f.rate) == (spec.clients, spec.rate) && spec.scenario != Scenario::Idle
        });
        let mut first = true;
        let mut label = || {
            let l = if first {
                format!("`{name}`")
            } else {
                String::new()
            };
            first = false;
            l
        };
        if let Some(f) = floor {
            out.push_str(&format!(
                "| {} | floor: one `write` per socket | {} | — | — | — | — | {:.0}% | {:.2} | 1 | — | — | — |\n",
                label(),
                thousands(f.writes_per_s),
                f.cpu_percent,
                f.cpu_s_per_100k,
            ));
        }
        for row in rows {
            let Some(r) = &row.report else {
                out.push_str(&format!(
                    "| {} | {} | failed: {} | | | | | | | | | | |\n",
                    label(),
                    row.server.name(),
                    row.error
                        .as_deref()
                        .unwrap_or("?")
                        .replace('|', "\\|")
                        .replace('\n', " ")
                ));
                continue;
            };
            let f = Figures::of(r);
            let l = &r.latency;
            out.push_str(&format!(
                "| {} | {} | {}{} | {} / {} / {} / {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                label(),
                row.server.name(),
                thousands(f.deliveries_per_s),
                ratio(Some(f.deliveries_per_s), b_deliveries),
                ms(l.p50_ms),
                ms(l.p90_ms),
                ms(l.p99_ms),
                ms(l.max_ms),
                match (b_p50, b_p99) {
                    (Some(b50), Some(b99)) if b50 > 0.0 && b99 > 0.0 =>
                        format!(" (p50 {:.1}×, p99 {:.1}×)", f.p50 / b50, f.p99 / b99),
                    _ => String::new(),
                },
                f.last_p99
                    .map_or_else(dash, |v| format!("{}{}", ms(v), ratio(Some(v), b_last))),
                r.lost_cell(),
                r.resyncs,
                f.cpu_percent.map_or_else(dash, |v| format!("{v:.0}%{}", ratio(Some(v), b_cpu))),
                f.cpu_per_100k
                    .map_or_else(dash, |v| format!("{v:.2}{}", ratio(Some(v), b_per100k))),
                match (f.cpu_per_100k, floor) {
                    (Some(v), Some(fl)) if fl.cpu_s_per_100k > 0.0 =>
                        format!("{:.1}", v / fl.cpu_s_per_100k),
                    _ => dash(),
                },
                f.rss_mib.map_or_else(dash, |v| format!("{v:.1}{}", ratio(Some(v), b_rss))),
                f.rss_per_conn
                    .map_or_else(dash, |v| format!("{v:.1}{}", ratio(Some(v), b_conn))),
                rest_of_machine(r).map_or_else(dash, |v| format!("{v:.0}%")),
            ));
        }
    }
    let unmatched: Vec<&Floor> = c
        .floors
        .iter()
        .filter(|f| {
            !c.specs
                .iter()
                .any(|s| (s.clients, s.rate) == (f.clients, f.rate) && s.scenario != Scenario::Idle)
        })
        .collect();
    if !unmatched.is_empty() {
        out.push('\n');
        for f in unmatched {
            out.push_str(&format!("- {}\n", f.line()));
        }
    }
    out.push_str(
        "\nScenario `NAME:CLIENTS:RATE:SECONDS`: RATE commits per second on one channel, each a signal to every client. \
         (n×): the figure over the best peer's in that scenario (the lowest; for deliveries/s the highest). \
         × floor: CPU-s per 100k deliveries over the floor probe's CPU-s per 100k writes at the same sockets × rate \
         (one 150-byte non-blocking `write` per socket per signal, read by another thread). \
         Server CPU and RSS are read from /proc; RSS per connection is the growth from before the clients connected to when every subscription was live, per client. \
         Rest of machine CPU: the machine's busy time less the server's and the load generator's, over the same span: Postgres and whatever else ran; \
         a row far above its neighbours in the same scenario was disturbed by other work on the machine.\n",
    );
    let barrier: Vec<String> = c
        .rows
        .iter()
        .filter_map(|r| {
            let s = &r.report.as_ref()?.subscription;
            (s.by_barrier > 0).then(|| r.server.name().to_owned())
        })
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    if !barrier.is_empty() {
        out.push_str(&format!(
            "Not acknowledging subscribes ({}), a server's run was counted from when every client had received a barrier signal.\n",
            barrier.join(" and ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let s: Spec = "fanout:5000:10:15".parse().unwrap();
        assert_eq!(
            s,
            Spec {
                scenario: Scenario::Fanout,
                clients: 5000,
                rate: 10.0,
                seconds: 15.0
            }
        );
        assert_eq!(s.to_string(), "fanout:5000:10:15");
        assert!("latency:1000:50".parse::<Spec>().is_err());
        assert!(
            "nope:1:1:1"
                .parse::<Spec>()
                .unwrap_err()
                .contains("unknown scenario")
        );
        assert!("latency:0:1:1".parse::<Spec>().is_err());
        assert_eq!(
            "1000x50".parse::<FloorSpec>(),
            Ok(FloorSpec::Probe {
                clients: 1000,
                rate: 50.0
            })
        );
        assert_eq!("none".parse::<FloorSpec>(), Ok(FloorSpec::None));
    }

    #[test]
    fn finds_the_websocket_url_in_listening_lines() {
        assert_eq!(
            listening_url(
                "listening on http://127.0.0.1:4321 (WebSocket: ws://127.0.0.1:4321/ws/broadcast)"
            ),
            Some("ws://127.0.0.1:4321/ws/broadcast".into())
        );
        assert_eq!(
            listening_url("listening on ws://127.0.0.1:99/ws/broadcast"),
            Some("ws://127.0.0.1:99/ws/broadcast".into())
        );
        assert_eq!(
            listening_url("private Postgres (removed on exit): postgres://x"),
            None
        );
    }

    #[test]
    fn best_and_ratios() {
        assert_eq!(
            best([Some(2.0), None, Some(1.0)].into_iter(), false),
            Some(1.0)
        );
        assert_eq!(best([Some(2.0), Some(3.0)].into_iter(), true), Some(3.0));
        assert_eq!(best([None].into_iter(), false), None);
        assert_eq!(ratio(Some(3.2), Some(2.0)), " (1.6×)");
        assert_eq!(ratio(Some(3.2), None), "");
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    /// The package.json and package-lock.json of every peer agree on the
    /// pinned dependencies (no network: read from the files).
    #[test]
    fn peers_lockfiles_match_their_manifests() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
        for peer in ["bun", "node"] {
            let read = |f: &str| -> serde_json::Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(peer).join(f)).unwrap())
                    .unwrap()
            };
            let manifest = read("package.json");
            let lock = read("package-lock.json");
            assert!(dir.join(peer).join("server.js").is_file());
            assert_eq!(lock["lockfileVersion"], 3, "{peer}");
            assert_eq!(lock["name"], manifest["name"], "{peer}");
            let deps = manifest["dependencies"].as_object().unwrap();
            assert_eq!(
                &lock["packages"][""]["dependencies"], &manifest["dependencies"],
                "{peer}"
            );
            for (name, version) in deps {
                let version = version.as_str().unwrap();
                assert!(
                    version.chars().all(|c| c.is_ascii_digit() || c == '.'),
                    "{peer}: {name} is pinned to an exact version, not {version}"
                );
                assert_eq!(
                    lock["packages"][format!("node_modules/{name}")]["version"],
                    version,
                    "{peer}: {name}"
                );
            }
        }
    }
}
