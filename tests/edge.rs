//! The HTTP edge under hostile connections: sockets that trickle a request
//! or say nothing are closed after the handshake timeout, and however many
//! there are, new clients and the health checks still get in — even when
//! the process may open only a few hundred files. A client that stops
//! reading is held to `--outbound-bytes`: past it, its channel is owed a
//! `resync`.

mod common;

use std::time::Duration;

use common::binary::Served;
use common::{Bridge, TestDb, WsClient, brief, write};
use pgbroadcast::config::Limits;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;
use tokio_tungstenite::MaybeTlsStream;

/// Sends the start of a request and then one more header line every 100 ms,
/// never finishing it, until the server closes the connection.
fn trickle(mut tcp: TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.is_err() {
            return;
        }
        let mut buf = [0; 512];
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Waits until the server closes `tcp` (end of stream or reset).
async fn closed_by_server(mut tcp: TcpStream) {
    let mut buf = [0; 512];
    tokio::time::timeout(common::PATIENCE, async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .expect("the server kept the connection open");
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_after_the_handshake_timeout() {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start_with(
        &db,
        Limits {
            handshake_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    )
    .await;
    let silent = TcpStream::connect(bridge.running.addr).await.unwrap();
    let trickler = trickle(TcpStream::connect(bridge.running.addr).await.unwrap());
    closed_by_server(silent).await;
    tokio::time::timeout(common::PATIENCE, trickler)
        .await
        .expect("the trickling connection was kept open")
        .unwrap();
    // An idle keep-alive connection is let go too.
    let mut idle = TcpStream::connect(bridge.running.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(idle).await;
    let metrics = bridge.metrics().await;
    assert!(
        metrics
            .contains(r#"pgbroadcast_http_connections_closed_total{reason="handshake_timeout"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_body_that_never_completes_gets_408() {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start_demo_with(
        &db,
        Limits {
            handshake_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    )
    .await;
    let mut tcp = TcpStream::connect(bridge.running.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(common::PATIENCE, tcp.read_to_string(&mut answer))
        .await
        .expect("the request was kept open")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
}

/// `pgbroadcast serve` allowed only 300 open files, as in a constrained container.
async fn served_with_300_files(database_url: &str) -> Served {
    let command = format!(
        "ulimit -n 300 && exec {} serve --listen 127.0.0.1:0 --handshake-timeout 3s",
        common::binary::BIN
    );
    Served::start_via_shell(database_url, &command).await
}

#[tokio::test]
async fn hundreds_of_idle_sockets_do_not_lock_out_clients_or_health_checks() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        "create table notes (id int primary key); select broadcast.enable('notes', 'note');",
    )
    .await
    .unwrap();
    let server = served_with_300_files(&common::cluster().url(&db.name)).await;
    let addr = server.addr.clone();
    // 320 sockets that trickle a request and 50 that say nothing: more than
    // the process could hold at once.
    let mut attackers = Vec::new();
    for _ in 0..320 {
        attackers.push(trickle(TcpStream::connect(&addr).await.unwrap()));
    }
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Health checks answer, and a client connects and gets a signal.
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let status = tokio::time::timeout(common::PATIENCE, http.get(server.http_url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer"))
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    let mut client = tokio::time::timeout(common::PATIENCE, WsClient::connect(&server.ws_url()))
        .await
        .expect("no WebSocket could connect");
    client.subscribe(&["note"]).await;
    let txid = write(&mut pg, "insert into notes values (1)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("1".into()), txid)
    );
    // Every hostile socket is let go: made room for newer ones, or timed out.
    for attacker in attackers {
        tokio::time::timeout(common::PATIENCE, attacker)
            .await
            .expect("a trickling socket was kept open")
            .unwrap();
    }
    for tcp in silent {
        closed_by_server(tcp).await;
    }
    let log = server.stop().await;
    assert!(
        log.contains("the open-file limit is too low"),
        "the lowered limits were not logged:\n{log}"
    );
}

/// `serve` with `flags`, one fan-out shard (so a frame one client got was
/// handed to every client of the node before) and a frame bound that no run
/// here reaches: what trips is the byte bound or nothing.
async fn served_for_a_slow_reader(db: &TestDb, flags: &[&str]) -> Served {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--outbound-queue",
        "1000000",
    ];
    args.extend_from_slice(flags);
    Served::start(&common::cluster().url(&db.name), &args, &[]).await
}

/// A WebSocket client with a small receive buffer: once it stops reading,
/// its kernel holds little, and what the server's cannot take waits in the
/// server's queue for it.
async fn tight_client(served: &Served) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(served.addr.parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(served.ws_url(), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    WsClient::from_stream(ws).await
}

/// Signals of about 7 KB committed per transaction.
const BATCH: usize = 10;

/// Commits [`BATCH`] signals of about 7 KB on `big`, entities `from`
/// onwards, then one on `tick`, and waits until `ticker` (subscribed to
/// `tick` only) has that: the node has handed every client the signals
/// before it by then.
async fn send_big(pg: &Client, ticker: &mut WsClient, from: usize) {
    let emits: String = (from..from + BATCH)
        .map(|i| {
            format!(
                "select broadcast.emit('big', 'fill', '{i}', \
                 jsonb_build_object('pad', repeat('x', 7000)));"
            )
        })
        .collect();
    pg.batch_execute(&format!(
        "begin; {emits} select broadcast.emit('tick', 'tick', '{from}', null); commit;"
    ))
    .await
    .unwrap();
    let tick = ticker.next().await;
    assert_eq!(tick["payload"]["entity_id"], from.to_string(), "{tick}");
}

/// `pgbroadcast_resyncs_total{reason="slow_consumer"}` now.
async fn slow_consumer_resyncs(served: &Served) -> u64 {
    let text = reqwest::get(served.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"pgbroadcast_resyncs_total{reason="slow_consumer"} "#))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Whether `frame` is the signal on `big` for entity `i`.
fn fill(frame: &serde_json::Value, i: usize) -> bool {
    let id = i.to_string();
    frame["channel"] == "big" && frame["event"] == "fill" && frame["payload"]["entity_id"] == *id
}

#[tokio::test]
async fn a_client_that_stops_reading_is_held_to_its_byte_bound() {
    // A small byte bound: signals go to a client that does not read until
    // its channel is owed a resync, however many that takes (the kernel's
    // socket buffers take their share first).
    let db = common::fresh_db().await;
    let served = served_for_a_slow_reader(&db, &["--outbound-bytes", "16384"]).await;
    let pg = db.client().await;
    let mut ticker = WsClient::connect(&served.ws_url()).await;
    ticker.subscribe(&["tick"]).await;
    let mut slow = tight_client(&served).await;
    slow.subscribe(&["big"]).await;
    let mut sent = 0;
    while slow_consumer_resyncs(&served).await == 0 {
        assert!(
            sent < 3000,
            "{sent} signals of 7 KB and no slow_consumer resync: the byte bound never tripped"
        );
        send_big(&pg, &mut ticker, sent).await;
        sent += BATCH;
    }
    // Reading again, it gets the signals that were queued, in order, then
    // the resync instead of the ones skipped ...
    let frames = slow.until("big", "resync").await;
    let (resync, signals) = frames.split_last().unwrap();
    assert_eq!(resync["payload"], json!({"reason": "slow_consumer"}));
    for (i, frame) in signals.iter().enumerate() {
        assert!(fill(frame, i), "frame {i}: {frame}");
    }
    assert!(signals.len() < sent, "nothing was skipped");
    // ... and, the resync written, later signals again.
    common::barrier(&pg, "big").await;
    assert_eq!(slow.next().await["event"], "barrier");
    assert_eq!(slow_consumer_resyncs(&served).await, 1);
    served.stop().await;

    // The same run with the default byte bound (1 MiB): all of it fits, so
    // it was the byte bound that tripped, not the frame bound or the socket.
    let db = common::fresh_db().await;
    let served = served_for_a_slow_reader(&db, &[]).await;
    let pg = db.client().await;
    let mut ticker = WsClient::connect(&served.ws_url()).await;
    ticker.subscribe(&["tick"]).await;
    let mut slow = tight_client(&served).await;
    slow.subscribe(&["big"]).await;
    for from in (0..sent).step_by(BATCH) {
        send_big(&pg, &mut ticker, from).await;
    }
    assert_eq!(
        slow_consumer_resyncs(&served).await,
        0,
        "the default byte bound tripped too, after {sent} signals"
    );
    common::barrier(&pg, "big").await;
    let frames = slow.until("big", "barrier").await;
    assert_eq!(frames.len(), sent + 1);
    for (i, frame) in frames[..sent].iter().enumerate() {
        assert!(fill(frame, i), "frame {i}: {frame}");
    }
    served.stop().await;
}
