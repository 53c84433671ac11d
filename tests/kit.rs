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
