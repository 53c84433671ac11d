//! A row change in Postgres reaches subscribed WebSocket clients with the
//! writing transaction's txid. Real cluster, real bridge, real sockets.

mod common;

use common::{Bridge, ORDERS, TestDb, barrier, brief, s, write};
use serde_json::json;

/// The order example with `setup` committed before the bridge starts (a
/// signal committed before a client subscribes may or may not reach it).
async fn orders_bridge_with(setup: &str) -> (TestDb, tokio_postgres::Client, Bridge) {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client.batch_execute(ORDERS).await.unwrap();
    client.batch_execute(setup).await.unwrap();
    let bridge = Bridge::start(&db).await;
    (db, client, bridge)
}

async fn orders_bridge() -> (TestDb, tokio_postgres::Client, Bridge) {
    orders_bridge_with("").await
}

#[tokio::test]
async fn insert_update_delete_reach_subscribers_with_the_writers_txid() {
    let (_db, mut pg, bridge) = orders_bridge().await;
    let mut first = bridge.client().await;
    let mut second = bridge.client().await;
    let mut elsewhere = bridge.client().await;
    first.subscribe(&["order"]).await;
    second.subscribe(&["order"]).await;
    elsewhere.subscribe(&["contact"]).await;

    let t1 = write(
        &mut pg,
        "insert into orders (id, customer) values (7, 'ada')",
    )
    .await;
    let t2 = write(&mut pg, "update orders set status = 'paid' where id = 7").await;
    let t3 = write(&mut pg, "delete from orders where id = 7").await;
    barrier(&pg, "order").await;
    barrier(&pg, "contact").await;

    let expected = vec![
        s("created", "7", t1),
        s("updated", "7", t2),
        s("status_changed", "7", t2),
        s("deleted", "7", t3),
    ];
    for client in [&mut first, &mut second] {
        let client_epoch = client.welcome["epoch"].clone();
        let frames = client.until("order", "barrier").await;
        let signals: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
        assert_eq!(signals, expected);
        assert_eq!(
            frames[0],
            json!({
                "channel": "order",
                "event": "created",
                "payload": {"entity_id": "7", "txid": t1, "table": "orders", "op": "INSERT"},
                "seq": frames[0]["seq"],
                "epoch": client_epoch,
            })
        );
        assert!(frames[0]["seq"].as_u64().unwrap() < frames[1]["seq"].as_u64().unwrap());
    }
    // The client on another channel saw nothing but its own barrier.
    let frames = elsewhere.until("contact", "barrier").await;
    assert_eq!(frames.len(), 1, "unexpected frames: {frames:?}");
}

#[tokio::test]
async fn rollback_sends_nothing_and_repeated_updates_send_one_signal() {
    let (_db, mut pg, bridge) = orders_bridge_with("insert into orders (id) values (1)").await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;

    let tx = pg.transaction().await.unwrap();
    tx.batch_execute(
        "insert into orders (id) values (2);
         update orders set customer = 'x' where id = 1;
         select broadcast.emit('order', 'printed', '1', null);",
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let repeated = write(
        &mut pg,
        "update orders set customer = 'a' where id = 1;
         update orders set customer = 'b' where id = 1;
         update orders set customer = 'c' where id = 1;",
    )
    .await;
    barrier(&pg, "order").await;

    let frames = client.until("order", "barrier").await;
    let signals: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
    assert_eq!(signals, vec![s("updated", "1", repeated)]);
}

#[tokio::test]
async fn signals_from_concurrent_writers_arrive_in_commit_order() {
    let db = TestDb::migrated().await;
    let setup = db.client().await;
    setup
        .batch_execute("create table counter (n int not null); insert into counter values (0);")
        .await
        .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["ticks"]).await;

    // The row lock on `counter` is held until COMMIT, so `n` numbers the
    // transactions in commit order; the signals must arrive in that order.
    const WRITERS: usize = 6;
    const EACH: usize = 30;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let mut pg = db.client().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let tx = pg.transaction().await.unwrap();
                let n: i32 = tx
                    .query_one("update counter set n = n + 1 returning n", &[])
                    .await
                    .unwrap()
                    .get(0);
                tx.execute(
                    "select broadcast.emit('ticks', 'tick', $1, null)",
                    &[&n.to_string()],
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let received: Vec<usize> = client
        .take(WRITERS * EACH)
        .await
        .iter()
        .map(|f| f["payload"]["entity_id"].as_str().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<usize> = (1..=WRITERS * EACH).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn entity_subscription_gets_only_that_entity() {
    let (_db, mut pg, bridge) = orders_bridge().await;
    let mut client = bridge.client().await;
    client.subscribe(&["order:123"]).await;

    let t1 = write(&mut pg, "insert into orders (id) values (123), (124)").await;
    write(&mut pg, "update orders set customer = 'z' where id = 124").await;
    let t3 = write(
        &mut pg,
        "insert into order_items (order_id, sku, quantity) values (123, 'tea', 1)",
    )
    .await;
    barrier(&pg, "order").await;

    let frames = client.until("order", "barrier").await;
    let signals: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
    assert_eq!(
        signals,
        vec![s("created", "123", t1), s("item_added", "123", t3)]
    );
}

#[tokio::test]
async fn child_rows_signal_their_parent_and_when_changed_filters_updates() {
    let (_db, mut pg, bridge) = orders_bridge_with("insert into orders (id) values (5)").await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;

    let added = write(
        &mut pg,
        "insert into order_items (id, order_id, sku, quantity) values (50, 5, 'tea', 1)",
    )
    .await;
    // UPDATE is not mapped on the items route.
    write(&mut pg, "update order_items set quantity = 2 where id = 50").await;
    let removed = write(&mut pg, "delete from order_items where id = 50").await;
    // status untouched: `updated` only, no `status_changed`.
    let renamed = write(&mut pg, "update orders set customer = 'bo' where id = 5").await;
    let paid = write(&mut pg, "update orders set status = 'paid' where id = 5").await;
    barrier(&pg, "order").await;

    let frames = client.until("order", "barrier").await;
    let signals: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
    assert_eq!(
        signals,
        vec![
            s("item_added", "5", added),
            s("item_removed", "5", removed),
            s("updated", "5", renamed),
            s("updated", "5", paid),
            s("status_changed", "5", paid),
        ]
    );
    assert_eq!(frames[0]["payload"]["table"], "order_items");
    assert_eq!(frames[0]["payload"]["op"], "INSERT");
}

#[tokio::test]
async fn bulk_statements_send_per_entity_signals_up_to_the_cap_then_one_channel_wide() {
    let (_db, mut pg, bridge) = orders_bridge().await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;

    // 100 rows: exactly the default cap, one signal per entity.
    write(
        &mut pg,
        "insert into orders (id) select g from generate_series(1, 100) g",
    )
    .await;
    barrier(&pg, "order").await;
    let frames = client.until("order", "barrier").await;
    assert_eq!(frames.len(), 101);
    assert!(
        frames[..100]
            .iter()
            .all(|f| f["event"] == "created" && f["payload"]["entity_id"].is_string())
    );

    // 100,000 rows: one channel-wide signal per route and operation.
    let inserted = write(
        &mut pg,
        "insert into orders (id) select g from generate_series(101, 100100) g",
    )
    .await;
    let updated = write(&mut pg, "update orders set status = 'archived'").await;
    barrier(&pg, "order").await;
    let frames = client.until("order", "barrier").await;
    let wide: Vec<_> = frames[..frames.len() - 1]
        .iter()
        .map(|f| {
            assert!(f["payload"].get("entity_id").is_none(), "{f}");
            (brief(f), f["payload"]["rows"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        wide,
        vec![
            (("created".into(), None, inserted), 100_000),
            (("updated".into(), None, updated), 100_100),
            (("status_changed".into(), None, updated), 100_100),
        ]
    );
}

#[tokio::test]
async fn emit_is_transactional_and_oversize_extra_is_dropped_with_a_flag() {
    let (_db, mut pg, bridge) = orders_bridge().await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;

    let small = write(
        &mut pg,
        r#"select broadcast.emit('order', 'printed', '123', '{"printer": "kitchen-2"}')"#,
    )
    .await;
    let big = write(
        &mut pg,
        "select broadcast.emit('order', 'printed', '124', jsonb_build_object('blob', repeat('x', 20000)))",
    )
    .await;
    let frames = client.take(2).await;
    assert_eq!(
        frames[0]["payload"],
        json!({"entity_id": "123", "txid": small, "op": "EMIT", "extra": {"printer": "kitchen-2"}})
    );
    assert_eq!(
        frames[1]["payload"],
        json!({"entity_id": "124", "txid": big, "op": "EMIT", "extra_dropped": true})
    );
}

/// A row whose id is NULL, and a route whose id column a DBA renamed after
/// enabling it: both still signal, channel-wide ("anything may have
/// changed"), never silently nothing.
#[tokio::test]
async fn a_null_id_or_a_renamed_id_column_sends_a_channel_wide_signal() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        "create table notes (id serial primary key, owner text, body text);
         select broadcast.enable('notes', 'note', id_column => 'owner');",
    )
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["note"]).await;

    let owned = write(&mut pg, "insert into notes (owner) values ('ada')").await;
    let unowned = write(&mut pg, "insert into notes (owner) values (null)").await;
    pg.batch_execute("alter table notes rename column owner to author")
        .await
        .unwrap();
    let renamed = write(&mut pg, "insert into notes (author) values ('bo')").await;
    let deleted = write(&mut pg, "delete from notes where author = 'bo'").await;
    barrier(&pg, "note").await;

    let frames = client.until("note", "barrier").await;
    let signals: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
    assert_eq!(
        signals,
        vec![
            s("created", "ada", owned),
            ("created".to_owned(), None, unowned),
            ("created".to_owned(), None, renamed),
            ("deleted".to_owned(), None, deleted),
        ]
    );
}

/// An UPDATE that changes a row's id concerns both entities: the one it
/// was and the one it is. Also with a child routed to its parent's channel
/// (an item moved to another order), and with `when_changed` (the key is
/// part of what is watched).
#[tokio::test]
async fn an_update_that_changes_the_id_signals_the_old_and_the_new_entity() {
    let (_db, mut pg, bridge) = orders_bridge_with(
        "insert into orders (id) values (5), (8);
         insert into order_items (id, order_id, sku, quantity) values (50, 5, 'tea', 1);",
    )
    .await;
    pg.batch_execute(
        "select broadcast.enable('order_items', 'order', name => 'items_moved',
             id_column => 'order_id', events => '{\"UPDATE\": \"item_moved\"}')",
    )
    .await
    .unwrap();
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    let moved = write(&mut pg, "update order_items set order_id = 8 where id = 50").await;
    let renumbered = write(&mut pg, "update orders set id = 6 where id = 5").await;
    barrier(&pg, "order").await;
    let frames = client.until("order", "barrier").await;
    let mut signals: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
    signals.sort();
    let mut expected = vec![
        s("updated", "5", renumbered),
        s("updated", "6", renumbered),
        s("status_changed", "5", renumbered),
        s("status_changed", "6", renumbered),
        s("item_moved", "5", moved),
        s("item_moved", "8", moved),
    ];
    expected.sort();
    assert_eq!(signals, expected);
}
