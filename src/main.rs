use std::process::ExitCode;

use clap::Parser;
use pgbroadcast::auth::Authenticator;
use pgbroadcast::cluster::{self, Cluster};
use pgbroadcast::config::{Cli, Command, LogFormat, MigrateArgs, ServeArgs, SlotsArgs, SqlArgs};
use pgbroadcast::{Error, migrate, server};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pgbroadcast::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(args, false).await,
        Command::Demo(args) => serve(args, true).await,
        Command::Migrate(args) => run_migrate(args).await,
        Command::Slots(args) => run_slots(args).await,
        Command::Sql(args) => print_sql(args),
        Command::Bench { args } => return run_bench(args, cli.log_format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %pgbroadcast::error_chain(&err), "pgbroadcast failed");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), handled from the moment this is created on.
struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    fn install() -> std::io::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves when either signal has arrived (also one that arrived before this was called).
    async fn requested(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// `serve` and `demo`. A stop signal at any point ends it with `Ok` and
/// nothing left behind: during start-up the start is abandoned (the private
/// cluster's start is cancelled and its directory removed), afterwards the
/// shutdown is graceful.
async fn serve(args: ServeArgs, demo: bool) -> Result<(), Error> {
    // Before anything is started: from here on SIGTERM and SIGINT never take
    // their default action (ending the process on the spot), so a stop during
    // start-up still removes the private cluster.
    let stop = &mut Stop::install()?;
    if let Err(err) = server::raise_fd_limit(None) {
        tracing::warn!(error = %err, "could not raise the open-file limit");
    }
    // What can fail cheaply fails before a private cluster is started.
    let pg: Option<tokio_postgres::Config> =
        args.database_url.as_deref().map(str::parse).transpose()?;
    pgbroadcast::tls::connector(args.pg.pg_ca_file.as_deref())?;
    let authenticator = Authenticator::new(&args.auth).await?;
    if authenticator.is_none() && !args.listen.ip().is_loopback() && !args.auth.insecure {
        return Err(Error::Insecure(args.listen));
    }
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
    })?;

    let (pg, cluster) = match pg {
        Some(pg) => (pg, None),
        None => {
            let Some(cluster) = start_private_cluster(stop).await? else {
                tracing::info!("stopped during start-up");
                return Ok(());
            };
            let url = cluster.url("postgres");
            println!("{}{url}", pgbroadcast::banner::PRIVATE_POSTGRES);
            println!("  psql \"{url}\"");
            println!("  data: {}", cluster.dir().display());
            (cluster.config("postgres"), Some(cluster))
        }
    };
    let result = serve_on(listener, pg, args, authenticator, demo, stop).await;
    if let Some(cluster) = cluster {
        remove(cluster).await;
    }
    result
}

/// Starts a private cluster unless a stop is requested first (then `None`,
/// with nothing left behind).
async fn start_private_cluster(stop: &mut Stop) -> Result<Option<Cluster>, Error> {
    let cancel = cluster::Cancel::default();
    let mut start = tokio::task::spawn_blocking({
        let cancel = cancel.clone();
        move || Cluster::builder().start_cancellable(&cancel)
    });
    tokio::select! {
        started = &mut start => Ok(Some(started.map_err(std::io::Error::other)??)),
        () = stop.requested() => {
            cancel.cancel();
            // The start removes what it made before it returns; if it had
            // just finished, the cluster is removed here.
            if let Ok(Ok(cluster)) = start.await {
                remove(cluster).await;
            }
            Ok(None)
        }
    }
}

/// Stops the cluster and removes its directory (blocking, so off the runtime's threads).
async fn remove(cluster: Cluster) {
    let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
}

/// Migrates, serves until a stop is requested, shuts down gracefully.
async fn serve_on(
    listener: TcpListener,
    pg: tokio_postgres::Config,
    args: ServeArgs,
    authenticator: Option<Authenticator>,
    demo: bool,
    stop: &mut Stop,
) -> Result<(), Error> {
    let settings = server::Settings {
        pg,
        pg_args: args.pg,
        limits: args.limits,
        migrate: !args.no_migrate,
        demo,
        auth: args.auth,
    };
    let running = tokio::select! {
        running = server::start_with(listener, settings, authenticator) => running?,
        () = stop.requested() => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let addr = running.addr;
    println!(
        "{}{addr} (WebSocket: ws://{addr}/ws/broadcast)",
        pgbroadcast::banner::LISTENING
    );
    if demo {
        println!("  REST API: http://{addr}/api/orders");
        println!("  OpenAPI:  http://{addr}/openapi.json");
    }
    stop.requested().await;
    tracing::info!("shutting down");
    running.shutdown().await?;
    Ok(())
}

/// The executable `pgbroadcast bench` hands over to: `pgbroadcast-bench`,
/// built beside this one by `cargo build` in the workspace.
const BENCH_BIN: &str = "pgbroadcast-bench";

/// `pgbroadcast bench ARGS`: runs `pgbroadcast-bench ARGS` from the
/// directory of this executable, in its place (exec, so its exit code is
/// this command's); `--log-format json` given before the arguments reaches
/// it as PGBROADCAST_LOG_FORMAT.
fn run_bench(args: Vec<std::ffi::OsString>, log_format: LogFormat) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let bin = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(BENCH_BIN),
        Err(err) => {
            tracing::error!(error = %err, "cannot locate this executable");
            return ExitCode::FAILURE;
        }
    };
    if !bin.is_file() {
        eprintln!(
            "pgbroadcast bench: {} not found: the benchmark is its own executable, built \
             beside pgbroadcast by `cargo build --release` (or `cargo build --release -p \
             {BENCH_BIN}`) at the repository root",
            bin.display()
        );
        return ExitCode::FAILURE;
    }
    // argv[0] is what was typed, so `ps` and the command line a comparison
    // records read `pgbroadcast bench …`.
    let mut arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "pgbroadcast".into());
    arg0.push(" bench");
    let mut command = std::process::Command::new(&bin);
    command.arg0(arg0);
    if log_format == LogFormat::Json {
        command.env("PGBROADCAST_LOG_FORMAT", "json");
    }
    let err = command.args(args).exec();
    eprintln!("pgbroadcast bench: cannot run {}: {err}", bin.display());
    ExitCode::FAILURE
}

async fn run_slots(args: SlotsArgs) -> Result<(), Error> {
    use pgbroadcast::wal;
    let config: tokio_postgres::Config = args.db.database_url.parse()?;
    let tls = pgbroadcast::tls::connector(args.db.pg_ca_file.as_deref())?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    let mut doomed = args.drop.clone();
    if args.drop_inactive {
        let all = wal::slots(&client).await?;
        doomed.extend(
            all.into_iter()
                .filter(|s| !s.active && !s.temporary)
                .map(|s| s.name),
        );
    }
    for name in &doomed {
        wal::drop_slot(&client, name).await?;
        println!("dropped {name}");
    }
    let all = wal::slots(&client).await?;
    if all.is_empty() {
        println!("no pgbroadcast replication slots in this database");
        return Ok(());
    }
    println!(
        "{:<40} {:<8} {:>14} {:<11} {:>14} confirmed",
        "slot", "state", "retained_wal", "wal_status", "safe_wal"
    );
    for s in all {
        let state = match (s.active, s.temporary) {
            (true, true) => "temp",
            (true, false) => "active",
            (false, _) => "INACTIVE",
        };
        let bytes = |b: Option<i64>| b.map_or("-".to_owned(), |b| b.to_string());
        println!(
            "{:<40} {:<8} {:>14} {:<11} {:>14} {}",
            s.name,
            state,
            bytes(s.retained_bytes),
            s.wal_status.as_deref().unwrap_or("-"),
            s.safe_bytes
                .map_or("unlimited".to_owned(), |b| b.to_string()),
            s.confirmed.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// `pgbroadcast sql [--from N]`: the kit's steps after N, on stdout.
fn print_sql(args: SqlArgs) -> Result<(), Error> {
    let sql = pgbroadcast::kit::sql_from(args.from)?;
    print!("{sql}");
    Ok(())
}

async fn run_migrate(args: MigrateArgs) -> Result<(), Error> {
    let config: tokio_postgres::Config = args.database_url.parse()?;
    let tls = pgbroadcast::tls::connector(args.pg_ca_file.as_deref())?;
    let (mut client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    let applied = migrate::run(&mut client).await?;
    if applied.is_empty() {
        println!("SQL kit already up to date");
    } else {
        for name in applied {
            println!("applied {name}");
        }
    }
    Ok(())
}
