//! What reaches the server log from outside. Any database role can NOTIFY
//! the bridge's channel and any client can send names and headers; none of
//! it may forge a log line or put terminal escapes in front of an operator.

mod common;

use common::binary::Served;
use common::{TestDb, WsClient};

#[tokio::test]
async fn a_forged_notification_cannot_forge_log_lines_or_terminal_escapes() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let url = common::cluster().url(&db.name);
    let server = Served::start(&url, &["serve", "--listen", "127.0.0.1:0"], &[]).await;
    let mut client = WsClient::connect(&server.ws_url()).await;
    client.subscribe(&["order"]).await;
    pg.batch_execute(
        r#"select pg_notify('pgbroadcast',
             E'{"channel":"order","oops\n2026-11-27T00:00:00.000000Z ERROR pgbroadcast: FORGED admin logged in\n\x1b]0;owned\x07\x1b[2J');
           select pg_notify('pgbroadcast',
             E'{"channel":"order","event":"created","payload":{"txid":1,"op":"INSERT","x\\nFORGED key":1}}');"#,
    )
    .await
    .unwrap();
    // Both were read before the barrier arrived; the second names its
    // channel, which gets a resync.
    common::expect_invalid_signal_resync(&pg, &mut client, "order", "forged notifications").await;
    let log = server.stop().await;
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(forged.len(), 2, "{log}");
    for line in forged {
        // Inside the warning about it, escaped — never a line of its own.
        assert!(line.contains("unreadable notification"), "{line}");
        assert!(
            line.contains(r"oops\n2026") || line.contains(r"x\nFORGED"),
            "{line}"
        );
    }
    assert!(!log.contains('\x07'), "a raw BEL reached the log");
    assert!(
        !log.contains("\x1b]0;"),
        "a raw OSC sequence reached the log"
    );
    assert!(
        !log.contains("\x1b[2J"),
        "a raw clear-screen reached the log"
    );
}

#[tokio::test]
async fn a_forged_payload_shape_is_never_delivered() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let bridge = common::Bridge::start(&db).await;
    let mut client = bridge.client().await;
    client.subscribe(&["order"]).await;
    for forged in [
        r#"["666"]"#,
        r#""666""#,
        r#"{"entity_id":"666","op":"INSERT"}"#,
        r#"{"entity_id":"666","txid":1,"op":"INSERT","html":"<script>"}"#,
        r#"{"entity_id":666,"txid":1,"op":"INSERT"}"#,
    ] {
        let notification = format!(r#"{{"channel":"order","event":"created","payload":{forged}}}"#);
        pg.execute("select pg_notify('pgbroadcast', $1)", &[&notification])
            .await
            .unwrap();
        common::expect_invalid_signal_resync(&pg, &mut client, "order", forged).await;
    }
}

#[tokio::test]
async fn what_clients_send_is_logged_quoted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let db = TestDb::migrated().await;
    let url = common::cluster().url(&db.name);
    let server = Served::start(
        &url,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allowed-origins",
            "https://app.example",
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "origin",
        "https://evil.example ERROR forged".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    let log = server.stop().await;
    let refused = log
        .lines()
        .find(|l| l.contains("origin not allowed"))
        .unwrap_or_else(|| panic!("no log line for the refusal:\n{log}"));
    // Quoted: a value, never words of the log line itself.
    assert!(
        refused.contains(r#""https://evil.example ERROR forged""#),
        "{refused}"
    );
}
