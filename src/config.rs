//! Command line and environment: every setting is a flag with an env twin.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command line of `pgbroadcast`.
#[derive(Debug, Parser)]
#[command(
    name = "pgbroadcast",
    version,
    about = "Postgres announces its own changes over WebSocket"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr: `text` (coloured only on a terminal, and not
    /// when NO_COLOR is set) or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "PGBROADCAST_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
}

/// How log lines are written: `Text`, human-readable lines, or `Json`, one
/// JSON object per line. The variants have no doc comments of their own:
/// clap would print them in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum LogFormat {
    Text,
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge: migrate, LISTEN, serve WebSocket clients.
    /// Without DATABASE_URL it starts a private Postgres and removes it on exit.
    Serve(ServeArgs),
    /// Apply the embedded SQL kit (schema `broadcast`) to DATABASE_URL; idempotent.
    Migrate(MigrateArgs),
    /// `serve` plus the order example: tables and routes in SQL, a REST API
    /// under /api whose mutations return txids, and /openapi.json with x-sync.
    Demo(ServeArgs),
    /// Print the SQL kit as one idempotent, transaction-safe file for your own
    /// migration tool (dbmate, Flyway, Alembic…): `pgbroadcast sql >
    /// 0001_pgbroadcast_kit.sql`; with `--from N`, only the steps after
    /// version N (`select broadcast.kit_version()`), to upgrade.
    Sql(SqlArgs),
    /// List the replication slots of pgbroadcast nodes (`--node-id`) in
    /// DATABASE_URL, with the WAL each retains; drop those of nodes gone for good.
    Slots(SlotsArgs),
    /// Measure a server: WebSocket clients, writes through routed tables,
    /// commit → client latency, deliveries/s, losses, server CPU and memory.
    /// Runs `pgbroadcast-bench` (built beside this executable) with the
    /// arguments that follow; `pgbroadcast bench --help` lists them.
    #[command(disable_help_flag = true)]
    Bench {
        /// The bench's own options and subcommands (`pgbroadcast bench --help`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "BENCH ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

/// Options of `serve` and `demo`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = "PGBROADCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Postgres to use; without it a private cluster is started.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Do not apply the SQL kit on start.
    #[arg(long, env = "PGBROADCAST_NO_MIGRATE")]
    pub no_migrate: bool,

    /// How to reach Postgres and what to LISTEN on.
    #[command(flatten)]
    pub pg: PgArgs,

    /// Bounds on clients and connections.
    #[command(flatten)]
    pub limits: Limits,

    /// Authentication and authorization.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Authentication (JWT) and the rules around it. With neither a secret nor
/// public keys, clients are not authenticated — allowed only on loopback
/// unless `--insecure` is given.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Shared secret for HS256 tokens.
    #[arg(long, env = "PGBROADCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file of RSA / EC P-256 public keys, or a JWKS file, for RS256 / ES256 tokens.
    #[arg(long, env = "PGBROADCAST_JWT_PUBLIC_KEYS")]
    pub jwt_public_keys: Option<std::path::PathBuf>,

    /// Required `aud` claim.
    #[arg(long, env = "PGBROADCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim.
    #[arg(long, env = "PGBROADCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// URL of a JWKS document with RS256 / ES256 public keys (https; plain
    /// http only to a loopback address), fetched at start and refreshed.
    #[arg(long, env = "PGBROADCAST_JWKS_URL", value_parser = parse_jwks_url)]
    pub jwks_url: Option<String>,

    /// PEM file of CA certificates to trust for the JWKS URL, beside the Mozilla roots.
    #[arg(long, env = "PGBROADCAST_JWKS_CA_FILE", requires = "jwks_url")]
    pub jwks_ca_file: Option<std::path::PathBuf>,

    /// How often the JWKS URL is fetched again (besides on an unknown `kid`).
    #[arg(long, env = "PGBROADCAST_JWKS_REFRESH", default_value = "10m", value_parser = duration_in::<10_000, 86_400_000>)]
    pub jwks_refresh: Duration,

    /// Clock skew allowed when checking `exp`, `nbf` and `iat` (whole seconds).
    #[arg(long, env = "PGBROADCAST_JWT_LEEWAY", default_value = "5s", value_parser = duration_in::<0, 300_000>)]
    pub jwt_leeway: Duration,

    /// A new connection must authenticate within this long.
    #[arg(long, env = "PGBROADCAST_AUTH_TIMEOUT", default_value = "10s", value_parser = duration_in::<100, 600_000>)]
    pub auth_timeout: Duration,

    /// `auth_expiring` is sent this long before a token's `exp`.
    #[arg(long, env = "PGBROADCAST_AUTH_EXPIRY_NOTICE", default_value = "30s", value_parser = duration_in::<0, 3_600_000>)]
    pub auth_expiry_notice: Duration,

    /// Existing subscriptions are authorized again this often (so revokes reach them).
    #[arg(long, env = "PGBROADCAST_AUTHZ_RECHECK", default_value = "60s", value_parser = duration_in::<100, 86_400_000>)]
    pub authz_recheck: Duration,

    /// Browser origins allowed to open WebSockets and to call the REST API
    /// (CORS), comma-separated; empty: any.
    #[arg(long, env = "PGBROADCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Serve a non-loopback address without authentication.
    #[arg(long, env = "PGBROADCAST_INSECURE")]
    pub insecure: bool,
}

impl Default for AuthArgs {
    /// What the flags' own defaults give, the environment aside.
    fn default() -> Self {
        defaults()
    }
}

/// Options of `migrate`: where the database is.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The Postgres database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// PEM file of CA certificates to trust for TLS to Postgres.
    #[arg(long, env = "PGBROADCAST_PG_CA_FILE")]
    pub pg_ca_file: Option<std::path::PathBuf>,
}

/// `pgbroadcast sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Print only the steps after this kit version (0: the whole kit).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub from: u32,
}

/// Options of `slots`.
#[derive(Debug, Args)]
pub struct SlotsArgs {
    /// Where the database is.
    #[command(flatten)]
    pub db: MigrateArgs,

    /// Drop this slot (repeatable); refused while a node streams from it.
    #[arg(long = "drop", value_name = "SLOT")]
    pub drop: Vec<String>,

    /// Drop every inactive pgbroadcast slot (nodes stopped or gone).
    #[arg(long)]
    pub drop_inactive: bool,
}

/// How the bridge talks to Postgres.
#[derive(Debug, Clone, Args)]
pub struct PgArgs {
    /// The one Postgres NOTIFY channel carrying every signal. Must match the
    /// database's `pgbroadcast.channel` setting (default `pgbroadcast`).
    #[arg(long, env = "PGBROADCAST_PG_CHANNEL", default_value = "pgbroadcast", value_parser = parse_pg_channel)]
    pub pg_channel: String,

    /// Longest wait between reconnect attempts of the LISTEN connection.
    #[arg(long, env = "PGBROADCAST_RECONNECT_MAX", default_value = "5s", value_parser = duration_in::<100, 600_000>)]
    pub reconnect_max: Duration,

    /// PEM file of CA certificates to trust for TLS to Postgres, beside the
    /// Mozilla roots (for a private CA; `sslmode` in the URL decides whether TLS is used).
    #[arg(long, env = "PGBROADCAST_PG_CA_FILE")]
    pub pg_ca_file: Option<std::path::PathBuf>,

    /// How often to read pg_notification_queue_usage() (metric and warning).
    #[arg(long, env = "PGBROADCAST_QUEUE_CHECK", default_value = "10s", value_parser = duration_in::<100, 3_600_000>)]
    pub queue_check: Duration,

    /// Log a warning when Postgres's NOTIFY queue is fuller than this percentage.
    #[arg(long, env = "PGBROADCAST_QUEUE_WARN_PERCENT", default_value_t = 50, value_parser = count_in::<1, 100>)]
    pub queue_warn_percent: usize,

    /// Which transports to read: `notify` LISTENs; `wal` streams the kit's
    /// logical decoding messages instead (needs `wal_level=logical` and a
    /// role with REPLICATION; nothing LISTENs); `auto` LISTENs and starts
    /// the stream too once the database's `pgbroadcast.transport` is `wal`.
    #[arg(long, env = "PGBROADCAST_TRANSPORT", value_enum, default_value_t = Transport::Auto)]
    pub transport: Transport,

    /// `logical_decoding_work_mem` for the WAL stream's session (e.g.
    /// `256MB`): a transaction whose changes exceed it is spilled to disk
    /// while decoded, and signals committed after it wait longer.
    /// Unset: the server's setting (64MB by default).
    #[arg(long, env = "PGBROADCAST_WAL_DECODING_WORK_MEM", value_parser = parse_memory)]
    pub wal_decoding_work_mem: Option<String>,

    /// This node's name for its WAL stream (`[a-z0-9_]`, up to 50): its
    /// replication slot is `pgbroadcast_<node-id>`, kept across restarts
    /// and confirmed `--history-age` behind, so after a restart (even a
    /// crash) clients resume exactly. Unset: a temporary slot per
    /// connection (nothing left behind; a restart means `resync`). Give
    /// each node its own.
    #[arg(long, env = "PGBROADCAST_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
}

/// `--node-id`: the tail of a slot name.
pub(crate) fn parse_node_id(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.len() > 50
        || !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "{text:?}: a node id is 1 to 50 of a-z, 0-9 and _ (it names the replication slot pgbroadcast_<id>)"
        ));
    }
    Ok(text.to_owned())
}

impl Default for PgArgs {
    /// What the flags' own defaults give, the environment aside.
    fn default() -> Self {
        defaults()
    }
}

/// Which transport(s) the service reads (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// LISTEN always; the WAL stream too once the database's
    /// `pgbroadcast.transport` setting is `wal` (checked at start and then
    /// every `--queue-check`).
    Auto,
    /// LISTEN only.
    Notify,
    /// The WAL stream only, from the start: nothing LISTENs, so signals a
    /// session still sends with NOTIFY are not read (a warning says so at
    /// start when the database's setting is not `wal`).
    Wal,
}

/// Limits of the WebSocket endpoint and the node's memory.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Open WebSocket connections; more are refused with HTTP 503 before the upgrade.
    #[arg(long, env = "PGBROADCAST_MAX_CONNECTIONS", default_value_t = 50_000, value_parser = count_in::<1, 10_000_000>)]
    pub max_connections: usize,

    /// HTTP connections not (yet) upgraded to WebSocket; when they are all
    /// taken, the oldest is closed to make room for the newest.
    #[arg(long, env = "PGBROADCAST_MAX_PENDING_CONNECTIONS", default_value_t = 1024, value_parser = count_in::<1, 1_000_000>)]
    pub max_pending_connections: usize,

    /// Time a client has to send a request's headers (from connecting, or
    /// from its previous request) and for a request to be handled; idle
    /// keep-alive connections are closed after it too.
    #[arg(long, env = "PGBROADCAST_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration_in::<100, 600_000>)]
    pub handshake_timeout: Duration,

    /// Messages a client may send per second; more are dropped with a `rate_limited` error.
    #[arg(long, env = "PGBROADCAST_MAX_MESSAGES_PER_SECOND", default_value_t = 50, value_parser = count_in::<1, 100_000>)]
    pub max_messages_per_second: usize,

    /// Topics ("order", "order:123") one connection may hold.
    #[arg(long, env = "PGBROADCAST_MAX_SUBSCRIPTIONS", default_value_t = 1000, value_parser = count_in::<1, 1_000_000>)]
    pub max_subscriptions: usize,

    /// Topics in one subscribe or unsubscribe message.
    #[arg(
        long,
        env = "PGBROADCAST_MAX_CHANNELS_PER_MESSAGE",
        default_value_t = 100,
        value_parser = count_in::<1, 10_000>
    )]
    pub max_channels_per_message: usize,

    /// Largest client message answered with an error frame; four times this
    /// closes the connection (1009) without reading it.
    #[arg(long, env = "PGBROADCAST_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = count_in::<1024, 16_777_216>)]
    pub max_message_bytes: usize,

    /// Frames queued for one client before it is owed a resync.
    #[arg(long, env = "PGBROADCAST_OUTBOUND_QUEUE", default_value_t = 1024, value_parser = count_in::<1, 1_000_000>)]
    pub outbound_queue: usize,

    /// Bytes queued for one client before it is owed a resync.
    #[arg(long, env = "PGBROADCAST_OUTBOUND_BYTES", default_value_t = 1024 * 1024, value_parser = count_in::<1024, 1_073_741_824>)]
    pub outbound_bytes: usize,

    /// A client whose queue keeps overflowing (each time within this long of
    /// the last) for longer than this is closed with 1013.
    #[arg(long, env = "PGBROADCAST_MAX_LAG", default_value = "30s", value_parser = duration_in::<100, 3_600_000>)]
    pub max_lag: Duration,

    /// Signals kept for clients that resume after a reconnect ...
    #[arg(long, env = "PGBROADCAST_HISTORY_SIZE", default_value_t = 10_000, value_parser = count_in::<0, 10_000_000>)]
    pub history_size: usize,

    /// ... and for how long.
    #[arg(long, env = "PGBROADCAST_HISTORY_AGE", default_value = "2m", value_parser = duration_in::<0, 86_400_000>)]
    pub history_age: Duration,

    /// Fan-out shards, each writing to its share of the sockets; 0: one per core.
    #[arg(long, env = "PGBROADCAST_SHARDS", default_value_t = 0, value_parser = count_in::<0, 1024>)]
    pub shards: usize,

    /// Interval of WebSocket pings; a peer silent for two intervals is dropped.
    #[arg(long, env = "PGBROADCAST_HEARTBEAT", default_value = "30s", value_parser = duration_in::<1000, 3_600_000>)]
    pub heartbeat: Duration,

    /// Largest REST request body; larger ones are refused with HTTP 413 unread.
    #[arg(long, env = "PGBROADCAST_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = count_in::<1024, 16_777_216>)]
    pub max_body_bytes: usize,
}

/// The default of `--max-body-bytes`: room for the largest order the example
/// API accepts, written out with every character escaped.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

impl Default for Limits {
    /// What the flags' own defaults give, the environment aside.
    fn default() -> Self {
        defaults()
    }
}

impl Limits {
    /// Messages larger than this are not even read: the connection is closed (1009).
    pub fn hard_message_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(4)
    }
}

/// `T` as its flags' defaults make it, with no flags given and the
/// environment not read: each default is written once, in its `#[arg]`
/// attribute, and `Default` (tests, embedders) gets the same values.
fn defaults<T: clap::FromArgMatches + Args>() -> T {
    let mut command = T::augment_args(clap::Command::new("defaults"));
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |arg| arg.env(None::<&str>));
    }
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every flag has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// A Postgres channel name: an identifier of 1 to 63 bytes (longer ones are
/// silently truncated by Postgres, so LISTEN and NOTIFY would disagree).
pub fn parse_pg_channel(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!(
            "{s:?} must be 1 to 63 bytes (a Postgres identifier)"
        ));
    }
    Ok(s.to_owned())
}

/// A Postgres memory setting: digits and a unit, `64kB` to `1TB`.
pub fn parse_memory(s: &str) -> Result<String, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !["kB", "MB", "GB", "TB"].contains(&unit)
    {
        return Err(format!(
            "{s:?} is no memory size: digits and kB, MB, GB or TB, e.g. 256MB"
        ));
    }
    Ok(s.to_owned())
}

/// A JWKS URL: https, or http to a loopback address.
pub fn parse_jwks_url(s: &str) -> Result<String, String> {
    jwks_uri(s)?;
    Ok(s.to_owned())
}

/// Whether `url` may serve keys: https, or plain http to this machine only
/// (a loopback address or `localhost`, for development), without credentials.
pub fn jwks_uri(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let Some(host) = uri.host() else {
        return Err("not an absolute URL with a host".into());
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("credentials in the URL are not supported".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(
            "must be https (plain http is allowed only to a loopback address such as 127.0.0.1 or localhost)"
                .into(),
        ),
        _ => Err("must be an https:// URL".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses a duration: `250ms`, `1.5s`, `2m`, `1h`, `1h 30m` (humantime's
/// units), or a bare number of seconds (`7`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(seconds) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("{s:?} is not a duration of zero or more seconds"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 250ms, 1.5s, 2m or 1h: {e}"))
}

/// A duration between `MIN_MS` and `MAX_MS` milliseconds.
pub fn duration_in<const MIN_MS: u64, const MAX_MS: u64>(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// A whole number between `MIN` and `MAX`.
pub fn count_in<const MIN: usize, const MAX: usize>(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !(MIN..=MAX).contains(&n) {
        return Err(format!("must be between {MIN} and {MAX}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Default` is what the flags' defaults give: one source for each.
    #[test]
    fn defaults_are_the_flags_defaults() {
        let Command::Serve(serve) = Cli::try_parse_from(["pgbroadcast", "serve"])
            .unwrap()
            .command
        else {
            panic!("serve")
        };
        assert_eq!(
            format!("{:?}", serve.limits),
            format!("{:?}", Limits::default())
        );
        assert_eq!(
            format!("{:?}", serve.pg),
            format!("{:?}", PgArgs::default())
        );
        assert_eq!(
            format!("{:?}", serve.auth),
            format!("{:?}", AuthArgs::default())
        );
        // Spot checks against the documented values.
        let limits = Limits::default();
        assert_eq!(limits.outbound_bytes, 1024 * 1024);
        assert_eq!(limits.heartbeat, Duration::from_secs(30));
        assert_eq!(PgArgs::default().pg_channel, "pgbroadcast");
    }

    #[test]
    fn urls_must_be_https_or_loopback() {
        for ok in [
            "https://idp.example/.well-known/jwks.json",
            "https://127.0.0.1:8443/keys",
            "http://127.0.0.1:8080/keys",
            "http://127.1.2.3/keys",
            "http://localhost:8080/realms/app/protocol/openid-connect/certs",
            "http://[::1]:8080/keys",
        ] {
            assert!(jwks_uri(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://idp.example/keys", "must be https"),
            ("http://10.0.0.1/keys", "must be https"),
            ("ftp://idp.example/keys", "must be an https"),
            ("/keys", "host"),
            ("https://user:pw@idp.example/keys", "credentials"),
            ("https://idp example/keys", "not a URL"),
        ] {
            let err = jwks_uri(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("999999999999999999999h").is_err());
        assert!(duration_in::<1000, 3_600_000>("0s").is_err());
        assert_eq!(
            duration_in::<1000, 3_600_000>("1h"),
            Ok(Duration::from_secs(3600))
        );
        assert!(duration_in::<1000, 3_600_000>("61m").is_err());
        assert_eq!(count_in::<1, 10>("10"), Ok(10));
        assert!(count_in::<1, 10>("0").is_err());
        assert!(count_in::<1, 10>("-3").is_err());
    }

    #[test]
    fn memory_sizes_are_digits_and_a_postgres_unit() {
        assert_eq!(parse_memory("256MB"), Ok("256MB".to_owned()));
        assert_eq!(parse_memory("64kB"), Ok("64kB".to_owned()));
        assert_eq!(parse_memory("1GB"), Ok("1GB".to_owned()));
        // Nothing else reaches the replication connection's options.
        for bad in ["", "MB", "256", "256mb", "1 GB", "1GB -c fsync=off", "-1GB"] {
            assert!(parse_memory(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_duration_flag_takes_hours_and_fractions() {
        use clap::Parser;
        // The documented maximum of --heartbeat, and a fraction.
        for args in [
            ["pgbroadcast", "serve", "--heartbeat=1h"],
            ["pgbroadcast", "serve", "--max-lag=1.5s"],
            ["pgbroadcast", "serve", "--history-age=1h 30m"],
        ] {
            if let Err(err) = Cli::try_parse_from(args) {
                panic!("{args:?}: {err}");
            }
        }
    }

    #[test]
    fn out_of_range_limits_are_refused_at_start() {
        use clap::Parser;
        for flag in [
            "--heartbeat=0",
            "--max-message-bytes=0",
            "--outbound-queue=0",
            "--max-channels-per-message=0",
            "--max-body-bytes=1023",
            "--max-body-bytes=16777217",
            "--jwt-leeway=6m",
            "--jwks-refresh=1s",
        ] {
            let err = Cli::try_parse_from(["pgbroadcast", "serve", flag]).unwrap_err();
            assert!(err.to_string().contains("must be between"), "{flag}: {err}");
        }
        assert!(Cli::try_parse_from(["pgbroadcast", "serve", "--heartbeat=5s"]).is_ok());
    }

    #[test]
    fn jwks_flags_are_checked_at_start() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["pgbroadcast", "serve"][..], args].concat())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(parse(&["--jwks-url", "https://idp.example/jwks.json"]).is_ok());
        let err = parse(&["--jwks-url", "http://idp.example/jwks.json"]).unwrap_err();
        assert!(err.contains("must be https"), "{err}");
        // A CA file for a URL that is not there is a mistake.
        let err = parse(&["--jwks-ca-file", "ca.pem"]).unwrap_err();
        assert!(err.contains("--jwks-url"), "{err}");
    }

    #[test]
    fn pg_channel_must_fit_an_identifier() {
        assert_eq!(parse_pg_channel("app_events"), Ok("app_events".into()));
        assert!(parse_pg_channel("").is_err());
        assert!(parse_pg_channel(&"x".repeat(64)).is_err());
    }

    #[test]
    fn log_format_is_accepted_by_every_subcommand_before_or_after_it() {
        use clap::Parser;
        for command in [
            &["serve"][..],
            &["demo"],
            &["migrate", "--database-url", "postgres://localhost/x"],
            &["bench"],
        ] {
            let before = [&["pgbroadcast", "--log-format", "json"][..], command].concat();
            let after = [&["pgbroadcast"][..], command, &["--log-format", "json"]].concat();
            for args in [before, after] {
                let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(cli.log_format, LogFormat::Json, "{args:?}");
            }
        }
        let err = Cli::try_parse_from(["pgbroadcast", "serve", "--log-format", "xml"]).unwrap_err();
        assert!(err.to_string().contains("text, json"), "{err}");
    }

    #[test]
    fn bench_takes_every_argument_after_it_as_it_is() {
        use clap::Parser;
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Bench { args },
                ..
            }) => args,
            other => panic!("{args:?}: {other:?}"),
        };
        let args = [
            "--scenario",
            "smoke",
            "--target",
            "ws://h:1/ws",
            "--help",
            "-x",
        ];
        let after = parse(&[&["pgbroadcast", "bench"][..], &args].concat());
        assert_eq!(after, args.map(std::ffi::OsString::from));
        assert!(parse(&["pgbroadcast", "bench"]).is_empty());
        assert_eq!(parse(&["pgbroadcast", "bench", "compare"]), ["compare"]);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
