//! The fault suite. Under continuous writes, every client's stream is checked
//! against the committed writes: per connection, signals arrive in commit
//! order, or the client receives `resync` for the channel — never a silent
//! gap, never a duplicate, never out of order. Each test prints one
//! `fault-report` line with what it observed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::checker::{Report, Seen, check};
use common::{Bridge, PATIENCE, TestDb, WsClient};
use pgbroadcast::config::{Limits, PgArgs};
use pgbroadcast::server::{self, Running, Settings};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_tungstenite::tungstenite::Message;

/// One sequential writer: `n` = 1, 2, 3, ... each in its own transaction, so
/// commit order is `n` order. It survives a lost connection (the row that was
/// in flight may or may not have committed: the table says which).
struct Writer {
    stop: Arc<AtomicBool>,
    /// The last write acknowledged as committed.
    progress: watch::Receiver<i64>,
    /// The last write begun: none after it can have committed. (Not the
    /// acknowledged one plus one: a write whose connection was lost may have
    /// committed unacknowledged, and the next is then in flight too.)
    begun: watch::Receiver<i64>,
    task: JoinHandle<()>,
}

impl Writer {
    /// `pad` > 0: signals carry that many bytes of `extra` (sent with `emit`);
    /// otherwise they come from the route on `ticks`.
    fn start(config: tokio_postgres::Config, pad: i32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, progress) = watch::channel(0);
        let (begin, begun) = watch::channel(0);
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let sql = if pad > 0 {
                "with t as (insert into ticks (n) values ($1)) \
                 select broadcast.emit('tick', 'tick', $1::text, jsonb_build_object('pad', repeat('x', $2)))"
            } else {
                "insert into ticks (n) select $1 where $2::int >= 0"
            };
            let mut pg: Option<Client> = None;
            let mut n: i64 = 0;
            while !flag.load(Ordering::Relaxed) {
                let Some(client) = pg.as_ref() else {
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((client, connection)) => {
                            tokio::spawn(connection);
                            pg = Some(client);
                        }
                        // The database is away (a fault under test): try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    continue;
                };
                n += 1;
                begin.send_replace(n);
                match client.execute(sql, &[&n, &pad]).await {
                    Ok(_) => {
                        tx.send_replace(n);
                    }
                    Err(_) => pg = None,
                }
            }
        });
        Writer {
            stop,
            progress,
            begun,
            task,
        }
    }

    /// Waits until `count` more writes have committed.
    async fn advance(&mut self, count: i64) {
        let target = *self.progress.borrow() + count;
        tokio::time::timeout(PATIENCE, self.progress.wait_for(|n| *n >= target))
            .await
            .expect("the writer stalled")
            .unwrap();
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

async fn ticks_db(route: bool) -> TestDb {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    pg.batch_execute("create table ticks (n bigint primary key)")
        .await
        .unwrap();
    if route {
        pg.batch_execute("select broadcast.enable('ticks', 'tick')")
            .await
            .unwrap();
    }
    db
}

/// [`ticks_db`] with the route, whose sessions send through the WAL
/// (`pgbroadcast.transport = 'wal'`): connect to it after this returns.
async fn ticks_db_wal() -> TestDb {
    let db = ticks_db(true).await;
    db.client()
        .await
        .batch_execute(&format!(
            "alter database {} set pgbroadcast.transport = 'wal'",
            db.name
        ))
        .await
        .unwrap();
    db
}

/// Whether `recorder` got a `resync` saying the LISTEN connection came back
/// (what a gap in LISTEN is reported as).
fn told_of_the_gap(recorder: &Recorder) -> bool {
    recorder
        .seen
        .iter()
        .any(|s| matches!(s, Seen::Resync(why) if why == "listener_reconnected"))
}

/// The committed writes, in commit order.
async fn truth(pg: &Client) -> Vec<i64> {
    pg.query("select n from ticks order by n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn barrier(pg: &Client) {
    pg.batch_execute("select broadcast.emit('tick', 'barrier', null)")
        .await
        .unwrap();
}

/// A client's view of channel `tick`, across reconnects.
struct Recorder {
    url: String,
    /// `None` between a lost connection and the reconnect.
    client: Option<WsClient>,
    seen: Vec<Seen>,
    epoch: String,
    /// A number, or text in a WAL epoch: sent back as it came.
    seq: Value,
    reconnects: usize,
    /// The writes begun, once known ([`Recorder::watch`]): each resync is
    /// then recorded with how far the writes could have got.
    written: Option<watch::Receiver<i64>>,
}

impl Recorder {
    async fn connect(url: &str) -> Recorder {
        let mut client = WsClient::connect(url).await;
        client.subscribe(&["tick"]).await;
        let epoch = client.welcome["epoch"].as_str().unwrap().to_owned();
        let seq = client.welcome["seq"].clone();
        assert!(seq.is_u64() || seq.is_string(), "{seq}");
        Recorder {
            url: url.to_owned(),
            client: Some(client),
            seen: Vec::new(),
            epoch,
            seq,
            reconnects: 0,
            written: None,
        }
    }

    /// From now on, each resync is recorded with the writes that could
    /// have committed when it was received: it covers no later one.
    fn watch(&mut self, writer: &Writer) {
        self.written = Some(writer.begun.clone());
    }

    /// Records one frame; `false` at the barrier.
    fn record(&mut self, frame: &Value) -> bool {
        if frame["channel"] != "tick" {
            return true;
        }
        match frame["event"].as_str().unwrap() {
            "barrier" => return false,
            "resync" => {
                self.seen.push(Seen::Resync(
                    frame["payload"]["reason"].as_str().unwrap().to_owned(),
                ));
                if let Some(begun) = &self.written {
                    // No write after the last one begun can have committed.
                    self.seen.push(Seen::Committed(*begun.borrow()));
                }
            }
            _ => {
                let n = frame["payload"]["entity_id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                self.seen.push(Seen::Signal(n));
            }
        }
        if let Some(seq) = frame.get("seq") {
            self.seq = seq.clone();
            self.epoch = frame["epoch"].as_str().unwrap().to_owned();
        }
        true
    }

    /// Reads until `count` more signals (or resyncs) have been recorded.
    async fn read(&mut self, count: usize) {
        let target = self.seen.len() + count;
        while self.seen.len() < target {
            let frame = self.ws().next().await;
            assert!(self.record(&frame), "barrier before {count} frames");
        }
    }

    /// Reads until the barrier; if the server goes away (closing or not), reconnects to
    /// `self.url` and resumes from the last signal seen.
    async fn read_to_barrier(&mut self) {
        loop {
            match self.ws().next_message_or_end().await {
                Some(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if !self.record(&frame) {
                        return;
                    }
                }
                // Closed, or (the server was killed) just gone.
                Some(Message::Close(_)) | None => self.reconnect().await,
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Connects again (to `self.url`, retrying while the server is away) and
    /// resumes from the last signal seen.
    async fn reconnect(&mut self) {
        let client = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Ok((ws, _)) = tokio_tungstenite::connect_async(self.url.as_str()).await {
                    break WsClient::from_stream(ws).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("could not reconnect");
        self.client = Some(client);
        self.reconnects += 1;
        let resume =
            json!({"subscribe": ["tick"], "resume": {"epoch": self.epoch, "seq": self.seq}});
        self.ws().send(resume).await;
        let ack = self.ws().next().await;
        assert_eq!(ack["type"], "subscribed", "{ack}");
    }

    /// Its connection dies mid-stream and it lands on `url`, resuming there.
    async fn move_to(&mut self, url: &str) {
        self.kill();
        self.url = url.to_owned();
        self.reconnect().await;
    }

    fn ws(&mut self) -> &mut WsClient {
        self.client.as_mut().expect("connected")
    }

    /// The connection dies mid-stream, frames possibly in flight.
    fn kill(&mut self) {
        if let Some(client) = self.client.take() {
            client.kill();
        }
    }

    fn check(&self, truth: &[i64]) -> Report {
        check(&self.seen, truth, false).unwrap_or_else(|e| panic!("{e}\nseen: {:?}", self.seen))
    }
}

fn report_line(scenario: &str, written: usize, reports: &[Report], extra: &str) {
    let delivered: usize = reports.iter().map(|r| r.delivered).sum();
    let resyncs: usize = reports.iter().map(|r| r.resyncs).sum();
    let covered: usize = reports.iter().map(|r| r.covered).sum();
    println!(
        "fault-report scenario={scenario} clients={} written={written} delivered={delivered} resyncs={resyncs} covered_by_resync={covered} {extra}",
        reports.len()
    );
}

/// `count` clients of `url`, subscribed to `tick`, each reading to the
/// barrier in a task of its own; and the writer they watch, started once
/// they are subscribed.
async fn readers_of(
    url: &str,
    count: usize,
    config: &tokio_postgres::Config,
) -> (JoinHandle<Vec<Recorder>>, Writer) {
    let mut recorders = Vec::new();
    for _ in 0..count {
        recorders.push(Recorder::connect(url).await);
    }
    // Subscribed already: they miss nothing by reading from a moment later,
    // and each resync covers only what could have committed before it.
    let writer = Writer::start(config.clone(), 0);
    for r in &mut recorders {
        r.watch(&writer);
    }
    (tokio::spawn(read_all(recorders)), writer)
}

async fn read_all(recorders: Vec<Recorder>) -> Vec<Recorder> {
    let tasks: Vec<JoinHandle<Recorder>> = recorders
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                r.read_to_barrier().await;
                r
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Checks every recorder, and that none of them needed a resync or missed anything.
fn check_lossless(recorders: &[Recorder], truth: &[i64], who: &str) -> Vec<Report> {
    let reports: Vec<Report> = recorders.iter().map(|r| r.check(truth)).collect();
    for r in &reports {
        assert_eq!(
            (r.resyncs, r.delivered),
            (0, truth.len()),
            "{who} lost something"
        );
    }
    reports
}

async fn listener_reconnects(bridge: &Bridge) -> u64 {
    bridge.running.hub.metrics().listener_reconnects.get()
}

#[tokio::test]
async fn listener_backend_terminated_repeatedly() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let bridge = Bridge::start(&db).await;
    let (readers, mut writer) = readers_of(&bridge.ws_url(), 4, &db.config).await;
    for round in 1..=3 {
        writer.advance(150).await;
        bridge.wait_ready(true).await;
        pg.batch_execute(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = 'pgbroadcast-listener' and datname = current_database()",
        )
        .await
        .unwrap();
        // Wait for the listener to be back (its reconnect count tells).
        tokio::time::timeout(PATIENCE, async {
            while listener_reconnects(&bridge).await < round {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the listener did not come back");
    }
    writer.advance(150).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let recorders = readers.await.unwrap();
    let reports: Vec<Report> = recorders.iter().map(|r| r.check(&truth)).collect();
    for (recorder, r) in recorders.iter().zip(&reports) {
        assert!(r.delivered > 0, "{r:?}");
        assert!(
            told_of_the_gap(recorder),
            "each client must have been told about the gaps: {r:?} {:?}",
            recorder.seen
        );
    }
    let metrics = bridge.metrics().await;
    assert!(
        metrics.contains("pgbroadcast_listener_reconnects_total 3"),
        "{metrics}"
    );
    report_line("listener_terminated_x3", truth.len(), &reports, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stopped_and_started() {
    cluster_restarts(false).await;
}

/// Over the WAL, from the node's own slot, a Postgres restart costs nothing:
/// the slot outlives it and the stream reads on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stopped_and_started_over_the_wal() {
    cluster_restarts(true).await;
}

async fn cluster_restarts(wal: bool) {
    let mut cluster = common::test_cluster().unwrap();
    let db = common::fresh_db_in(&cluster).await;
    {
        let mut pg = db.client().await;
        pgbroadcast::migrate::run(&mut pg).await.unwrap();
        pg.batch_execute(
            "create table ticks (n bigint primary key); select broadcast.enable('ticks', 'tick');",
        )
        .await
        .unwrap();
        if wal {
            pg.batch_execute(&format!(
                "alter database {} set pgbroadcast.transport = 'wal'",
                db.name
            ))
            .await
            .unwrap();
        }
    }
    let pg_args = if wal {
        wal_node(&db.name)
    } else {
        PgArgs::default()
    };
    let bridge = serve_with(&db, "127.0.0.1:0".parse().unwrap(), pg_args).await;
    let url = ws_url(&bridge);
    let (readers, mut writer) = readers_of(&url, 3, &db.config).await;
    writer.advance(200).await;
    let mut ready = bridge.ready.clone();
    tokio::task::block_in_place(|| cluster.stop()).unwrap();
    tokio::time::timeout(PATIENCE, ready.wait_for(|r| !*r))
        .await
        .unwrap()
        .unwrap();
    tokio::task::block_in_place(|| cluster.start()).unwrap();
    tokio::time::timeout(PATIENCE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    writer.advance(200).await;
    writer.stop().await;
    let pg = db.client().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let recorders = readers.await.unwrap();
    if wal {
        let reports = check_lossless(&recorders, &truth, "a client");
        report_line("wal_cluster_restart", truth.len(), &reports, "");
    } else {
        let reports: Vec<Report> = recorders.iter().map(|r| r.check(&truth)).collect();
        for (recorder, r) in recorders.iter().zip(&reports) {
            assert!(r.delivered > 0, "{r:?}");
            assert!(told_of_the_gap(recorder), "{r:?} {:?}", recorder.seen);
        }
        report_line("cluster_restart", truth.len(), &reports, "");
    }
    bridge.shutdown().await.unwrap();
}

/// A client killed mid-stream three times resumes each time (within the
/// history) and, beside a steady one, loses nothing and needs no resync.
async fn killed_client_resumes(db: TestDb, scenario: &str) {
    let pg = db.client().await;
    let bridge = Bridge::start(&db).await;
    let mut steady = Recorder::connect(&bridge.ws_url()).await;
    let mut crashing = Recorder::connect(&bridge.ws_url()).await;
    let mut writer = Writer::start(db.config.clone(), 0);
    let mut kills = 0;
    for _ in 0..3 {
        crashing.read(100).await;
        crashing.kill();
        kills += 1;
        writer.advance(50).await;
        crashing.reconnect().await;
    }
    writer.advance(100).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    crashing.read_to_barrier().await;
    steady.read_to_barrier().await;
    let reports = [steady.check(&truth), crashing.check(&truth)];
    for r in &reports {
        assert_eq!(
            r.resyncs, 0,
            "resume within the history must not need a resync: {r:?}"
        );
        assert_eq!(r.delivered, truth.len());
    }
    report_line(scenario, truth.len(), &reports, &format!("kills={kills}"));
}

#[tokio::test]
async fn a_killed_client_resumes_without_loss() {
    killed_client_resumes(ticks_db(true).await, "client_killed_and_resumed").await;
}

#[tokio::test]
async fn a_killed_client_resumes_without_loss_over_the_wal() {
    killed_client_resumes(ticks_db_wal().await, "wal_client_killed_and_resumed").await;
}

/// A client whose topic stays quiet while other signals push its position
/// out of the history still resumes without a resync: its heartbeats carry
/// the node's position, and it resumes from there. The same resume from its
/// welcome's position (the control) is answered with `resync`.
async fn quiet_client_resumes(db: TestDb, pg_args: PgArgs) {
    let pg = db.client().await;
    let limits = Limits {
        history_size: 2,
        heartbeat: Duration::from_secs(1),
        ..Limits::default()
    };
    let bridge = serve_limited(&db, "127.0.0.1:0".parse().unwrap(), pg_args, limits).await;
    let url = ws_url(&bridge);
    let mut quiet = WsClient::connect(&url).await;
    quiet.subscribe(&["tick:0"]).await;
    let mut loud = WsClient::connect(&url).await;
    loud.subscribe(&["tick"]).await;
    for n in 1..=5_i64 {
        pg.execute("insert into ticks (n) values ($1)", &[&n])
            .await
            .unwrap();
    }
    let last = loud.take(5).await.pop().unwrap();
    // The quiet client gets nothing but heartbeats, until one names a
    // position at or after the last signal.
    let heartbeat = loop {
        let frame = quiet.next().await;
        assert_eq!(frame["type"], "heartbeat", "{frame}");
        assert_eq!(frame["epoch"], last["epoch"], "{frame}");
        if !seq_before(&frame["seq"], &last["seq"]) {
            break frame;
        }
    };
    let quiet_welcome = quiet.welcome.clone();
    quiet.kill();
    let resume = |from: &Value| json!({"subscribe": ["tick:0"], "resume": {"epoch": from["epoch"], "seq": from["seq"]}});
    let mut back = WsClient::connect(&url).await;
    back.send(resume(&heartbeat)).await;
    assert_eq!(back.next().await["type"], "subscribed");
    pg.execute("insert into ticks (n) values (0)", &[])
        .await
        .unwrap();
    let next = back.next().await;
    assert_eq!(next["payload"]["entity_id"], "0", "{next}");
    // Control: from the welcome's position, five signals ago, a history two
    // long cannot prove that nothing was missed.
    let mut control = WsClient::connect(&url).await;
    control.send(resume(&quiet_welcome)).await;
    let answer = control.take(2).await;
    assert_eq!(answer[0]["type"], "subscribed", "{answer:?}");
    assert_eq!(answer[1]["event"], "resync", "{answer:?}");
    assert_eq!(answer[1]["payload"]["reason"], "resume_unavailable");
    bridge.shutdown().await.unwrap();
}

/// Is `a` before `b` in their epoch? Numbers, or (WAL) fixed-width text.
fn seq_before(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_u64() < b.as_u64(),
        (Value::String(a), Value::String(b)) => a < b,
        _ => panic!("seqs of two kinds: {a} {b}"),
    }
}

#[tokio::test]
async fn a_quiet_client_resumes_from_its_heartbeat() {
    quiet_client_resumes(ticks_db(true).await, PgArgs::default()).await;
}

#[tokio::test]
async fn a_quiet_client_resumes_from_its_heartbeat_over_the_wal() {
    let db = ticks_db_wal().await;
    let node = wal_node(&db.name);
    quiet_client_resumes(db, node).await;
}

/// The pid of this database's walsender for the bridge, once there is one
/// other than `not`.
async fn walsender(pg: &Client, not: Option<i32>) -> i32 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let row = pg
                .query_opt(
                    "select pid from pg_stat_activity where application_name = $1 \
                     and datname = current_database() and pid <> coalesce($2, 0)",
                    &[&pgbroadcast::wal::APPLICATION_NAME, &not],
                )
                .await
                .unwrap();
            if let Some(row) = row {
                return row.get(0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the WAL stream did not come back")
}

/// A node reading the WAL from its own slot (`--transport wal --node-id`).
fn wal_node(id: &str) -> PgArgs {
    PgArgs {
        transport: pgbroadcast::wal::Transport::Wal,
        node_id: Some(id.into()),
        ..PgArgs::default()
    }
}

/// With its own slot, a node whose walsender is terminated reads on from
/// the slot: nothing is lost and nobody needs a resync.
#[tokio::test]
async fn wal_stream_terminated_repeatedly() {
    let db = ticks_db_wal().await;
    let pg = db.client().await;
    let bridge = serve_with(&db, "127.0.0.1:0".parse().unwrap(), wal_node(&db.name)).await;
    let url = ws_url(&bridge);
    let (readers, mut writer) = readers_of(&url, 4, &db.config).await;
    let mut pid = walsender(&pg, None).await;
    for _ in 0..3 {
        writer.advance(150).await;
        pg.execute("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        pid = walsender(&pg, Some(pid)).await;
    }
    writer.advance(150).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let reports = check_lossless(&readers.await.unwrap(), &truth, "a client");
    report_line("wal_stream_terminated_x3", truth.len(), &reports, "");
    // Every signal after the last termination came through a new stream.
    assert_eq!(bridge.hub.metrics().wal_reconnects.get(), 3);
    assert_eq!(bridge.hub.metrics().listener_reconnects.get(), 0);
    bridge.shutdown().await.unwrap();
}

/// A DBA terminates the node's walsender and drops its slot: the node makes
/// it anew, says so with `resync` (`slot_lost`) on every channel, and
/// delivers what commits after.
#[tokio::test]
async fn wal_slot_dropped_by_a_dba() {
    let db = ticks_db_wal().await;
    let pg = db.client().await;
    let bridge = serve_with(&db, "127.0.0.1:0".parse().unwrap(), wal_node(&db.name)).await;
    let url = ws_url(&bridge);
    let (readers, mut writer) = readers_of(&url, 2, &db.config).await;
    writer.advance(100).await;
    // The drop fails while the node streams from the slot: terminate, then
    // drop before it is back (or try again).
    let mut pid = walsender(&pg, None).await;
    loop {
        pg.execute("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        if pg
            .execute(
                "select pg_drop_replication_slot($1)",
                &[&format!("pgbroadcast_{}", db.name)],
            )
            .await
            .is_ok()
        {
            break;
        }
        pid = walsender(&pg, Some(pid)).await;
    }
    walsender(&pg, Some(pid)).await;
    writer.advance(100).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let recorders = readers.await.unwrap();
    let reports: Vec<Report> = recorders.iter().map(|r| r.check(&truth)).collect();
    for (r, rec) in reports.iter().zip(&recorders) {
        assert!(
            rec.seen.contains(&Seen::Resync("slot_lost".into())),
            "{r:?}"
        );
        assert!(r.delivered >= 100, "{r:?}");
    }
    report_line("wal_slot_dropped", truth.len(), &reports, "");
    bridge.shutdown().await.unwrap();
}

/// The real binary over the WAL on `listen`, its node id the database's name.
async fn serve_wal_node(db: &TestDb, listen: &str) -> common::binary::Served {
    let url = common::cluster().url(&db.name);
    let args = [
        "serve",
        "--listen",
        listen,
        "--transport",
        "wal",
        "--node-id",
        &db.name,
    ];
    common::binary::Served::start(&url, &args, &[]).await
}

/// The real binary with its own slot, killed with SIGKILL mid-stream and
/// started again: its clients come back to it and resume with every signal
/// they missed — what committed while it was down included — and no resync.
#[tokio::test]
async fn a_node_killed_and_restarted_resumes_its_clients_over_the_wal() {
    let db = ticks_db_wal().await;
    let pg = db.client().await;
    let first = serve_wal_node(&db, "127.0.0.1:0").await;
    let addr = first.addr.clone();
    let ws = first.ws_url();
    let (readers, mut writer) = readers_of(&ws, 3, &db.config).await;
    writer.advance(200).await;
    first.kill().await;
    writer.advance(100).await;
    let second = serve_wal_node(&db, &addr).await;
    writer.advance(200).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let recorders = readers.await.unwrap();
    for r in &recorders {
        assert_eq!(r.reconnects, 1);
    }
    let reports = check_lossless(&recorders, &truth, "a client of the restarted node");
    report_line("wal_node_killed_and_restarted", truth.len(), &reports, "");
    second.kill().await;
}

#[tokio::test]
async fn a_slow_client_never_costs_the_fast_ones_anything() {
    let db = ticks_db(false).await;
    let pg = db.client().await;
    let limits = Limits {
        outbound_queue: 64,
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let mut fast = Vec::new();
    for _ in 0..3 {
        fast.push(Recorder::connect(&bridge.ws_url()).await);
    }
    let mut slow = Recorder::connect(&bridge.ws_url()).await;
    let fast_readers = tokio::spawn(read_all(fast));
    // 6 KB signals: the slow client's socket buffers fill within a few hundred.
    let mut writer = Writer::start(db.config.clone(), 6000);
    // Its resync ends its recording: only what had committed when it was
    // received may be missing.
    slow.watch(&writer);
    writer.advance(2500).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    // Only now does the slow client read anything. Its queue overflowed, so
    // the channel (the barrier included) is skipped until its resync is out:
    // read up to the resync, then to a fresh barrier.
    while !slow.seen.iter().any(|s| matches!(s, Seen::Resync(_))) {
        slow.read(1).await;
    }
    barrier(&pg).await;
    slow.read_to_barrier().await;
    let fast_reports = check_lossless(&fast_readers.await.unwrap(), &truth, "a fast client");
    let slow_report = slow.check(&truth);
    assert!(
        slow.seen.contains(&Seen::Resync("slow_consumer".into())),
        "{slow_report:?}"
    );
    assert!(slow_report.covered > 0);
    let mut reports = fast_reports;
    reports.push(slow_report);
    report_line("slow_client_beside_fast", truth.len(), &reports, "");
}

#[tokio::test]
async fn a_thousand_clients_churning() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let bridge = Bridge::start(&db).await;
    let mut stable = Vec::new();
    for _ in 0..2 {
        stable.push(Recorder::connect(&bridge.ws_url()).await);
    }
    let stable_readers = tokio::spawn(read_all(stable));
    let mut writer = Writer::start(db.config.clone(), 0);
    writer.advance(50).await;
    const TASKS: usize = 25;
    const CYCLES: usize = 40;
    let mut churners = Vec::new();
    for t in 0..TASKS {
        let url = bridge.ws_url();
        churners.push(tokio::spawn(async move {
            let mut windows = Vec::new();
            for c in 0..CYCLES {
                let mut r = Recorder::connect(&url).await;
                r.read(3).await;
                // Half leave politely, half just vanish.
                if (t + c) % 2 == 0 {
                    r.client.take().unwrap().close().await;
                } else {
                    r.kill();
                }
                windows.push(r.seen);
            }
            windows
        }));
    }
    let mut windows = Vec::new();
    for c in churners {
        windows.extend(c.await.unwrap());
    }
    writer.advance(50).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let mut reports = check_lossless(&stable_readers.await.unwrap(), &truth, "a steady client");
    for seen in &windows {
        reports.push(
            check(seen, &truth, true).unwrap_or_else(|e| panic!("churn client: {e}: {seen:?}")),
        );
    }
    assert_eq!(windows.len(), TASKS * CYCLES);
    // Every churned session is gone from the hub; only the stable two remain.
    tokio::time::timeout(PATIENCE, async {
        while bridge.running.hub.stats().sessions != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("churned sessions were not cleaned up");
    report_line("churn_1000_clients", truth.len(), &reports, "");
}

/// One shard, and more shards than this machine has cores: clients spread
/// over them all still get every signal, in commit order, with a killed
/// client resuming where it was.
#[tokio::test]
async fn any_number_of_shards_loses_nothing() {
    for shards in [1, 3] {
        let db = ticks_db(true).await;
        let pg = db.client().await;
        let limits = Limits {
            shards,
            ..Limits::default()
        };
        let bridge = Bridge::start_with(&db, limits).await;
        let mut steady = Vec::new();
        for _ in 0..6 {
            steady.push(Recorder::connect(&bridge.ws_url()).await);
        }
        let readers = tokio::spawn(read_all(steady));
        let mut crashing = Recorder::connect(&bridge.ws_url()).await;
        let mut writer = Writer::start(db.config.clone(), 0);
        crashing.read(50).await;
        crashing.kill();
        writer.advance(50).await;
        crashing.reconnect().await;
        writer.advance(100).await;
        writer.stop().await;
        barrier(&pg).await;
        let truth = truth(&pg).await;
        crashing.read_to_barrier().await;
        let mut reports = check_lossless(&readers.await.unwrap(), &truth, "a steady client");
        let resumed = crashing.check(&truth);
        assert_eq!(
            (resumed.resyncs, resumed.delivered),
            (0, truth.len()),
            "{resumed:?}"
        );
        reports.push(resumed);
        report_line(&format!("shards_{shards}"), truth.len(), &reports, "");
    }
}

/// The WebSocket endpoint of a bridge started in this process.
fn ws_url(running: &Running) -> String {
    format!("ws://{}/ws/broadcast", running.addr)
}

async fn serve_on(db: &TestDb, addr: std::net::SocketAddr) -> Running {
    serve_with(db, addr, PgArgs::default()).await
}

async fn serve_with(db: &TestDb, addr: std::net::SocketAddr, pg_args: PgArgs) -> Running {
    serve_limited(db, addr, pg_args, Limits::default()).await
}

async fn serve_limited(
    db: &TestDb,
    addr: std::net::SocketAddr,
    pg_args: PgArgs,
    limits: Limits,
) -> Running {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let settings = Settings {
        pg: db.config.clone(),
        pg_args,
        limits,
        migrate: true,
        demo: false,
        auth: Default::default(),
    };
    let running = server::start(listener, settings).await.unwrap();
    let mut ready = running.ready.clone();
    tokio::time::timeout(PATIENCE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    running
}

#[tokio::test]
async fn the_bridge_process_restarts() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let first = serve_on(&db, "127.0.0.1:0".parse().unwrap()).await;
    let addr = first.addr;
    let url = format!("ws://{addr}/ws/broadcast");
    let (readers, mut writer) = readers_of(&url, 3, &db.config).await;
    writer.advance(200).await;
    first.shutdown().await.unwrap();
    writer.advance(100).await;
    let second = serve_on(&db, addr).await;
    writer.advance(200).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    let recorders = readers.await.unwrap();
    let reports: Vec<Report> = recorders.iter().map(|r| r.check(&truth)).collect();
    for (r, rec) in reports.iter().zip(&recorders) {
        assert_eq!(rec.reconnects, 1);
        assert!(
            rec.seen
                .contains(&Seen::Resync("resume_unavailable".into())),
            "a client that moved to a new epoch must be told: {r:?}"
        );
    }
    second.shutdown().await.unwrap();
    report_line("bridge_restart", truth.len(), &reports, "");
}

#[tokio::test]
async fn two_nodes_on_one_database() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let a = serve_on(&db, "127.0.0.1:0".parse().unwrap()).await;
    let b = serve_on(&db, "127.0.0.1:0".parse().unwrap()).await;
    let url_a = ws_url(&a);
    let url_b = ws_url(&b);
    let mut recorders = Vec::new();
    for url in [&url_a, &url_a, &url_b, &url_b] {
        recorders.push(Recorder::connect(url).await);
    }
    let mut mover = Recorder::connect(&url_a).await;
    assert_ne!(a.hub.epoch(), b.hub.epoch());
    let mut writer = Writer::start(db.config.clone(), 0);
    for r in recorders.iter_mut().chain([&mut mover]) {
        r.watch(&writer);
    }
    let readers = tokio::spawn(read_all(recorders));
    mover.read(150).await;
    // The mover's node goes away for it; it lands on the other node.
    mover.move_to(&url_b).await;
    writer.advance(200).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    mover.read_to_barrier().await;
    let mut reports = check_lossless(&readers.await.unwrap(), &truth, "a client of either node");
    let moved = mover.check(&truth);
    assert!(
        mover
            .seen
            .contains(&Seen::Resync("resume_unavailable".into())),
        "{moved:?}"
    );
    reports.push(moved);
    report_line("two_nodes", truth.len(), &reports, "");
}

/// Over the WAL, positions are the same on every node: a client that moves
/// from one node to the other resumes exactly, with no resync.
#[tokio::test]
async fn two_nodes_over_the_wal() {
    let db = ticks_db_wal().await;
    let pg = db.client().await;
    let a = serve_with(
        &db,
        "127.0.0.1:0".parse().unwrap(),
        wal_node(&format!("{}_a", db.name)),
    )
    .await;
    let b = serve_with(
        &db,
        "127.0.0.1:0".parse().unwrap(),
        wal_node(&format!("{}_b", db.name)),
    )
    .await;
    assert_eq!(a.hub.epoch(), b.hub.epoch());
    let url_a = ws_url(&a);
    let url_b = ws_url(&b);
    let mut recorders = Vec::new();
    for url in [&url_a, &url_b] {
        recorders.push(Recorder::connect(url).await);
    }
    let readers = tokio::spawn(read_all(recorders));
    let mut movers = vec![
        Recorder::connect(&url_a).await,
        Recorder::connect(&url_b).await,
    ];
    let mut writer = Writer::start(db.config.clone(), 0);
    for (mover, to) in movers.iter_mut().zip([&url_b, &url_a]) {
        mover.read(100).await;
        mover.move_to(to).await;
    }
    writer.advance(200).await;
    writer.stop().await;
    barrier(&pg).await;
    let truth = truth(&pg).await;
    for mover in &mut movers {
        mover.read_to_barrier().await;
    }
    let mut reports = check_lossless(&readers.await.unwrap(), &truth, "a client of either node");
    reports.extend(check_lossless(&movers, &truth, "a client that moved"));
    report_line("wal_two_nodes", truth.len(), &reports, "");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Writes tick `n` (one transaction).
async fn tick(pg: &Client, n: i64) {
    pg.execute("insert into ticks (n) values ($1)", &[&n])
        .await
        .unwrap();
}

/// The next frame other than a heartbeat.
async fn next_frame(client: &mut WsClient) -> Value {
    loop {
        let frame = client.next().await;
        if frame["type"] != "heartbeat" {
            return frame;
        }
    }
}

/// A frame in short: `"<channel> <entity_id>"` for a signal,
/// `"resync <channel> <reason>"` for a resync.
fn short(frame: &Value) -> String {
    let channel = frame["channel"]
        .as_str()
        .unwrap_or_else(|| panic!("{frame}"));
    if frame["event"] == "resync" {
        format!(
            "resync {channel} {}",
            frame["payload"]["reason"].as_str().unwrap()
        )
    } else {
        format!(
            "{channel} {}",
            frame["payload"]["entity_id"].as_str().unwrap()
        )
    }
}

/// The next `count` frames (heartbeats aside), in short.
async fn next_short(client: &mut WsClient, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(short(&next_frame(client).await));
    }
    got
}

/// The frames (heartbeats aside), in short, up to and including `last`:
/// written after what it is read for, it is the barrier that shows nothing
/// else came before it.
async fn until_short(client: &mut WsClient, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    while got.last().is_none_or(|l| l != last) {
        got.push(short(&next_frame(client).await));
    }
    got
}

/// A new connection to `url` that subscribes to `channels`, resuming from
/// the position of `from` (a frame with `epoch` and `seq`), after the ack.
async fn resume_from(url: &str, channels: &[&str], from: &Value) -> WsClient {
    let mut client = WsClient::connect(url).await;
    client
        .send(
            json!({"subscribe": channels, "resume": {"epoch": from["epoch"], "seq": from["seq"]}}),
        )
        .await;
    let ack = next_frame(&mut client).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    client
}

/// A client that subscribed to `tick` on `url`.
async fn tick_client(url: &str) -> WsClient {
    let mut client = WsClient::connect(url).await;
    client.subscribe(&["tick"]).await;
    client
}

/// A client gone across a LISTEN reconnect comes back with `resume` from a
/// position before the hole: what came after the hole is in the history,
/// but replaying it would skip the hole, so it gets `resync`
/// (`resume_unavailable`) and then live signals. From a position after the
/// hole, the same node replays exactly.
#[tokio::test]
async fn a_resume_from_before_a_listener_reconnect_gets_resync() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let bridge = Bridge::start(&db).await;
    let url = bridge.ws_url();
    let mut steady = tick_client(&url).await;
    let mut gone = tick_client(&url).await;
    tick(&pg, 1).await;
    let before = next_frame(&mut gone).await;
    assert_eq!(short(&before), "tick 1");
    gone.kill();
    assert_eq!(next_short(&mut steady, 1).await, ["tick 1"]);
    pg.batch_execute(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where application_name = 'pgbroadcast-listener' and datname = current_database()",
    )
    .await
    .unwrap();
    // The listener is back once its resync is out; 2 comes through the new
    // connection, after the hole.
    assert_eq!(
        next_short(&mut steady, 1).await,
        ["resync tick listener_reconnected"]
    );
    tick(&pg, 2).await;
    let after = next_frame(&mut steady).await;
    assert_eq!(short(&after), "tick 2");
    let mut back = resume_from(&url, &["tick"], &before).await;
    tick(&pg, 3).await;
    assert_eq!(
        until_short(&mut back, "tick 3").await,
        ["resync tick resume_unavailable", "tick 3"],
        "a resume from before the hole must not be replayed around it"
    );
    let mut later = resume_from(&url, &["tick"], &after).await;
    tick(&pg, 4).await;
    assert_eq!(
        until_short(&mut later, "tick 4").await,
        ["tick 3", "tick 4"]
    );
    bridge.running.shutdown().await.unwrap();
}

/// `--history-size 5`: a client that missed exactly 5 signals resumes with
/// all 5, then live ones with no duplicate at the seam; once one more has
/// come, the same position is answered with `resync` (`resume_unavailable`),
/// then live signals.
#[tokio::test]
async fn a_resume_reaches_back_history_size_signals_and_no_further() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let limits = Limits {
        history_size: 5,
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let url = bridge.ws_url();
    let mut steady = tick_client(&url).await;
    let mut gone = tick_client(&url).await;
    tick(&pg, 1).await;
    let at_1 = next_frame(&mut gone).await;
    assert_eq!(short(&at_1), "tick 1");
    gone.kill();
    for n in 2..=6 {
        tick(&pg, n).await;
    }
    // Committed is not yet published: the node has all five once a client
    // of it has them.
    assert_eq!(
        until_short(&mut steady, "tick 6").await,
        ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5", "tick 6"]
    );
    let mut within = resume_from(&url, &["tick"], &at_1).await;
    // 7 commits after the resume: right after the replay, nothing twice
    // at the seam.
    tick(&pg, 7).await;
    assert_eq!(
        until_short(&mut within, "tick 7").await,
        ["tick 2", "tick 3", "tick 4", "tick 5", "tick 6", "tick 7"]
    );
    // Six signals since 1 now: one more than the history holds.
    let mut beyond = resume_from(&url, &["tick"], &at_1).await;
    tick(&pg, 8).await;
    assert_eq!(
        until_short(&mut beyond, "tick 8").await,
        ["resync tick resume_unavailable", "tick 8"]
    );
    assert_eq!(until_short(&mut within, "tick 8").await, ["tick 8"]);
    bridge.running.shutdown().await.unwrap();
}

/// `--history-age 60s`: signals 50 seconds old are replayed, 61 seconds
/// old are not (`resync`, `resume_unavailable`), while younger ones still
/// are. The server runs in this test's runtime, so its clock is moved on
/// with tokio's (paused, advanced, resumed) instead of waiting a minute.
#[tokio::test]
async fn a_resume_reaches_back_history_age_and_no_further() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let limits = Limits {
        history_age: Duration::from_secs(60),
        // No pings while the clock jumps.
        heartbeat: Duration::from_secs(3600),
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let url = bridge.ws_url();
    let mut gone = tick_client(&url).await;
    tick(&pg, 1).await;
    tick(&pg, 2).await;
    tick(&pg, 3).await;
    let at_1 = next_frame(&mut gone).await;
    assert_eq!(short(&at_1), "tick 1");
    assert_eq!(next_short(&mut gone, 1).await, ["tick 2"]);
    let at_3 = next_frame(&mut gone).await;
    assert_eq!(short(&at_3), "tick 3");
    gone.kill();
    jump(Duration::from_secs(50)).await;
    let mut within = resume_from(&url, &["tick"], &at_1).await;
    tick(&pg, 4).await;
    assert_eq!(
        until_short(&mut within, "tick 4").await,
        ["tick 2", "tick 3", "tick 4"]
    );
    within.close().await;
    // 1 to 3 are now over 60 seconds old, 4 is 11.
    jump(Duration::from_secs(11)).await;
    let mut too_old = resume_from(&url, &["tick"], &at_1).await;
    let mut young = resume_from(&url, &["tick"], &at_3).await;
    tick(&pg, 5).await;
    assert_eq!(
        until_short(&mut too_old, "tick 5").await,
        ["resync tick resume_unavailable", "tick 5"]
    );
    assert_eq!(
        until_short(&mut young, "tick 5").await,
        ["tick 4", "tick 5"]
    );
    bridge.running.shutdown().await.unwrap();
}

/// Moves tokio's clock (this runtime's, the server's included) on by `by`
/// at once: what times out within it does, nothing waits for it.
async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// `--history-size 0` turns resume off: a client that missed a signal and
/// resumes gets `resync` (`resume_unavailable`) on each of its channels,
/// then live signals on both.
#[tokio::test]
async fn history_size_zero_answers_every_resume_with_resync() {
    let db = ticks_db(true).await;
    let pg = db.client().await;
    let limits = Limits {
        history_size: 0,
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let url = bridge.ws_url();
    let mut steady = tick_client(&url).await;
    let mut gone = WsClient::connect(&url).await;
    gone.subscribe(&["tick", "other"]).await;
    tick(&pg, 1).await;
    let at_1 = next_frame(&mut gone).await;
    assert_eq!(short(&at_1), "tick 1");
    gone.kill();
    tick(&pg, 2).await;
    // The node has published 2 (so the client did miss it) once a client of
    // it has it.
    assert_eq!(
        until_short(&mut steady, "tick 2").await,
        ["tick 1", "tick 2"]
    );
    let mut back = resume_from(&url, &["tick", "other"], &at_1).await;
    tick(&pg, 3).await;
    pg.batch_execute("select broadcast.emit('other', 'ping', 'x')")
        .await
        .unwrap();
    let mut got = until_short(&mut back, "other x").await;
    // One resync per channel, in either order, before anything live.
    let head = got.len().min(2);
    got[..head].sort();
    assert_eq!(
        got,
        [
            "resync other resume_unavailable",
            "resync tick resume_unavailable",
            "tick 3",
            "other x"
        ]
    );
    bridge.running.shutdown().await.unwrap();
}

#[test]
fn the_checker_itself() {
    use Seen::*;
    let truth = [1, 2, 3, 4, 5];
    let all: Vec<Seen> = truth.iter().map(|n| Signal(*n)).collect();
    assert_eq!(check(&all, &truth, false).unwrap().delivered, 5);
    // A gap is fine only behind a resync that comes after it starts.
    let gap = [Signal(1), Signal(2), Signal(4), Signal(5)];
    assert!(check(&gap, &truth, false).is_err());
    let covered = [
        Signal(1),
        Signal(2),
        Resync("x".into()),
        Signal(4),
        Signal(5),
    ];
    assert_eq!(check(&covered, &truth, false).unwrap().covered, 1);
    let too_early = [
        Signal(1),
        Resync("x".into()),
        Signal(2),
        Signal(4),
        Signal(5),
    ];
    assert!(check(&too_early, &truth, false).is_err());
    assert!(check(&[Signal(1), Signal(1)], &truth, true).is_err());
    assert!(check(&[Signal(2), Signal(1)], &truth, true).is_err());
    assert!(check(&[Signal(9)], &truth, true).is_err());
    // After resume_unavailable (another node), signals already seen may come
    // again until a new one does; after any other resync they may not.
    let moved = [
        Signal(1),
        Signal(2),
        Resync("resume_unavailable".into()),
        Signal(2),
        Signal(3),
        Signal(4),
        Signal(5),
    ];
    assert_eq!(check(&moved, &truth, false).unwrap().redelivered, 1);
    let repeat_later = [
        Signal(1),
        Signal(2),
        Resync("resume_unavailable".into()),
        Signal(3),
        Signal(2),
        Signal(4),
        Signal(5),
    ];
    assert!(check(&repeat_later, &truth, false).is_err());
    let slow = [
        Signal(1),
        Signal(2),
        Resync("slow_consumer".into()),
        Signal(2),
        Signal(3),
        Signal(4),
        Signal(5),
    ];
    assert!(check(&slow, &truth, false).is_err());
    // The tail must arrive too, unless a resync covers it: one received
    // once it had committed. A resync with nothing after it and nothing to
    // say when it came covers nothing (it may have come before the tail).
    assert!(check(&[Signal(1), Signal(2)], &truth, false).is_err());
    assert!(check(&[Signal(1), Signal(2), Resync("x".into())], &truth, false).is_err());
    let told_at_the_end = [Signal(1), Signal(2), Resync("x".into()), Committed(5)];
    assert_eq!(check(&told_at_the_end, &truth, false).unwrap().covered, 3);
    // Told when only 3 had committed: 4 and 5 came after it and never arrived.
    let told_early = [Signal(1), Signal(2), Resync("x".into()), Committed(3)];
    assert!(check(&told_early, &truth, false).is_err());
    // Mid-stream too: a resync received when only 2 had committed does not
    // cover 3, missing before the next delivered signal.
    let late_loss = [
        Signal(1),
        Resync("x".into()),
        Committed(2),
        Signal(4),
        Signal(5),
    ];
    assert!(check(&late_loss, &truth, false).is_err());
    let in_time = [
        Signal(1),
        Resync("x".into()),
        Committed(3),
        Signal(4),
        Signal(5),
    ];
    assert_eq!(check(&in_time, &truth, false).unwrap().covered, 2);
    // A resync covers what was missed before it, not what goes missing
    // after the next delivered signal.
    let lost_after = [
        Signal(1),
        Resync("x".into()),
        Signal(2),
        Signal(4),
        Signal(5),
    ];
    assert!(check(&lost_after, &truth, false).is_err());
    // A window checks only between its first and last signal.
    assert!(check(&[Signal(2), Signal(3)], &truth, true).is_ok());
    assert!(check(&[Signal(2), Signal(4)], &truth, true).is_err());
}
