//! Bad WebSocket input gets an `error` frame with a code — or, where the
//! connection cannot go on, a close code with a reason — and never disturbs
//! the connection's other work or other clients.

mod common;

use common::{Bridge, TestDb, brief, write};
use pgbroadcast::config::Limits;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn error_code(client: &mut common::WsClient) -> String {
    let frame: Value = client.next().await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(frame.get("channel").is_none());
    assert!(!frame["message"].as_str().unwrap().is_empty());
    frame["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_messages_get_error_frames_and_the_connection_goes_on() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        "create table things (id int primary key); select broadcast.enable('things', 'thing');",
    )
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut bystander = bridge.client().await;
    bystander.subscribe(&["thing"]).await;
    let mut client = bridge.client().await;

    let many: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let cases: Vec<(String, &str)> = vec![
        ("this is not json".into(), "invalid_json"),
        ("[\"subscribe\"]".into(), "invalid_message"),
        (r#"{"subscribe": "thing"}"#.into(), "invalid_message"),
        (r#"{"hello": "world"}"#.into(), "invalid_message"),
        (r#"{"subscribe": [""]}"#.into(), "invalid_channel"),
        (
            json!({"subscribe": ["x".repeat(65)]}).to_string(),
            "invalid_channel",
        ),
        (r#"{"subscribe": [42, "thing"]}"#.into(), "invalid_channel"),
        (r#"{"subscribe": ["thing:"]}"#.into(), "invalid_channel"),
        (
            json!({"subscribe": many[..101]}).to_string(),
            "too_many_channels",
        ),
        // 10,000 channels do not even fit the 64 KiB message limit.
        (json!({"subscribe": many}).to_string(), "message_too_large"),
    ];
    for (text, code) in &cases {
        client.send_text(text).await;
        assert_eq!(
            &error_code(&mut client).await,
            code,
            "for {}",
            &text[..text.len().min(60)]
        );
    }
    client.ws_send(Message::binary(vec![0u8, 1, 2])).await;
    assert_eq!(error_code(&mut client).await, "binary_not_supported");

    // Nothing of the rejected messages was applied ("thing" was in one of them) ...
    let t1 = write(&mut pg, "insert into things values (1)").await;
    assert_eq!(
        brief(&bystander.next().await),
        ("created".into(), Some("1".into()), t1)
    );
    // ... and the connection still works.
    client.subscribe(&["thing"]).await;
    let t2 = write(&mut pg, "insert into things values (2)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("2".into()), t2)
    );
    assert_eq!(
        brief(&bystander.next().await),
        ("created".into(), Some("2".into()), t2)
    );
}

#[tokio::test]
async fn subscription_limit_is_enforced_per_connection() {
    let db = TestDb::migrated().await;
    let limits = Limits {
        max_subscriptions: 3,
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let mut client = bridge.client().await;
    assert_eq!(client.welcome["limits"]["max_subscriptions"], 3);
    client.subscribe(&["a", "b"]).await;
    client.send(json!({"subscribe": ["c", "d"]})).await;
    assert_eq!(error_code(&mut client).await, "subscription_limit");
    // Subscribing again to held topics does not count twice.
    client.subscribe(&["a", "b", "c"]).await;
    client.send(json!({"unsubscribe": ["a"]})).await;
    assert_eq!(
        client.next().await,
        json!({"type": "unsubscribed", "channels": ["a"]})
    );
    client.subscribe(&["d"]).await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_a_reason() {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start(&db).await;
    let mut other = bridge.client().await;
    other.subscribe(&["a"]).await;
    let mut client = bridge.client().await;
    let limit = Limits::default().max_message_bytes;
    client.send_text(&"x".repeat(4 * limit + 1)).await;
    match client.next_message().await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Size);
            assert!(frame.reason.contains("limit"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The other client is unaffected.
    other.subscribe(&["b"]).await;
}

#[tokio::test]
async fn a_client_that_closes_gets_the_closing_handshake() {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["a"]).await;
    client.ws_send(Message::Close(None)).await;
    match client.next_message().await {
        Message::Close(_) => {}
        other => panic!("expected the server's close reply, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_before_the_upgrade() {
    let db = TestDb::migrated().await;
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let first = bridge.client().await;
    let _second = bridge.client().await;
    match tokio_tungstenite::connect_async(bridge.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // A slot frees when a connection ends.
    first.close().await;
    tokio::time::timeout(common::PATIENCE, async {
        while tokio_tungstenite::connect_async(bridge.ws_url())
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the freed slot was never reused");
    let metrics = reqwest::get(bridge.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"pgbroadcast_connections_refused_total{reason="max_connections"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text() {
    let db = TestDb::migrated().await;
    let mut pg = db.client().await;
    pg.batch_execute(
        "create table things (id int primary key); select broadcast.enable('things', 'thing');",
    )
    .await
    .unwrap();
    let bridge = Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["thing", "thing:1"]).await;
    write(&mut pg, "insert into things values (1)").await;
    client.next().await;
    let response = reqwest::get(bridge.http_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for line in [
        "pgbroadcast_connections 1",
        "pgbroadcast_subscriptions 2",
        "pgbroadcast_signals_received_total 1",
        "pgbroadcast_frames_delivered_total 1",
        "pgbroadcast_listener_up 1",
        "pgbroadcast_listener_reconnects_total 0",
        "pgbroadcast_send_lag_seconds_count 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains("pgbroadcast_notify_queue_usage_ratio"),
        "{text}"
    );
    assert!(
        !text.contains("thing"),
        "no channel or entity labels: {text}"
    );
}
