//! The HTTP edge under hostile connections: sockets that trickle a request
//! or say nothing are closed after the handshake timeout, and however many
//! there are, new clients and the health checks still get in — even when
//! the process may open only a few hundred files.

mod common;

use std::time::Duration;

use common::binary::Served;
use common::{Bridge, TestDb, WsClient, brief, write};
use pgbroadcast::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
