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

/// The value of an unlabelled counter or gauge in `/metrics` text (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A burst over `max_messages_per_second`: the messages over the rate are
/// not applied, and the `rate_limited` error's `dropped` counts every one of
/// them, over a real socket and the server's own clock.
#[tokio::test]
async fn messages_over_the_rate_are_not_applied_and_every_one_is_counted() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let rate = 5;
    let limits = Limits {
        max_messages_per_second: rate,
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    let mut client = bridge.client().await;
    assert_eq!(client.welcome["limits"]["max_messages_per_second"], rate);
    // Far more than the rate, back to back: a subscribe to a channel of its own each.
    let sent = 40;
    for i in 0..sent {
        client.send(json!({ "subscribe": [format!("c{i}")] })).await;
    }
    // Each message is either acknowledged or counted in a notice, never both.
    let mut acked = std::collections::BTreeSet::new();
    let mut dropped = 0;
    let mut notices = 0;
    while acked.len() + dropped < sent {
        let frame = tokio::time::timeout(common::PATIENCE / 2, client.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} acknowledged and {dropped} counted as dropped of {sent}: the rest went unaccounted for",
                    acked.len()
                )
            });
        match frame["type"].as_str() {
            Some("subscribed") => {
                assert!(acked.insert(frame["channels"][0].as_str().unwrap().to_owned()));
            }
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                dropped += frame["dropped"].as_u64().unwrap() as usize;
                notices += 1;
            }
            _ => panic!("unexpected frame {frame}"),
        }
        assert!(
            acked.len() + dropped <= sent,
            "more acknowledged and dropped than sent: {} + {dropped} of {sent}",
            acked.len()
        );
    }
    // The bucket starts full: the first `rate` messages are applied.
    for i in 0..rate {
        assert!(acked.contains(&format!("c{i}")), "c{i} in {acked:?}");
    }
    assert!(dropped >= sent / 2, "only {dropped} of {sent} dropped");
    // One notice, unless the burst took the server longer than the notice delay.
    assert!(notices <= 2, "{notices} notices");
    let metrics = bridge.metrics().await;
    assert_eq!(
        metric(&metrics, "pgbroadcast_messages_rate_limited_total"),
        dropped as u64,
        "{metrics}"
    );

    // Not applied: a signal on every channel reaches only those acknowledged.
    let emits: String = (0..sent)
        .map(|i| format!("select broadcast.emit('c{i}', 'ping', null, null);"))
        .collect();
    pg.batch_execute(&format!("begin; {emits} commit;"))
        .await
        .unwrap();
    common::barrier(&pg, "c0").await;
    let frames = client.until("c0", "barrier").await;
    let pinged: std::collections::BTreeSet<String> = frames
        .iter()
        .filter(|f| f["event"] == "ping")
        .map(|f| f["channel"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pinged, acked, "{frames:?}");
    assert_eq!(frames.len(), acked.len() + 1, "{frames:?}");
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
            let retry_after = response.headers().get("retry-after");
            assert_eq!(
                retry_after.map(|v| v.to_str().unwrap()),
                Some("5"),
                "{:?}",
                response.headers()
            );
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // The node is full of WebSockets, not of health checks.
    assert_eq!(bridge.readyz().await, 200);
    let healthz = reqwest::get(bridge.http_url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    // A slot frees when a connection ends.
    first.close().await;
    connects_once_a_slot_frees(&bridge).await;
    let metrics = bridge.metrics().await;
    assert!(
        metrics.contains(r#"pgbroadcast_connections_refused_total{reason="max_connections"}"#),
        "{metrics}"
    );
}

/// Waits until a new WebSocket is accepted (the node refuses while full).
async fn connects_once_a_slot_frees(bridge: &Bridge) {
    tokio::time::timeout(common::PATIENCE, async {
        while tokio_tungstenite::connect_async(bridge.ws_url())
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no slot freed: the connection that ended still holds it");
}

/// The server letting a connection go (here a peer silent for two
/// heartbeats) ends its reading side too: the slot it held is free again.
#[tokio::test]
async fn a_connection_the_server_drops_frees_its_slot() {
    let db = TestDb::migrated().await;
    let limits = Limits {
        max_connections: 1,
        heartbeat: std::time::Duration::from_secs(1),
        ..Limits::default()
    };
    let bridge = Bridge::start_with(&db, limits).await;
    // Welcomed, then it reads nothing, so it answers no ping.
    let mut silent = bridge.client().await;
    connects_once_a_slot_frees(&bridge).await;
    // What the silent client finds when it reads at last: the server's goodbye.
    loop {
        match silent.next_message().await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Away);
                assert_eq!(frame.reason, "heartbeat timeout");
                break;
            }
            Message::Text(text) => {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(frame["type"], "heartbeat", "{frame}");
            }
            other => panic!("expected heartbeats, then a close, got {other:?}"),
        }
    }
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

/// A WebSocket client that writes frames byte by byte as given, to break the
/// protocol in ways no well-behaved library will.
struct RawWs {
    tcp: tokio::net::TcpStream,
}

impl RawWs {
    async fn connect(bridge: &Bridge) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(bridge.running.addr)
            .await
            .unwrap();
        let request = format!(
            "GET /ws/broadcast HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            bridge.running.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut raw = RawWs { tcp };
        let (opcode, welcome) = raw.read_frame().await.unwrap();
        assert_eq!(opcode, 1);
        assert!(String::from_utf8_lossy(&welcome).contains("welcome"));
        raw
    }

    /// One frame: `first` is the FIN/RSV/opcode byte; `masked` as a client must.
    async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        assert!(payload.len() < 126);
        let mut frame = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next server frame (servers do not mask): opcode and payload, or
    /// `None` at end of stream.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let first = self.tcp.read_u8().await.ok()?;
            let len = match self.tcp.read_u8().await.ok()? & 0x7f {
                126 => u64::from(self.tcp.read_u16().await.ok()?),
                127 => self.tcp.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some((first & 0x0f, payload))
        };
        tokio::time::timeout(common::PATIENCE, read)
            .await
            .expect("no frame within the test's patience")
    }

    /// Reads up to the server's close frame: its code and reason.
    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.read_frame().await {
                Some((0x8, payload)) => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
                }
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_with_the_rfc_6455_code_and_a_reason() {
    let db = TestDb::migrated().await;
    let bridge = Bridge::start(&db).await;
    let cases: [(&str, u8, &[u8], bool, u16); 6] = [
        (
            "invalid UTF-8 in a text frame",
            0x81,
            &[0x7b, 0xff, 0xfe, 0x7d],
            true,
            1007,
        ),
        ("an unmasked client frame", 0x81, b"{}", false, 1002),
        ("a reserved data opcode", 0x83, b"{}", true, 1002),
        ("a reserved control opcode", 0x8b, b"", true, 1002),
        ("the RSV1 bit without an extension", 0xc1, b"{}", true, 1002),
        ("a fragmented ping", 0x09, b"hi", true, 1002),
    ];
    for (what, first, payload, masked, expected) in cases {
        let mut raw = RawWs::connect(&bridge).await;
        raw.send_frame(first, payload, masked).await;
        let (code, reason) = raw.close_frame().await;
        assert_eq!(code, expected, "{what}: {reason}");
        assert!(!reason.is_empty(), "{what}");
        // Then the server ends the connection.
        while raw.read_frame().await.is_some() {}
    }
    // The bridge goes on serving.
    let mut client = bridge.client().await;
    client.subscribe(&["thing"]).await;
}
