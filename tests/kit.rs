//! The SQL kit installed by a team's own migration tool: `pgbroadcast sql`
//! prints it as plain, idempotent SQL; `pgbroadcast migrate` adopts a kit
//! installed that way (at any version) and applies only what is missing;
//! `serve --no-migrate` refuses a kit of another version and runs as a role
//! with no DDL rights.

mod common;

use common::binary::{Exit, Launch};
use common::{TestDb, WsClient, brief, connect, write};
use futures_util::StreamExt;
use pgbroadcast::kit;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// `pgbroadcast <args>` against `db`, run to its exit.
async fn pgbroadcast(db: &TestDb, args: &[&str]) -> Exit {
    Launch::new(args)
        .database(&common::cluster().url(&db.name))
        .run()
        .await
}

/// What `pgbroadcast sql <args>` prints; it must succeed.
async fn printed_sql(args: &[&str]) -> String {
    let exit = Launch::new(&[&["sql"][..], args].concat())
        .env_remove("DATABASE_URL")
        .run()
        .await;
    assert!(exit.status.success(), "sql {args:?}: {}", exit.log);
    exit.stdout.join("\n")
}

/// `pgbroadcast migrate` on `db`; returns what it printed (it must succeed).
async fn migrate(db: &TestDb) -> Vec<String> {
    let exit = pgbroadcast(db, &["migrate"]).await;
    assert!(exit.status.success(), "migrate failed:\n{}", exit.log);
    exit.stdout
}

async fn kit_version(pg: &Client) -> i32 {
    pg.query_one("select broadcast.kit_version()", &[])
        .await
        .unwrap()
        .get(0)
}

/// refinery's history: (version, name, checksum), by version.
async fn history(pg: &Client) -> Vec<(i32, String, String)> {
    pg.query(
        "select version, name, checksum from broadcast.schema_history order by version",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// refinery's history as `pgbroadcast migrate` writes it for the whole kit.
fn whole_history() -> Vec<(i32, String, String)> {
    kit::STEPS
        .iter()
        .map(|s| (s.version as i32, s.name.clone(), s.checksum.to_string()))
        .collect()
}

/// A table with a route, enabled as a team enables one.
async fn enable_notes(pg: &Client) {
    pg.batch_execute(
        "create table notes (id int primary key, body text);
         select broadcast.enable('notes', 'note');",
    )
    .await
    .unwrap();
}

async fn routes(pg: &Client) -> String {
    pg.query_one(
        "select coalesce(json_agg(r)::text, '[]') from broadcast.routes r",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// A session LISTENing on the kit's channel, and the payloads it receives.
struct Signals {
    _session: Client,
    rx: mpsc::UnboundedReceiver<Value>,
}

async fn listen(db: &TestDb) -> Signals {
    let (session, mut connection) = db.config.connect(NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(serde_json::from_str(n.payload()).unwrap());
            }
        }
    });
    session.batch_execute("listen pgbroadcast").await.unwrap();
    Signals {
        _session: session,
        rx,
    }
}

/// A row written to `notes` is announced on the kit's channel.
async fn notes_still_signal(db: &TestDb, id: i32) {
    let mut signals = listen(db).await;
    let mut pg = db.client().await;
    let txid = write(
        &mut pg,
        &format!("insert into notes values ({id}, 'after the upgrade')"),
    )
    .await;
    let signal = tokio::time::timeout(common::PATIENCE, signals.rx.recv())
        .await
        .expect("no signal from the route enabled before the upgrade")
        .unwrap();
    assert_eq!(signal["channel"], "note", "{signal}");
    assert_eq!(
        brief(&signal),
        ("created".into(), Some(id.to_string()), txid),
        "{signal}"
    );
}

#[tokio::test]
async fn the_whole_kit_applied_twice_by_plain_sql_is_adopted_by_migrate() {
    let sql = printed_sql(&[]).await;
    assert!(sql.contains("Idempotent and transaction-safe"), "{sql}");
    assert!(
        sql.contains(&format!(
            "-- pgbroadcast SQL kit, version {0} (V{0}__kit_version.sql)",
            7
        )),
        "{sql}"
    );
    let db = common::fresh_db().await;
    let pg = db.client().await;
    // As a migration tool would: one file, then (a re-run) again.
    pg.batch_execute(&sql).await.unwrap();
    enable_notes(&pg).await;
    let before = routes(&pg).await;
    pg.batch_execute(&sql).await.unwrap();
    assert_eq!(kit_version(&pg).await, *kit::CURRENT as i32);

    let printed = migrate(&db).await;
    assert_eq!(printed, ["SQL kit already up to date"]);
    assert_eq!(history(&pg).await, whole_history());
    assert_eq!(kit_version(&pg).await, *kit::CURRENT as i32);
    assert_eq!(routes(&pg).await, before);
    notes_still_signal(&db, 1).await;
    // And again: nothing to do.
    assert_eq!(migrate(&db).await, ["SQL kit already up to date"]);
}

#[tokio::test]
async fn a_kit_vendored_up_to_v6_gets_only_v7_from_migrate() {
    let db = common::fresh_db().await;
    let pg = db.client().await;
    let sql = kit::steps(0, 6);
    pg.batch_execute(&sql).await.unwrap();
    pg.batch_execute(&sql).await.unwrap();
    assert_eq!(kit::installed(&pg).await.unwrap(), Some(6));
    enable_notes(&pg).await;
    let before = routes(&pg).await;

    let printed = migrate(&db).await;
    let later: Vec<String> = kit::STEPS
        .iter()
        .filter(|s| s.version > 6)
        .map(|s| format!("applied V{}__{}", s.version, s.name))
        .collect();
    assert_eq!(printed, later);
    assert_eq!(kit_version(&pg).await, *kit::CURRENT as i32);
    assert_eq!(history(&pg).await, whole_history());
    assert_eq!(routes(&pg).await, before);
    notes_still_signal(&db, 1).await;
}

/// Upgraded from kit version `k` (installed by vendored SQL) by `migrate`,
/// or by the output of `pgbroadcast sql --from k`.
async fn upgrade_from(k: u32, by_migrate: bool) {
    let how = if by_migrate { "migrate" } else { "sql --from" };
    let db = common::fresh_db().await;
    let pg = db.client().await;
    pg.batch_execute(&kit::steps(0, k)).await.unwrap();
    assert_eq!(
        kit::installed(&pg).await.unwrap(),
        Some(k),
        "recognised at version {k}"
    );
    enable_notes(&pg).await;
    let before = routes(&pg).await;

    if by_migrate {
        let printed = migrate(&db).await;
        let expected: Vec<String> = kit::STEPS
            .iter()
            .filter(|s| s.version > k)
            .map(|s| format!("applied V{}__{}", s.version, s.name))
            .collect();
        assert_eq!(printed, expected, "{how} from {k}");
    } else {
        let upgrade = printed_sql(&["--from", &k.to_string()]).await;
        assert!(
            !upgrade.contains(&format!("(V{k}__")),
            "{how} {k} holds step {k}"
        );
        pg.batch_execute(&upgrade).await.unwrap();
        pg.batch_execute(&upgrade).await.unwrap();
    }
    assert_eq!(
        kit_version(&pg).await,
        *kit::CURRENT as i32,
        "{how} from {k}"
    );
    assert_eq!(routes(&pg).await, before, "{how} from {k}");
    notes_still_signal(&db, k as i32).await;
    if !by_migrate {
        // migrate afterwards adopts it: nothing left to apply.
        assert_eq!(migrate(&db).await, ["SQL kit already up to date"]);
        assert_eq!(history(&pg).await, whole_history());
    }
}

#[tokio::test]
async fn every_earlier_version_is_upgraded_by_migrate() {
    for k in 1..*kit::CURRENT {
        upgrade_from(k, true).await;
    }
}

#[tokio::test]
async fn every_earlier_version_is_upgraded_by_the_printed_sql() {
    for k in 1..*kit::CURRENT {
        upgrade_from(k, false).await;
    }
}

/// A database `pgbroadcast migrate` installed before the kit's files were
/// made idempotent: refinery recorded the checksums of their earlier text.
#[tokio::test]
async fn a_kit_migrated_by_an_earlier_release_is_upgraded() {
    const EARLIER: [(i32, &str, u64); 6] = [
        (1, "broadcast", 4_436_197_479_964_796_014),
        (2, "authorize", 3_915_269_201_999_176_389),
        (3, "transport", 17_631_062_440_757_924_654),
        (4, "single_row", 6_723_492_034_393_377_787),
        (5, "wal_senders", 785_286_025_834_451_324),
        (6, "cheaper_signal", 17_449_588_570_292_535_213),
    ];
    let db = common::fresh_db().await;
    let pg = db.client().await;
    pg.batch_execute(&kit::steps(0, 6)).await.unwrap();
    pg.batch_execute(
        "create table broadcast.schema_history (version int4 primary key,
             name varchar(255), applied_on varchar(255), checksum varchar(255))",
    )
    .await
    .unwrap();
    for (version, name, checksum) in EARLIER {
        pg.execute(
            "insert into broadcast.schema_history values ($1, $2, '2026-01-01T00:00:00Z', $3)",
            &[&version, &name, &checksum.to_string()],
        )
        .await
        .unwrap();
    }
    assert_eq!(migrate(&db).await, ["applied V7__kit_version"]);
    assert_eq!(history(&pg).await, whole_history());
}

#[tokio::test]
async fn migrate_refuses_a_kit_newer_than_its_own() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let newer = *kit::CURRENT + 1;
    pg.batch_execute(&format!(
        "create or replace function broadcast.kit_version() returns integer \
         language sql immutable as $$ select {newer} $$"
    ))
    .await
    .unwrap();
    for args in [&["migrate"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let exit = pgbroadcast(&db, args).await;
        assert!(!exit.status.success(), "{args:?}");
        assert!(
            exit.log.contains(&format!(
                "version {newer}, newer than this pgbroadcast's kit version {}",
                *kit::CURRENT
            )),
            "{args:?}: {}",
            exit.log
        );
    }
}

#[tokio::test]
async fn serve_without_migrating_refuses_an_older_kit_and_says_what_to_run() {
    let db = common::fresh_db().await;
    let pg = db.client().await;
    pg.batch_execute(&kit::steps(0, 5)).await.unwrap();
    for command in ["serve", "demo"] {
        let exit = pgbroadcast(&db, &[command, "--no-migrate", "--listen", "127.0.0.1:0"]).await;
        assert!(!exit.status.success(), "{command}: {}", exit.log);
        for needle in [
            "version 5".to_owned(),
            format!("kit version {}", *kit::CURRENT),
            "`pgbroadcast migrate`".to_owned(),
            "`pgbroadcast sql --from 5`".to_owned(),
        ] {
            assert!(
                exit.log.contains(&needle),
                "{command}: {needle}: {}",
                exit.log
            );
        }
    }
    // Nothing was changed.
    assert_eq!(kit::installed(&pg).await.unwrap(), Some(5));

    // Without any kit: the same advice.
    let empty = common::fresh_db().await;
    let exit = pgbroadcast(
        &empty,
        &["serve", "--no-migrate", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert!(!exit.status.success());
    assert!(exit.log.contains("not installed"), "{}", exit.log);
    assert!(exit.log.contains("`pgbroadcast migrate`"), "{}", exit.log);
}

/// The grants sql/README.md lists for `serve --no-migrate`, and nothing more:
/// PUBLIC's defaults (CONNECT on the database, the kit's own grants to
/// PUBLIC) are revoked first so the role has only these.
#[tokio::test]
async fn serve_without_migrating_runs_as_a_role_with_no_ddl_rights() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    enable_notes(&admin).await;
    let role = format!("app_{}", db.name);
    admin
        .batch_execute(&format!(
            "revoke all on database {db} from public;
             revoke usage on schema broadcast from public;
             revoke execute on function broadcast.kit_version() from public;
             create role {role} login password 'app';
             grant connect on database {db} to {role};
             grant usage on schema broadcast to {role};
             grant execute on function broadcast.kit_version() to {role};",
            db = db.name
        ))
        .await
        .unwrap();
    let mut config = db.config.clone();
    config.user(&role).password("app");
    let app = connect(&config).await;
    for ddl in [
        "create table public.t (id int)",
        "create table broadcast.t (id int)",
        "create schema s",
        "create or replace function broadcast.kit_version() returns integer language sql as $$ select 1 $$",
    ] {
        let err = app.batch_execute(ddl).await.unwrap_err();
        let message = err.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("permission denied") || m.contains("must be owner")),
            "{ddl}: {message:?}"
        );
    }
    drop(app);

    let port = db.config.get_ports()[0];
    let url = format!("postgres://{role}:app@127.0.0.1:{port}/{}", db.name);
    let served = Launch::new(&["serve", "--no-migrate", "--listen", "127.0.0.1:0"])
        .database(&url)
        .serve()
        .await;
    let mut client = WsClient::connect(&served.ws_url()).await;
    client.subscribe(&["note"]).await;
    let mut pg = db.client().await;
    let txid = write(&mut pg, "insert into notes values (1, 'hi')").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("1".into()), txid)
    );
    served.kill().await;
    // `migrate` as that role fails: it may not change the schema.
    let exit = Launch::new(&["migrate"]).database(&url).run().await;
    assert!(!exit.status.success(), "{}", exit.log);
}

#[tokio::test]
async fn sql_from_a_version_this_binary_does_not_have_is_an_error() {
    let exit = Launch::new(&["sql", "--from", "99"])
        .env_remove("DATABASE_URL")
        .run()
        .await;
    assert!(!exit.status.success());
    assert!(exit.stdout.is_empty(), "{:?}", exit.stdout);
    assert!(
        exit.log.contains(&format!(
            "--from 99: this pgbroadcast's SQL kit goes up to version {}",
            *kit::CURRENT
        )),
        "{}",
        exit.log
    );
}

// ---------------------------------------------------------------------------
// Upgrades keep every kind of route, and the grants, exactly as they were.
// ---------------------------------------------------------------------------

/// Every kind of route the kit has had since version 1 (`broadcast.enable`
/// has not changed its options since V1): a default route; a child table
/// routed to its parent's channel with the parent's id; `when_changed` with
/// its own event; custom event names per operation (TRUNCATE mapped too); a
/// bulk cap; and odd identifiers (a quoted mixed-case table name with a
/// space, mixed-case columns, in a schema other than public).
const EVERY_KIND_OF_ROUTE: &str = r#"
create table orders (id int primary key, customer text, status text not null default 'new');
create table order_items (id int primary key, order_id int not null, sku text not null);
create table tickets (id int primary key, note text);
create table readings (id int primary key, value int);
create schema ops;
create table ops."Shift Log" ("Id" int primary key, "Note" text, "Seen" boolean default false);

select broadcast.enable('orders', 'order');
select broadcast.enable('order_items', 'order',
       id_column => 'order_id',
       events    => '{"INSERT": "item_added", "DELETE": "item_removed"}');
select broadcast.enable('orders', 'order', name => 'order_status',
       events => '{"UPDATE": "status_changed"}', when_changed => '{status}');
select broadcast.enable('tickets', 'support/tickets', name => 'tickets',
       events => '{"insert": "opened", "Update": "edited", "DELETE": "closed", "truncate": "wiped"}');
select broadcast.enable('readings', 'sensor.readings', max_rows => 2);
select broadcast.enable('ops."Shift Log"', 'ops/shift-log');
select broadcast.enable('ops."Shift Log"', 'ops/shift-log', name => 'shift-log.note',
       events => '{"UPDATE": "note_edited"}', when_changed => '{Note}', max_rows => 1);
"#;

/// The scripted writes, one transaction each. They leave every table empty,
/// as they found it, so the same script runs again after the upgrade.
const SCRIPTED_WRITES: &[&str] = &[
    "insert into orders values (1, 'ann', 'new'), (2, 'bob', 'new')",
    "update orders set status = 'paid' where id = 1",
    "update orders set customer = 'bo' where id = 2",
    "update orders set status = status",
    "update orders set id = 3 where id = 2",
    "insert into order_items values (10, 1, 'tea'), (11, 1, 'cake'), (12, 3, 'jam')",
    "update order_items set sku = 'TEA' where id = 10",
    "delete from order_items where order_id = 1",
    "delete from orders where id = 1",
    "truncate order_items",
    "truncate orders",
    "insert into tickets values (1, 'printer on fire')",
    "update tickets set note = 'printer out' where id = 1",
    "update tickets set note = note where id = 99",
    "delete from tickets where id = 1",
    "insert into tickets values (2, 'again')",
    "truncate tickets",
    "insert into readings values (1, 10)",
    "insert into readings values (2, 20), (3, 30)",
    "insert into readings select g, g from generate_series(4, 8) g",
    "update readings set value = value + 1 where id in (1, 2)",
    "update readings set value = value + 1",
    "delete from readings where id = 8",
    "delete from readings",
    r#"insert into ops."Shift Log" ("Id", "Note") values (1, 'a'), (2, 'b')"#,
    r#"update ops."Shift Log" set "Note" = 'c' where "Id" = 1"#,
    r#"update ops."Shift Log" set "Seen" = true"#,
    r#"update ops."Shift Log" set "Note" = "Note" || '!'"#,
    r#"update ops."Shift Log" set "Id" = "Id" + 10 where "Id" = 2"#,
    r#"delete from ops."Shift Log" where "Id" = 1"#,
    r#"truncate ops."Shift Log""#,
];

/// The grants made before the upgrade (kit version 2 on).
const GRANTS: &str = r#"
select broadcast.grant('role', 'kitchen', 'order');
select broadcast.grant('sub', '*', 'user:{sub}');
select broadcast.grant('tenant', 'acme', 'ops/shift-log:*');
select broadcast.grant('team', 'a', 'order:42');
select broadcast.grant('roles', 'admin', '*');
select broadcast.grant('role', 'support', 'support/tickets');
select broadcast.revoke('role', 'support', 'support/tickets');
"#;

/// (claims, channel, entity_id) asked of `broadcast.authorize`.
fn authorize_questions() -> Vec<(Option<Value>, &'static str, Option<&'static str>)> {
    use serde_json::json;
    vec![
        (Some(json!({"role": "kitchen"})), "order", None),
        (Some(json!({"role": "kitchen"})), "order", Some("1")),
        (Some(json!({"role": "kitchen"})), "sensor.readings", None),
        (Some(json!({"sub": "u1"})), "user", Some("u1")),
        (Some(json!({"sub": "u1"})), "user", Some("u2")),
        (Some(json!({"sub": "u1"})), "user", None),
        (Some(json!({"tenant": "acme"})), "ops/shift-log", None),
        (Some(json!({"tenant": "acme"})), "ops/shift-log", Some("7")),
        (Some(json!({"tenant": "other"})), "ops/shift-log", Some("7")),
        (Some(json!({"team": "a"})), "order", Some("42")),
        (Some(json!({"team": "a"})), "order", Some("43")),
        (Some(json!({"team": "a"})), "order", None),
        (
            Some(json!({"roles": ["staff", "admin"]})),
            "anything",
            Some("x"),
        ),
        (Some(json!({"roles": "admin"})), "anything", None),
        (Some(json!({"role": "support"})), "support/tickets", None),
        (Some(json!({})), "order", None),
        (Some(json!(["role", "kitchen"])), "order", None),
        (None, "order", None),
        (Some(json!({"role": "kitchen"})), "bad:channel", None),
    ]
}

/// Each question with its answer, e.g. `{"team":"a"} order:42 -> Some(true)`.
async fn authorize_answers(pg: &Client) -> Vec<String> {
    let mut answers = Vec::new();
    for (claims, channel, entity) in authorize_questions() {
        let row = pg
            .query_one(
                "select broadcast.authorize($1, $2, $3)",
                &[&claims, &channel, &entity],
            )
            .await
            .unwrap();
        let answer: Option<bool> = row.get(0);
        let claims = claims.map_or("NULL".into(), |c| c.to_string());
        answers.push(format!("{claims} {channel}:{entity:?} -> {answer:?}"));
    }
    answers
}

/// `select * from broadcast.routes order by 1,2` (operation breaking ties),
/// one text row per route and operation.
async fn routes_table(pg: &Client) -> Vec<String> {
    pg.query(
        "select r::text from (select * from broadcast.routes order by 1, 2, 4) r",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn grants_table(pg: &Client) -> Vec<String> {
    pg.query(
        "select format('%s=%s -> %s', claim, value, pattern) from broadcast.grants order by 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A session LISTENing on the kit's channel, and the payloads it receives
/// as sent (key order included).
struct RawSignals {
    _session: Client,
    rx: mpsc::UnboundedReceiver<String>,
}

async fn listen_raw(db: &TestDb) -> RawSignals {
    let (session, mut connection) = db.config.connect(NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    session.batch_execute("listen pgbroadcast").await.unwrap();
    RawSignals {
        _session: session,
        rx,
    }
}

/// Runs [`SCRIPTED_WRITES`] and returns, per write, the payloads it sent
/// as text (sorted: a statement's signals are a set), with the write's
/// txid checked and replaced by `"w<index>"`.
async fn payloads_of_the_script(db: &TestDb) -> Vec<Vec<String>> {
    let mut signals = listen_raw(db).await;
    let mut pg = db.client().await;
    let mut txids = Vec::new();
    for sql in SCRIPTED_WRITES {
        txids.push(write(&mut pg, sql).await);
    }
    let end = write(&mut pg, "select broadcast.emit('script', 'end', null)").await;
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); SCRIPTED_WRITES.len()];
    loop {
        let raw = tokio::time::timeout(common::PATIENCE, signals.rx.recv())
            .await
            .expect("the script's end signal did not arrive")
            .unwrap();
        let signal: Value = serde_json::from_str(&raw).unwrap();
        let txid = signal["payload"]["txid"].as_i64().expect("a txid");
        if txid == end {
            assert_eq!(signal["event"], "end", "{raw}");
            break;
        }
        let index = txids
            .iter()
            .position(|t| *t == txid)
            .unwrap_or_else(|| panic!("a signal from no scripted write: {raw}"));
        let txid_field = format!("\"txid\":{txid}");
        assert_eq!(raw.matches(&txid_field).count(), 1, "{raw}");
        sent[index].push(raw.replace(&txid_field, &format!("\"txid\":\"w{index}\"")));
    }
    for payloads in &mut sent {
        payloads.sort();
    }
    sent
}

/// What a database shows of its routes and grants, and what its routes send.
#[derive(Debug, PartialEq)]
struct Behaviour {
    routes: Vec<String>,
    grants: Vec<String>,
    answers: Vec<String>,
    payloads: Vec<Vec<String>>,
}

async fn behaviour(db: &TestDb, k: u32) -> Behaviour {
    let pg = db.client().await;
    let (grants, answers) = if k >= 2 {
        (grants_table(&pg).await, authorize_answers(&pg).await)
    } else {
        (Vec::new(), Vec::new())
    };
    Behaviour {
        routes: routes_table(&pg).await,
        grants,
        answers,
        payloads: payloads_of_the_script(db).await,
    }
}

/// Kit version `k` with every kind of route (and grants, from 2), upgraded
/// by `migrate` or by the printed `sql --from k`: the routes, the grants'
/// answers and every payload (txid aside) are what they were.
async fn upgrade_keeps_behaviour(k: u32, by_migrate: bool) {
    let how = if by_migrate { "migrate" } else { "sql --from" };
    let db = common::fresh_db().await;
    let pg = db.client().await;
    pg.batch_execute(&kit::steps(0, k)).await.unwrap();
    assert_eq!(kit::installed(&pg).await.unwrap(), Some(k));
    pg.batch_execute(EVERY_KIND_OF_ROUTE)
        .await
        .unwrap_or_else(|e| panic!("routes on kit {k}: {e:?}"));
    if k >= 2 {
        pg.batch_execute(GRANTS)
            .await
            .unwrap_or_else(|e| panic!("grants on kit {k}: {e:?}"));
    }
    let before = behaviour(&db, k).await;
    // The script exercised every route: each table signalled something.
    let all = before.payloads.concat().join("\n");
    for needle in [
        r#""event":"status_changed""#,
        r#""event":"item_removed""#,
        r#""event":"wiped""#,
        r#""rows":7"#,
        r#""table":"Shift Log","schema":"ops""#,
        r#""event":"note_edited""#,
    ] {
        assert!(all.contains(needle), "kit {k}: no {needle} in\n{all}");
    }
    assert_eq!(before.routes.len(), 21, "kit {k}: {:#?}", before.routes);
    if k >= 2 {
        let all = before.answers.join("\n");
        assert!(
            all.contains("Some(true)") && all.contains("Some(false)"),
            "{all}"
        );
    }

    if by_migrate {
        let printed = migrate(&db).await;
        assert_eq!(
            printed.len(),
            (*kit::CURRENT - k) as usize,
            "{how} from {k}: {printed:?}"
        );
    } else {
        let upgrade = printed_sql(&["--from", &k.to_string()]).await;
        pg.batch_execute(&upgrade).await.unwrap();
    }
    assert_eq!(
        kit_version(&pg).await,
        *kit::CURRENT as i32,
        "{how} from {k}"
    );

    let after = behaviour(&db, k).await;
    assert_eq!(
        after.routes, before.routes,
        "{how} from {k}: broadcast.routes"
    );
    assert_eq!(
        after.grants, before.grants,
        "{how} from {k}: broadcast.grants"
    );
    assert_eq!(
        after.answers, before.answers,
        "{how} from {k}: broadcast.authorize"
    );
    for (i, (a, b)) in after.payloads.iter().zip(&before.payloads).enumerate() {
        assert_eq!(
            a, b,
            "{how} from {k}: write {i} ({}) sends other payloads",
            SCRIPTED_WRITES[i]
        );
    }
}

#[tokio::test]
async fn every_earlier_version_keeps_every_kind_of_route_through_migrate() {
    for k in 1..*kit::CURRENT {
        upgrade_keeps_behaviour(k, true).await;
    }
}

#[tokio::test]
async fn every_earlier_version_keeps_every_kind_of_route_through_the_printed_sql() {
    for k in 1..*kit::CURRENT {
        upgrade_keeps_behaviour(k, false).await;
    }
}

// ---------------------------------------------------------------------------
// Recipe: the kit vendored into dbmate (sql/README.md, "Recipes"), run by
// the real tool from npm.
// ---------------------------------------------------------------------------

/// The dbmate release the recipe is tested with.
const DBMATE_VERSION: &str = "2.36.0";

/// dbmate installed from npm into `dir`, or why it could not be.
async fn install_dbmate(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let npm = tokio::process::Command::new("npm")
        .arg("--version")
        .output()
        .await;
    if !npm.is_ok_and(|o| o.status.success()) {
        return Err("npm is not installed".into());
    }
    std::fs::write(dir.join("package.json"), r#"{"private": true}"#).unwrap();
    let install = tokio::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            &format!("dbmate@{DBMATE_VERSION}"),
        ])
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(std::time::Duration::from_secs(180), install).await {
        Err(_) => return Err("npm install dbmate took over 180 s".into()),
        Ok(Err(e)) => return Err(format!("npm install dbmate: {e}")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(format!(
            "npm install dbmate@{DBMATE_VERSION} failed (registry unreachable?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dbmate = dir.join("node_modules/.bin/dbmate");
    let version = tokio::process::Command::new(&dbmate)
        .arg("--version")
        .output()
        .await
        .map_err(|e| format!("{}: {e}", dbmate.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    if !version.contains(DBMATE_VERSION) {
        return Err(format!("dbmate has no usable binary here: {version:?}"));
    }
    Ok(dbmate)
}

#[tokio::test]
async fn the_dbmate_recipe_installs_the_kit_for_serve_without_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let dbmate = match install_dbmate(dir.path()).await {
        Ok(dbmate) => dbmate,
        Err(why) => {
            println!("skipped: the dbmate recipe is not exercised: {why}");
            return;
        }
    };
    let migrations = dir.path().join("db/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    // As sql/README.md, "Recipes", has it.
    let kit_sql = printed_sql(&[]).await;
    std::fs::write(
        migrations.join("20260101000000_pgbroadcast_kit_v7.sql"),
        format!("-- migrate:up\n{kit_sql}\n\n-- migrate:down\n"),
    )
    .unwrap();
    std::fs::write(
        migrations.join("20260101000100_orders_broadcast.sql"),
        "-- migrate:up\n\
         create table orders (id bigint primary key, status text not null default 'new');\n\
         select broadcast.enable('orders', 'order');\n\
         \n\
         -- migrate:down\n\
         drop table orders;\n",
    )
    .unwrap();

    let db = common::fresh_db().await;
    let url = format!("{}?sslmode=disable", common::cluster().url(&db.name));
    let dbmate_up = || {
        tokio::process::Command::new(&dbmate)
            .args(["--url", &url, "--no-dump-schema", "up"])
            .current_dir(dir.path())
            .output()
    };
    let up = dbmate_up().await.unwrap();
    let log = output_log(&up);
    assert!(up.status.success(), "dbmate up:\n{log}");
    assert!(
        log.contains("Applied: 20260101000000_pgbroadcast_kit_v7.sql")
            && log.contains("Applied: 20260101000100_orders_broadcast.sql"),
        "{log}"
    );
    let pg = db.client().await;
    assert_eq!(kit_version(&pg).await, *kit::CURRENT as i32);
    let applied: Vec<String> = pg
        .query("select version from schema_migrations order by 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(applied, ["20260101000000", "20260101000100"]);
    // Up to date: dbmate has nothing more to do.
    let again = dbmate_up().await.unwrap();
    assert!(again.status.success());

    orders_signal_without_migrating_and_migrate_applies_nothing(&db).await;
}

// ---------------------------------------------------------------------------
// Recipes: the kit vendored into node-pg-migrate and Alembic (sql/README.md,
// "Recipes"), run by the real tools from npm and PyPI.
// ---------------------------------------------------------------------------

/// The node-pg-migrate release (and its peer `pg`) the recipe is tested with.
const NODE_PG_MIGRATE_VERSION: &str = "9.0.0";
const NODE_PG_VERSION: &str = "8.23.1";
/// The Alembic release (and its driver) the recipe is tested with.
const ALEMBIC_VERSION: &str = "1.20.1";
const PSYCOPG_VERSION: &str = "3.3.9";

/// A tool's combined output.
fn output_log(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `program args` in `dir`, up to 180 s: an installer; Err says why it failed.
async fn install_with(dir: &std::path::Path, program: &str, args: &[&str]) -> Result<(), String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(180), run).await {
        Err(_) => Err(format!("{program} {args:?} took over 180 s")),
        Ok(Err(e)) => Err(format!("{program} is not usable: {e}")),
        Ok(Ok(out)) if !out.status.success() => {
            let log = output_log(&out);
            // Only an unreachable registry is a reason to skip: a pin the
            // registry does not have, or a broken install, is a failure.
            assert!(
                UNREACHABLE.iter().any(|sign| log.contains(sign)),
                "{program} {args:?} failed with the registry reachable:\n{log}"
            );
            Err(format!(
                "{program} {args:?}: registry unreachable: {}",
                log.trim()
            ))
        }
        Ok(Ok(_)) => Ok(()),
    }
}

/// What npm and pip print when they cannot reach their registry.
const UNREACHABLE: &[&str] = &[
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "NewConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
];

/// node-pg-migrate and pg installed from npm into `dir`, or why they could not be.
async fn install_node_pg_migrate(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    std::fs::write(dir.join("package.json"), r#"{"private": true}"#).unwrap();
    install_with(
        dir,
        "npm",
        &[
            "install",
            "--no-audit",
            "--no-fund",
            &format!("node-pg-migrate@{NODE_PG_MIGRATE_VERSION}"),
            &format!("pg@{NODE_PG_VERSION}"),
        ],
    )
    .await?;
    Ok(dir.join("node_modules/.bin/node-pg-migrate"))
}

/// Serves `db` with `--no-migrate`: a WebSocket client subscribed to `order`
/// gets the signal of an insert into `orders`; then `pgbroadcast migrate`
/// adopts the kit the tool installed and applies nothing.
async fn orders_signal_without_migrating_and_migrate_applies_nothing(db: &TestDb) {
    let pg = db.client().await;
    assert_eq!(kit_version(&pg).await, *kit::CURRENT as i32);
    let served = Launch::new(&["serve", "--no-migrate", "--listen", "127.0.0.1:0"])
        .database(&common::cluster().url(&db.name))
        .serve()
        .await;
    let mut client = WsClient::connect(&served.ws_url()).await;
    client.subscribe(&["order"]).await;
    let mut writer = db.client().await;
    let txid = write(&mut writer, "insert into orders values (42)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("42".into()), txid)
    );
    served.kill().await;

    let printed = migrate(db).await;
    assert_eq!(printed, ["SQL kit already up to date"]);
    assert_eq!(history(&pg).await, whole_history());
    assert_eq!(kit_version(&pg).await, *kit::CURRENT as i32);
}

#[tokio::test]
async fn the_node_pg_migrate_recipe_installs_the_kit_for_serve_without_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let tool = match install_node_pg_migrate(dir.path()).await {
        Ok(tool) => tool,
        Err(why) => {
            println!("skipped: the node-pg-migrate recipe is not exercised: {why}");
            return;
        }
    };
    let migrations = dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    // As sql/README.md, "Recipes", has it.
    let kit_sql = printed_sql(&[]).await;
    std::fs::write(
        migrations.join("1767225600000_pgbroadcast-kit-v7.sql"),
        format!("-- Up Migration\n{kit_sql}\n\n-- Down Migration\n"),
    )
    .unwrap();
    std::fs::write(
        migrations.join("1767225600100_orders-broadcast.sql"),
        "-- Up Migration\n\
         create table orders (id bigint primary key, status text not null default 'new');\n\
         select broadcast.enable('orders', 'order');\n\
         \n\
         -- Down Migration\n\
         drop table orders;\n",
    )
    .unwrap();

    let db = common::fresh_db().await;
    let url = common::cluster().url(&db.name);
    let up = || {
        tokio::process::Command::new(&tool)
            .arg("up")
            .env("DATABASE_URL", &url)
            .current_dir(dir.path())
            .output()
    };
    let first = up().await.unwrap();
    let log = output_log(&first);
    assert!(first.status.success(), "node-pg-migrate up:\n{log}");
    assert!(
        log.contains("MIGRATION 1767225600000_pgbroadcast-kit-v7 (UP)")
            && log.contains("MIGRATION 1767225600100_orders-broadcast (UP)"),
        "{log}"
    );
    let pg = db.client().await;
    let applied: Vec<String> = pg
        .query("select name from pgmigrations order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        applied,
        [
            "1767225600000_pgbroadcast-kit-v7",
            "1767225600100_orders-broadcast"
        ]
    );
    // Up to date: node-pg-migrate has nothing more to do.
    let again = up().await.unwrap();
    let log = output_log(&again);
    assert!(again.status.success(), "{log}");
    assert!(log.contains("No migrations to run!"), "{log}");

    orders_signal_without_migrating_and_migrate_applies_nothing(&db).await;
}

/// Alembic and psycopg installed from PyPI into `dir` (for PYTHONPATH), or why
/// they could not be.
async fn install_alembic(dir: &std::path::Path) -> Result<(), String> {
    install_with(
        dir,
        "python3",
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            &dir.to_string_lossy(),
            &format!("alembic=={ALEMBIC_VERSION}"),
            &format!("psycopg[binary]=={PSYCOPG_VERSION}"),
        ],
    )
    .await
}

/// The kit's revision, as sql/README.md, "Recipes", has it: the vendored
/// file's text run on the raw driver cursor.
const ALEMBIC_KIT_REVISION: &str = r#""""pgbroadcast SQL kit, version 7."""
from pathlib import Path

from alembic import op

revision = "0001_pgbroadcast_kit_v7"
down_revision = None
branch_labels = None
depends_on = None

KIT_SQL = (Path(__file__).parent / "pgbroadcast_kit_v7.sql").read_text()


def upgrade():
    op.get_bind().connection.driver_connection.cursor().execute(KIT_SQL)


def downgrade():
    pass
"#;

const ALEMBIC_ORDERS_REVISION: &str = r#""""orders, broadcast on channel order."""
from alembic import op

revision = "0002_orders_broadcast"
down_revision = "0001_pgbroadcast_kit_v7"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("create table orders (id bigint primary key, status text not null default 'new')")
    op.execute("select broadcast.enable('orders', 'order')")


def downgrade():
    op.execute("drop table orders")
"#;

#[tokio::test]
async fn the_alembic_recipe_installs_the_kit_for_serve_without_migrating() {
    let site = tempfile::tempdir().unwrap();
    if let Err(why) = install_alembic(site.path()).await {
        println!("skipped: the Alembic recipe is not exercised: {why}");
        return;
    }
    let project = tempfile::tempdir().unwrap();
    let alembic = |args: &[&str]| {
        tokio::process::Command::new("python3")
            .args([&["-m", "alembic"][..], args].concat())
            .env("PYTHONPATH", site.path())
            .current_dir(project.path())
            .output()
    };
    let init = alembic(&["init", "migrations"]).await.unwrap();
    assert!(
        init.status.success(),
        "alembic init:\n{}",
        output_log(&init)
    );
    let db = common::fresh_db().await;
    let url = common::cluster()
        .url(&db.name)
        .replacen("postgres://", "postgresql+psycopg://", 1);
    let ini = project.path().join("alembic.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("sqlalchemy.url"))
        .expect("alembic.ini has sqlalchemy.url");
    std::fs::write(
        &ini,
        text.replacen(line, &format!("sqlalchemy.url = {url}"), 1),
    )
    .unwrap();
    let versions = project.path().join("migrations/versions");
    std::fs::write(
        versions.join("pgbroadcast_kit_v7.sql"),
        printed_sql(&[]).await,
    )
    .unwrap();
    std::fs::write(
        versions.join("0001_pgbroadcast_kit_v7.py"),
        ALEMBIC_KIT_REVISION,
    )
    .unwrap();
    std::fs::write(
        versions.join("0002_orders_broadcast.py"),
        ALEMBIC_ORDERS_REVISION,
    )
    .unwrap();

    let up = alembic(&["upgrade", "head"]).await.unwrap();
    let log = output_log(&up);
    assert!(up.status.success(), "alembic upgrade head:\n{log}");
    assert!(
        log.contains("-> 0001_pgbroadcast_kit_v7")
            && log.contains("0001_pgbroadcast_kit_v7 -> 0002_orders_broadcast"),
        "{log}"
    );
    let pg = db.client().await;
    let head: String = pg
        .query_one("select version_num from alembic_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(head, "0002_orders_broadcast");
    // Up to date: Alembic has nothing more to do.
    let again = alembic(&["upgrade", "head"]).await.unwrap();
    let log = output_log(&again);
    assert!(again.status.success(), "{log}");
    assert!(!log.contains("Running upgrade"), "{log}");

    orders_signal_without_migrating_and_migrate_applies_nothing(&db).await;
}

// ---------------------------------------------------------------------------
// `serve --no-migrate` with JWT authorization, as a role holding only the
// grants sql/README.md lists for it.
// ---------------------------------------------------------------------------

const KIT_JWT_SECRET: &str = "kit-test-secret-for-hs256-only-in-tests";

fn kit_token(role: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "u1", "role": role, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(KIT_JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Connects to `url` and authenticates with `token`.
async fn kit_authenticated(url: &str, token: &str) -> WsClient {
    let mut client = WsClient::connect(url).await;
    assert_eq!(client.welcome["auth"], "required", "{}", client.welcome);
    client.send(serde_json::json!({ "auth": token })).await;
    let answer = client.next().await;
    assert_eq!(answer["type"], "authenticated", "{answer}");
    client
}

#[tokio::test]
async fn serve_without_migrating_authorizes_as_a_role_with_only_the_listed_grants() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    enable_notes(&admin).await;
    admin
        .batch_execute(
            "create table secrets (id int primary key);
             select broadcast.enable('secrets', 'secret');
             select broadcast.grant('role', 'kitchen', 'note');",
        )
        .await
        .unwrap();
    let role = format!("app_{}", db.name);
    admin
        .batch_execute(&format!(
            "revoke all on database {db} from public;
             revoke usage on schema broadcast from public;
             revoke execute on function broadcast.kit_version() from public;
             revoke execute on function broadcast.authorize(jsonb, text, text) from public;
             revoke execute on function broadcast._claim_has(jsonb, text, text) from public;
             revoke select on broadcast.grants from public;
             create role {role} login password 'app';
             grant connect on database {db} to {role};
             grant usage on schema broadcast to {role};
             grant execute on function broadcast.kit_version() to {role};
             grant execute on function broadcast.authorize(jsonb, text, text) to {role};
             grant execute on function broadcast._claim_has(jsonb, text, text) to {role};
             grant select on broadcast.grants to {role};",
            db = db.name
        ))
        .await
        .unwrap();
    // What the role needs reaches it only through its own grants, not PUBLIC's.
    let leftovers: Vec<String> = admin
        .query(
            "select format('%s %s', p.oid::regprocedure, a.privilege_type)
               from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              where p.pronamespace = 'broadcast'::regnamespace and a.grantee = 0
             union all
             select format('%s %s', c.oid::regclass, a.privilege_type)
               from pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
              where c.relnamespace = 'broadcast'::regnamespace and a.grantee = 0
                and c.relname = 'grants'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for needed in ["kit_version", "authorize", "_claim_has", "broadcast.grants"] {
        assert!(
            !leftovers.iter().any(|l| l.contains(needed)),
            "PUBLIC still holds {needed}: {leftovers:?}"
        );
    }

    let port = db.config.get_ports()[0];
    let url = format!("postgres://{role}:app@127.0.0.1:{port}/{}", db.name);
    let served = Launch::new(&[
        "serve",
        "--no-migrate",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        KIT_JWT_SECRET,
    ])
    .database(&url)
    .serve()
    .await;

    // Granted: `note` for role kitchen; `secret` is nobody's.
    let mut kitchen = kit_authenticated(&served.ws_url(), &kit_token("kitchen")).await;
    kitchen
        .send(serde_json::json!({"subscribe": ["note", "secret"]}))
        .await;
    let denied = kitchen.next().await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert_eq!(denied["topics"], serde_json::json!(["secret"]), "{denied}");
    assert_eq!(
        kitchen.next().await,
        serde_json::json!({"type": "subscribed", "channels": ["note"]})
    );
    // Another role has no grant for `note`.
    let mut guest = kit_authenticated(&served.ws_url(), &kit_token("guest")).await;
    guest.send(serde_json::json!({"subscribe": ["note"]})).await;
    let denied = guest.next().await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert_eq!(denied["topics"], serde_json::json!(["note"]), "{denied}");

    let mut pg = db.client().await;
    write(&mut pg, "insert into secrets values (1)").await;
    let txid = write(&mut pg, "insert into notes values (1, 'hi')").await;
    let signal = kitchen.next().await;
    assert_eq!(signal["channel"], "note", "{signal}");
    assert_eq!(brief(&signal), ("created".into(), Some("1".into()), txid));
    served.kill().await;
}

/// A team's own refinery (the crate `pgbroadcast migrate` uses too): the
/// vendored kit as one of its `V` files, read at run time, with the history
/// in refinery's default table, not `broadcast.schema_history`.
#[tokio::test]
async fn the_refinery_recipe_installs_the_kit_for_serve_without_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let kit_sql = printed_sql(&[]).await;
    std::fs::write(dir.path().join("V1__pgbroadcast_kit_v7.sql"), &kit_sql).unwrap();
    std::fs::write(
        dir.path().join("V2__orders_broadcast.sql"),
        "create table orders (id bigint primary key, status text not null default 'new');\n\
         select broadcast.enable('orders', 'order');\n",
    )
    .unwrap();
    let migrations = refinery::load_sql_migrations(dir.path()).unwrap();
    let db = common::fresh_db().await;
    let mut pg = db.client().await;
    let report = refinery::Runner::new(&migrations)
        .run_async(&mut pg)
        .await
        .unwrap();
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(applied, ["V1__pgbroadcast_kit_v7", "V2__orders_broadcast"]);
    // Up to date: refinery has nothing more to do.
    let again = refinery::Runner::new(&migrations)
        .run_async(&mut pg)
        .await
        .unwrap();
    assert!(again.applied_migrations().is_empty());

    orders_signal_without_migrating_and_migrate_applies_nothing(&db).await;
}
