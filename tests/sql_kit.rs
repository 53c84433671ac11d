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

/// A session of `db` as `role` (password `pw`).
async fn session_as(db: &TestDb, role: &str) -> tokio_postgres::Client {
    let mut config = db.config.clone();
    config.user(role).password("pw");
    common::connect(&config).await
}

/// A database error's (SQLSTATE, message, hint).
fn db_error(err: &tokio_postgres::Error) -> (String, String, Option<String>) {
    let e = err.as_db_error().expect("a database error");
    (
        e.code().code().to_owned(),
        e.message().to_owned(),
        e.hint().map(str::to_owned),
    )
}

/// sql/README.md: "No superuser needed. `enable`/`disable` require ownership
/// of the table (or membership in the owning role). Writers need nothing
/// beyond their table privileges." A plain role that owns a table routes it,
/// a member of that role adds a route, a role holding every privilege on the
/// table but not owning it is refused with the message and hint a DBA reads,
/// and a writer with INSERT alone has its rows announced to WebSocket clients.
#[tokio::test]
async fn a_table_owner_without_superuser_enables_and_other_roles_are_refused() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    let [owner, member, stranger, writer] =
        ["own", "mem", "str", "wri"].map(|r| format!("{r}_{}", db.name));
    admin
        .batch_execute(&format!(
            "create role {owner} login password 'pw' nosuperuser;
             create role {member} login password 'pw' nosuperuser in role {owner};
             create role {stranger} login password 'pw' nosuperuser;
             create role {writer} login password 'pw' nosuperuser;
             grant usage, create on schema public to {owner};
             grant usage on schema public to {stranger}, {writer};"
        ))
        .await
        .unwrap();

    let owns = session_as(&db, &owner).await;
    let superuser: bool = owns
        .query_one(
            "select rolsuper from pg_roles where rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);
    owns.batch_execute(&format!(
        "create table notes (id int primary key, body text);
         select broadcast.enable('notes', 'note');
         grant all on notes to {stranger};
         grant insert on notes to {writer};"
    ))
    .await
    .unwrap();
    session_as(&db, &member)
        .await
        .batch_execute(
            r#"select broadcast.enable('notes', 'audit', events => '{"INSERT": "written"}')"#,
        )
        .await
        .expect("a member of the owning role may enable");

    // Every privilege on the table (TRIGGER included) is not ownership.
    let strange = session_as(&db, &stranger).await;
    let hint =
        format!("Run broadcast.enable as the table owner ({owner}) or a member of that role.");
    assert_eq!(
        db_error(
            &strange
                .batch_execute("select broadcast.enable('notes', 'spy')")
                .await
                .unwrap_err()
        ),
        (
            "42501".into(),
            "broadcast.enable: must be owner of table public.notes".into(),
            Some(hint)
        )
    );
    let hint =
        format!("Run broadcast.disable as the table owner ({owner}) or a member of that role.");
    assert_eq!(
        db_error(
            &strange
                .batch_execute("select broadcast.disable('notes')")
                .await
                .unwrap_err()
        ),
        (
            "42501".into(),
            "broadcast.disable: must be owner of table public.notes".into(),
            Some(hint)
        )
    );
    let routes: Vec<(String, String)> = admin
        .query(
            "select route, operation from broadcast.routes \
             where table_name = 'notes'::regclass order by 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let r = |route: &str, op: &str| (route.to_owned(), op.to_owned());
    assert_eq!(
        routes,
        [
            r("audit", "INSERT"),
            r("note", "DELETE"),
            r("note", "INSERT"),
            r("note", "TRUNCATE"),
            r("note", "UPDATE"),
        ]
    );

    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["note", "audit"]).await;
    let mut writes = session_as(&db, &writer).await;
    let txid = write(&mut writes, "insert into notes values (7, 'hi')").await;
    let mut frames: Vec<_> = client
        .take(2)
        .await
        .iter()
        .map(|f| (f["channel"].as_str().unwrap().to_owned(), brief(f)))
        .collect();
    frames.sort();
    assert_eq!(
        frames,
        [
            ("audit".into(), common::s("written", "7", txid)),
            ("note".into(), common::s("created", "7", txid)),
        ]
    );
    drop((owns, strange, writes));
    admin
        .batch_execute(&format!(
            "drop table notes; revoke all on schema public from {owner}, {stranger}, {writer};
             drop role {member}, {stranger}, {writer}, {owner};"
        ))
        .await
        .unwrap();
}

/// Runs `sql` in one transaction and returns its txid, naming everything it
/// calls with its schema (the session's search path may hold look-alikes).
async fn write_qualified(db: &mut tokio_postgres::Client, sql: &str) -> i64 {
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(sql).await.unwrap();
    let txid: i64 = tx
        .query_one(
            "select pg_catalog.pg_current_xact_id()::pg_catalog.xid::pg_catalog.text::pg_catalog.int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    txid
}

/// README: every function of the kit pins `search_path` or names what it
/// calls with its schema. A writer whose search path puts look-alikes of
/// what a route's trigger and `broadcast.emit` call (functions, and the
/// operators `->>` and `=`) before `pg_catalog`, and a superuser tricked
/// into the same path, write through every kind of route statement: none of
/// the look-alikes runs, and clients get exactly the kit's signals.
#[tokio::test]
async fn a_writers_search_path_cannot_stand_in_for_what_a_route_calls() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    admin.batch_execute(ORDERS).await.unwrap();
    let role = format!("hijack_{}", db.name);
    let schema = format!("hijack_{}", db.name);
    admin
        .batch_execute(&format!(
            "create role {role} login password 'pw';
             grant usage on schema public to {role};
             grant select, insert, update, delete on orders to {role};
             grant create on database {db} to {role};",
            db = db.name
        ))
        .await
        .unwrap();
    let mut sly = session_as(&db, &role).await;
    // Look-alikes of what the trigger, `broadcast.emit` and `_send` call:
    // each notes that it ran, and as whom, then does what the real one does
    // (so only that note tells that it ran).
    let look_alikes = [
        (
            "to_jsonb(a anyelement) returns jsonb",
            "return pg_catalog.to_jsonb(a)",
        ),
        (
            "to_json(a anyelement) returns json",
            "return pg_catalog.to_json(a)",
        ),
        (
            "pg_current_xact_id() returns xid8",
            "return pg_catalog.pg_current_xact_id()",
        ),
        (
            "pg_notify(c text, p text) returns void",
            "perform pg_catalog.pg_notify(c, p)",
        ),
        (
            "cardinality(a anyarray) returns int",
            "return pg_catalog.cardinality(a)",
        ),
        (
            "jsonb_typeof(j jsonb) returns text",
            "return pg_catalog.jsonb_typeof(j)",
        ),
        (
            "jsonb_array_elements_text(j jsonb) returns setof text",
            "return query select pg_catalog.jsonb_array_elements_text(j)",
        ),
        (
            "get(j jsonb, k text) returns text",
            "return pg_catalog.jsonb_object_field_text(j, k)",
        ),
        (
            "eq(a text, b text) returns boolean",
            "return pg_catalog.texteq(a, b)",
        ),
    ];
    let mut setup = format!(
        "create schema {schema};
         grant usage on schema {schema} to public;
         create table {schema}.ran (who text, what text);
         grant insert on {schema}.ran to public;"
    );
    for (signature, body) in look_alikes {
        let name = &signature[..signature.find('(').unwrap()];
        setup += &format!(
            "create function {schema}.{signature} language plpgsql as $$ begin
               insert into {schema}.ran values (current_user, '{name}'); {body}; end $$;"
        );
    }
    setup += &format!(
        "create operator {schema}.->> (function = {schema}.get, leftarg = jsonb, rightarg = text);
         create operator {schema}.= (function = {schema}.eq, leftarg = text, rightarg = text);
         set search_path = {schema}, pg_catalog, public;"
    );
    sly.batch_execute(&setup).await.unwrap();

    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    // One write per path of the trigger: a single row, several rows, a
    // when_changed update of one row, an update of several, a delete; and
    // an explicit emit.
    let one = write_qualified(
        &mut sly,
        "insert into orders (id, customer) values (1, 'ada')",
    )
    .await;
    let two = write_qualified(&mut sly, "insert into orders (id) values (2), (3)").await;
    let paid = write_qualified(&mut sly, "update orders set status = 'paid' where id = 1").await;
    let renamed = write_qualified(&mut sly, "update orders set customer = 'bo'").await;
    let deleted = write_qualified(&mut sly, "delete from orders where id = 3").await;
    let printed = write_qualified(
        &mut sly,
        r#"select broadcast.emit('order', 'printed', '1', '{"printer": "k"}')"#,
    )
    .await;
    // A superuser with the same path, as a careless `set search_path` would give it.
    let mut victim = db.client().await;
    victim
        .batch_execute(&format!("set search_path = {schema}, pg_catalog, public"))
        .await
        .unwrap();
    let by_superuser = write_qualified(&mut victim, "insert into orders (id) values (4)").await;
    barrier(&admin, "order").await;

    let ran: Vec<(String, String)> = admin
        .query(&format!("select who, what from {schema}.ran"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(ran, [], "the kit called a look-alike");

    let frames = client.until("order", "barrier").await;
    let printed_frame = frames.iter().find(|f| f["event"] == "printed").cloned();
    let mut got: Vec<_> = frames[..frames.len() - 1].iter().map(brief).collect();
    got.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
    use common::s;
    assert_eq!(
        got,
        [
            s("created", "1", one),
            s("created", "2", two),
            s("created", "3", two),
            s("status_changed", "1", paid),
            s("updated", "1", paid),
            s("updated", "1", renamed),
            s("updated", "2", renamed),
            s("updated", "3", renamed),
            s("deleted", "3", deleted),
            s("printed", "1", printed),
            s("created", "4", by_superuser),
        ]
    );
    assert_eq!(
        printed_frame.unwrap()["payload"],
        json!({"entity_id": "1", "txid": printed, "op": "EMIT", "extra": {"printer": "k"}})
    );
    drop((sly, victim));
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

/// sql/README.md, *Payload*: an entity id that alone would make the payload
/// too big (over ~7000 bytes) is dropped, the signal says
/// `"entity_id_dropped": true` and is channel-wide: a client following
/// another entity of the channel gets it, and the write succeeds.
#[tokio::test]
async fn an_oversize_entity_id_arrives_as_a_channel_wide_signal_with_a_flag() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        "create table docs (n int primary key, ref text);
         select broadcast.enable('docs', 'doc', id_column => 'ref');",
    )
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["doc:a"]).await;
    write(&mut pg, "insert into docs values (1, 'b')").await;
    let long = 6000;
    write(
        &mut pg,
        &format!("insert into docs values (2, 'a' || repeat('x', {long}))"),
    )
    .await;
    let dropped = write(&mut pg, "insert into docs values (3, repeat('x', 8000))").await;
    let mine = write(&mut pg, "insert into docs values (4, 'a')").await;
    // The signal for 'b' and the 6,000-byte id (another entity) are not
    // this client's; the dropped one concerns every entity; then its own.
    let frames = client.take(2).await;
    assert_eq!(
        (
            &frames[0]["channel"],
            &frames[0]["event"],
            &frames[0]["payload"]
        ),
        (
            &json!("doc"),
            &json!("created"),
            &json!({"txid": dropped, "table": "docs", "op": "INSERT", "entity_id_dropped": true})
        )
    );
    assert_eq!(brief(&frames[1]), common::s("created", "a", mine));

    // An id below the limit is kept whole.
    let mut all = bridge.client().await;
    all.subscribe(&["doc"]).await;
    let again = write(
        &mut pg,
        &format!("update docs set n = 5 where ref = 'a' || repeat('x', {long})"),
    )
    .await;
    let frame = all.next().await;
    assert_eq!(
        brief(&frame),
        common::s("updated", &format!("a{}", "x".repeat(long)), again)
    );
}

/// README, *Bulk statements do not flood*, and sql/README.md's TRUNCATE
/// rule, as a client sees them: a statement yielding more than `max_rows`
/// distinct entity ids sends one channel-wide signal with `"rows"` (the
/// rows affected), any number of rows of fewer ids one signal per id, and a
/// TRUNCATE one channel-wide signal per route, under the DELETE event's name
/// unless TRUNCATE is mapped.
#[tokio::test]
async fn bulk_statements_and_truncate_reach_clients_as_channel_wide_signals() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        r#"create schema shop;
           create table shop.items (id int primary key, list_id int);
           select broadcast.enable('shop.items', 'list', id_column => 'list_id', max_rows => 2);
           select broadcast.enable('shop.items', 'list', name => 'wipe',
                                   events => '{"TRUNCATE": "wiped"}');"#,
    )
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["list"]).await;

    // Five rows of one id: one signal, for that id.
    let one_id = write(
        &mut pg,
        "insert into shop.items select g, 1 from generate_series(1, 5) g",
    )
    .await;
    // Two ids (the cap): one signal each.
    let two_ids = write(
        &mut pg,
        "insert into shop.items values (6, 2), (7, 3), (8, 3)",
    )
    .await;
    // Three ids in four rows: over the cap.
    let three_ids = write(
        &mut pg,
        "insert into shop.items values (9, 4), (10, 5), (11, 6), (12, 6)",
    )
    .await;
    let updated = write(&mut pg, "update shop.items set list_id = list_id + 10").await;
    let deleted = write(&mut pg, "delete from shop.items where id > 5").await;
    let truncated = write(&mut pg, "truncate shop.items").await;
    barrier(&pg, "list").await;

    let frames = client.until("list", "barrier").await;
    let payloads: Vec<_> = frames[..frames.len() - 1]
        .iter()
        .map(|f| {
            (
                f["event"].as_str().unwrap().to_owned(),
                f["payload"].clone(),
            )
        })
        .collect();
    let entity = |event: &str, id: &str, txid: i64, op: &str| {
        (
            event.to_owned(),
            json!({"entity_id": id, "txid": txid, "table": "items", "schema": "shop", "op": op}),
        )
    };
    let wide = |event: &str, txid: i64, op: &str, rows: Option<i64>| {
        let mut payload = json!({"txid": txid, "table": "items", "schema": "shop", "op": op});
        if let Some(rows) = rows {
            payload["rows"] = json!(rows);
        }
        (event.to_owned(), payload)
    };
    let mut by_statement = payloads.clone();
    // A statement's per-entity signals are a set: order them by id.
    by_statement.sort_by_key(|(_, p)| {
        (
            p["txid"].as_i64(),
            p["entity_id"].as_str().map(str::to_owned),
        )
    });
    assert_eq!(
        by_statement,
        [
            entity("created", "1", one_id, "INSERT"),
            entity("created", "2", two_ids, "INSERT"),
            entity("created", "3", two_ids, "INSERT"),
            wide("created", three_ids, "INSERT", Some(4)),
            // Twelve rows of six ids (11 to 16): over the cap.
            wide("updated", updated, "UPDATE", Some(12)),
            wide("deleted", deleted, "DELETE", Some(7)),
            wide("deleted", truncated, "TRUNCATE", None),
            wide("wiped", truncated, "TRUNCATE", None),
        ],
        "{payloads:#?}"
    );
}
