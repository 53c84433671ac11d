//! The HTTP edge as a client meets it: body limits, refusals in the API's
//! own terms, JSON answers for unknown routes and methods and for plain
//! requests to the WebSocket endpoint.

mod common;

use common::binary::Served;
use common::{Bridge, TestDb};
use pgbroadcast::config::Limits;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: status, headers, body as JSON (`Null` if it is not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// POSTs `body` as it is, with `Content-Type: application/json`.
async fn post_raw(http: &reqwest::Client, url: &str, body: impl Into<String>) -> Answer {
    send(
        http.post(url)
            .header("content-type", "application/json")
            .body(body.into()),
    )
    .await
}

/// Creates an order for ada; its id.
async fn an_order(http: &reqwest::Client, bridge: &Bridge) -> i64 {
    let created = post_raw(
        http,
        &bridge.http_url("/api/orders"),
        r#"{"customer": "ada"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["data"]["id"].as_i64().unwrap()
}

async fn demo_with(limits: Limits) -> (Bridge, TestDb) {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start_demo_with(&db, limits).await;
    (bridge, db)
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413_naming_the_limit() {
    let limits = Limits {
        max_body_bytes: 2048,
        ..Limits::default()
    };
    let (bridge, _db) = demo_with(limits).await;
    let http = reqwest::Client::new();
    let url = bridge.http_url("/api/orders");

    // Up to the limit is read: valid JSON padded with whitespace to 2,048 bytes.
    let order = r#"{"customer": "ada"}"#;
    let at_limit = format!("{order}{}", " ".repeat(2048 - order.len()));
    let answer = post_raw(&http, &url, at_limit).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);

    // One byte more is not.
    let over = format!("{order}{}", " ".repeat(2049 - order.len()));
    let answer = post_raw(&http, &url, over).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "body_too_large");
    assert!(answer.message().contains("2048 bytes"), "{}", answer.body);

    // The same without Content-Length (chunked): counted as it arrives.
    let answer = chunked_post(
        &bridge,
        "/api/orders",
        &[&"x".repeat(1500), &"y".repeat(1500)],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("2048 bytes"), "{answer}");
}

/// A POST written by hand with `Transfer-Encoding: chunked`; the raw answer.
async fn chunked_post(bridge: &Bridge, path: &str, chunks: &[&str]) -> String {
    let mut stream = tokio::net::TcpStream::connect(bridge.running.addr)
        .await
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("no answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_default_limit_is_64_kib() {
    let (bridge, _db) = demo_with(Limits::default()).await;
    let http = reqwest::Client::new();
    let over = format!(r#"{{"customer": "ada"{}}}"#, " ".repeat(64 * 1024));
    let answer = post_raw(&http, &bridge.http_url("/api/orders"), over).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.message().contains("65536 bytes"), "{}", answer.body);
}

#[tokio::test]
async fn refusals_name_the_field_and_what_it_must_be() {
    let (bridge, db) = demo_with(Limits::default()).await;
    let http = reqwest::Client::new();
    let id = an_order(&http, &bridge).await;
    let orders = bridge.http_url("/api/orders");
    let order = bridge.http_url(&format!("/api/orders/{id}"));
    let items = bridge.http_url(&format!("/api/orders/{id}/items"));

    let cases: Vec<(&str, &str, String, StatusCode, &str, &str)> = vec![
        (
            "POST",
            &orders,
            r#"{"customer": "ada", "x": 1}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            r#"unknown field "x"; allowed: customer, items"#,
        ),
        (
            "POST",
            &orders,
            r#"{"customer": 7}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "customer must be a string, not 7",
        ),
        (
            "POST",
            &orders,
            r#"{"items": []}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "customer is required",
        ),
        (
            "POST",
            &orders,
            r#"["ada", []]"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "the body must be an object, not an array",
        ),
        (
            "POST",
            &orders,
            r#"{"customer": "ada", "items": [{"sku": "tea", "quantity": 1}, {"sku": "cake", "quantity": "2"}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            r#"items[1].quantity must be an integer between 1 and 1000, not "2""#,
        ),
        (
            "POST",
            &orders,
            r#"{"customer": "ada", "items": [{"sku": "tea", "qty": 1}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            r#"unknown field "qty" in items[0]; allowed: sku, quantity"#,
        ),
        (
            "POST",
            &orders,
            r#"{"customer": "ada", "items": [{"sku": "", "quantity": 1}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "items[0].sku must be 1 to 64 characters without control characters",
        ),
        (
            "POST",
            &items,
            r#"{"sku": "tea", "quantity": 4294967296}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "quantity must be an integer between 1 and 1000, not 4294967296",
        ),
        (
            "POST",
            &items,
            r#"{"sku": "tea", "quantity": 0}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "quantity must be an integer between 1 and 1000, not 0",
        ),
        (
            "PATCH",
            &order,
            r#"{"status": "lost"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            r#"status must be one of new, preparing, ready, delivered, cancelled, not "lost""#,
        ),
        (
            "PATCH",
            &order,
            r#"{"status": null}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "status must be one of new, preparing, ready, delivered, cancelled, not null",
        ),
        (
            "PATCH",
            &order,
            "".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body is empty: send a JSON object",
        ),
        (
            "PATCH",
            &order,
            r#"{"status": "#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body is not valid JSON: EOF while parsing a value at line 1 column 11",
        ),
    ];
    for (method, url, body, status, code, message) in cases {
        let answer = send(
            http.request(method.parse().unwrap(), url)
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        assert_eq!(answer.status, status, "{method} {body}: {}", answer.body);
        assert_eq!(answer.code(), code, "{method} {body}");
        assert_eq!(answer.message(), message, "{method} {body}");
    }

    // Not JSON by its Content-Type: 415.
    let answer = send(http.post(&orders).body(r#"{"customer": "ada"}"#)).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_media_type");
    // A bad limit in the query: 400, in the same terms.
    for limit in ["abc", "0", "1001"] {
        let answer = send(http.get(format!("{orders}?limit={limit}"))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{limit}");
        assert_eq!(answer.code(), "bad_query");
        assert_eq!(
            answer.message(),
            "limit must be an integer between 1 and 1000"
        );
    }
    let _ = &db;
}

/// Words an answer would hold only if it leaked the server's types.
const LEAKS: &[&str] = &[
    "struct ",
    "enum ",
    "i8",
    "i16",
    "i32",
    "i64",
    "u8",
    "u16",
    "u32",
    "u64",
    "usize",
    "f64",
    "::",
    "Vec<",
    "String",
    "Option",
    "sequence",
    "variant",
    "identifier",
    "invalid type",
    "invalid value",
    "invalid length",
    "NewOrder",
    "NewItem",
    "StatusChange",
];

/// Any JSON, with the API's field names and statuses among keys and strings.
/// Generated text avoids the letters of type names, so a type name in an
/// answer can only come from the server.
fn any_json() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        "[a-eh0-2 ._\"-]{0,8}",
        Just("customer".to_owned()),
        Just("items".to_owned()),
        Just("sku".to_owned()),
        Just("quantity".to_owned()),
        Just("status".to_owned()),
        Just("ready".to_owned()),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(0), Just(1), Just(1000), Just(1001), Just(-1)].prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        text.clone().prop_map(Value::from),
    ];
    let json = leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Bare, or inside an otherwise valid order so refusals come from deep inside.
    (json, 0u8..3).prop_map(|(value, wrap)| match wrap {
        0 => value,
        1 => json!({"customer": "ada", "items": [value]}),
        _ => json!({"customer": "ada", "items": [{"sku": "tea", "quantity": value}]}),
    })
}

#[tokio::test]
async fn no_answer_to_random_bodies_speaks_of_server_types() {
    let (bridge, db) = demo_with(Limits::default()).await;
    let http = reqwest::Client::new();
    let id = an_order(&http, &bridge).await;
    let endpoints = [
        ("POST", bridge.http_url("/api/orders")),
        ("PATCH", bridge.http_url(&format!("/api/orders/{id}"))),
        ("POST", bridge.http_url(&format!("/api/orders/{id}/items"))),
    ];
    // A fixed seed: the same bodies every run, so a failure can be replayed.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = any_json();
    let mut refused = 0;
    for _ in 0..200 {
        let body = strategy
            .new_tree(&mut runner)
            .unwrap()
            .current()
            .to_string();
        for (method, url) in &endpoints {
            let answer = send(
                http.request(method.parse().unwrap(), url)
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
            if answer.status.is_success() {
                continue;
            }
            refused += 1;
            // Conflicts (the same SKU twice) are the database's refusals; the rest are the body's.
            assert!(
                matches!(answer.status.as_u16(), 400 | 409 | 422),
                "{method} {body}: {} {}",
                answer.status,
                answer.body
            );
            assert!(!answer.message().is_empty(), "{method} {body}");
            for leak in LEAKS {
                assert!(
                    !answer.message().contains(leak),
                    "{method} {body}: {leak:?} in {:?}",
                    answer.message()
                );
            }
        }
    }
    assert!(refused > 400, "only {refused} of 600 bodies were refused");
    let _ = &db;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let db = TestDb::migrated().await;
    let serve = Bridge::start(&db).await;
    let demo = Bridge::start_demo(&db).await;
    let http = reqwest::Client::new();
    // (bridge, method, path, status, code, Allow)
    type Case<'a> = (
        &'a Bridge,
        &'a str,
        &'a str,
        StatusCode,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            &serve,
            "GET",
            "/nothing/here",
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            &serve,
            "GET",
            "/api/orders",
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            &demo,
            "GET",
            "/api/nothing",
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            &serve,
            "POST",
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
        (
            &serve,
            "DELETE",
            "/metrics",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
        (
            &demo,
            "PUT",
            "/api/orders",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET,HEAD,POST"),
        ),
        (
            &demo,
            "POST",
            "/api/orders/1",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET,HEAD,PATCH,DELETE"),
        ),
        (
            &demo,
            "GET",
            "/api/orders/1/items",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("POST"),
        ),
        (
            &demo,
            "POST",
            "/openapi.json",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
        (
            &serve,
            "POST",
            "/ws/broadcast",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
    ];
    for (bridge, method, path, status, code, allow) in cases {
        let answer = send(http.request(method.parse().unwrap(), bridge.http_url(path))).await;
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(answer.code(), code, "{method} {path}: {}", answer.body);
        assert!(!answer.message().is_empty(), "{method} {path}");
        assert_eq!(answer.header("allow"), allow, "{method} {path}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_endpoint_answers_426() {
    let db = TestDb::migrated().await;
    let http = reqwest::Client::new();
    for bridge in [Bridge::start(&db).await, Bridge::start_demo(&db).await] {
        let answer = send(http.get(bridge.ws_url().replace("ws://", "http://"))).await;
        assert_eq!(
            answer.status,
            StatusCode::UPGRADE_REQUIRED,
            "{}",
            answer.body
        );
        assert_eq!(answer.code(), "upgrade_required");
        assert_eq!(answer.header("upgrade"), Some("websocket"));
        let head = http
            .head(bridge.ws_url().replace("ws://", "http://"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::UPGRADE_REQUIRED);
        // An old WebSocket version: 426 naming the one spoken.
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "8"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let answer = send(
            http.get(bridge.ws_url().replace("ws://", "http://"))
                .headers(headers),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(answer.header("sec-websocket-version"), Some("13"));
        assert_eq!(answer.code(), "upgrade_required");
        // A real client still gets through.
        bridge.client().await.close().await;
    }
}

/// `pgbroadcast demo` on `db`, with its log at `info` and `env`.
async fn demo_binary(db: &TestDb, env: &[(&str, &str)]) -> Served {
    Served::start(
        &common::cluster().url(&db.name),
        &["demo", "--listen", "127.0.0.1:0"],
        &[&[("RUST_LOG", "info")], env].concat(),
    )
    .await
}

#[tokio::test]
async fn a_500_logs_what_postgres_said_and_answers_generically() {
    let db = TestDb::migrated().await;
    let server = demo_binary(&db, &[]).await;
    let http = reqwest::Client::new();
    let orders = server.http_url("/api/orders");
    let answer = post_raw(&http, &orders, r#"{"customer": "ada"}"#).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);

    // A DBA freezes the table with a trigger that explains itself.
    db.client()
        .await
        .batch_execute(
            r#"
            create function freeze_orders() returns trigger language plpgsql as $$
            begin
                raise exception 'orders are frozen for stocktaking'
                    using errcode = 'PB042',
                          detail = 'stocktaking runs until 06:00',
                          hint = 'retry after 06:00',
                          table = 'orders',
                          column = 'customer',
                          constraint = 'stocktaking_freeze';
            end $$;
            create trigger stocktaking before insert on orders
                for each row execute function freeze_orders();
            "#,
        )
        .await
        .unwrap();

    let response = http
        .post(&orders)
        .header("content-type", "application/json")
        .body(r#"{"customer": "bo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.text().await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": {"code": "internal", "message": "the request could not be completed; see the server log"}})
    );

    let line = server.log_line(&["PB042"]).await;
    // The error is one quoted log value, so its own quotes are escaped.
    for expected in [
        "ERROR PB042: orders are frozen for stocktaking",
        r#"detail: \"stocktaking runs until 06:00\""#,
        r#"hint: \"retry after 06:00\""#,
        r#"table: \"orders\""#,
        r#"column: \"customer\""#,
        r#"constraint: \"stocktaking_freeze\""#,
        "POST",
        "/api/orders",
    ] {
        assert!(line.contains(expected), "{expected:?} missing from {line}");
    }
    // None of it reaches the client.
    for secret in ["PB042", "frozen", "stocktaking", "06:00"] {
        assert!(!body.contains(secret), "{secret} leaked: {body}");
    }

    // A DBA drops a column the API reads: the log names it.
    db.client()
        .await
        .batch_execute(
            "drop trigger stocktaking on orders; alter table order_items drop column quantity",
        )
        .await
        .unwrap();
    let answer = send(http.get(server.http_url("/api/orders/1"))).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let line = server.log_line(&["ERROR 42703"]).await;
    assert!(
        line.contains(r#"ERROR 42703: column \"quantity\" does not exist"#),
        "{line}"
    );
}

#[tokio::test]
async fn error_chain_gives_every_cause_and_what_postgres_said() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let err = client
        .batch_execute(
            "do $$ begin raise exception 'no grants for %', 'kitchen' using detail = 'two\nlines', hint = 'grant one'; end $$",
        )
        .await
        .unwrap_err();
    // As the authorization check wraps it.
    let wrapped = pgbroadcast::auth::AuthorizeError::Postgres(err);
    let report = pgbroadcast::error_chain(&wrapped);
    assert!(
        report.starts_with("broadcast.authorize failed: ERROR P0001: no grants for kitchen ("),
        "{report}"
    );
    assert!(report.contains(r#"detail: "two\nlines""#), "{report}");
    assert!(report.contains(r#"hint: "grant one""#), "{report}");
    assert!(report.contains("where: "), "{report}");
    assert!(!report.contains('\n'), "{report}");
}

#[tokio::test]
async fn the_body_limit_is_set_by_its_environment_variable() {
    let db = TestDb::migrated().await;
    let server = demo_binary(&db, &[("PGBROADCAST_MAX_BODY_BYTES", "1024")]).await;
    let http = reqwest::Client::new();
    let body = format!(r#"{{"customer": "ada"{}}}"#, " ".repeat(1024));
    let answer = post_raw(&http, &server.http_url("/api/orders"), body).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.message().contains("1024 bytes"), "{}", answer.body);
}

const SECRET: &str = "a-secret-only-for-these-tests-32-bytes-or-more";

fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "u1", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A browser's preflight: `OPTIONS` with `Origin` and what the page wants to send.
async fn preflight(http: &reqwest::Client, url: &str, origin: &str, method: &str) -> Answer {
    send(
        http.request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            ),
    )
    .await
}

/// The comma-separated values of a header, lower-cased.
fn listed(answer: &Answer, name: &str) -> Vec<String> {
    answer
        .header(name)
        .unwrap_or_default()
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

#[tokio::test]
async fn pages_on_allowed_origins_may_call_the_api_and_others_may_not() {
    let db = TestDb::migrated().await;
    let auth = pgbroadcast::config::AuthArgs {
        jwt_secret: Some(SECRET.into()),
        allowed_origins: vec!["https://app.example".into()],
        ..Default::default()
    };
    let bridge = Bridge::start_custom(&db, Limits::default(), true, auth).await;
    let http = reqwest::Client::new();
    let orders = bridge.http_url("/api/orders");

    // The preflight carries no token; it is answered, not refused with 401.
    for (url, method) in [
        (orders.clone(), "POST"),
        (bridge.http_url("/api/orders/1"), "PATCH"),
        (bridge.http_url("/api/orders/1/items/1"), "DELETE"),
    ] {
        let answer = preflight(&http, &url, "https://app.example", method).await;
        assert!(
            answer.status.is_success(),
            "{method} {url}: {}",
            answer.status
        );
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        let methods = listed(&answer, "access-control-allow-methods");
        for wanted in ["get", "post", "patch", "delete"] {
            assert!(methods.contains(&wanted.to_owned()), "{methods:?}");
        }
        let headers = listed(&answer, "access-control-allow-headers");
        for wanted in ["authorization", "content-type"] {
            assert!(headers.contains(&wanted.to_owned()), "{headers:?}");
        }
        assert!(listed(&answer, "vary").contains(&"origin".to_owned()));
        assert_eq!(answer.header("access-control-allow-credentials"), None);
    }

    // The call itself: answered with the origin allowed, errors included.
    let answer = send(
        http.post(&orders)
            .header("origin", "https://app.example")
            .bearer_auth(token())
            .json(&json!({"customer": "ada"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let answer = send(http.get(&orders).header("origin", "https://app.example")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    // Another origin: no allow-origin, so the browser keeps the answer from the page.
    let answer = preflight(&http, &orders, "https://evil.example", "POST").await;
    assert_eq!(answer.header("access-control-allow-origin"), None);
    let answer = send(
        http.get(&orders)
            .header("origin", "https://evil.example")
            .bearer_auth(token()),
    )
    .await;
    assert_eq!(answer.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn without_an_origin_list_any_page_may_call_the_api_without_credentials() {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start_demo(&db).await;
    let http = reqwest::Client::new();
    let orders = bridge.http_url("/api/orders");
    let answer = preflight(&http, &orders, "https://anywhere.example", "POST").await;
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    assert_eq!(answer.header("access-control-allow-credentials"), None);
    let answer = send(
        http.post(&orders)
            .header("origin", "https://anywhere.example")
            .json(&json!({"customer": "ada"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    // What a page needs to read from an error is exposed to it.
    let answer = send(
        http.put(&orders)
            .header("origin", "https://anywhere.example"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(listed(&answer, "access-control-expose-headers").contains(&"allow".to_owned()));
}
