//! The SQL kit as teams and DBAs use it: misuse raises clear errors with hints,
//! odd identifiers work, `broadcast.routes` shows what fires, re-enabling
//! replaces, disabling stops, and the Postgres channel is configurable.

mod common;

use common::{Bridge, ORDERS, TestDb, barrier, brief, write};
use pgbroadcast::config::{Limits, PgArgs};
use pgbroadcast::server::{self, Settings};
use serde_json::json;

#[tokio::test]
async fn the_dba_walkthrough_script_passes() {
    let db = TestDb::migrated().await;
    let psql = pgbroadcast::cluster::find_binaries().unwrap().join("psql");
    let url = common::cluster().url(&db.name);
    let out = tokio::process::Command::new(psql)
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "sql/check.sql",
            &url,
        ])
        .output()
        .await
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check.sql failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // Every signal the walkthrough causes is printed by psql; spot-check two.
    assert!(stdout.contains(r#""event":"status_changed""#), "{stdout}");
    assert!(stdout.contains(r#""extra_dropped":true"#), "{stdout}");
}

#[tokio::test]
async fn misuse_raises_an_error_with_a_hint() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    pg.batch_execute(ORDERS).await.unwrap();
    pg.batch_execute("create table nopk (a int)").await.unwrap();
    let cases = [
        ("select broadcast.enable('nopk', 'x')", "has no primary key"),
        (
            "select broadcast.enable('orders', 'order', id_column => 'nope')",
            "does not exist",
        ),
        (
            r#"select broadcast.enable('orders', 'order', events => '{"UPSERT": "x"}')"#,
            "unknown operation",
        ),
        (
            "select broadcast.enable('orders', 'a b')",
            "invalid channel name",
        ),
        ("select broadcast.emit('order', 'resync', '1')", "reserved"),
    ];
    for (sql, expected) in cases {
        let err = pg.batch_execute(sql).await.unwrap_err();
        let db_err = err.as_db_error().expect("a database error");
        assert!(
            db_err.message().contains(expected),
            "{sql}: {}",
            db_err.message()
        );
        assert!(
            db_err.hint().is_some_and(|h| !h.is_empty()),
            "{sql}: no hint"
        );
    }
    // Nothing was installed by the failed calls.
    let routes: i64 = pg
        .query_one(
            "select count(*) from broadcast.routes where table_name = 'nopk'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(routes, 0);
}

#[tokio::test]
async fn odd_identifiers_work_end_to_end() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        r#"create schema "My Schema";
           -- Columns named like the kit's own aliases and variables.
           create table "My Schema"."Weird ""Table"" name" (
               "Order ID" text primary key, "the value" int, n int, o int, j int, p int, v_idcol int);
           select broadcast.enable('"My Schema"."Weird ""Table"" name"', 'weird/ch.1',
                                   id_column => 'Order ID', when_changed => '{the value}');"#,
    )
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&[r#"weird/ch.1:A"1"#]).await;
    let txid = write(
        &mut pg,
        r#"insert into "My Schema"."Weird ""Table"" name" values ('A"1', 1), ('B', 2)"#,
    )
    .await;
    let frame = client.next().await;
    assert_eq!(
        frame["payload"],
        json!({"entity_id": "A\"1", "txid": txid, "table": "Weird \"Table\" name", "schema": "My Schema", "op": "INSERT"})
    );
    // when_changed on a watched column with a space in its name.
    write(
        &mut pg,
        r#"update "My Schema"."Weird ""Table"" name" set n = 5"#,
    )
    .await;
    let txid = write(
        &mut pg,
        r#"update "My Schema"."Weird ""Table"" name" set "the value" = 9"#,
    )
    .await;
    let frame = client.next().await;
    assert_eq!(
        (frame["event"].as_str(), frame["payload"]["txid"].as_i64()),
        (Some("updated"), Some(txid))
    );
}

async fn order_item_routes(pg: &tokio_postgres::Client) -> Vec<(String, String, String)> {
    pg.query(
        "select route, operation, event from broadcast.routes \
         where table_name = 'order_items'::regclass order by operation",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn routes_view_reenable_and_disable() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(ORDERS).await.unwrap();
    let r =
        |route: &str, op: &str, event: &str| (route.to_owned(), op.to_owned(), event.to_owned());
    assert_eq!(
        order_item_routes(&pg).await,
        vec![
            r("order", "DELETE", "item_removed"),
            r("order", "INSERT", "item_added"),
            r("order", "TRUNCATE", "item_removed"),
        ]
    );

    // Re-enabling the same table and route name replaces its configuration.
    pg.batch_execute(
        r#"select broadcast.enable('order_items', 'order', id_column => 'order_id',
                                   events => '{"UPDATE": "item_changed"}')"#,
    )
    .await
    .unwrap();
    assert_eq!(
        order_item_routes(&pg).await,
        vec![r("order", "UPDATE", "item_changed")]
    );

    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    write(&mut pg, "insert into orders (id) values (1)").await;
    write(
        &mut pg,
        "insert into order_items (id, order_id, sku, quantity) values (1, 1, 'tea', 1)",
    )
    .await;
    let changed = write(&mut pg, "update order_items set quantity = 3").await;
    let disabled: i32 = pg
        .query_one("select broadcast.disable('order_items', 'order')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(disabled, 1);
    write(&mut pg, "update order_items set quantity = 4").await;
    barrier(&pg, "order").await;

    let frames = client.until("order", "barrier").await;
    let events: Vec<_> = frames.iter().map(|f| brief(f).0).collect();
    assert_eq!(events, ["created", "item_changed", "barrier"]);
    assert_eq!(
        brief(&frames[1]),
        ("item_changed".into(), Some("1".into()), changed)
    );
    assert!(order_item_routes(&pg).await.is_empty());
}

#[tokio::test]
async fn the_postgres_channel_is_configurable_on_both_sides() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "alter database {} set pgbroadcast.channel = 'app_signals'",
            db.name
        ))
        .await
        .unwrap();
    let mut pg = db.client().await; // a new session picks up the database setting
    pg.batch_execute(ORDERS).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = Settings {
        pg: db.config.clone(),
        pg_args: PgArgs {
            pg_channel: "app_signals".into(),
            ..PgArgs::default()
        },
        limits: Limits::default(),
        migrate: false,
        demo: false,
        auth: Default::default(),
    };
    let running = server::start(listener, settings).await.unwrap();
    let mut ready = running.ready.clone();
    ready.wait_for(|r| *r).await.unwrap();
    let mut client =
        common::WsClient::connect(&format!("ws://{}/ws/broadcast", running.addr)).await;
    client.subscribe(&["order"]).await;
    let txid = write(&mut pg, "insert into orders (id) values (3)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("3".into()), txid)
    );
}

/// `broadcast._send` runs with the kit owner's rights (it may send a `wal`
/// signal) but, to stay cheap, without a `set search_path` of its own: a
/// role that calls it with look-alikes of what it calls first on its path
/// gets none of them run, as the owner or at all, and the signal is the kit's.
#[tokio::test]
async fn a_callers_search_path_cannot_stand_in_for_what_the_kit_calls() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    admin.batch_execute(ORDERS).await.unwrap();
    let role = format!("sly_{}", db.name);
    let schema = format!("sly_{}", db.name);
    admin
        .batch_execute(&format!(
            "create role {role} login password 'sly';
             grant usage on schema public to {role};
             grant insert, select on orders to {role};
             grant create on database {db} to {role};",
            db = db.name
        ))
        .await
        .unwrap();
    let mut config = db.config.clone();
    config.user(&role).password("sly");
    let mut sly = common::connect(&config).await;
    // Look-alikes of functions and an operator the kit uses, each noting
    // who ran it.
    sly.batch_execute(&format!(
        r#"create schema {schema};
           create table {schema}.ran (who text);
           create function {schema}.to_json(anyelement) returns json language plpgsql as
             $$ begin insert into {schema}.ran values (current_user); return '"forged"'::json; end $$;
           create function {schema}.octet_length(text) returns int language plpgsql as
             $$ begin insert into {schema}.ran values (current_user); return 1; end $$;
           create function {schema}.current_setting(text, boolean) returns text language plpgsql as
             $$ begin insert into {schema}.ran values (current_user); return 'forged'; end $$;
           create function {schema}.texteq(text, text) returns boolean language plpgsql as
             $$ begin insert into {schema}.ran values (current_user); return true; end $$;
           create function {schema}.concat_op(text, text) returns text language plpgsql as
             $$ begin insert into {schema}.ran values (current_user); return 'forged'; end $$;
           create operator {schema}.|| (function = {schema}.concat_op, leftarg = text, rightarg = text);
           set search_path = {schema}, pg_catalog, public;"#
    ))
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    // Called directly (anyone may; the triggers and broadcast.emit call it
    // with their search path pinned), it runs on the caller's path.
    let txid = write(
        &mut sly,
        "select broadcast._send('order', 'created', '3', null, 'orders', null, 'INSERT')",
    )
    .await;
    let ran: i64 = sly
        .query_one(
            &format!("select count(*) from {schema}.ran where who <> '{role}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ran, 0, "a look-alike ran with another role's rights");
    let ran_as_kit: i64 = sly
        .query_one(&format!("select count(*) from {schema}.ran"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ran_as_kit, 0, "the kit's send called a look-alike");
    assert_eq!(brief(&client.next().await), common::s("created", "3", txid));
    drop(sly);
    admin
        .batch_execute(&format!(
            "drop schema {schema} cascade; revoke all on orders from {role};
             revoke all on schema public from {role}; revoke create on database {db} from {role};
             drop role {role}",
            db = db.name
        ))
        .await
        .unwrap();
}
