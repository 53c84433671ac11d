//! Runs the bridge: migrate, start the listener, serve HTTP and WebSocket,
//! and shut down gracefully (Close 1001 to every client, bounded grace).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::auth::{Authenticator, Authorizer, Security};
use crate::config::{AuthArgs, Limits, PgArgs};
use crate::demo::Demo;
use crate::http::serve::{self, Edge};
use crate::http::{AppState, router};
use crate::hub::shard::CLOSE_WAIT;
use crate::hub::{Hub, HubConfig};
use crate::listener::Listener;
use crate::metrics::Metrics;

/// Raises the open-file limit (every WebSocket is a file descriptor) to
/// `wanted`, or as far as the hard limit allows when `None`; above the hard
/// limit only where the process may raise that too.
pub fn raise_fd_limit(wanted: Option<u64>) -> nix::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = wanted.unwrap_or(hard).max(soft);
    if target > hard && setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok() {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, target.min(hard), hard)
}

/// How long sessions get to say goodbye on shutdown.
pub const GRACE: Duration = Duration::from_secs(10);

/// What [`start`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where Postgres is.
    pub pg: tokio_postgres::Config,
    /// How to use it: channel, transport, reconnects.
    pub pg_args: PgArgs,
    /// Bounds on clients and connections.
    pub limits: Limits,
    /// Apply the SQL kit before serving.
    pub migrate: bool,
    /// Install and serve the order example (`pgbroadcast demo`).
    pub demo: bool,
    /// Authentication and authorization.
    pub auth: AuthArgs,
}

/// A started bridge; see [`Running::shutdown`].
pub struct Running {
    /// The address it serves on.
    pub addr: SocketAddr,
    /// `true` while the LISTEN is in effect and, when the database sends
    /// through the WAL, the WAL stream too (what `/readyz` reports).
    pub ready: watch::Receiver<bool>,
    /// The hub that routes its signals.
    pub hub: Arc<Hub>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, closes every session with 1001, waits for them (bounded).
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Migrates (unless told not to), starts the listener and serves on `listener`.
pub async fn start(listener: TcpListener, settings: Settings) -> Result<Running, crate::Error> {
    let authenticator = Authenticator::new(&settings.auth).await?;
    start_with(listener, settings, authenticator).await
}

/// [`start`] with the authenticator already made from `settings.auth` (it
/// reads key files and fetches a JWKS URL: `serve` does that before it
/// starts a private Postgres, and only once).
pub async fn start_with(
    listener: TcpListener,
    settings: Settings,
    authenticator: Option<Authenticator>,
) -> Result<Running, crate::Error> {
    let addr = listener.local_addr()?;
    let auth = &settings.auth;
    if authenticator.is_none() && !addr.ip().is_loopback() && !auth.insecure {
        return Err(crate::Error::Insecure(addr));
    }
    let tls = crate::tls::connector(settings.pg_args.pg_ca_file.as_deref())?;
    if settings.migrate {
        let (mut client, connection) = settings.pg.connect(tls.clone()).await?;
        let driver = tokio::spawn(connection);
        let applied = crate::migrate::run(&mut client).await?;
        tracing::info!(?applied, "SQL kit up to date");
        drop(client);
        let _ = driver.await;
    } else {
        // Installed by someone else (a team's own migrations): it must be
        // this binary's version.
        let (client, connection) = settings.pg.connect(tls.clone()).await?;
        let driver = tokio::spawn(connection);
        let version = crate::kit::check(&client).await?;
        tracing::info!(version, "SQL kit installed at this pgbroadcast's version");
        drop(client);
        let _ = driver.await;
    }
    let demo = if settings.demo {
        Some(start_demo(&settings.pg, &tls).await?)
    } else {
        None
    };
    let security = Security {
        authorizer: match &authenticator {
            Some(_) => Some(Authorizer::new(pool(&settings.pg, 4, &tls)?)),
            None => None,
        },
        authenticator: authenticator.map(Arc::new),
        allowed_origins: auth.allowed_origins.clone(),
        auth_timeout: auth.auth_timeout,
        expiry_notice: auth.auth_expiry_notice,
        recheck: auth.authz_recheck,
    };
    let mut limits = settings.limits;
    fit_open_files(&mut limits);
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(HubConfig::from(&limits), Arc::clone(&metrics));
    let (ready_tx, ready) = watch::channel(false);
    let (listen_tx, listen_ready) = watch::channel(false);
    let (wal_tx, wal_ready) = watch::channel(false);
    tokio::spawn(both(listen_ready, wal_ready, ready_tx));
    let shutdown = CancellationToken::new();
    if settings.pg_args.transport == crate::wal::Transport::Wal {
        // Every signal comes through the WAL: nothing to LISTEN for (and no
        // LISTEN reconnection to cut a resume short).
        listen_tx.send_replace(true);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            drop(listen_tx);
        });
    } else {
        let listen = Listener::new(
            settings.pg.clone(),
            &settings.pg_args,
            Arc::clone(&hub),
            listen_tx,
            tls.clone(),
        );
        tokio::spawn(listen.run(shutdown.clone()));
    }
    let wal = crate::wal::WalListener::new(
        settings.pg.clone(),
        &settings.pg_args,
        Arc::clone(&hub),
        wal_tx,
        tls,
    );
    tokio::spawn(wal.run(shutdown.clone()));
    let state = AppState {
        hub: Arc::clone(&hub),
        limits: Arc::new(limits),
        ready: ready.clone(),
        shutdown: shutdown.clone(),
        sessions: TaskTracker::new(),
        connections: Arc::new(AtomicUsize::new(0)),
        metrics,
        security: Arc::new(security),
        // The HTTP edge is assembled here: the demo's API behind the
        // bearer check, its page in front of it.
        api: demo.map(crate::demo::router),
        pages: settings.demo.then(crate::demo::web::routes),
    };
    let task = tokio::spawn(run(listener, state, shutdown.clone().cancelled_owned()));
    tracing::info!(%addr, "serving; WebSocket at /ws/broadcast");
    Ok(Running {
        addr,
        ready,
        hub,
        shutdown,
        task,
    })
}

/// Keeps `out` at `a && b` until both senders are gone.
async fn both(
    mut a: watch::Receiver<bool>,
    mut b: watch::Receiver<bool>,
    out: watch::Sender<bool>,
) {
    loop {
        out.send_replace(*a.borrow_and_update() && *b.borrow_and_update());
        let changed = tokio::select! {
            changed = a.changed() => changed,
            changed = b.changed() => changed,
        };
        if changed.is_err() {
            return;
        }
    }
}

async fn start_demo(
    pg: &tokio_postgres::Config,
    tls: &crate::tls::Connector,
) -> Result<Demo, crate::Error> {
    let (client, connection) = pg.connect(tls.clone()).await?;
    let driver = tokio::spawn(connection);
    crate::demo::install(&client).await?;
    drop(client);
    let _ = driver.await;
    Ok(Demo {
        pool: pool(pg, 16, tls)?,
    })
}

fn pool(
    pg: &tokio_postgres::Config,
    size: usize,
    tls: &crate::tls::Connector,
) -> std::io::Result<Pool> {
    let manager = Manager::from_config(
        pg.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(std::io::Error::other)
}

/// Serves until `shutdown` resolves, then closes sessions and waits for them.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let sessions = state.sessions.clone();
    let hub = Arc::clone(&state.hub);
    let edge = Edge {
        handshake_timeout: state.limits.handshake_timeout,
        max_pending: state.limits.max_pending_connections,
    };
    let metrics = Arc::clone(&state.metrics);
    let app = serve::bound_requests(router(state), edge.handshake_timeout);
    let accepting = tokio::spawn(serve::serve(listener, app, edge, metrics, token.clone()));
    shutdown.await;
    token.cancel();
    // Every session is closed with 1001 by its shard; those connecting
    // still, as they arrive.
    hub.shutdown(CLOSE_WAIT);
    let connections = accepting.await.map_err(std::io::Error::other)?;
    sessions.close();
    let everyone = async {
        connections.wait().await;
        sessions.wait().await;
    };
    if tokio::time::timeout(GRACE, everyone).await.is_err() {
        tracing::warn!(
            remaining = sessions.len() + connections.len(),
            "connections still open after the grace period"
        );
    }
    Ok(())
}

/// Lowers the connection limits to what the open-file limit allows (see
/// [`serve::fit_open_files`]), saying so.
fn fit_open_files(limits: &mut Limits) {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((open_files, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let (connections, pending) = serve::fit_open_files(
        limits.max_connections,
        limits.max_pending_connections,
        open_files,
    );
    if (connections, pending) != (limits.max_connections, limits.max_pending_connections) {
        tracing::warn!(
            open_files,
            max_connections = connections,
            max_pending_connections = pending,
            "the open-file limit is too low for --max-connections {} and --max-pending-connections {}; \
             serving fewer so that descriptors never run out (raise `ulimit -n` to serve more)",
            limits.max_connections,
            limits.max_pending_connections,
        );
        limits.max_connections = connections;
        limits.max_pending_connections = pending;
    }
}
