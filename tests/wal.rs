//! The `wal` transport: with the database's `pgbroadcast.transport` set to
//! `wal`, the kit sends signals as logical decoding messages, and the bridge
//! (on its default `--transport auto`) reads them over logical replication —
//! with the writer's txid, in commit order, and nothing from a rollback.

mod common;

use common::{Bridge, ORDERS, PATIENCE, TestDb, brief, s, write};
use tokio_postgres::Client;

/// A database whose sessions send with `wal`, the order example in it, and a
/// bridge whose WAL stream is in effect.
async fn wal_bridge() -> (TestDb, Client, Bridge) {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    admin.batch_execute(ORDERS).await.unwrap();
    admin
        .batch_execute(&format!(
            "alter database {} set pgbroadcast.transport = 'wal'",
            db.name
        ))
        .await
        .unwrap();
    // A session started after the change sends with it.
    let pg = db.client().await;
    let bridge = Bridge::start(&db).await;
    tokio::time::timeout(PATIENCE, async {
        while !bridge
            .metrics()
            .await
            .lines()
            .any(|l| l == "pgbroadcast_wal_up 1")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bridge never streamed the WAL");
    (db, pg, bridge)
}

#[tokio::test]
async fn row_changes_arrive_through_the_wal_with_the_writers_txid() {
    let (db, mut pg, bridge) = wal_bridge().await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    let t1 = write(
        &mut pg,
        "insert into orders (id, customer) values (7, 'ada')",
    )
    .await;
    let t2 = write(&mut pg, "update orders set status = 'paid' where id = 7").await;
    let frames = client.take(3).await;
    assert_eq!(
        frames.iter().map(brief).collect::<Vec<_>>(),
        vec![
            s("created", "7", t1),
            s("updated", "7", t2),
            s("status_changed", "7", t2)
        ]
    );
    // Sent through the WAL, not NOTIFY: a session LISTENing on the kit's
    // channel gets nothing before a notification committed after the writes
    // (notifications arrive in commit order).
    let (listening, mut connection) = db.config.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listening.batch_execute("listen pgbroadcast").await.unwrap();
    let t3 = write(&mut pg, "update orders set status = 'sent' where id = 7").await;
    pg.batch_execute("select pg_notify('pgbroadcast', 'after the writes')")
        .await
        .unwrap();
    let first = tokio::time::timeout(PATIENCE, notifications.recv())
        .await
        .expect("the notification after the writes never came");
    assert_eq!(first.as_deref(), Some("after the writes"));
    // ... while the bridge still delivers that write, from the WAL.
    assert_eq!(
        client.take(2).await.iter().map(brief).collect::<Vec<_>>(),
        vec![s("updated", "7", t3), s("status_changed", "7", t3)]
    );
}

#[tokio::test]
async fn a_rollback_sends_nothing_and_signals_follow_commit_order() {
    let (db, mut pg, bridge) = wal_bridge().await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    // Rolled back: never decoded.
    let tx = pg.transaction().await.unwrap();
    tx.batch_execute("insert into orders (id) values (1)")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Two writers: the one that began first commits second.
    let mut other = db.client().await;
    let first = pg.transaction().await.unwrap();
    first
        .batch_execute("insert into orders (id) values (2)")
        .await
        .unwrap();
    let t2 = write(&mut other, "insert into orders (id) values (3)").await;
    let t1: i64 = first
        .query_one("select pg_current_xact_id()::xid::text::bigint", &[])
        .await
        .unwrap()
        .get(0);
    first.commit().await.unwrap();
    let frames = client.take(2).await;
    assert_eq!(
        frames.iter().map(brief).collect::<Vec<_>>(),
        vec![s("created", "3", t2), s("created", "2", t1)]
    );
}

#[tokio::test]
async fn an_unknown_transport_is_refused_with_a_hint() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    pg.batch_execute(ORDERS).await.unwrap();
    pg.batch_execute("set pgbroadcast.transport = 'carrier pigeon'")
        .await
        .unwrap();
    let err = pg
        .batch_execute("insert into orders (id) values (1)")
        .await
        .unwrap_err();
    let db_err = err.as_db_error().expect("a database error");
    assert!(db_err.message().contains("not a transport"), "{db_err:?}");
    assert!(
        db_err
            .hint()
            .is_some_and(|h| h.contains("notify") && h.contains("wal")),
        "{db_err:?}"
    );
    // The write was refused, not lost silently.
    let rows: i64 = pg
        .query_one("select count(*) from orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

/// The WAL stream dies (its walsender terminated): readiness drops, every
/// subscribed channel gets `resync` once it is back (what committed in
/// between was not read), and signals flow again.
#[tokio::test]
async fn a_terminated_wal_stream_reconnects_and_resyncs() {
    let (db, mut pg, bridge) = wal_bridge().await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    assert_eq!(bridge.readyz().await, 200);

    // Keep the stream out while we look at readiness: no new connections.
    let admin = common::connect(&common::cluster().config("postgres")).await;
    let allow = |yes: bool| format!("alter database {} allow_connections {yes}", db.name);
    admin.batch_execute(&allow(false)).await.unwrap();
    let terminated: i64 = pg
        .query_one(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = $1 and datname = current_database()) t",
            &[&pgbroadcast::wal::APPLICATION_NAME],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(terminated, 1);
    bridge.wait_ready(false).await;
    // Committed while nothing streams: covered by the resync, not re-read.
    write(&mut pg, "insert into orders (id) values (1)").await;
    admin.batch_execute(&allow(true)).await.unwrap();
    bridge.wait_ready(true).await;

    let resync = client.next().await;
    assert_eq!(resync["channel"], "order", "{resync}");
    assert_eq!(resync["event"], "resync", "{resync}");
    assert_eq!(
        resync["payload"],
        serde_json::json!({"reason": "listener_reconnected"})
    );
    let txid = write(&mut pg, "insert into orders (id) values (2)").await;
    assert_eq!(brief(&client.next().await), s("created", "2", txid));
}

/// Only the kit sends `wal` signals: a plain role may not emit logical
/// messages itself, while its writes to a routed table still signal.
#[tokio::test]
async fn a_plain_role_cannot_forge_a_wal_signal_but_its_writes_signal() {
    let (db, pg, bridge) = wal_bridge().await;
    let role = format!("writer_{}", db.name);
    pg.batch_execute(&format!(
        "create role {role} login password 'writer';
         grant usage on schema public to {role};
         grant insert, select on orders to {role};"
    ))
    .await
    .unwrap();
    let mut config = db.config.clone();
    config.user(&role).password("writer");
    let mut writer = common::connect(&config).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;

    let forged = writer
        .batch_execute(
            r#"select pg_logical_emit_message(true, 'pgbroadcast', '{"channel":"order","event":"created","payload":{"entity_id":"666","txid":1,"op":"INSERT"}}')"#,
        )
        .await
        .unwrap_err();
    assert_eq!(
        forged.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{forged:?}"
    );
    let txid = write(&mut writer, "insert into orders (id) values (5)").await;
    assert_eq!(brief(&client.next().await), s("created", "5", txid));
    pg.batch_execute(&format!(
        "revoke all on orders from {role}; revoke all on schema public from {role}; drop role {role}"
    ))
    .await
    .unwrap();
}

/// `--wal-decoding-work-mem` reaches the stream's session: at its smallest,
/// 64kB, a transaction of a few thousand rows is spilled to disk while
/// decoded (the slot's statistics say so), and signals still arrive.
#[tokio::test]
async fn the_decoding_work_mem_knob_is_taken() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    admin.batch_execute(ORDERS).await.unwrap();
    let mut pg = db.client().await;
    pg.batch_execute("set pgbroadcast.transport = 'wal'")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = pgbroadcast::server::start(
        listener,
        pgbroadcast::server::Settings {
            pg: db.config.clone(),
            pg_args: pgbroadcast::config::PgArgs {
                transport: pgbroadcast::wal::Transport::Wal,
                wal_decoding_work_mem: Some("64kB".into()),
                ..Default::default()
            },
            limits: Default::default(),
            migrate: true,
            demo: false,
            auth: Default::default(),
        },
    )
    .await
    .unwrap();
    let bridge = Bridge { running };
    bridge.wait_ready(true).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    pg.batch_execute(
        "create table bulk (n int, pad text); \
         insert into bulk select g, repeat('x', 100) from generate_series(1, 5000) g",
    )
    .await
    .unwrap();
    let txid = write(&mut pg, "insert into orders (id) values (9)").await;
    assert_eq!(brief(&client.next().await), s("created", "9", txid));
    tokio::time::timeout(PATIENCE, async {
        loop {
            let spilled: i64 = admin
                .query_one(
                    "select coalesce(sum(s.spill_txns), 0)::bigint from pg_stat_replication_slots s \
                     join pg_replication_slots r using (slot_name) where r.database = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if spilled > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no transaction was spilled: the stream does not run with 64kB");
}

/// The lines of `pgbroadcast slots <args>` against `db`, which must succeed.
async fn slots(db: &TestDb, args: &[&str]) -> Vec<String> {
    let exit = common::binary::Launch::new(&[&["slots"], args].concat())
        .database(&common::cluster().url(&db.name))
        .run()
        .await;
    assert!(exit.status.success(), "{}", exit.log);
    exit.stdout
}

/// The value of a metric line `name value`, once it satisfies `ok`.
async fn metric_until(served: &common::binary::Served, name: &str, ok: impl Fn(i64) -> bool) {
    let url = served.http_url("/metrics");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<i64>().ok());
            if value.is_some_and(&ok) {
                return;
            }
            // Another process's state, read by polling: it has no event to wait on.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never got there:\n{}", served.log()));
}

/// A node gone for good leaves its slot behind, keeping WAL: a live node
/// counts it in its metrics and warns, naming the command that drops it;
/// `pgbroadcast slots` lists it (and refuses to drop a streaming node's).
#[tokio::test]
async fn stale_slots_are_shown_warned_about_and_dropped() {
    let db = TestDb::migrated().await;
    db.client()
        .await
        .batch_execute(&format!(
            "alter database {} set pgbroadcast.transport = 'wal'",
            db.name
        ))
        .await
        .unwrap();
    let url = common::cluster().url(&db.name);
    let gone_id = format!("{}_gone", db.name);
    let live_id = format!("{}_live", db.name);
    let node = |id: &str| {
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--transport",
            "wal",
            "--node-id",
            id,
            "--queue-check",
            "200ms",
        ]
        .map(str::to_owned)
    };
    let gone =
        common::binary::Served::start(&url, &node(&gone_id).each_ref().map(String::as_str), &[])
            .await;
    let gone_slot = format!("pgbroadcast_{gone_id}");
    let live_slot = format!("pgbroadcast_{live_id}");
    let listed = slots(&db, &[]).await;
    assert!(
        listed
            .iter()
            .any(|l| l.starts_with(&gone_slot) && l.contains(" active ")),
        "{listed:?}"
    );
    // A streaming node's slot is not dropped.
    let refused = common::binary::Launch::new(&["slots", "--drop", &gone_slot])
        .database(&url)
        .run()
        .await;
    assert!(!refused.status.success());
    assert!(
        refused.log.contains("stop that node first"),
        "{}",
        refused.log
    );
    gone.kill().await;

    let live =
        common::binary::Served::start(&url, &node(&live_id).each_ref().map(String::as_str), &[])
            .await;
    metric_until(&live, "pgbroadcast_wal_stale_slots", |n| n == 1).await;
    metric_until(&live, "pgbroadcast_wal_slot_retained_bytes", |n| n > 0).await;
    let warning = live
        .log_line(&["inactive pgbroadcast replication slot", &gone_slot])
        .await;
    assert!(
        warning.contains(&format!("pgbroadcast slots --drop {gone_slot}")),
        "{warning}"
    );
    let listed = slots(&db, &[]).await;
    assert!(
        listed
            .iter()
            .any(|l| l.starts_with(&gone_slot) && l.contains("INACTIVE")),
        "{listed:?}"
    );

    let dropped = slots(&db, &["--drop-inactive"]).await;
    assert!(
        dropped.contains(&format!("dropped {gone_slot}")),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().all(|l| !l.starts_with(&gone_slot)),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().any(|l| l.starts_with(&live_slot)),
        "the live node's slot stays: {dropped:?}"
    );
    metric_until(&live, "pgbroadcast_wal_stale_slots", |n| n == 0).await;
    live.kill().await;
    slots(&db, &["--drop", &live_slot]).await;
}
