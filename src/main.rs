use std::process::ExitCode;

use clap::Parser;
use pgbroadcast::auth::Authenticator;
use pgbroadcast::cluster::Cluster;
use pgbroadcast::config::{Cli, Command, MigrateArgs, ServeArgs};
use pgbroadcast::{Error, migrate, server};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args, false).await,
        Command::Demo(args) => serve(args, true).await,
        Command::Migrate(args) => run_migrate(args).await,
        Command::Bench(args) => run_bench(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %pgbroadcast::error_chain(&err), "pgbroadcast failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, demo: bool) -> Result<(), Error> {
    if let Err(err) = server::raise_fd_limit(None) {
        tracing::warn!(error = %err, "could not raise the open-file limit");
    }
    // What can fail cheaply fails before a private cluster is started.
    let pg: Option<tokio_postgres::Config> =
        args.database_url.as_deref().map(str::parse).transpose()?;
    pgbroadcast::tls::connector(args.pg.pg_ca_file.as_deref())?;
    let authenticator = Authenticator::new(
        args.auth.jwt_secret.as_deref(),
        args.auth.jwt_public_keys.as_deref(),
        args.auth.jwt_audience.clone(),
        args.auth.jwt_issuer.clone(),
    )?;
    if authenticator.is_none() && !args.listen.ip().is_loopback() && !args.auth.insecure {
        return Err(Error::Insecure(args.listen));
    }
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
    })?;

    let (pg, cluster) = match pg {
        Some(pg) => (pg, None),
        None => {
            let cluster = tokio::task::spawn_blocking(|| Cluster::builder().start())
                .await
                .map_err(std::io::Error::other)??;
            let url = cluster.url("postgres");
            println!("private Postgres (removed on exit): {url}");
            println!("  psql \"{url}\"");
            println!("  data: {}", cluster.dir().display());
            (cluster.config("postgres"), Some(cluster))
        }
    };
    let settings = server::Settings {
        pg,
        pg_args: args.pg,
        limits: args.limits,
        migrate: !args.no_migrate,
        demo,
        auth: args.auth,
    };
    let running = server::start(listener, settings).await?;
    let addr = running.addr;
    println!("listening on http://{addr} (WebSocket: ws://{addr}/ws/broadcast)");
    if demo {
        println!("  REST API: http://{addr}/api/orders");
        println!("  OpenAPI:  http://{addr}/openapi.json");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await?;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || drop(cluster))
            .await
            .ok();
    }
    Ok(())
}

async fn run_bench(args: pgbroadcast::bench::BenchArgs) -> Result<(), Error> {
    let out = args.out.clone();
    let report = pgbroadcast::bench::run(args).await?;
    println!("{}", pgbroadcast::bench::table(&report));
    println!("details: {}/", out.display());
    if report.lost > 0 {
        tracing::error!(lost = report.lost, "signals were lost");
        return Err(Error::Io(std::io::Error::other("signals were lost")));
    }
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
