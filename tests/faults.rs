//! The LISTEN connection dies (backend terminated, whole cluster restarted):
//! readiness drops, every subscribed channel gets `resync`, and signals flow
//! again after the reconnect — without restarting the bridge. While the
//! database refuses it, the listener retries no less often than
//! `--reconnect-max` says.

mod common;

use std::collections::BTreeSet;

use common::{Bridge, ORDERS, TestDb, WsClient, brief, connect, fresh_db_in, test_cluster, write};
use serde_json::{Value, json};

/// The two resync frames, in either order.
async fn expect_resyncs(client: &mut WsClient, channels: &[&str]) {
    let frames = client.take(channels.len()).await;
    let got: BTreeSet<String> = frames
        .iter()
        .map(|f| {
            assert_eq!(f["event"], "resync", "{f}");
            assert_eq!(f["payload"], json!({"reason": "listener_reconnected"}));
            f["channel"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(got, channels.iter().map(|c| c.to_string()).collect());
}

#[tokio::test]
async fn terminated_listener_backend_reconnects_and_resyncs() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(ORDERS).await.unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order", "contact:1"]).await;
    let mut idle = bridge.client().await;
    assert_eq!(bridge.readyz().await, 200);

    // Keep the listener out while we look at it: no new connections to this database.
    let admin = connect(&common::cluster().config("postgres")).await;
    admin
        .batch_execute(&format!(
            "alter database {} allow_connections false",
            db.name
        ))
        .await
        .unwrap();
    let terminated: i64 = pg
        .query_one(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = 'pgbroadcast-listener' and datname = current_database()) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(terminated, 1);
    bridge.wait_ready(false).await;
    assert_eq!(bridge.readyz().await, 503);

    admin
        .batch_execute(&format!(
            "alter database {} allow_connections true",
            db.name
        ))
        .await
        .unwrap();
    bridge.wait_ready(true).await;
    assert_eq!(bridge.readyz().await, 200);
    expect_resyncs(&mut client, &["contact", "order"]).await;
    // A client with no subscriptions was owed nothing: its next frame is the ack.
    idle.subscribe(&["order"]).await;

    let txid = write(&mut pg, "insert into orders (id) values (1)").await;
    let created = ("created".into(), Some("1".into()), txid);
    assert_eq!(brief(&client.next().await), created);
    let frame: Value = idle.next().await;
    assert_eq!(brief(&frame), created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_restart_reconnects_and_resyncs() {
    let mut cluster = test_cluster().expect("own cluster");
    let db = fresh_db_in(&cluster).await;
    {
        let mut pg = db.client().await;
        pgbroadcast::migrate::run(&mut pg).await.unwrap();
        pg.batch_execute(ORDERS).await.unwrap();
    }
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;

    tokio::task::block_in_place(|| cluster.stop()).unwrap();
    bridge.wait_ready(false).await;
    assert_eq!(bridge.readyz().await, 503);

    tokio::task::block_in_place(|| cluster.start()).unwrap();
    bridge.wait_ready(true).await;
    expect_resyncs(&mut client, &["order"]).await;

    let mut pg = db.client().await;
    let txid = write(&mut pg, "insert into orders (id) values (9)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("9".into()), txid)
    );
}

#[tokio::test]
async fn an_unreadable_notification_becomes_a_resync_on_its_channel() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    // Someone notifies the bridge's channel by hand, badly.
    pg.batch_execute(
        r#"select pg_notify('pgbroadcast', '{"channel": "order", "event": "no spaces allowed"}');
           select pg_notify('pgbroadcast', 'not even json');"#,
    )
    .await
    .unwrap();
    common::expect_invalid_signal_resync(&pg, &mut client, "order", "unreadable notifications")
        .await;
}

/// When each log line (JSON) with `message` was written, in order.
fn logged_at(log: &str, message: &str) -> Vec<time::OffsetDateTime> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message)
        .map(|l| {
            let at = l["timestamp"].as_str().unwrap();
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
        })
        .collect()
}

/// `--reconnect-max` reaches the listener: with the smallest value (100ms),
/// a listener the database keeps refusing waits at most 100 ms between
/// attempts, where the default (5s) would have it wait seconds by the
/// sixth.
#[tokio::test]
async fn reconnect_max_caps_the_wait_between_attempts() {
    let db = common::fresh_db().await;
    let served = common::binary::Served::start(
        &common::cluster().url(&db.name),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--reconnect-max",
            "100ms",
        ],
        &[],
    )
    .await;
    let admin = connect(&common::cluster().config("postgres")).await;
    admin
        .batch_execute(&format!(
            "alter database {0} allow_connections false; \
             select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = 'pgbroadcast-listener' and datname = '{0}'",
            db.name
        ))
        .await
        .unwrap();
    // The connection lost, then attempts refused, each logged.
    let lost = "LISTEN connection lost; reconnecting";
    let attempts = tokio::time::timeout(common::PATIENCE, async {
        loop {
            let at = logged_at(&served.log(), lost);
            if at.len() >= 10 {
                return at;
            }
            // Another process's log: there is no event to wait on.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the listener stopped retrying:\n{}", served.log()));
    let refused = served
        .log_line(&["not currently accepting connections"])
        .await;
    assert!(refused.contains(lost), "{refused}");
    // Eight waits of at most 100 ms each, plus nine attempts (each a
    // backend Postgres starts and refuses). With the default, the waits
    // before the ninth attempt (at least half of 100 ms, 200 ms, ... 3.2 s,
    // 5 s, 5 s) come to 8.15 s at least.
    let took = attempts[9] - attempts[0];
    assert!(
        took < time::Duration::seconds(6),
        "ten lost or refused connections took {took}: {:?}",
        attempts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    );

    // Let back in, it LISTENs again.
    admin
        .batch_execute(&format!(
            "alter database {} allow_connections true",
            db.name
        ))
        .await
        .unwrap();
    served.wait_ready().await;
    served.stop().await;
}
