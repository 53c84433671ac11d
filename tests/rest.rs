//! REST mutations return the txid Electric confirms. Electric itself cannot
//! run here, so the proof reads the WAL the way Electric does: a logical
//! decoding slot shows each transaction as `BEGIN <xid>`, and that xid must be
//! the txid in the HTTP response and in the broadcast signal.

mod common;

use std::collections::BTreeMap;

use common::{Bridge, TestDb, WsClient, barrier, fresh_db_in, test_cluster};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_postgres::Client;

/// The order example served by the bridge, plus a decoding slot on its database.
struct Demo {
    db: TestDb,
    pg: Client,
    bridge: Bridge,
    http: reqwest::Client,
}

impl Demo {
    async fn start(db: TestDb) -> Demo {
        let bridge = Bridge::start_demo(&db).await;
        let pg = db.client().await;
        // Slot names are cluster-wide: one per test database.
        pg.execute(
            "select pg_create_logical_replication_slot(current_database(), 'test_decoding')",
            &[],
        )
        .await
        .unwrap();
        Demo {
            db,
            pg,
            bridge,
            http: reqwest::Client::new(),
        }
    }

    async fn new() -> Demo {
        Demo::start(TestDb::migrated().await).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = self.bridge.http_url(path);
        let request = self.http.request(method.parse().unwrap(), url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Transactions decoded since the last call: xid → its change lines.
    async fn wal(&self) -> BTreeMap<i64, Vec<String>> {
        let rows = self
            .pg
            .query(
                "select data from pg_logical_slot_get_changes(current_database(), null, null)",
                &[],
            )
            .await
            .unwrap();
        let mut transactions = BTreeMap::new();
        let mut current: Option<(i64, Vec<String>)> = None;
        for row in rows {
            let line: String = row.get(0);
            if let Some(xid) = line.strip_prefix("BEGIN ") {
                current = Some((xid.parse().unwrap(), Vec::new()));
            } else if line.starts_with("COMMIT ") {
                let (xid, changes) = current.take().expect("COMMIT without BEGIN");
                transactions.insert(xid, changes);
            } else if let Some((_, changes)) = current.as_mut() {
                changes.push(line);
            }
        }
        transactions
    }

    async fn ws(&self) -> WsClient {
        let mut client = self.bridge.client().await;
        client.subscribe(&["order"]).await;
        client
    }
}

fn txid(body: &Value) -> i64 {
    body["txid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no numeric txid in {body}"))
}

/// Does the decoded transaction change `table` with `op` for a row with `needle`?
fn touches(changes: &[String], table: &str, op: &str, needle: &str) -> bool {
    let prefix = format!("table public.{table}: {op}:");
    changes
        .iter()
        .any(|c| c.starts_with(&prefix) && c.contains(needle))
}

#[tokio::test]
async fn each_mutation_returns_the_xid_the_wal_and_the_signal_show() {
    let demo = Demo::new().await;
    let mut ws = demo.ws().await;

    let (status, created) = demo
        .call(
            "POST",
            "/api/orders",
            Some(json!({"customer": "ada", "items": [{"sku": "tea", "quantity": 2}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_i64().unwrap();
    assert_eq!(created["data"]["items"][0]["sku"], "tea");
    let t_create = txid(&created);

    let (status, patched) = demo
        .call(
            "PATCH",
            &format!("/api/orders/{id}"),
            Some(json!({"status": "ready"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["status"], "ready");
    let t_patch = txid(&patched);

    let (status, added) = demo
        .call(
            "POST",
            &format!("/api/orders/{id}/items"),
            Some(json!({"sku": "cake", "quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let item = added["data"]["id"].as_i64().unwrap();
    let t_add = txid(&added);

    let (status, removed) = demo
        .call("DELETE", &format!("/api/orders/{id}/items/{item}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    let t_remove = txid(&removed);

    let (status, deleted) = demo
        .call("DELETE", &format!("/api/orders/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let t_delete = txid(&deleted);

    // The WAL: each txid is the BEGIN xid of the transaction holding that change.
    let wal = demo.wal().await;
    let id_col = format!("id[bigint]:{id} ");
    let order_col = format!("order_id[bigint]:{id} ");
    assert!(
        touches(&wal[&t_create], "orders", "INSERT", &id_col),
        "{:?}",
        wal.get(&t_create)
    );
    assert!(touches(
        &wal[&t_create],
        "order_items",
        "INSERT",
        "sku[text]:'tea'"
    ));
    assert!(touches(
        &wal[&t_patch],
        "orders",
        "UPDATE",
        "status[text]:'ready'"
    ));
    assert!(touches(&wal[&t_add], "order_items", "INSERT", &order_col));
    assert!(touches(&wal[&t_remove], "order_items", "DELETE", ""));
    assert!(touches(&wal[&t_delete], "orders", "DELETE", ""));
    assert_eq!(wal.len(), 5, "unexpected transactions: {wal:?}");

    // The signals carry the same txids.
    barrier(&demo.pg, "order").await;
    let signals: Vec<(String, i64)> = ws
        .until("order", "barrier")
        .await
        .iter()
        .filter(|f| f["event"] != "barrier")
        .map(|f| {
            assert_eq!(f["payload"]["entity_id"], id.to_string(), "{f}");
            (
                f["event"].as_str().unwrap().to_owned(),
                f["payload"]["txid"].as_i64().unwrap(),
            )
        })
        .collect();
    let s = |e: &str, t: i64| (e.to_owned(), t);
    assert_eq!(
        signals,
        vec![
            s("created", t_create),
            s("item_added", t_create),
            s("updated", t_patch),
            s("status_changed", t_patch),
            s("item_added", t_add),
            s("item_removed", t_remove),
            s("deleted", t_delete),
            s("item_removed", t_delete),
        ]
    );
}

#[tokio::test]
async fn a_patch_that_changes_nothing_answers_txid_null_and_writes_nothing() {
    let demo = Demo::new().await;
    let (_, created) = demo
        .call("POST", "/api/orders", Some(json!({"customer": "bo"})))
        .await;
    let id = created["data"]["id"].as_i64().unwrap();
    let (_, first) = demo
        .call(
            "PATCH",
            &format!("/api/orders/{id}"),
            Some(json!({"status": "preparing"})),
        )
        .await;
    txid(&first);
    assert_eq!(demo.wal().await.len(), 2);

    let (status, again) = demo
        .call(
            "PATCH",
            &format!("/api/orders/{id}"),
            Some(json!({"status": "preparing"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["txid"], Value::Null, "{again}");
    assert_eq!(again["data"]["status"], "preparing");
    assert!(demo.wal().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_txid_is_the_32_bit_xid_when_the_xid_epoch_is_not_zero() {
    let mut cluster = test_cluster().expect("own cluster");
    tokio::task::block_in_place(|| {
        cluster.stop()?;
        cluster.run_tool("pg_resetwal", &["-e", "1"])?;
        cluster.start()
    })
    .unwrap();
    let db = fresh_db_in(&cluster).await;
    {
        let mut pg = db.client().await;
        pgbroadcast::migrate::run(&mut pg).await.unwrap();
    }
    let demo = Demo::start(db).await;
    let full: i64 = demo
        .pg
        .query_one("select txid_current()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        full >= 1 << 32,
        "the epoch did not move: txid_current() = {full}"
    );

    let (status, created) = demo
        .call("POST", "/api/orders", Some(json!({"customer": "eve"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let t = txid(&created);
    assert!(t < 1 << 32);
    let wal = demo.wal().await;
    assert!(
        touches(&wal[&t], "orders", "INSERT", "customer[text]:'eve'"),
        "{wal:?}"
    );
    drop(demo);
}

#[tokio::test]
async fn concurrent_mutations_each_get_their_own_txid() {
    let demo = std::sync::Arc::new(Demo::new().await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let demo = std::sync::Arc::clone(&demo);
        tasks.push(tokio::spawn(async move {
            let (status, body) = demo
                .call(
                    "POST",
                    "/api/orders",
                    Some(json!({"customer": format!("c{i}")})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            (body["data"]["id"].as_i64().unwrap(), txid(&body))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let wal = demo.wal().await;
    assert_eq!(wal.len(), 50);
    for (id, t) in results {
        assert!(
            touches(&wal[&t], "orders", "INSERT", &format!("id[bigint]:{id} ")),
            "txid {t} does not hold order {id}: {:?}",
            wal.get(&t)
        );
    }
}

#[tokio::test]
async fn error_paths_roll_back_completely() {
    let demo = Demo::new().await;
    let mut ws = demo.ws().await;
    let (_, created) = demo
        .call("POST", "/api/orders", Some(json!({"customer": "ivy"})))
        .await;
    let id = created["data"]["id"].as_i64().unwrap();
    barrier(&demo.pg, "order").await;
    ws.until("order", "barrier").await;
    demo.wal().await;

    let cases: Vec<(&str, String, Option<Value>, StatusCode, &str)> = vec![
        (
            "PATCH",
            "/api/orders/999999".into(),
            Some(json!({"status": "ready"})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/api/orders/999999".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/orders/abc".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/orders/999999/items".into(),
            Some(json!({"sku": "tea", "quantity": 1})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            format!("/api/orders/{id}/items/999999"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            format!("/api/orders/{id}"),
            Some(json!({"status": "lost"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            "POST",
            "/api/orders".into(),
            Some(json!({"customer": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            "POST",
            "/api/orders".into(),
            Some(json!({"customer": "x", "extra": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            "POST",
            format!("/api/orders/{id}/items"),
            Some(json!({"sku": "tea", "quantity": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        // The order row is written, then the second item violates a constraint:
        // the whole transaction goes.
        (
            "POST",
            "/api/orders".into(),
            Some(
                json!({"customer": "dup", "items": [{"sku": "tea", "quantity": 1}, {"sku": "tea", "quantity": 2}]}),
            ),
            StatusCode::CONFLICT,
            "conflict",
        ),
    ];
    for (method, path, body, expected_status, code) in cases {
        let (status, answer) = demo.call(method, &path, body).await;
        assert_eq!(status, expected_status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty());
        for leak in [
            "violates",
            "constraint",
            "order_items_",
            "duplicate key",
            "SQLSTATE",
        ] {
            assert!(!message.contains(leak), "database detail leaked: {message}");
        }
        assert!(answer.get("txid").is_none(), "{answer}");
    }
    // Malformed JSON is refused before anything runs.
    let response = demo
        .http
        .post(demo.bridge.http_url("/api/orders"))
        .header("content-type", "application/json")
        .body("{\"customer\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "malformed_json");

    assert!(
        demo.wal().await.is_empty(),
        "an error path committed something"
    );
    let orders: i64 = demo
        .pg
        .query_one("select count(*) from orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
    barrier(&demo.pg, "order").await;
    let frames = ws.until("order", "barrier").await;
    assert_eq!(frames.len(), 1, "signals from failed requests: {frames:?}");
}

#[tokio::test]
async fn openapi_carries_x_sync_read_from_the_routes_at_request_time() {
    let demo = Demo::new().await;
    let (status, doc) = demo.call("GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/orders",
        "/api/orders/{id}",
        "/api/orders/{id}/items",
        "/api/orders/{id}/items/{item_id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
        assert_eq!(doc["paths"][path]["x-sync"]["local_first"], true, "{path}");
    }
    for schema in [
        "Order",
        "OrderItem",
        "NewOrder",
        "NewItem",
        "StatusChange",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    assert_eq!(
        doc["paths"]["/api/orders"]["x-sync"]["broadcast"],
        json!({"channel": "order", "events": ["created", "deleted", "status_changed", "updated"]})
    );
    assert_eq!(
        doc["paths"]["/api/orders/{id}/items"]["x-sync"]["broadcast"],
        json!({"channel": "order", "events": ["item_added", "item_removed"]})
    );

    // A DBA changes the routes in SQL; the document follows without a restart.
    demo.pg
        .batch_execute("select broadcast.disable('orders', 'order_status')")
        .await
        .unwrap();
    let (_, doc) = demo.call("GET", "/openapi.json", None).await;
    assert_eq!(
        doc["paths"]["/api/orders"]["x-sync"]["broadcast"]["events"],
        json!(["created", "deleted", "updated"])
    );
    let _ = &demo.db;
}

/// The statuses `doc` documents for `method` on `path`.
fn documented(doc: &Value, method: &str, path: &str) -> Vec<String> {
    doc["paths"][path][method.to_lowercase()]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .cloned()
        .collect()
}

/// Sends `method concrete` with `body` (JSON unless `json` is false); the status.
async fn status_of(
    http: &reqwest::Client,
    bridge: &Bridge,
    method: &str,
    concrete: &str,
    body: Option<&str>,
    json: bool,
) -> u16 {
    let mut request = http.request(method.parse().unwrap(), bridge.http_url(concrete));
    if let Some(body) = body {
        if json {
            request = request.header("content-type", "application/json");
        }
        request = request.body(body.to_owned());
    }
    request.send().await.unwrap().status().as_u16()
}

/// The document passes a real OpenAPI 3.1 validator, and every status the
/// API really answers, provoked here one by one, is documented for its operation.
#[tokio::test]
async fn openapi_is_valid_and_documents_every_status_the_api_answers() {
    let demo = Demo::new().await;
    let (status, doc) = demo.call("GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);

    // openapi-spec-validator (PyPI; .ci/run installs it).
    let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .args(["--validation-errors", "all"])
        .arg(file.path())
        .output()
        .expect("python3 is needed to validate the OpenAPI document");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !said.contains("No module named openapi_spec_validator"),
        "install the validator: python3 -m pip install openapi-spec-validator"
    );
    assert!(output.status.success(), "not valid OpenAPI 3.1:\n{said}");
    assert!(said.contains(": OK"), "{said}");

    // txid: an unsigned 32-bit integer or null, always present.
    for schema in [
        "Mutation_Order",
        "Mutation_OrderItem",
        "Mutation_OrderWithItems",
    ] {
        let mutation = &doc["components"]["schemas"][schema];
        let txid = &mutation["properties"]["txid"];
        assert_eq!(txid["type"], json!(["integer", "null"]), "{schema}: {txid}");
        assert_eq!(txid["minimum"], 0, "{schema}");
        assert_eq!(txid["maximum"], 4_294_967_295u64, "{schema}");
        assert!(txid.get("format").is_none(), "{schema}: {txid}");
        assert!(
            mutation["required"]
                .as_array()
                .unwrap()
                .contains(&json!("txid")),
            "{schema}"
        );
    }
    let text = doc.to_string();
    assert!(!text.contains("None"), "a Rust None in the document");
    for name in ["NotFound", "MethodNotAllowed"] {
        assert!(
            doc["components"]["responses"][name]["description"].is_string(),
            "{name}"
        );
    }

    let http = reqwest::Client::new();
    let bridge = &demo.bridge;
    let mut observed: Vec<(&str, &str, u16)> = Vec::new();
    let created = status_of(
        &http,
        bridge,
        "POST",
        "/api/orders",
        Some(r#"{"customer": "ada", "items": [{"sku": "tea", "quantity": 1}]}"#),
        true,
    )
    .await;
    observed.push(("POST", "/api/orders", created));
    let (_, list) = demo.call("GET", "/api/orders", None).await;
    let id = list["data"][0]["id"].as_i64().unwrap();
    let (_, order) = demo.call("GET", &format!("/api/orders/{id}"), None).await;
    let item = order["data"]["items"][0]["id"].as_i64().unwrap();
    let one = format!("/api/orders/{id}");
    let items = format!("/api/orders/{id}/items");
    let big = format!(r#"{{"customer": "ada"{}}}"#, " ".repeat(70_000));
    // (method, template, concrete path, body, sent as JSON)
    let cases: Vec<(&str, &str, String, Option<&str>, bool)> = vec![
        ("GET", "/api/orders", "/api/orders".into(), None, true),
        (
            "GET",
            "/api/orders",
            "/api/orders?limit=0".into(),
            None,
            true,
        ),
        ("POST", "/api/orders", "/api/orders".into(), Some("{"), true),
        (
            "POST",
            "/api/orders",
            "/api/orders".into(),
            Some(&big),
            true,
        ),
        (
            "POST",
            "/api/orders",
            "/api/orders".into(),
            Some(r#"{"customer": "ada"}"#),
            false,
        ),
        (
            "POST",
            "/api/orders",
            "/api/orders".into(),
            Some(r#"{"customer": ""}"#),
            true,
        ),
        (
            "POST",
            "/api/orders",
            "/api/orders".into(),
            Some(
                r#"{"customer": "a", "items": [{"sku": "t", "quantity": 1}, {"sku": "t", "quantity": 1}]}"#,
            ),
            true,
        ),
        ("GET", "/api/orders/{id}", one.clone(), None, true),
        (
            "GET",
            "/api/orders/{id}",
            "/api/orders/999999".into(),
            None,
            true,
        ),
        (
            "PATCH",
            "/api/orders/{id}",
            one.clone(),
            Some(r#"{"status": "ready"}"#),
            true,
        ),
        (
            "PATCH",
            "/api/orders/{id}",
            "/api/orders/999999".into(),
            Some(r#"{"status": "ready"}"#),
            true,
        ),
        ("PATCH", "/api/orders/{id}", one.clone(), Some("nope"), true),
        ("PATCH", "/api/orders/{id}", one.clone(), Some(&big), true),
        (
            "PATCH",
            "/api/orders/{id}",
            one.clone(),
            Some(r#"{"status": "ready"}"#),
            false,
        ),
        (
            "PATCH",
            "/api/orders/{id}",
            one.clone(),
            Some(r#"{"status": "lost"}"#),
            true,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            items.clone(),
            Some(r#"{"sku": "cake", "quantity": 1}"#),
            true,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            items.clone(),
            Some(r#"{"sku": "cake", "quantity": 1}"#),
            true,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            "/api/orders/999999/items".into(),
            Some(r#"{"sku": "cake", "quantity": 1}"#),
            true,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            items.clone(),
            Some("["),
            true,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            items.clone(),
            Some(&big),
            true,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            items.clone(),
            Some("{}"),
            false,
        ),
        (
            "POST",
            "/api/orders/{id}/items",
            items.clone(),
            Some(r#"{"sku": "cake"}"#),
            true,
        ),
        (
            "DELETE",
            "/api/orders/{id}/items/{item_id}",
            format!("{items}/{item}"),
            None,
            true,
        ),
        (
            "DELETE",
            "/api/orders/{id}/items/{item_id}",
            format!("{items}/{item}"),
            None,
            true,
        ),
        ("DELETE", "/api/orders/{id}", one.clone(), None, true),
        ("DELETE", "/api/orders/{id}", one.clone(), None, true),
    ];
    for (method, template, concrete, body, json) in &cases {
        let status = status_of(&http, bridge, method, concrete, *body, *json).await;
        observed.push((method, template, status));
    }

    // 500: a DBA renames the columns the API reads.
    demo.pg
        .batch_execute(
            "alter table orders rename column customer to client; \
             alter table order_items rename column sku to code",
        )
        .await
        .unwrap();
    let (_, created) = demo.call("GET", "/api/orders", None).await;
    assert_eq!(created["error"]["code"], "internal", "{created}");
    let operations: Vec<(&str, &str, String, Option<&str>)> = vec![
        ("GET", "/api/orders", "/api/orders".into(), None),
        (
            "POST",
            "/api/orders",
            "/api/orders".into(),
            Some(r#"{"customer": "bo"}"#),
        ),
        ("GET", "/api/orders/{id}", "/api/orders/1".into(), None),
        (
            "PATCH",
            "/api/orders/{id}",
            "/api/orders/1".into(),
            Some(r#"{"status": "new"}"#),
        ),
        ("DELETE", "/api/orders/{id}", "/api/orders/1".into(), None),
        (
            "POST",
            "/api/orders/{id}/items",
            "/api/orders/1/items".into(),
            Some(r#"{"sku": "t", "quantity": 1}"#),
        ),
        (
            "DELETE",
            "/api/orders/{id}/items/{item_id}",
            "/api/orders/1/items/1".into(),
            None,
        ),
    ];
    for (method, template, concrete, body) in &operations {
        let status = status_of(&http, bridge, method, concrete, *body, true).await;
        assert_eq!(status, 500, "{method} {concrete}");
        observed.push((method, template, status));
    }

    // 503: the database stops taking connections.
    let admin = common::connect(&common::cluster().config("postgres")).await;
    admin
        .batch_execute(&format!(
            "alter database {db} with allow_connections false; \
             select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = '{db}' and pid <> pg_backend_pid()",
            db = demo.db.name
        ))
        .await
        .unwrap();
    for (method, template, concrete, body) in &operations {
        // Pooled connections are found dead one by one; wait for the refusal.
        let status = tokio::time::timeout(common::PATIENCE, async {
            loop {
                let status = status_of(&http, bridge, method, concrete, *body, true).await;
                if status == 503 {
                    return status;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} {concrete} never answered 503"));
        observed.push((method, template, status));
    }
    admin
        .batch_execute(&format!(
            "alter database {} with allow_connections true",
            demo.db.name
        ))
        .await
        .unwrap();

    // 401: the same API with authentication on, asked without a token.
    let db = TestDb::migrated().await;
    let auth = pgbroadcast::config::AuthArgs {
        jwt_secret: Some("a-secret-only-for-this-test-32-bytes-long".into()),
        ..Default::default()
    };
    let guarded = Bridge::start_custom(&db, Default::default(), true, auth).await;
    for (method, template, concrete, body) in &operations {
        let status = status_of(&http, &guarded, method, concrete, *body, true).await;
        assert_eq!(status, 401, "{method} {concrete}");
        observed.push((method, template, status));
    }

    let mut seen = std::collections::BTreeSet::new();
    for (method, template, status) in &observed {
        let statuses = documented(&doc, method, template);
        assert!(
            statuses.contains(&status.to_string()),
            "{method} {template} answered {status}, documented: {statuses:?}"
        );
        seen.insert(*status);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![200, 201, 400, 401, 404, 409, 413, 415, 422, 500, 503]
    );
}
