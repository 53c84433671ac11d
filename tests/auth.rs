//! Authentication and authorization as a client meets them, against the
//! real binary, whose log output is captured: no token ever appears in it.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::binary::{Launch, Served};
use common::{TestDb, WsClient, write};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-for-hs256-only-in-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn kitchen(exp_in: u64) -> String {
    hs256(json!({"sub": "u1", "role": "kitchen", "aud": "app", "exp": now() + exp_in}))
}

/// The binary with authentication on, and the tokens used against it: none
/// of them may reach its log.
struct Server {
    served: Served,
    tokens: Vec<String>,
}

impl Server {
    async fn start(db: &TestDb, subcommand: &str, extra: &[&str]) -> Server {
        Server::with_keys(db, &[subcommand, "--jwt-secret", SECRET], extra).await
    }

    /// `keys`: the subcommand and the flags naming the keys tokens are
    /// verified with (for [`Server::start`], the secret). A flag in `extra`
    /// replaces the default below.
    async fn with_keys(db: &TestDb, keys: &[&str], extra: &[&str]) -> Server {
        let defaults = [
            "--listen",
            "127.0.0.1:0",
            "--jwt-audience",
            "app",
            "--auth-timeout",
            "1s",
            "--auth-expiry-notice",
            "2s",
            "--authz-recheck",
            "300ms",
            "--allowed-origins",
            "https://app.example",
        ];
        let args: Vec<&str> = defaults
            .chunks(2)
            .filter(|flag| !extra.contains(&flag[0]))
            .flatten()
            .copied()
            .collect();
        let served = Served::start(
            &common::cluster().url(&db.name),
            &[keys, &args[..], extra].concat(),
            &[("RUST_LOG", "debug")],
        )
        .await;
        Server {
            served,
            tokens: Vec::new(),
        }
    }

    fn url(&self) -> String {
        self.served.ws_url()
    }

    /// A token this test used: it must never show up in the log.
    fn used(&mut self, token: &str) -> String {
        self.tokens.push(token.to_owned());
        token.to_owned()
    }

    /// Connects and authenticates with `{"auth": token}`.
    async fn client(&mut self, token: &str) -> WsClient {
        self.authenticated(token).await.0
    }

    /// The same, with the server's `authenticated` answer.
    async fn authenticated(&mut self, token: &str) -> (WsClient, Value) {
        let token = self.used(token);
        let mut client = WsClient::connect(&self.url()).await;
        assert_eq!(client.welcome["auth"], "required");
        client.send(json!({ "auth": token })).await;
        let answer = client.next().await;
        assert_eq!(answer["type"], "authenticated", "{answer}");
        (client, answer)
    }

    /// Stops the server and reads its whole log: no token used is in it.
    async fn stop(self) {
        let log = self.served.stop().await;
        for token in &self.tokens {
            // Any distinctive part of a token would do; the signature is the
            // secret part (an unsigned token has none: its claims, then).
            let part = token.rsplit('.').find(|part| !part.is_empty()).unwrap();
            assert!(!log.contains(part), "a token reached the log:\n{log}");
        }
    }
}

async fn grants_db() -> TestDb {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    pg.batch_execute(
        "create table orders (id int primary key); select broadcast.enable('orders', 'order');
         create table secrets (id int primary key); select broadcast.enable('secrets', 'secret');
         create table users (id text primary key); select broadcast.enable('users', 'user');
         select broadcast.grant('role', 'kitchen', 'order');
         select broadcast.grant('sub', '*', 'user:{sub}');",
    )
    .await
    .unwrap();
    db
}

fn close_of(message: Message) -> (u16, String) {
    match message {
        Message::Close(Some(frame)) => (frame.code.into(), frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Connects, sends `token` as the first message, and expects a 4001 close
/// whose reason contains `why` and not the token; returns the reason.
async fn refused(server: &mut Server, token: &str, why: &str) -> String {
    let token = server.used(token);
    let mut client = WsClient::connect(&server.url()).await;
    client.send(json!({ "auth": token })).await;
    let (code, reason) = close_of(client.next_message().await);
    assert_eq!(code, 4001);
    assert!(reason.contains(why), "{why}: {reason}");
    assert!(!reason.contains(&token[token.len() - 20..]));
    reason
}

/// What a client refused for an unknown `kid` is told (README, "Keys at a URL").
const UNKNOWN_KID: &str = "the token's signing key (kid) is not known here";

#[tokio::test]
async fn without_a_token_nothing_is_allowed_and_the_connection_is_closed_with_4001() {
    let db = grants_db().await;
    let server = Server::start(&db, "serve", &[]).await;
    let mut client = WsClient::connect(&server.url()).await;
    assert_eq!(client.welcome["auth"], "required");
    client.send(json!({"subscribe": ["order"]})).await;
    assert_eq!(client.next().await["code"], "auth_required");
    // --auth-timeout 1s
    let (code, reason) = close_of(client.next_message().await);
    assert_eq!(code, 4001);
    assert!(reason.contains("auth"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_and_never_echoed() {
    let db = grants_db().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    let cases = [
        (
            hs256(json!({"sub": "u1", "aud": "app", "exp": now() - 120})),
            "expired",
        ),
        (
            encode(
                &Header::default(),
                &json!({"sub": "u1", "aud": "app", "exp": now() + 60}),
                &EncodingKey::from_secret(b"another secret"),
            )
            .unwrap(),
            "signature",
        ),
        (
            hs256(json!({"sub": "u1", "aud": "other-app", "exp": now() + 60})),
            "audience",
        ),
        // The missing claim named as missing: "expired" would contain "exp" too.
        (
            hs256(json!({"sub": "u1", "aud": "app"})),
            "has no exp claim",
        ),
        // --jwt-audience is set: a token without aud is not for this service.
        (
            hs256(json!({"sub": "u1", "exp": now() + 60})),
            "has no aud claim",
        ),
        (
            hs256(json!({"sub": "u1", "aud": "app", "exp": now() + 7200, "nbf": now() + 3600})),
            "not valid yet",
        ),
        (
            hs256(json!({"sub": "u1", "aud": "app", "exp": now() + 7200, "iat": now() + 3600})),
            "iat",
        ),
        (
            hs256(json!({"sub": "u1", "aud": "app", "exp": "tomorrow"})),
            "exp claim is not a NumericDate",
        ),
    ];
    for (token, why) in &cases {
        refused(&mut server, token, why).await;
        // The same token in the Sec-WebSocket-Protocol header: refused before the upgrade.
        let mut request = server.url().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains(why), "{body}");
                assert!(!body.contains(&token[token.len() - 20..]));
            }
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
    // A token in the URL is refused and not echoed.
    let token = server.used(&kitchen(60));
    match tokio_tungstenite::connect_async(format!("{}?token={token}", server.url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("token_in_url"), "{body}");
            assert!(!body.contains(&token[token.len() - 20..]));
        }
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
    // A good token in the header works, and the server picks the "bearer" protocol.
    let token = server.used(&kitchen(60));
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    let mut client = WsClient::from_stream(ws).await;
    client.subscribe(&["order"]).await;
    server.stop().await;
}

#[tokio::test]
async fn credentials_in_the_url_are_refused_however_spelled() {
    let db = grants_db().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    let token = server.used(&kitchen(60));
    let queries = [
        format!("%74oken={token}"),
        format!("tok%65n={token}"),
        format!("id_token={token}"),
        format!("API_KEY={token}"),
        format!("x=1&Access-Token={token}&x=2"),
        format!("apikey={token}&apikey={token}"),
        "token=".to_owned(),
        format!("anything={token}"),
    ];
    for query in &queries {
        match tokio_tungstenite::connect_async(format!("{}?{query}", server.url())).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert_eq!(response.status(), 400, "{body}");
                assert!(body.contains("token_in_url"), "{body}");
                assert!(!body.contains(&token[token.len() - 20..]));
            }
            other => panic!(
                "{}: expected 400, got {:?}",
                query.split('=').next().unwrap(),
                other.map(|_| ())
            ),
        }
    }
    // A query without credentials is fine.
    let mut client = WsClient::connect(&format!("{}?tokens=3&author=ada", server.url())).await;
    assert_eq!(client.welcome["auth"], "required");
    client.send(json!({ "auth": token })).await;
    assert_eq!(client.next().await["type"], "authenticated");
    server.stop().await;
}

#[tokio::test]
async fn forbidden_channels_and_entities_get_an_error_and_the_rest_flows() {
    let db = grants_db().await;
    let mut pg = db.client().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    let mut client = server.client(&kitchen(60)).await;
    client
        .send(json!({"subscribe": ["order", "secret", "user:u1", "user:u2", "user"]}))
        .await;
    let denied = client.next().await;
    assert_eq!(denied["code"], "forbidden");
    assert_eq!(denied["topics"], json!(["secret", "user:u2", "user"]));
    assert_eq!(
        client.next().await,
        json!({"type": "subscribed", "channels": ["order", "user:u1"]})
    );
    write(
        &mut pg,
        "insert into secrets values (1); insert into users values ('u2');",
    )
    .await;
    let t1 = write(&mut pg, "insert into orders values (1)").await;
    let t2 = write(&mut pg, "insert into users values ('u1')").await;
    let got: Vec<(String, i64)> = client
        .take(2)
        .await
        .iter()
        .map(|f| {
            (
                f["channel"].as_str().unwrap().to_owned(),
                f["payload"]["txid"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("order".into(), t1), ("user".into(), t2)]);
    server.stop().await;
}

/// Subscribes `client`, whose token runs out within `--auth-expiry-notice`
/// (`authenticated`: the server's answer to it): the ack and the
/// `auth_expiring` for that token's `expires_at` both arrive, and nothing
/// else. The server counts the time a token has left in whole seconds, so
/// the notice is due anywhere from at once to a second after authenticating:
/// it may come before the ack or after it.
async fn subscribe_while_expiring(client: &mut WsClient, topics: &[&str], authenticated: &Value) {
    assert!(authenticated["expires_at"].is_u64(), "{authenticated}");
    client.send(json!({ "subscribe": topics })).await;
    let ack = json!({"type": "subscribed", "channels": topics});
    let notice = json!({"type": "auth_expiring", "expires_at": authenticated["expires_at"]});
    let frames = client.take(2).await;
    assert!(
        frames == [ack.clone(), notice.clone()] || frames == [notice, ack],
        "{frames:?}"
    );
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_connection_and_an_expired_one_closes_it() {
    let db = grants_db().await;
    let mut pg = db.client().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    // Expires in 3 s; --auth-expiry-notice 2s.
    let (mut refreshed, refreshed_token) = server.authenticated(&kitchen(3)).await;
    let (mut lapsing, lapsing_token) = server.authenticated(&kitchen(3)).await;
    subscribe_while_expiring(&mut refreshed, &["order"], &refreshed_token).await;
    subscribe_while_expiring(&mut lapsing, &["order"], &lapsing_token).await;
    let fresh = server.used(&kitchen(60));
    refreshed.send(json!({ "auth": fresh })).await;
    assert_eq!(refreshed.next().await["type"], "authenticated");

    let (code, reason) = close_of(lapsing.next_message().await);
    assert_eq!(code, 4001);
    assert!(reason.contains("expired"), "{reason}");
    // Past the first token's expiry, the refreshed connection still gets signals.
    let txid = write(&mut pg, "insert into orders values (5)").await;
    assert_eq!(refreshed.next().await["payload"]["txid"], txid);
    server.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_in_the_far_future_keeps_its_connection_usable() {
    let db = grants_db().await;
    let mut pg = db.client().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    let far = [json!(10u64.pow(19)), json!(u64::MAX), json!(1e300)];
    for (n, exp) in far.iter().enumerate() {
        let token = hs256(json!({"role": "kitchen", "aud": "app", "exp": exp}));
        // As the first message ...
        let mut by_message = server.client(&token).await;
        by_message.subscribe(&["order"]).await;
        // ... and in the handshake.
        let token = server.used(&token);
        let mut request = server.url().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut by_header = WsClient::from_stream(ws).await;
        by_header.subscribe(&["order"]).await;
        let txid = write(&mut pg, &format!("insert into orders values ({n})")).await;
        assert_eq!(by_message.next().await["payload"]["txid"], txid);
        assert_eq!(by_header.next().await["payload"]["txid"], txid);
    }
    server.stop().await;
}

/// The next frame `client` gets, which must be a signal: its channel and txid.
async fn next_signal(client: &mut WsClient) -> (String, i64) {
    let frame = client.next().await;
    match (frame["channel"].as_str(), frame["payload"]["txid"].as_i64()) {
        (Some(channel), Some(txid)) => (channel.to_owned(), txid),
        _ => panic!("expected a signal, got {frame}"),
    }
}

fn unsubscribed(channels: &[&str], reason: &str) -> Value {
    json!({"type": "unsubscribed", "channels": channels, "reason": reason})
}

#[tokio::test]
async fn a_revoked_grant_ends_existing_subscriptions_and_refuses_new_ones() {
    let db = grants_db().await;
    let mut pg = db.client().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    // order by its role (kitchen), user:u1 by its sub.
    let mut client = server.client(&kitchen(60)).await;
    client.subscribe(&["order", "user:u1"]).await;
    pg.batch_execute("select broadcast.revoke('role', 'kitchen', 'order')")
        .await
        .unwrap();
    // --authz-recheck 300ms
    assert_eq!(client.next().await, unsubscribed(&["order"], "revoked"));
    // Behind a barrier: an order written after that, then a user: only the
    // user arrives.
    write(&mut pg, "insert into orders values (1)").await;
    let user = write(&mut pg, "insert into users values ('u1')").await;
    assert_eq!(next_signal(&mut client).await, ("user".into(), user));
    client.send(json!({"subscribe": ["order"]})).await;
    let denied = client.next().await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert_eq!(denied["topics"], json!(["order"]));
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_authorize_function_decides_and_a_refresh_is_asked_again() {
    let db = grants_db().await;
    let mut pg = db.client().await;
    // No periodic re-check within the test: what ends a topic here is the refresh.
    let mut server = Server::start(&db, "serve", &["--authz-recheck", "60s"]).await;
    // The grants would give the kitchen every order and u1 its user; the
    // DBA's own function gives the orders the token lists, nothing else.
    pg.batch_execute(
        "create or replace function broadcast.authorize(claims jsonb, channel text, entity_id text)
         returns boolean language sql stable set search_path = pg_catalog, pg_temp as $$
             select channel = 'order' and (claims -> 'orders') ? entity_id
         $$",
    )
    .await
    .unwrap();
    let following = |orders: &[&str]| {
        hs256(
            json!({"sub": "u1", "role": "kitchen", "aud": "app", "exp": now() + 60, "orders": orders}),
        )
    };
    let mut client = server.client(&following(&["1", "3"])).await;
    client
        .send(json!({"subscribe": ["order:1", "order:2", "order", "user:u1", "order:3"]}))
        .await;
    let denied = client.next().await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert_eq!(denied["topics"], json!(["order:2", "order", "user:u1"]));
    assert_eq!(
        client.next().await,
        json!({"type": "subscribed", "channels": ["order:1", "order:3"]})
    );
    // Claims it does not like: nothing.
    let mut other = server.client(&kitchen(60)).await;
    other.send(json!({"subscribe": ["order:1"]})).await;
    let denied = other.next().await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert_eq!(denied["topics"], json!(["order:1"]));
    // What was allowed flows.
    write(&mut pg, "insert into orders values (2)").await;
    let one = write(&mut pg, "insert into orders values (1)").await;
    assert_eq!(next_signal(&mut client).await, ("order".into(), one));

    // A refresh to claims that no longer list order 1 ends that topic at once.
    let refreshed = server.used(&following(&["3"]));
    client.send(json!({ "auth": refreshed })).await;
    assert_eq!(client.next().await["type"], "authenticated");
    assert_eq!(client.next().await, unsubscribed(&["order:1"], "revoked"));
    // Behind a barrier: order 1 changes, then order 3: only 3 arrives.
    write(&mut pg, "delete from orders where id = 1").await;
    let three = write(&mut pg, "insert into orders values (3)").await;
    assert_eq!(next_signal(&mut client).await, ("order".into(), three));
    server.stop().await;
}

#[tokio::test]
async fn while_the_database_cannot_be_asked_new_topics_are_refused_and_held_ones_kept_until_the_token_changes()
 {
    let db = grants_db().await;
    let mut pg = db.client().await;
    let admin = common::connect(&common::cluster().config("postgres")).await;
    let mut server = Server::start(&db, "serve", &[]).await;
    let mut client = server.client(&kitchen(60)).await;
    client.subscribe(&["order"]).await;

    // The database takes no new connections, and the service's sessions in
    // it are ended: all but its LISTEN (so signals still come) and this
    // test's writer.
    let writer: i32 = pg
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let allow = |on: bool| format!("alter database {} with allow_connections {on}", db.name);
    admin.batch_execute(&allow(false)).await.unwrap();
    let ended = admin
        .query(
            "select pg_terminate_backend(pid, 10000) from pg_stat_activity
              where datname = $1 and pid <> $2 and application_name <> 'pgbroadcast-listener'",
            &[&db.name, &writer],
        )
        .await
        .unwrap();
    assert!(!ended.is_empty(), "the service asked through no session");

    // A new topic cannot be checked: refused, nothing subscribed.
    client.send(json!({"subscribe": ["user:u1"]})).await;
    let refused = client.next().await;
    assert_eq!(refused["code"], "authorization_unavailable", "{refused}");
    // A periodic re-check (--authz-recheck 300ms) that cannot get through
    // keeps what was allowed. This client holds the only topics, so the
    // failed re-check logged is its own.
    server
        .served
        .log_line(&["re-checking authorization failed"])
        .await;
    let order = write(&mut pg, "insert into orders values (1)").await;
    assert_eq!(next_signal(&mut client).await, ("order".into(), order));

    // A token change cannot be checked: every held topic is dropped.
    let fresh = server.used(&kitchen(61));
    client.send(json!({ "auth": fresh })).await;
    assert_eq!(client.next().await["type"], "authenticated");
    assert_eq!(
        client.next().await,
        unsubscribed(&["order"], "authorization_unavailable")
    );
    // The database is back; behind a barrier, nothing more came on order.
    admin.batch_execute(&allow(true)).await.unwrap();
    client.subscribe(&["user:u1"]).await;
    write(&mut pg, "insert into orders values (2)").await;
    let user = write(&mut pg, "insert into users values ('u1')").await;
    assert_eq!(next_signal(&mut client).await, ("user".into(), user));
    server.stop().await;
}

#[tokio::test]
async fn with_rs256_keys_and_an_issuer_only_tokens_signed_by_those_keys_for_that_issuer_get_in() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const ISSUER: &str = "https://idp.example";
    let db = grants_db().await;
    let mut pg = db.client().await;
    let private = std::fs::read("tests/fixtures/rs256-private.pem").unwrap();
    let private = EncodingKey::from_rsa_pem(&private).unwrap();
    let claims = |iss: Option<&str>| {
        let mut claims = json!({"sub": "u1", "role": "kitchen", "aud": "app", "exp": now() + 60});
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        claims
    };
    let rs256 = |kid: &str, claims: &Value| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        encode(&header, claims, &private).unwrap()
    };
    let good = claims(Some(ISSUER));
    // A header and claims with no signature after them.
    let unsigned = |header: Value| {
        let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        format!("{}.{}.", part(&header), part(&good))
    };
    // Algorithm confusion: HS256 with the public key (the PEM file's bytes,
    // which anyone may have) as the HMAC secret.
    let public = std::fs::read("tests/fixtures/rs256-public.pem").unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    // The same key as a PEM file and as a JWKS document (where it has kid test-rsa).
    for keys in [
        "tests/fixtures/rs256-public.pem",
        "tests/fixtures/rs256-jwks.json",
    ] {
        let flags = ["serve", "--jwt-public-keys", keys, "--jwt-issuer", ISSUER];
        let mut server = Server::with_keys(&db, &flags, &[]).await;
        let mut cases = vec![
            (
                confused.clone(),
                "the token's algorithm is not accepted here",
            ),
            (
                unsigned(json!({"alg": "none", "typ": "JWT"})),
                "the token is malformed",
            ),
            (
                unsigned(json!({"alg": "RS256", "typ": "JWT", "kid": "test-rsa"})),
                "the token's signature does not verify",
            ),
            (
                rs256("test-rsa", &claims(Some("https://other.example"))),
                "the token is not from the expected issuer",
            ),
            (
                rs256("test-rsa", &claims(None)),
                "the token has no iss claim, which this server requires",
            ),
        ];
        if keys.ends_with(".json") {
            // Signed by the key, but naming another one.
            cases.push((rs256("test-rsa-retired", &good), UNKNOWN_KID));
        }
        for (token, why) in &cases {
            let reason = refused(&mut server, token, why).await;
            assert_eq!(reason, format!("unauthorized: {why}"), "{keys}");
        }
        // Signed by the key it names, for this issuer: in, and signals flow.
        let mut client = server.client(&rs256("test-rsa", &good)).await;
        client.subscribe(&["order"]).await;
        let txid = write(
            &mut pg,
            "insert into orders select coalesce(max(id), 0) + 1 from orders",
        )
        .await;
        assert_eq!(next_signal(&mut client).await, ("order".into(), txid));
        server.stop().await;
    }
}

#[tokio::test]
async fn a_page_from_another_origin_is_refused() {
    let db = grants_db().await;
    let mut server = Server::start(&db, "serve", &[]).await;
    // A page's token goes in the handshake: the one refused for its origin
    // reaches the server all the same, and must not reach its log either.
    let token = server.used(&kitchen(60));
    for (origin, allowed) in [
        ("https://evil.example", false),
        ("https://app.example", true),
    ] {
        let mut request = server.url().into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("origin", origin.parse().unwrap());
        headers.insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => {
                assert!(allowed, "{origin} got in");
                WsClient::from_stream(ws).await.subscribe(&["order"]).await;
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert!(!allowed, "{origin} was refused");
                assert_eq!(response.status(), 403);
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("origin_not_allowed"), "{body}");
                assert!(!body.contains(&token[token.len() - 20..]));
            }
            Err(other) => panic!("{other}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_rest_api_takes_the_same_tokens() {
    let db = TestDb::migrated().await;
    let mut server = Server::start(&db, "demo", &[]).await;
    let url = server.served.http_url("/api/orders");
    let http = reqwest::Client::new();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // The browser app holds no data: it loads without a token, and its
    // API calls are what need one.
    for page in ["/", "/kitchen", "/app.js"] {
        let response = http.get(server.served.http_url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
    }
    let bad = server.used(&hs256(json!({"aud": "app", "exp": now() - 100})));
    let response = http.get(&url).bearer_auth(&bad).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        !response
            .text()
            .await
            .unwrap()
            .contains(&bad[bad.len() - 20..])
    );
    let good = server.used(&kitchen(60));
    let response = http
        .post(&url)
        .bearer_auth(&good)
        .json(&json!({"customer": "ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn rs256_from_jwks_and_es256_from_pem() {
    let db = grants_db().await;
    for (keys, private, algorithm, kid) in [
        (
            "tests/fixtures/rs256-jwks.json",
            "tests/fixtures/rs256-private.pem",
            Algorithm::RS256,
            Some("test-rsa"),
        ),
        (
            "tests/fixtures/es256-public.pem",
            "tests/fixtures/es256-private-pkcs8.pem",
            Algorithm::ES256,
            None,
        ),
    ] {
        let mut server = Server::start(&db, "serve", &["--jwt-public-keys", keys]).await;
        let pem = std::fs::read(private).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        let token = encode(
            &header,
            &json!({"role": "kitchen", "aud": "app", "exp": now() + 60}),
            &key,
        )
        .unwrap();
        let mut client = server.client(&token).await;
        client.subscribe(&["order"]).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn a_public_address_without_authentication_is_refused() {
    let exit = Launch::new(&["serve", "--listen", "0.0.0.0:0"])
        .database(&common::cluster().url("postgres"))
        .env_remove("PGBROADCAST_INSECURE")
        .run()
        .await;
    assert!(!exit.status.success());
    let stderr = exit.log;
    assert!(
        stderr.contains("--insecure") && stderr.contains("--jwt-secret"),
        "{stderr}"
    );
}

#[tokio::test]
async fn empty_or_short_secrets_stop_the_start() {
    let short = "only-31-bytes-of-secret-here-xx";
    for (flag, env, why) in [
        (Some(""), None, "empty"),
        (None, Some(""), "empty"),
        (Some(short), None, "is 31 bytes"),
        (None, Some(short), "is 31 bytes"),
    ] {
        let mut launch = Launch::new(&["serve", "--listen", "127.0.0.1:0"])
            .database(&common::cluster().url("postgres"))
            .env_remove("PGBROADCAST_JWT_SECRET");
        if let Some(secret) = flag {
            launch = launch.args(["--jwt-secret", secret]);
        }
        if let Some(secret) = env {
            launch = launch.env("PGBROADCAST_JWT_SECRET", secret);
        }
        // It must stop by itself, soon: `run` waits within the test's patience.
        let exit = launch.run().await;
        assert!(!exit.status.success(), "started with a weak secret ({why})");
        let stderr = exit.log;
        assert!(
            stderr.contains(why) && stderr.contains("PGBROADCAST_JWT_SECRET"),
            "{stderr}"
        );
        assert!(stderr.contains("openssl rand"), "{stderr}");
        assert!(!stderr.contains(short), "the secret was printed: {stderr}");
    }
}

/// An identity provider as the service meets it: a JWKS document served over
/// HTTPS with a certificate from a private CA (made with `openssl`), rotated
/// at will, counting the requests it answers.
mod provider {
    use std::convert::Infallible;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::Response;
    use hyper_util::rt::TokioIo;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use serde_json::json;

    use crate::common::pki::{Certificates, Key, openssl};

    /// A CA, a certificate for 127.0.0.1 signed by it, and signing keys.
    pub struct Pki {
        certs: Certificates,
    }

    impl Pki {
        /// Signing keys `a`, `b` and `c` (ES256).
        pub fn new() -> Pki {
            let certs = Certificates::new(Key::P256);
            for kid in ["a", "b", "c"] {
                openssl(
                    certs.dir(),
                    &[
                        "genpkey",
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-out",
                        &format!("{kid}.pem"),
                    ],
                );
            }
            Pki { certs }
        }

        pub fn ca(&self) -> PathBuf {
            self.certs.ca()
        }

        fn key(&self, kid: &str) -> EncodingKey {
            let pem = std::fs::read(self.certs.dir().join(format!("{kid}.pem"))).unwrap();
            EncodingKey::from_ec_pem(&pem).unwrap()
        }

        /// A kitchen token for audience `app`, signed with key `kid` and naming it.
        pub fn token(&self, kid: &str) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid.to_owned());
            let claims =
                json!({"sub": "u1", "role": "kitchen", "aud": "app", "exp": super::now() + 60});
            encode(&header, &claims, &self.key(kid)).unwrap()
        }

        /// The JWKS document publishing the public halves of `kids`.
        pub fn jwks(&self, kids: &[&str]) -> String {
            let keys = kids
                .iter()
                .map(|kid| {
                    let mut jwk = Jwk::from_encoding_key(&self.key(kid), Algorithm::ES256).unwrap();
                    jwk.common.key_id = Some((*kid).to_owned());
                    jwk
                })
                .collect();
            serde_json::to_string(&JwkSet { keys }).unwrap()
        }
    }

    /// The provider's HTTPS endpoint.
    pub struct JwksServer {
        addr: std::net::SocketAddr,
        /// The document served; `None`: 500.
        served: Arc<Mutex<Option<String>>>,
        requests: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        pub async fn start(pki: &Pki) -> JwksServer {
            let certs = CertificateDer::pem_file_iter(pki.certs.cert())
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pki.certs.key()).unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let served = Arc::new(Mutex::new(None::<String>));
            let requests = Arc::new(AtomicUsize::new(0));
            let (document, count) = (Arc::clone(&served), Arc::clone(&requests));
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, document, count) =
                        (acceptor.clone(), Arc::clone(&document), Arc::clone(&count));
                    tokio::spawn(async move {
                        // A client that does not trust the certificate gives up here.
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let answer = hyper::service::service_fn(move |_request| {
                            count.fetch_add(1, Ordering::SeqCst);
                            let response = match document.lock().unwrap().clone() {
                                Some(body) => Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body))),
                                None => Response::builder()
                                    .status(500)
                                    .body(Full::new(Bytes::from("down"))),
                            };
                            async move { Ok::<_, Infallible>(response.unwrap()) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), answer)
                            .await;
                    });
                }
            });
            JwksServer {
                addr,
                served,
                requests,
                task,
            }
        }

        pub fn url(&self) -> String {
            format!("https://{}/.well-known/jwks.json", self.addr)
        }

        /// Serves `document` from now on; `None`: answers 500.
        pub fn serve(&self, document: Option<String>) {
            *self.served.lock().unwrap() = document;
        }

        /// Requests answered so far.
        pub fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

/// A provider publishing key `a`, and the binary taking keys from it (its
/// CA trusted by `--jwks-ca-file`) with `extra` arguments.
async fn served_with_provider(
    db: &TestDb,
    extra: &[&str],
) -> (provider::Pki, provider::JwksServer, Server) {
    let pki = provider::Pki::new();
    let jwks = provider::JwksServer::start(&pki).await;
    jwks.serve(Some(pki.jwks(&["a"])));
    let (url, ca) = (jwks.url(), pki.ca());
    let from_provider = ["--jwks-url", &url, "--jwks-ca-file", ca.to_str().unwrap()];
    let server = Server::start(db, "serve", &[&from_provider[..], extra].concat()).await;
    (pki, jwks, server)
}

#[tokio::test]
async fn keys_from_a_jwks_url_rotate_and_unknown_kids_are_rate_limited() {
    let db = grants_db().await;
    let mut pg = db.client().await;
    // Beside the secret (HS256) and a key file with an ES256 key without kid.
    let (pki, jwks, mut server) = served_with_provider(
        &db,
        &["--jwt-public-keys", "tests/fixtures/es256-public.pem"],
    )
    .await;
    assert_eq!(jwks.requests(), 1);
    let mut by_a = server.client(&pki.token("a")).await;
    by_a.subscribe(&["order"]).await;
    // The secret's and the file's keys work beside the URL's.
    let mut by_secret = server.client(&kitchen(60)).await;
    by_secret.subscribe(&["order"]).await;
    let file_key = std::fs::read("tests/fixtures/es256-private-pkcs8.pem").unwrap();
    let from_file = encode(
        &Header::new(Algorithm::ES256),
        &json!({"role": "kitchen", "aud": "app", "exp": now() + 60}),
        &EncodingKey::from_ec_pem(&file_key).unwrap(),
    )
    .unwrap();
    let mut by_file = server.client(&from_file).await;
    by_file.subscribe(&["order"]).await;
    assert_eq!(jwks.requests(), 1);

    // The provider rotates to b: the first token naming b makes the service fetch again.
    jwks.serve(Some(pki.jwks(&["b"])));
    let mut by_b = server.client(&pki.token("b")).await;
    by_b.subscribe(&["order"]).await;
    assert_eq!(jwks.requests(), 2);

    // a is gone with that fetch; c was never published. Neither is accepted,
    // and neither makes the service fetch again within 30 s of the last time.
    refused(&mut server, &pki.token("a"), UNKNOWN_KID).await;
    refused(&mut server, &pki.token("c"), UNKNOWN_KID).await;
    refused(&mut server, &pki.token("c"), UNKNOWN_KID).await;
    assert_eq!(jwks.requests(), 2);

    // Everyone authenticated gets signals.
    let txid = write(&mut pg, "insert into orders values (1)").await;
    for client in [&mut by_a, &mut by_secret, &mut by_file, &mut by_b] {
        assert_eq!(client.next().await["payload"]["txid"], txid);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_failed_jwks_fetch_keeps_the_last_good_keys_and_says_why() {
    let db = grants_db().await;
    let (pki, jwks, mut server) = served_with_provider(&db, &[]).await;
    // The provider fails just as a new key is in use.
    jwks.serve(None);
    refused(&mut server, &pki.token("b"), UNKNOWN_KID).await;
    assert_eq!(jwks.requests(), 2);
    let mut client = server.client(&pki.token("a")).await;
    client.subscribe(&["order"]).await;
    // The warning about the failed fetch.
    server
        .served
        .log_line(&["keeping the last good ones", "500 Internal Server Error"])
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_jwks_url_that_cannot_be_used_stops_the_start() {
    let pki = provider::Pki::new();
    let jwks = provider::JwksServer::start(&pki).await;
    let ca = pki.ca();
    let url = jwks.url();
    // The service must stop by itself, soon: `run` waits within the test's patience.
    let start = |args: Vec<&str>| {
        let launch = Launch::new(&["serve", "--listen", "127.0.0.1:0", "--jwt-audience", "app"])
            .args(args)
            .database(&common::cluster().url("postgres"));
        async move {
            let exit = launch.run().await;
            assert!(!exit.status.success(), "the service started anyway");
            exit.log
        }
    };
    // The provider is down.
    jwks.serve(None);
    let stderr = start(vec![
        "--jwks-url",
        &url,
        "--jwks-ca-file",
        ca.to_str().unwrap(),
    ])
    .await;
    assert!(
        stderr.contains(&format!("cannot fetch JWT keys from {url}"))
            && stderr.contains("500 Internal Server Error"),
        "{stderr}"
    );
    // The provider's certificate is not trusted.
    jwks.serve(Some(pki.jwks(&["a"])));
    let stderr = start(vec!["--jwks-url", &url]).await;
    assert!(
        stderr.contains("cannot fetch JWT keys") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert_eq!(jwks.requests(), 1);
    // Plain http to another machine.
    let stderr = start(vec!["--jwks-url", "http://192.0.2.1/jwks.json"]).await;
    assert!(stderr.contains("must be https"), "{stderr}");
}
