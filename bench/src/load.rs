//! The load: WebSocket clients spread over loopback source addresses, and
//! writers committing rows into routed tables at a target rate. Every
//! timestamp is nanoseconds on one [`Clock`], so commit and receive times
//! compare directly (the load and the server share this machine).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio_postgres::Client;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// Nanoseconds since the run began.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Loopback source addresses the clients spread over: each has its own
/// ephemeral port range, so tens of thousands of sockets fit.
pub const SOURCE_ADDRESSES: u8 = 64;

/// One client's subscription.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub table: usize,
    /// `Some(slot)`: subscribed to one entity of the channel.
    pub slot: Option<i32>,
    /// Record every signal's receive time (for latency), not just count it.
    pub sample: bool,
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientResult {
    pub plan_table: usize,
    pub plan_slot: Option<i32>,
    pub signals: u64,
    pub resyncs: u64,
    /// The txid of every signal received, in arrival order, to be matched
    /// against the commits one by one (a count alone lets a duplicate or a
    /// misrouted signal hide a lost one). `None`: a signal without a txid.
    pub txids: Vec<Option<u32>>,
    /// `(txid, receive time)` when sampling.
    pub samples: Vec<(u32, u64)>,
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    event: Option<&'a str>,
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Payload {
    txid: Option<u32>,
}

pub fn channel(table: usize) -> String {
    format!("bench-{table}")
}

pub fn table_name(table: usize) -> String {
    format!("pgbroadcast_bench_{table}")
}

/// The event of the barrier signals that show a subscription is live
/// ([`barrier`]); clients never count them.
pub const BARRIER_EVENT: &str = "bench_barrier";

/// How far the clients are: connected, their subscriptions live (by an
/// acknowledgement or a barrier signal), or failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub connected: usize,
    pub acknowledged: usize,
    pub by_barrier: usize,
    pub failed: usize,
}

impl Progress {
    pub fn live(&self) -> usize {
        self.acknowledged + self.by_barrier
    }
}

/// A connected client that has sent its subscribe, ready to read.
pub struct Connected {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    plan: ClientPlan,
}

/// Connects client `index` from its loopback source address and sends its
/// subscribe. Whether the subscription is live is seen while reading
/// ([`Connected::read`]): a `subscribed` acknowledgement, or a barrier signal.
pub async fn connect(
    url: &str,
    server: SocketAddr,
    index: usize,
    plan: ClientPlan,
) -> Result<Connected, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if server.ip().is_loopback() {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % SOURCE_ADDRESSES as usize) as u8);
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let topic = match plan.slot {
        Some(slot) => format!("{}:{slot}", channel(plan.table)),
        None => channel(plan.table),
    };
    let subscribe = serde_json::json!({ "subscribe": [topic] }).to_string();
    ws.send(Message::text(subscribe))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Connected { ws, plan })
}

impl Connected {
    /// Reads until `stop`. Marks the subscription live in `progress` on the
    /// first `subscribed` acknowledgement or barrier signal (or failed, on an
    /// error before that); counts signals into `delivered` as they arrive,
    /// and resyncs once `counting` is set (the writes have begun).
    pub async fn read(
        mut self,
        clock: Clock,
        delivered: Arc<AtomicU64>,
        progress: Arc<tokio::sync::watch::Sender<Progress>>,
        counting: Arc<AtomicBool>,
        stop: CancellationToken,
    ) -> ClientResult {
        let mut result = ClientResult {
            plan_table: self.plan.table,
            plan_slot: self.plan.slot,
            ..ClientResult::default()
        };
        let mut live = false;
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = self.ws.next() => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let now = clock.now();
                    let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                        result.error = Some(format!("unreadable frame: {text}"));
                        continue;
                    };
                    match (frame.kind, frame.event) {
                        (Some("subscribed"), _) if !live => {
                            live = true;
                            progress.send_modify(|p| p.acknowledged += 1);
                        }
                        (Some("error"), _) if !live => {
                            result.error = Some(text.to_string());
                            break;
                        }
                        (Some(_), _) => {}
                        (None, Some(BARRIER_EVENT)) => {
                            if !live {
                                live = true;
                                progress.send_modify(|p| p.by_barrier += 1);
                            }
                        }
                        // Before the first write nothing of the run can have
                        // been missed (pgbroadcast resyncs its clients once its
                        // LISTEN is up, which may follow their subscribes).
                        (None, Some("resync")) => {
                            if counting.load(Ordering::Relaxed) {
                                result.resyncs += 1;
                            }
                        }
                        (None, _) => {
                            result.signals += 1;
                            delivered.fetch_add(1, Ordering::Relaxed);
                            let txid = frame.payload.and_then(|p| p.txid);
                            result.txids.push(txid);
                            if self.plan.sample
                                && let Some(txid) = txid
                            {
                                result.samples.push((txid, now));
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    result.error = Some(format!("closed by the server: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    result.error = Some(e.to_string());
                    break;
                }
                None => {
                    result.error = Some("connection ended".into());
                    break;
                }
            }
        }
        if !live && result.error.is_some() {
            progress.send_modify(|p| p.failed += 1);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
        result
    }
}

/// Commits one transaction that sends a channel-wide barrier signal on every
/// routed table's channel (entity subscribers get channel-wide signals too).
/// A client that receives one has a live subscription.
pub async fn barrier(pg: &Client, tables: usize) -> Result<(), tokio_postgres::Error> {
    let mut sql = String::from("begin;");
    for t in 0..tables {
        sql.push_str(&format!(
            "select broadcast.emit('{}', '{BARRIER_EVENT}', null);",
            channel(t)
        ));
    }
    sql.push_str("commit;");
    pg.batch_execute(&sql).await
}

/// One committed write.
#[derive(Debug, Clone, Copy)]
pub struct Write {
    pub txid: u32,
    /// When the commit was acknowledged to the writer.
    pub ack: u64,
    pub table: usize,
    pub slot: i32,
}

/// Creates the routed tables (dropping earlier ones).
pub async fn setup(pg: &Client, tables: usize) -> Result<(), tokio_postgres::Error> {
    for t in 0..tables {
        let name = table_name(t);
        pg.batch_execute(&format!(
            "set client_min_messages = warning;
             drop table if exists {name};
             create table {name} (id bigserial primary key, slot int not null);
             select broadcast.enable('{name}', '{channel}', id_column => 'slot', events => '{{\"INSERT\": \"tick\"}}');",
            channel = channel(t)
        ))
        .await?;
    }
    Ok(())
}

pub async fn teardown(pg: &Client, tables: usize) -> Result<(), tokio_postgres::Error> {
    for t in 0..tables {
        pg.batch_execute(&format!("drop table if exists {}", table_name(t)))
            .await?;
    }
    pg.batch_execute("drop table if exists pgbroadcast_bench_unrelated")
        .await?;
    // What `transport` set for the database, so that it is as it was.
    let database = this_database(pg).await?;
    pg.batch_execute(&format!(
        "alter database {database} reset pgbroadcast.transport"
    ))
    .await
}

/// The session's database, quoted for SQL.
async fn this_database(pg: &Client) -> Result<String, tokio_postgres::Error> {
    let name: String = pg.query_one("select current_database()", &[]).await?.get(0);
    Ok(pgbroadcast::listener::quote_ident(&name))
}

/// The table of `--unrelated-update-rows` (no route on it), or none.
pub async fn unrelated_table(pg: &Client, rows: u32) -> Result<(), tokio_postgres::Error> {
    pg.batch_execute("drop table if exists pgbroadcast_bench_unrelated")
        .await?;
    if rows > 0 {
        pg.execute(
            "create table pgbroadcast_bench_unrelated as select g as id, 0 as n from generate_series(1, $1::int) g",
            &[&(rows as i32)],
        )
        .await?;
    }
    Ok(())
}

/// Rewrites every row of the unrelated table, one transaction each `every`,
/// until aborted: commits whose WAL a signal committed after them waits
/// behind when it is decoded.
pub async fn unrelated_updates(config: tokio_postgres::Config, every: Duration) {
    let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(connection);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = client
            .batch_execute("update pgbroadcast_bench_unrelated set n = n + 1")
            .await
        {
            eprintln!("  unrelated update failed: {err}");
            return;
        }
    }
}

/// Has the database send the bench's signals by `transport` (new sessions,
/// as the writers' are, and this one), or, for `none`, removes the bench
/// tables' triggers. With `wal`, waits (30 s at most) until a server
/// streams this database's WAL.
pub async fn transport(
    pg: &Client,
    tables: usize,
    transport: super::BenchTransport,
) -> Result<(), super::Error> {
    use super::BenchTransport;
    let database = this_database(pg).await?;
    match transport {
        BenchTransport::Notify => {}
        BenchTransport::Wal => {
            pg.batch_execute(&format!(
                "alter database {database} set pgbroadcast.transport = 'wal'; \
                 set pgbroadcast.transport = 'wal'"
            ))
            .await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while pg
                .query_opt(
                    "select 1 from pg_stat_replication r join pg_stat_activity a using (pid) \
                     where r.application_name = $1 and r.state = 'streaming' \
                       and a.datname = current_database()",
                    &[&pgbroadcast::wal::APPLICATION_NAME],
                )
                .await?
                .is_none()
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(super::Error::Setup(
                        "no server streams this database's WAL after 30 s: start it with --transport wal (or auto)".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        BenchTransport::None => {
            for t in 0..tables {
                pg.execute(
                    "select broadcast.disable($1::text::regclass)",
                    &[&table_name(t)],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// What the writers should do.
#[derive(Debug, Clone)]
pub struct WritePlan {
    pub tables: usize,
    pub slots: i32,
    /// Total commits per second over all writers; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub duration: Duration,
}

/// Runs `writers` connections for `plan.duration`; returns every committed write.
pub async fn write(
    config: &tokio_postgres::Config,
    writers: usize,
    plan: &WritePlan,
    clock: Clock,
    counter: Arc<AtomicU64>,
) -> Result<Vec<Write>, tokio_postgres::Error> {
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let plan = plan.clone();
        let counter = Arc::clone(&counter);
        let period = plan
            .rate
            .map(|rate| Duration::from_secs_f64(writers as f64 / rate.max(0.001)));
        tasks.push(tokio::spawn(async move {
            let mut statements = Vec::new();
            for t in 0..plan.tables {
                let sql = format!(
                    "insert into {} (slot) values ($1) returning pg_current_xact_id()::xid::text::bigint",
                    table_name(t)
                );
                statements.push(client.prepare(&sql).await?);
            }
            let mut ticker = period.map(|p| {
                let mut i = tokio::time::interval(p);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                i
            });
            let end = tokio::time::Instant::now() + plan.duration;
            let mut done = Vec::new();
            while tokio::time::Instant::now() < end {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let id = counter.fetch_add(1, Ordering::Relaxed);
                let table = (id % plan.tables as u64) as usize;
                let slot = (id % plan.slots as u64) as i32;
                let row = client.query_one(&statements[table], &[&slot]).await?;
                let ack = clock.now();
                let txid: i64 = row.get(0);
                done.push(Write {
                    txid: txid as u32,
                    ack,
                    table,
                    slot,
                });
            }
            Ok::<_, tokio_postgres::Error>(done)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer task")?);
    }
    Ok(all)
}
