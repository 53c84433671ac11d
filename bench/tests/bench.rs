//! The bench against real servers: its own (the smoke run: a real server
//! process, a few hundred real clients, a few seconds of real writes), and a
//! minimal SYNC-009 server written here that never acknowledges a subscribe.
//! They check behaviour — every signal reaches every client that should get
//! it — not speed.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pgbroadcast_bench::{self as bench, BenchArgs, Scenario};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_tungstenite::tungstenite::Message;

use common::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_loses_nothing() {
    let out = tempfile::tempdir().unwrap();
    let mut args = BenchArgs::new(Scenario::Smoke);
    args.server_bin = Some(common::server_bin());
    args.out = out.path().to_owned();
    args.entity_share = 0.25;
    let report = bench::run(args).await.expect("bench run");
    println!("{}", bench::table(&report));
    assert!(report.commits > 0);
    assert!(report.exact(), "{report:#?}");
    assert_eq!(report.resyncs, 0);
    assert_eq!(report.client_errors, 0);
    assert!(
        report.deliveries > report.commits,
        "every commit reaches several clients"
    );
    assert!(report.latency.count > 0);
    // pgbroadcast acknowledges every subscribe: no barrier is needed.
    assert_eq!(report.subscription.acknowledged, report.plan.clients);
    assert_eq!(report.subscription.barriers, 0);
    assert!(report.server_cpu_s.is_some());
    assert!(out.path().join("smoke.json").is_file());
    let svg = std::fs::read_to_string(out.path().join("smoke.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
}

/// A SYNC-009 server as small as they come, without acknowledgements: it
/// LISTENs on `pgbroadcast` in `db` and forwards each notification as it is
/// to the connections subscribed to its channel. Connection `i`'s subscribe
/// goes live `delay(i)` after it arrives, and nothing tells the client when;
/// a connection for which `deaf(i)` holds never goes live.
async fn no_ack_server(
    db: &TestDb,
    delay: fn(usize) -> Duration,
    deaf: fn(usize) -> bool,
) -> String {
    let (pg, mut connection) = db.config.connect(NoTls).await.expect("connect");
    let (signals, _) = broadcast::channel::<Arc<(String, String)>>(1 << 16);
    let forward = signals.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let payload = n.payload().to_owned();
                let channel = serde_json::from_str::<Value>(&payload)
                    .ok()
                    .and_then(|v| v["channel"].as_str().map(str::to_owned));
                if let Some(channel) = channel {
                    let _ = forward.send(Arc::new((channel, payload)));
                }
            }
        }
    });
    pg.batch_execute("listen pgbroadcast")
        .await
        .expect("listen");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _pg = pg;
        for i in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(session(stream, signals.subscribe(), delay(i), deaf(i)));
        }
    });
    format!("ws://{addr}/ws/broadcast")
}

async fn session(
    stream: TcpStream,
    mut signals: broadcast::Receiver<Arc<(String, String)>>,
    delay: Duration,
    deaf: bool,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut live: HashSet<String> = HashSet::new();
    let mut pending: Vec<String> = Vec::new();
    let goes_live = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(goes_live);
    loop {
        tokio::select! {
            message = ws.next() => {
                let Some(Ok(Message::Text(text))) = message else {
                    if matches!(message, Some(Ok(_))) { continue }
                    return;
                };
                let Ok(msg) = serde_json::from_str::<Value>(&text) else { continue };
                if deaf {
                    continue;
                }
                for c in msg["subscribe"].as_array().into_iter().flatten() {
                    pending.extend(c.as_str().map(str::to_owned));
                }
                goes_live.as_mut().reset(tokio::time::Instant::now() + delay);
            }
            () = &mut goes_live, if !pending.is_empty() => live.extend(pending.drain(..)),
            signal = signals.recv() => {
                let Ok(signal) = signal else { return };
                if live.contains(&signal.0) && ws.send(Message::text(signal.1.clone())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn smoke_against(url: String, db: &TestDb) -> BenchArgs {
    let mut args = BenchArgs::new(Scenario::Smoke);
    args.target = Some(url);
    args.database_url = Some(common::cluster().url(&db.name));
    args.out = tempfile::tempdir().unwrap().keep();
    args
}

/// Subscriptions that go live up to 1.4 s after the subscribe, unannounced:
/// the bench waits until every client has received a barrier signal, so not
/// one signal of the run is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_without_acks_is_measured_after_barriers() {
    let db = TestDb::migrated().await;
    let url = no_ack_server(
        &db,
        |i| Duration::from_millis(200 * (i % 8) as u64),
        |_| false,
    )
    .await;
    let args = smoke_against(url, &db);
    let out = args.out.clone();
    let report = bench::run(args).await.expect("bench run");
    println!("{}", bench::table(&report));
    let clients = report.plan.clients;
    assert_eq!(report.subscription.acknowledged, 0);
    assert_eq!(report.subscription.by_barrier, clients);
    assert!(report.subscription.barriers >= 1);
    assert!(report.commits > 0);
    assert!(report.exact(), "{report:#?}");
    assert_eq!(report.client_errors, 0);
    assert!(report.deliveries > report.commits);
    assert!(report.latency.count > 0);
    let _ = std::fs::remove_dir_all(out);
}

/// Clients whose subscription never goes live: a bounded wait, then an error
/// that says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_that_never_delivers_to_some_clients_is_an_error() {
    let db = TestDb::migrated().await;
    let url = no_ack_server(&db, |_| Duration::ZERO, |i| i % 10 == 3).await;
    let mut args = smoke_against(url, &db);
    args.live_timeout = Duration::from_secs(2);
    let out = args.out.clone();
    let err = bench::run(args)
        .await
        .expect_err("some clients never go live");
    let _ = std::fs::remove_dir_all(out);
    let message = err.to_string();
    assert!(
        message.contains("20 of 200 clients never received a barrier signal within 2s"),
        "{message}"
    );
}
