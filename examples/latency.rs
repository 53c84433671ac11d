//! Commit → client latency of single writes, and the cost of the trigger on a
//! 100,000-row UPDATE. Starts a private cluster and the bridge in-process,
//! connects a real WebSocket client over loopback.
//!
//!     cargo run --release --example latency -- [writes]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pgbroadcast::cluster::Cluster;
use pgbroadcast::config::{Limits, PgArgs};
use pgbroadcast::server::{self, Settings};
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let writes: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("writes must be a number"))
        .unwrap_or(2000);
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().start())
        .await
        .unwrap()
        .expect("start private Postgres");
    let (mut pg, conn) = cluster.config("postgres").connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    pgbroadcast::migrate::run(&mut pg).await.unwrap();
    pg.batch_execute("create table items (id bigint primary key, n int not null default 0)")
        .await
        .unwrap();

    println!("bulk UPDATE of 100,000 rows (median of 5):");
    pg.batch_execute("insert into items (id) select g from generate_series(1, 100000) g")
        .await
        .unwrap();
    pg.batch_execute("vacuum analyze items").await.unwrap();
    let plain = bulk_update(&pg).await;
    pg.batch_execute("select broadcast.enable('items', 'item')")
        .await
        .unwrap();
    let with_trigger = bulk_update(&pg).await;
    println!("  without trigger: {plain:?}\n  with trigger:    {with_trigger:?}");
    pg.batch_execute("truncate items").await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = Settings {
        pg: cluster.config("postgres"),
        pg_args: PgArgs::default(),
        limits: Limits::default(),
        migrate: false,
        demo: false,
        auth: Default::default(),
    };
    let running = server::start(listener, settings).await.unwrap();
    running.ready.clone().wait_for(|r| *r).await.unwrap();
    let url = format!("ws://{}/ws/broadcast", running.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send_text(r#"{"subscribe": ["item"]}"#).await;
    next_text(&mut ws).await; // welcome
    next_text(&mut ws).await; // subscribed

    let insert = pg
        .prepare("insert into items (id) values ($1)")
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes as i64 {
        // Autocommit: the statement's round trip ends after COMMIT; the clock
        // starts when the write is sent, so this is an upper bound.
        let sent = Instant::now();
        pg.execute(&insert, &[&i]).await.unwrap();
        let frame = next_text(&mut ws).await;
        latencies.push(sent.elapsed());
        assert!(frame.contains(&format!("\"entity_id\":\"{i}\"")), "{frame}");
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "write sent → signal received, {writes} single-row autocommit INSERTs:\n  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    running.shutdown().await.unwrap();
    drop(pg);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

async fn bulk_update(pg: &tokio_postgres::Client) -> Duration {
    let mut runs = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        pg.batch_execute("update items set n = n + 1")
            .await
            .unwrap();
        runs.push(start.elapsed());
    }
    runs.sort();
    runs[2]
}

trait SendText {
    async fn send_text(&mut self, text: &str);
}

impl<S> SendText for S
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.send(Message::text(text)).await.unwrap();
    }
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => return t.to_string(),
            _ => continue,
        }
    }
}
