//! Test harness: a real Postgres cluster per test binary (started once, gone
//! when the binary exits), a fresh database per test, the bridge served on
//! 127.0.0.1:0, and real WebSocket clients.
#![allow(dead_code)]

pub mod binary;
pub mod checker;
pub mod pki;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pgbroadcast::cluster::Cluster;
use pgbroadcast::config::{AuthArgs, Limits, PgArgs};
use pgbroadcast::server::{self, Running, Settings};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something it expects before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The cluster shared by the tests of one binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| test_cluster().expect("start test cluster"))
}

/// A new private cluster tuned for tests (no fsync: durability is not under
/// test), with logical decoding so tests can read transactions from the WAL
/// the way Electric does.
pub fn test_cluster() -> Result<Cluster, pgbroadcast::cluster::Error> {
    Cluster::builder()
        .setting("fsync", "off")
        .setting("wal_level", "logical")
        .setting("max_replication_slots", "20")
        .setting("max_wal_senders", "20")
        .start()
}

/// A fresh database in `cluster`.
pub struct TestDb {
    pub name: String,
    pub config: tokio_postgres::Config,
}

pub async fn fresh_db_in(cluster: &Cluster) -> TestDb {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = connect(&cluster.config("postgres")).await;
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .expect("create database");
    TestDb {
        config: cluster.config(&name),
        name,
    }
}

pub async fn fresh_db() -> TestDb {
    fresh_db_in(cluster()).await
}

impl TestDb {
    pub async fn client(&self) -> Client {
        connect(&self.config).await
    }

    /// A database with the SQL kit installed.
    pub async fn migrated() -> TestDb {
        let db = fresh_db().await;
        let mut client = db.client().await;
        pgbroadcast::migrate::run(&mut client)
            .await
            .expect("migrate");
        db
    }
}

pub async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// The order example's tables and routes, as in `sql/examples/orders.sql`.
pub const ORDERS: &str = include_str!("../../sql/examples/orders.sql");

/// The bridge, served on 127.0.0.1:0 against a test database.
pub struct Bridge {
    pub running: Running,
}

impl Bridge {
    pub async fn start(db: &TestDb) -> Bridge {
        Bridge::start_with(db, Limits::default()).await
    }

    /// The bridge as `pgbroadcast demo` runs it: with the order example's API.
    pub async fn start_demo(db: &TestDb) -> Bridge {
        Bridge::start_full(db, Limits::default(), true).await
    }

    pub async fn start_with(db: &TestDb, limits: Limits) -> Bridge {
        Bridge::start_full(db, limits, false).await
    }

    /// `demo` with these limits.
    pub async fn start_demo_with(db: &TestDb, limits: Limits) -> Bridge {
        Bridge::start_full(db, limits, true).await
    }

    async fn start_full(db: &TestDb, limits: Limits, demo: bool) -> Bridge {
        Bridge::start_custom(db, limits, demo, Default::default()).await
    }

    /// `serve` (or `demo`) with these limits and security settings.
    pub async fn start_custom(db: &TestDb, limits: Limits, demo: bool, auth: AuthArgs) -> Bridge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = Settings {
            pg: db.config.clone(),
            pg_args: PgArgs {
                reconnect_max: Duration::from_millis(200),
                ..PgArgs::default()
            },
            limits,
            migrate: true,
            demo,
            auth,
        };
        let running = server::start(listener, settings)
            .await
            .expect("start bridge");
        let bridge = Bridge { running };
        bridge.wait_ready(true).await;
        bridge
    }

    /// Waits until the listener is (or is no longer) LISTENing.
    pub async fn wait_ready(&self, ready: bool) {
        let mut rx = self.running.ready.clone();
        tokio::time::timeout(PATIENCE, rx.wait_for(|r| *r == ready))
            .await
            .expect("listener readiness did not change in time")
            .unwrap();
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/broadcast", self.running.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    pub async fn readyz(&self) -> u16 {
        reqwest::get(self.http_url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// What `/metrics` answers now (Prometheus text).
    pub async fn metrics(&self) -> String {
        reqwest::get(self.http_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A real WebSocket client.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        WsClient::from_stream(ws).await
    }

    /// Wraps a connected socket and reads its `welcome`.
    pub async fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        let mut client = WsClient {
            ws,
            welcome: Value::Null,
        };
        client.welcome = client.next().await;
        assert_eq!(client.welcome["type"], "welcome");
        client
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn ws_send(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Subscribes and waits for the ack: from then on, signals are delivered.
    pub async fn subscribe(&mut self, topics: &[&str]) {
        self.send(json!({ "subscribe": topics })).await;
        let ack = self.next().await;
        assert_eq!(ack, json!({"type": "subscribed", "channels": topics}));
    }

    /// The next text frame as JSON (pings are answered by the client library).
    pub async fn next(&mut self) -> Value {
        match self.next_message().await {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next message other than a ping or pong; `None` when the
    /// connection ended without a close frame (the server died).
    pub async fn next_message_or_end(&mut self) -> Option<Message> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("no frame within the test's patience");
            match message {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => return Some(message),
            }
        }
    }

    pub async fn next_message(&mut self) -> Message {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("no frame within the test's patience")
                .expect("connection ended")
                .expect("websocket error");
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return message;
            }
        }
    }

    /// The next `n` frames.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.next().await);
        }
        frames
    }

    /// Frames up to and including the first on `channel` with `event`.
    /// Used as a barrier: signals arrive in commit order, so anything
    /// committed before the barrier has arrived before it.
    pub async fn until(&mut self, channel: &str, event: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await;
            let done = frame["channel"] == channel && frame["event"] == event;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the TCP connection without a closing handshake, as a crashed
    /// client or a dead network would.
    pub fn kill(self) {
        drop(self.ws);
    }
}

/// Commits a barrier signal on `channel`; see [`WsClient::until`].
pub async fn barrier(db: &Client, channel: &str) {
    db.execute(
        "select broadcast.emit($1, 'barrier', null, null)",
        &[&channel],
    )
    .await
    .unwrap();
}

/// Commits a barrier on `channel` and expects exactly one frame before it:
/// the `resync` for an invalid signal that notifications on `channel` the
/// bridge cannot read come to. `what` names them in a failure.
pub async fn expect_invalid_signal_resync(
    db: &Client,
    client: &mut WsClient,
    channel: &str,
    what: &str,
) {
    barrier(db, channel).await;
    let frames = client.until(channel, "barrier").await;
    assert_eq!(
        frames[0],
        json!({"channel": channel, "event": "resync", "payload": {"reason": "invalid_signal"}}),
        "{what}"
    );
    assert_eq!(frames.len(), 2, "{what}: {frames:?}");
}

/// Runs `sql` in one transaction and returns that transaction's txid.
pub async fn write(db: &mut Client, sql: &str) -> i64 {
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(sql).await.unwrap();
    let txid: i64 = tx
        .query_one("select pg_current_xact_id()::xid::text::bigint", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    txid
}

/// The `(event, entity_id, txid)` that [`brief`] gives for an entity's signal.
pub fn s(event: &str, id: &str, txid: i64) -> (String, Option<String>, i64) {
    (event.to_owned(), Some(id.to_owned()), txid)
}

/// `(event, entity_id, txid)` of a signal frame, for compact assertions.
pub fn brief(frame: &Value) -> (String, Option<String>, i64) {
    (
        frame["event"].as_str().unwrap_or_default().to_owned(),
        frame["payload"]["entity_id"].as_str().map(str::to_owned),
        frame["payload"]["txid"].as_i64().unwrap_or(-1),
    )
}
