//! `pgbroadcast bench` (this crate's binary `pgbroadcast-bench`, which the
//! server's `bench` subcommand runs from beside itself): a real run against a real server. It opens WebSocket
//! clients ([`load`]), commits rows through routed tables at a target rate,
//! matches what each client received to the commits by txid, watches the
//! server process from `/proc` ([`probe`]), and reports a table, JSON and an
//! SVG plot ([`plot`]). Against `--target` it measures any server speaking
//! the SYNC-009 protocol. `bench compare` ([`compare`]) runs pgbroadcast and
//! the peers under `bench/peers/` side by side; `bench floor` ([`floor`])
//! measures what fan-out costs on this machine at the least.

pub mod compare;
pub mod floor;
pub mod load;
pub mod plot;
pub mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use load::{ClientPlan, ClientResult, Clock, WritePlan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// 1,000 clients, 500 tx/s, 60 s: commit → client latency.
    Latency,
    /// 10,000 clients on one channel, 10 signals/s: commit → the last client.
    Fanout,
    /// 1,000 clients; the write rate doubles each step until deliveries/s stop growing.
    Throughput,
    /// 50,000 subscribed idle sockets: server memory per socket.
    Idle,
    /// Writes as fast as Postgres commits them; the server's CPU while it keeps up.
    Ceiling,
    /// A few hundred clients for a few seconds (the test suite runs this).
    Smoke,
}

/// `pgbroadcast bench`: one run (the options below), or a subcommand.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCli {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: BenchArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// pgbroadcast and the peers under bench/peers (Bun, Node), one at a
    /// time against one private Postgres, the same scenarios, one table.
    Compare(compare::CompareArgs),
    /// The machine's floor: CPU per 150-byte write to N loopback sockets, one per socket per signal.
    Floor(floor::FloorArgs),
}

/// Runs `pgbroadcast bench …` and prints what it measured.
pub async fn main(cli: BenchCli) -> Result<(), Error> {
    match cli.command {
        None => {
            let out = cli.run.out.clone();
            let report = run(cli.run).await?;
            println!("{}", table(&report));
            println!("details: {}/", out.display());
            if !report.exact() {
                return Err(Error::Setup(format!(
                    "the clients did not get exactly their signals: {} lost, {} duplicated, {} unexpected",
                    report.lost, report.duplicates, report.unexpected
                )));
            }
        }
        Some(BenchCommand::Compare(args)) => {
            let out = args.out.clone();
            let comparison = compare::run(args).await?;
            println!("{}", compare::markdown(&comparison));
            println!("details: {}/", out.display());
        }
        Some(BenchCommand::Floor(args)) => {
            let floor = tokio::task::spawn_blocking(move || floor::run(&args))
                .await
                .map_err(std::io::Error::other)??;
            println!("{}", floor.line());
        }
    }
    Ok(())
}

/// `pgbroadcast bench` options; unset ones take the scenario's defaults.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "latency")]
    pub scenario: Scenario,
    /// WebSocket URL of a server to measure; without it, `pgbroadcast serve`
    /// is started on its embedded default.
    #[arg(long)]
    pub target: Option<String>,
    /// The database the target server listens to (required with --target).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The target server's pid, to read its CPU and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long)]
    pub clients: Option<usize>,
    /// Channels the clients spread over (one routed table each).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Share of clients subscribed to one entity (`channel:slot`) instead of a channel.
    #[arg(long, default_value_t = 0.0)]
    pub entity_share: f64,
    /// Commits per second (all writers); 0 = as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Writer connections.
    #[arg(long)]
    pub writers: Option<usize>,
    /// How long to write (`20s`, `1.5m`; a bare number is seconds).
    #[arg(long, value_parser = pgbroadcast::config::parse_duration)]
    pub duration: Option<Duration>,
    /// Where to write `<scenario>.json` and `<scenario>.svg`.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// How long to wait, once a server has not acknowledged every subscribe,
    /// for every client to receive a barrier signal (proof that its
    /// subscription is live) before giving up.
    #[arg(long, default_value = "30s", value_parser = pgbroadcast::config::parse_duration)]
    pub live_timeout: Duration,
    /// The pgbroadcast binary to start when there is no --target.
    #[arg(long, hide = true)]
    pub server_bin: Option<PathBuf>,
    /// How the database sends the bench's signals: `notify`, `wal` (the
    /// database's `pgbroadcast.transport`; the server started here reads the
    /// WAL too), or `none` (the bench tables get no trigger: what the writes
    /// cost without signals, to compare with).
    #[arg(long, value_enum, default_value = "notify")]
    pub transport: BenchTransport,
    /// Rows of an unrelated table (no route) that one UPDATE rewrites every
    /// `--unrelated-update-every` while the writers write: the big
    /// transactions a signal may wait behind (0: none).
    #[arg(long, default_value_t = 0)]
    pub unrelated_update_rows: u32,
    #[arg(long, default_value = "2s", value_parser = pgbroadcast::config::parse_duration)]
    pub unrelated_update_every: Duration,
}

/// See [`BenchArgs::transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BenchTransport {
    Notify,
    Wal,
    None,
}

impl BenchArgs {
    pub fn new(scenario: Scenario) -> BenchArgs {
        BenchArgs {
            scenario,
            target: None,
            database_url: None,
            server_pid: None,
            clients: None,
            channels: None,
            entity_share: 0.0,
            rate: None,
            writers: None,
            duration: None,
            out: PathBuf::from("bench-results"),
            live_timeout: Duration::from_secs(30),
            server_bin: None,
            transport: BenchTransport::Notify,
            unrelated_update_rows: 0,
            unrelated_update_every: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Resolved parameters of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub clients: usize,
    pub channels: usize,
    pub entity_share: f64,
    /// Commits per second; `None`: as fast as possible. Throughput: the first step.
    pub rate: Option<f64>,
    pub writers: usize,
    pub duration_s: f64,
    /// Clients whose every receive time is recorded for latency.
    pub sampled_clients: usize,
    pub transport: BenchTransport,
    /// Rows rewritten by each unrelated UPDATE, and how often (0: none).
    pub unrelated_update_rows: u32,
    pub unrelated_update_every_s: f64,
}

impl Plan {
    fn from(args: &BenchArgs) -> Plan {
        use Scenario::*;
        let (clients, channels, rate, writers, duration) = match args.scenario {
            Latency => (1000, 1, Some(500.0), 4, 60),
            Fanout => (10_000, 1, Some(10.0), 1, 20),
            Throughput => (1000, 1, Some(50.0), 8, 5),
            Idle => (50_000, 1, Some(1.0), 1, 1),
            Ceiling => (10, 1, None, 8, 20),
            Smoke => (200, 3, Some(100.0), 2, 3),
        };
        let clients = args.clients.unwrap_or(clients);
        let sampled = match args.scenario {
            Fanout | Smoke | Idle | Ceiling => clients,
            _ => clients.min(100),
        };
        Plan {
            scenario: args.scenario,
            clients,
            channels: args.channels.unwrap_or(channels).max(1),
            entity_share: args.entity_share.clamp(0.0, 1.0),
            rate: match args.rate {
                Some(r) if r <= 0.0 => None,
                Some(r) => Some(r),
                None => rate,
            },
            writers: args.writers.unwrap_or(writers).max(1),
            duration_s: args.duration.map_or(duration as f64, |d| d.as_secs_f64()),
            sampled_clients: sampled,
            transport: args.transport,
            unrelated_update_rows: args.unrelated_update_rows,
            unrelated_update_every_s: args.unrelated_update_every.as_secs_f64(),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |v: u64| v as f64 / 1e6;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub deliveries_per_s: f64,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_mib: Option<f64>,
}

/// One rate step of the throughput scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub target_rate: f64,
    pub commits_per_s: f64,
    pub deliveries_per_s: f64,
    pub server_cpu_percent: Option<f64>,
}

/// How the clients' subscriptions were seen to be live before counting began.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Subscription {
    /// Clients whose subscribe the server acknowledged (`{"type":"subscribed"}`).
    pub acknowledged: usize,
    /// Clients that received a barrier signal instead (servers that do not acknowledge).
    pub by_barrier: usize,
    /// Barrier transactions committed (0 when every subscribe was acknowledged).
    pub barriers: u32,
    /// From the first connect to every subscription live.
    pub live_after_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub subscription: Subscription,
    pub commits: u64,
    pub commits_per_s: f64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// Signals a client should have received and did not (resyncs counted
    /// apart), matched per client and txid.
    pub lost: u64,
    /// Signals a client received more than once.
    pub duplicates: u64,
    /// Signals a client received that none of its subscriptions asked for
    /// (another channel's or entity's, or one without a txid).
    pub unexpected: u64,
    pub resyncs: u64,
    pub client_errors: u64,
    /// Commit acknowledged to the writer → frame received by a client.
    pub latency: Latency,
    /// Commit → the last client that should get it has it (per signal).
    pub last_client_latency: Latency,
    pub server_cpu_percent: Option<f64>,
    /// Server CPU seconds from the first write until the last delivery (or the drain's end).
    pub server_cpu_s: Option<f64>,
    /// The whole machine's busy CPU over the same span (% of one core):
    /// server, load generator, Postgres and anything else running.
    pub machine_cpu_percent: Option<f64>,
    /// This load generator's own CPU over the same span (% of one core).
    pub load_cpu_percent: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub server_rss_per_connection_kib: Option<f64>,
    pub steps: Vec<Step>,
    pub timeline: Vec<Sample>,
    /// Latency distribution for the plot: (upper bound in ms, count).
    pub latency_buckets: Vec<(f64, u64)>,
}

/// The server under test.
struct Server {
    ws_url: String,
    addr: SocketAddr,
    database: tokio_postgres::Config,
    pid: Option<u32>,
    child: Option<tokio::process::Child>,
}

/// The server binary: `pgbroadcast` beside this executable (the two are
/// built into one directory by `cargo build`).
pub fn server_bin() -> Result<PathBuf, Error> {
    let bin = std::env::current_exe()?.with_file_name("pgbroadcast");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::Setup(format!(
            "no pgbroadcast server at {} (build it with `cargo build --release` at the repository root, or pass --target)",
            bin.display()
        )))
    }
}

async fn start_server(args: &BenchArgs, plan: &Plan) -> Result<Server, Error> {
    if let Some(target) = &args.target {
        let database = args
            .database_url
            .as_ref()
            .ok_or_else(|| Error::Setup("--target needs --database-url (or DATABASE_URL): the database its server listens to".into()))?
            .parse()?;
        let addr = target
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .and_then(|hostport| {
                std::net::ToSocketAddrs::to_socket_addrs(hostport)
                    .ok()?
                    .next()
            })
            .ok_or_else(|| Error::Setup(format!("cannot resolve {target}")))?;
        return Ok(Server {
            ws_url: target.clone(),
            addr,
            database,
            pid: args.server_pid,
            child: None,
        });
    }
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => server_bin()?,
    };
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--max-connections", &(plan.clients + 100).to_string()])
        .args([
            "--transport",
            match plan.transport {
                BenchTransport::Wal => "wal",
                BenchTransport::Notify | BenchTransport::None => "notify",
            },
        ])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut url = None;
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| Error::Setup("the server did not start within 60 s".into()))??
            .ok_or_else(|| Error::Setup("the server exited while starting".into()))?;
        if let Some(rest) = line.strip_prefix(pgbroadcast::banner::PRIVATE_POSTGRES) {
            url = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix(pgbroadcast::banner::LISTENING) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep reading so the server never blocks on a full stdout pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let database = url
        .ok_or_else(|| Error::Setup("the server printed no database URL".into()))?
        .parse()?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| Error::Setup(format!("bad listen address {addr}")))?;
    Ok(Server {
        ws_url: format!("ws://{addr}/ws/broadcast"),
        addr,
        database,
        pid: child.id(),
        child: Some(child),
    })
}

fn plans_for_clients(plan: &Plan) -> Vec<ClientPlan> {
    (0..plan.clients)
        .map(|i| {
            let entity = (i as f64) < plan.entity_share * plan.clients as f64;
            ClientPlan {
                table: i % plan.channels,
                slot: entity.then_some((i % SLOTS as usize) as i32),
                sample: i % (plan.clients / plan.sampled_clients.max(1)).max(1) == 0,
            }
        })
        .collect()
}

/// Entities per channel (`slot` values), for entity subscriptions.
const SLOTS: i32 = 16;

/// Runs one scenario and writes `<out>/<scenario>.json` and `.svg`.
pub async fn run(args: BenchArgs) -> Result<Report, Error> {
    let plan = Plan::from(&args);
    // Every client is a socket; a shortfall shows up as a connect error.
    let _ = pgbroadcast::server::raise_fd_limit(Some(2 * plan.clients as u64 + 1024));
    let mut server = start_server(&args, &plan).await?;
    let (pg, connection) = server.database.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    load::setup(&pg, plan.channels).await?;
    load::unrelated_table(&pg, plan.unrelated_update_rows).await?;
    load::transport(&pg, plan.channels, plan.transport).await?;
    let result = drive(&plan, &server, &pg, args.live_timeout).await;
    load::teardown(&pg, plan.channels).await?;
    if let Some(mut child) = server.child.take() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    }
    let report = result?;
    std::fs::create_dir_all(&args.out)?;
    let name = format!("{:?}", plan.scenario).to_lowercase();
    std::fs::write(
        args.out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&report).expect("report serializes"),
    )?;
    if let Err(err) = plot::draw(&report, &args.out.join(format!("{name}.svg"))) {
        eprintln!("no plot: {err}");
    }
    Ok(report)
}

/// A server that acknowledges subscribes does so within this long of the
/// last client connecting; otherwise the bench proves liveness by barriers.
const ACK_GRACE: Duration = Duration::from_secs(1);
/// A barrier is committed again this often until every client has one.
const BARRIER_EVERY: Duration = Duration::from_millis(500);

async fn drive(
    plan: &Plan,
    server: &Server,
    pg: &tokio_postgres::Client,
    live_timeout: Duration,
) -> Result<Report, Error> {
    let clock = Clock::start();
    let rss_before = server.pid.and_then(probe::read).map(|r| r.rss);

    // Connect everyone (a few hundred at a time); each client reads from the
    // moment it has sent its subscribe.
    let n = plan.clients;
    let delivered = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = CancellationToken::new();
    // However this returns, no client task outlives the run.
    let _stop_clients = stop.clone().drop_guard();
    let (progress, mut watch) = tokio::sync::watch::channel(load::Progress::default());
    let progress = Arc::new(progress);
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let started_connecting = std::time::Instant::now();
    let clients: Vec<_> = plans_for_clients(plan)
        .into_iter()
        .enumerate()
        .map(|(i, client_plan)| {
            let permit = Arc::clone(&connecting);
            let url = server.ws_url.clone();
            let addr = server.addr;
            let (delivered, progress, counting, stop) = (
                Arc::clone(&delivered),
                Arc::clone(&progress),
                Arc::clone(&counting),
                stop.clone(),
            );
            tokio::spawn(async move {
                let connected = {
                    let _permit = permit.acquire().await;
                    load::connect(&url, addr, i, client_plan).await
                };
                match connected {
                    Ok(client) => {
                        progress.send_modify(|p| {
                            p.connected += 1;
                            if p.connected % 5000 == 0 {
                                eprintln!("  {} clients connected", p.connected);
                            }
                        });
                        Ok(client
                            .read(clock, delivered, progress, counting, stop)
                            .await)
                    }
                    Err(e) => {
                        progress.send_modify(|p| p.failed += 1);
                        Err(format!("client {i}: {e}"))
                    }
                }
            })
        })
        .collect();

    let connect_budget = Duration::from_secs(60) + Duration::from_millis(5 * n as u64);
    let connected = wait_progress(
        &mut watch,
        tokio::time::Instant::now() + connect_budget,
        |p| p.connected == n || p.failed > 0,
    )
    .await;
    if !connected || watch.borrow().failed > 0 {
        let missing = n - watch.borrow().connected;
        let why = format!("{missing} of {n} clients did not connect within {connect_budget:?}");
        return Err(abort(clients, &stop, why).await);
    }

    // Live: acknowledged within a grace period, or else proven by barriers.
    let mut barriers = 0u32;
    let live = |p: &load::Progress| p.live() == n || p.failed > 0;
    if !wait_progress(&mut watch, tokio::time::Instant::now() + ACK_GRACE, live).await {
        let p = *watch.borrow();
        eprintln!(
            "  {} of {n} subscribes acknowledged; committing barrier signals until every client has one",
            p.acknowledged
        );
        let deadline = tokio::time::Instant::now() + live_timeout;
        loop {
            load::barrier(pg, plan.channels).await?;
            barriers += 1;
            let next = (tokio::time::Instant::now() + BARRIER_EVERY).min(deadline);
            if wait_progress(&mut watch, next, live).await {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let p = *watch.borrow();
                let why = format!(
                    "{} of {n} clients never received a barrier signal within {:?} ({barriers} barrier transactions on {} channel(s); {} subscribes acknowledged, {} clients live by a barrier): their subscriptions did not go live, or the server does not forward `broadcast.emit` signals",
                    n - p.live(),
                    live_timeout,
                    plan.channels,
                    p.acknowledged,
                    p.by_barrier,
                );
                return Err(abort(clients, &stop, why).await);
            }
        }
    }
    if watch.borrow().failed > 0 {
        let why = "a client failed before its subscription was live".to_owned();
        return Err(abort(clients, &stop, why).await);
    }
    let p = *watch.borrow();
    let subscription = Subscription {
        acknowledged: p.acknowledged,
        by_barrier: p.by_barrier,
        barriers,
        live_after_ms: started_connecting.elapsed().as_secs_f64() * 1e3,
    };
    let rss_connected = server.pid.and_then(probe::read).map(|r| r.rss);

    let sampler_stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_every_second(
        server.pid,
        Arc::clone(&delivered),
        sampler_stop.clone(),
        plan.duration_s,
    ));

    let counter = Arc::new(AtomicU64::new(0));
    counting.store(true, Ordering::Relaxed);
    let cpu_start = server.pid.and_then(probe::read).map(|r| r.cpu);
    let machine_start = probe::machine_busy();
    let load_start = probe::read(std::process::id()).map(|r| r.cpu);
    let started = std::time::Instant::now();
    let mut writes = Vec::new();
    let mut steps = Vec::new();
    if plan.scenario == Scenario::Throughput {
        let mut rate = plan.rate.unwrap_or(50.0);
        let mut best = 0.0f64;
        loop {
            let before = delivered.load(Ordering::Relaxed);
            let cpu0 = server.pid.and_then(probe::read).map(|r| r.cpu);
            let t0 = std::time::Instant::now();
            let step = load::write(
                &server.database,
                plan.writers,
                &write_plan(plan, Some(rate)),
                clock,
                Arc::clone(&counter),
            )
            .await?;
            let secs = t0.elapsed().as_secs_f64();
            let per_s = (delivered.load(Ordering::Relaxed) - before) as f64 / secs;
            let cpu = cpu_percent(server.pid, cpu0, secs);
            eprintln!(
                "  step {rate:.0} tx/s: {:.0} commits/s, {per_s:.0} deliveries/s",
                step.len() as f64 / secs
            );
            steps.push(Step {
                target_rate: rate,
                commits_per_s: step.len() as f64 / secs,
                deliveries_per_s: per_s,
                server_cpu_percent: cpu,
            });
            writes.extend(step);
            // The knee: deliveries/s grew less than 10% over the best so far.
            if per_s < best * 1.10 || steps.len() >= 12 {
                break;
            }
            best = best.max(per_s);
            rate *= 2.0;
        }
    } else {
        let unrelated = (plan.unrelated_update_rows > 0).then(|| {
            tokio::spawn(load::unrelated_updates(
                server.database.clone(),
                Duration::from_secs_f64(plan.unrelated_update_every_s),
            ))
        });
        let written = load::write(
            &server.database,
            plan.writers,
            &write_plan(plan, plan.rate),
            clock,
            Arc::clone(&counter),
        )
        .await;
        if let Some(task) = unrelated {
            task.abort();
        }
        writes = written?;
    }
    let write_secs = started.elapsed().as_secs_f64();

    // Wait (bounded) until every client has what it should have.
    let expected_total: u64 = expected_per_client(plan, &writes).iter().sum();
    let drain_deadline = std::time::Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected_total
        && std::time::Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(server.pid, cpu_start);
    let machine_cpu = probe::machine_busy()
        .zip(machine_start)
        .map(|(end, start)| (end - start).as_secs_f64() / elapsed * 100.0);
    let load_cpu = cpu_percent(Some(std::process::id()), load_start, elapsed);
    let cpu = cpu_s.map(|s| s / elapsed * 100.0);
    stop.cancel();
    sampler_stop.cancel();
    let mut results = Vec::with_capacity(clients.len());
    for client in clients {
        results.push(client.await.expect("client task").map_err(Error::Setup)?);
    }
    let timeline = sampler.await.expect("sampler");
    let mut report = summarize(
        plan,
        &writes,
        &results,
        write_secs,
        cpu,
        rss_before,
        rss_connected,
        steps,
        timeline,
    );
    report.subscription = subscription;
    report.server_cpu_s = cpu_s;
    report.machine_cpu_percent = machine_cpu;
    report.load_cpu_percent = load_cpu;
    Ok(report)
}

/// Waits until `done` holds for the clients' progress, or `deadline`; whether it holds.
async fn wait_progress(
    watch: &mut tokio::sync::watch::Receiver<load::Progress>,
    deadline: tokio::time::Instant,
    done: impl FnMut(&load::Progress) -> bool,
) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, watch.wait_for(done)).await,
        Ok(Ok(_))
    )
}

/// Stops every client and returns the setup error: `why`, and the first
/// client error seen, if any.
async fn abort(
    clients: Vec<tokio::task::JoinHandle<Result<ClientResult, String>>>,
    stop: &CancellationToken,
    why: String,
) -> Error {
    stop.cancel();
    let mut first = None;
    for client in clients {
        let error = match client.await {
            Ok(Ok(result)) => result.error,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(e.to_string()),
        };
        if first.is_none() {
            first = error;
        }
    }
    Error::Setup(match first {
        Some(e) => format!("{why}; first client error: {e}"),
        None => why,
    })
}

fn write_plan(plan: &Plan, rate: Option<f64>) -> WritePlan {
    WritePlan {
        tables: plan.channels,
        slots: SLOTS,
        rate,
        duration: Duration::from_secs_f64(plan.duration_s),
    }
}

fn cpu_percent(pid: Option<u32>, since: Option<Duration>, secs: f64) -> Option<f64> {
    Some(cpu_seconds(pid, since)? / secs * 100.0)
}

fn cpu_seconds(pid: Option<u32>, since: Option<Duration>) -> Option<f64> {
    let now = probe::read(pid?)?.cpu;
    Some((now - since?).as_secs_f64())
}

async fn sample_every_second(
    pid: Option<u32>,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
    planned_s: f64,
) -> Vec<Sample> {
    let mut timeline = Vec::new();
    let start = std::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_count = delivered.load(Ordering::Relaxed);
    let mut last_cpu = pid.and_then(probe::read).map(|r| r.cpu);
    loop {
        tokio::select! {
            () = stop.cancelled() => return timeline,
            _ = ticker.tick() => {}
        }
        let count = delivered.load(Ordering::Relaxed);
        let reading = pid.and_then(probe::read);
        let cpu = match (reading, last_cpu) {
            (Some(r), Some(l)) => Some((r.cpu - l).as_secs_f64() * 100.0),
            _ => None,
        };
        last_cpu = reading.map(|r| r.cpu);
        let sample = Sample {
            t_s: start.elapsed().as_secs_f64(),
            deliveries_per_s: (count - last_count) as f64,
            server_cpu_percent: cpu,
            server_rss_mib: reading.map(|r| r.rss as f64 / 1048576.0),
        };
        last_count = count;
        eprintln!(
            "  [{:>3.0}s/{planned_s}s] {:>9.0} deliveries/s  server cpu {:>5}  rss {:>8}",
            sample.t_s,
            sample.deliveries_per_s,
            sample
                .server_cpu_percent
                .map_or("-".into(), |c| format!("{c:.0}%")),
            sample
                .server_rss_mib
                .map_or("-".into(), |m| format!("{m:.0} MiB")),
        );
        timeline.push(sample);
    }
}

/// The commits each subscription covers, by txid (sorted): a channel's
/// (its table's) and an entity's (its table and slot).
struct Expected {
    per_table: HashMap<usize, Vec<u32>>,
    per_slot: HashMap<(usize, i32), Vec<u32>>,
}

impl Expected {
    /// `sends`: whether the writes send signals at all (with no trigger, none is expected).
    fn of(sends: bool, writes: &[load::Write]) -> Expected {
        let mut per_table: HashMap<usize, Vec<u32>> = HashMap::new();
        let mut per_slot: HashMap<(usize, i32), Vec<u32>> = HashMap::new();
        if sends {
            for w in writes {
                per_table.entry(w.table).or_default().push(w.txid);
                per_slot.entry((w.table, w.slot)).or_default().push(w.txid);
            }
        }
        for txids in per_table.values_mut().chain(per_slot.values_mut()) {
            txids.sort_unstable();
        }
        Expected {
            per_table,
            per_slot,
        }
    }

    /// What a client subscribed to `table`'s channel, or to entity `slot` of it, should get.
    fn for_client(&self, table: usize, slot: Option<i32>) -> &[u32] {
        match slot {
            Some(slot) => self.per_slot.get(&(table, slot)),
            None => self.per_table.get(&table),
        }
        .map_or(&[], Vec::as_slice)
    }
}

/// How many signals each client should have received.
fn expected_per_client(plan: &Plan, writes: &[load::Write]) -> Vec<u64> {
    let expected = Expected::of(plan.transport != BenchTransport::None, writes);
    plans_for_clients(plan)
        .iter()
        .map(|c| expected.for_client(c.table, c.slot).len() as u64)
        .collect()
}

/// What the clients received, matched against the commits per client and txid.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    lost: u64,
    duplicates: u64,
    unexpected: u64,
}

/// Matches each client's received txids against the commits its subscription
/// covers: a commit it never got is lost, one it got twice a duplicate, one
/// it should not have got (or a signal with no txid) unexpected. Counting
/// alone would let a duplicate or a stray signal make up for a lost one.
/// `sends`: whether the writes send signals at all.
fn tally(sends: bool, writes: &[load::Write], results: &[ClientResult]) -> Tally {
    let expected = Expected::of(sends, writes);
    let mut tally = Tally::default();
    for r in results {
        let expected = expected.for_client(r.plan_table, r.plan_slot);
        let mut got: Vec<u32> = Vec::with_capacity(r.txids.len());
        for txid in &r.txids {
            match txid {
                Some(t) => got.push(*t),
                None => tally.unexpected += 1,
            }
        }
        got.sort_unstable();
        let (mut e, mut g) = (0, 0);
        while e < expected.len() || g < got.len() {
            match (expected.get(e), got.get(g)) {
                (Some(want), Some(have)) if want == have => {
                    e += 1;
                    g += 1;
                    while got.get(g) == Some(have) {
                        tally.duplicates += 1;
                        g += 1;
                    }
                }
                (Some(want), Some(have)) if want < have => {
                    tally.lost += 1;
                    e += 1;
                }
                (Some(_), None) => {
                    tally.lost += 1;
                    e += 1;
                }
                (_, Some(_)) => {
                    tally.unexpected += 1;
                    g += 1;
                }
                (None, None) => unreachable!("the loop ends first"),
            }
        }
    }
    tally
}

impl Report {
    /// The "lost" cell of a table: lost signals, and duplicates or
    /// unexpected ones when there were any.
    pub fn lost_cell(&self) -> String {
        let mut cell = self.lost.to_string();
        if self.duplicates > 0 {
            cell.push_str(&format!(" (+{} duplicated)", self.duplicates));
        }
        if self.unexpected > 0 {
            cell.push_str(&format!(" (+{} unexpected)", self.unexpected));
        }
        cell
    }

    /// Whether every client got exactly the signals it subscribed to.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.unexpected == 0
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    plan: &Plan,
    writes: &[load::Write],
    results: &[ClientResult],
    write_secs: f64,
    cpu: Option<f64>,
    rss_before: Option<u64>,
    rss_connected: Option<u64>,
    steps: Vec<Step>,
    timeline: Vec<Sample>,
) -> Report {
    let acks: HashMap<u32, u64> = writes.iter().map(|w| (w.txid, w.ack)).collect();
    let mut latency =
        Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds");
    let mut last: HashMap<u32, u64> = HashMap::new();
    for r in results {
        for (txid, recv) in &r.samples {
            if let Some(ack) = acks.get(txid) {
                // A client may get the signal a hair before the writer gets its ack.
                let l = recv.saturating_sub(*ack).max(1_000);
                let _ = latency.record(l);
                let e = last.entry(*txid).or_default();
                *e = (*e).max(l);
            }
        }
    }
    let mut last_hist =
        Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds");
    // Only meaningful when every client is sampled.
    if plan.sampled_clients == plan.clients {
        for l in last.values() {
            let _ = last_hist.record(*l);
        }
    }
    let tally = tally(plan.transport != BenchTransport::None, writes, results);
    let deliveries: u64 = results.iter().map(|r| r.signals).sum();
    let buckets = (0..40)
        .map(|i| 0.05 * 1.25f64.powi(i))
        .map(|upper_ms| {
            let lower = upper_ms / 1.25;
            let count = latency
                .iter_recorded()
                .filter(|v| {
                    let ms = v.value_iterated_to() as f64 / 1e6;
                    ms > lower && ms <= upper_ms
                })
                .map(|v| v.count_at_value())
                .sum();
            (upper_ms, count)
        })
        .collect();
    let rss_mib = rss_connected.map(|r| r as f64 / 1048576.0);
    let per_conn = match (rss_before, rss_connected) {
        (Some(b), Some(a)) if plan.clients > 0 => {
            Some(a.saturating_sub(b) as f64 / 1024.0 / plan.clients as f64)
        }
        _ => None,
    };
    Report {
        plan: plan.clone(),
        subscription: Subscription::default(),
        commits: writes.len() as u64,
        commits_per_s: writes.len() as f64 / write_secs,
        deliveries,
        deliveries_per_s: deliveries as f64 / write_secs,
        lost: tally.lost,
        duplicates: tally.duplicates,
        unexpected: tally.unexpected,
        resyncs: results.iter().map(|r| r.resyncs).sum(),
        client_errors: results.iter().filter(|r| r.error.is_some()).count() as u64,
        latency: Latency::of(&latency),
        last_client_latency: Latency::of(&last_hist),
        server_cpu_percent: cpu,
        server_cpu_s: None,
        machine_cpu_percent: None,
        load_cpu_percent: None,
        server_rss_mib: rss_mib,
        server_rss_per_connection_kib: per_conn,
        steps,
        timeline,
        latency_buckets: buckets,
    }
}

/// The summary table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    let l = &report.latency;
    let mut out = format!(
        "scenario {:?}: {} clients, {} channel(s), {} writer(s)\n\
         | commits | commits/s | deliveries | deliveries/s | p50 | p90 | p99 | max | lost | resyncs | server CPU | server RSS | RSS/conn |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {:.0} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {} | {} | {} |\n",
        report.plan.scenario,
        report.plan.clients,
        report.plan.channels,
        report.plan.writers,
        report.commits,
        report.commits_per_s,
        report.deliveries,
        report.deliveries_per_s,
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.max_ms,
        report.lost_cell(),
        report.resyncs,
        opt(report.server_cpu_percent, "%"),
        opt(report.server_rss_mib, " MiB"),
        opt(report.server_rss_per_connection_kib, " KiB"),
    );
    if report.last_client_latency.count > 0 {
        let f = &report.last_client_latency;
        out.push_str(&format!(
            "commit → last client: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} signals\n",
            f.p50_ms, f.p99_ms, f.max_ms, f.count
        ));
    }
    if let (Some(machine), Some(load)) = (report.machine_cpu_percent, report.load_cpu_percent) {
        out.push_str(&format!(
            "machine CPU {machine:.0}% of one core, of which this load generator {load:.0}%\n"
        ));
    }
    if !report.steps.is_empty() {
        out.push_str(
            "| target tx/s | commits/s | deliveries/s | server CPU |\n|---|---|---|---|\n",
        );
        for s in &report.steps {
            out.push_str(&format!(
                "| {:.0} | {:.0} | {:.0} | {} |\n",
                s.target_rate,
                s.commits_per_s,
                s.deliveries_per_s,
                opt(s.server_cpu_percent, "%")
            ));
        }
    }
    if report.client_errors > 0 {
        out.push_str(&format!(
            "{} client(s) ended with an error\n",
            report.client_errors
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(txid: u32, table: usize, slot: i32) -> load::Write {
        load::Write {
            txid,
            ack: 0,
            table,
            slot,
        }
    }

    fn client(table: usize, slot: Option<i32>, txids: &[Option<u32>]) -> ClientResult {
        ClientResult {
            plan_table: table,
            plan_slot: slot,
            signals: txids.len() as u64,
            txids: txids.to_vec(),
            ..ClientResult::default()
        }
    }

    #[test]
    fn a_duplicate_or_a_stray_signal_does_not_hide_a_lost_one() {
        let writes = [write(10, 0, 1), write(11, 0, 2), write(12, 1, 1)];
        let clients = [
            // Channel 0: got 10 twice, never 11 (the same count as 10 and 11).
            client(0, None, &[Some(10), Some(10)]),
            // Channel 0: got 10, and channel 1's 12 instead of 11.
            client(0, None, &[Some(12), Some(10)]),
            // Entity 0:2: got its 11 and a signal with no txid.
            client(0, Some(2), &[Some(11), None]),
            // Channel 1: exactly its one.
            client(1, None, &[Some(12)]),
        ];
        assert_eq!(
            tally(true, &writes, &clients),
            Tally {
                lost: 2,
                duplicates: 1,
                unexpected: 2,
            }
        );
    }

    #[test]
    fn exact_deliveries_in_any_order_tally_nothing() {
        let writes = [write(10, 0, 1), write(11, 0, 2), write(12, 0, 1)];
        let clients = [
            client(0, None, &[Some(12), Some(10), Some(11)]),
            client(0, Some(1), &[Some(10), Some(12)]),
            client(0, Some(3), &[]),
        ];
        assert_eq!(tally(true, &writes, &clients), Tally::default());
    }

    #[test]
    fn without_a_trigger_every_signal_is_unexpected() {
        let writes = [write(10, 0, 1)];
        let clients = [client(0, None, &[Some(10)])];
        assert_eq!(
            tally(false, &writes, &clients),
            Tally {
                unexpected: 1,
                ..Tally::default()
            }
        );
    }
}
