//! Public keys published at a URL as a JWKS document, the way hosted identity
//! providers publish and rotate them. Fetched at start (a failure stops the
//! start), again every `--jwks-refresh`, and when a token names a `kid` no
//! key has — at most once per [`MIN_REFETCH`], so made-up `kid`s cannot make
//! the service hammer the provider. One fetch runs at a time; sessions that
//! need one meanwhile wait for it. A failed fetch keeps the last good keys.
//!
//! Verification reads the current key set through a lock held only to clone
//! an `Arc`, so it never waits for a fetch.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, HOST, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::{Key, keys_from_jwks};

/// Least time between two fetches caused by unknown `kid`s.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

/// Longest a fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest JWKS document read.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No TCP connection to the server.
    #[error("cannot connect to {authority}")]
    Connect {
        /// The `host:port` connected to.
        authority: String,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS with {host}")]
    Tls {
        /// The host whose certificate was checked.
        host: String,
        /// Why the handshake failed.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP")]
    Http(#[from] hyper::Error),
    /// The GET request could not be built from the URL.
    #[error("cannot build the request")]
    Request(#[from] hyper::http::Error),
    /// The server answered with a status other than 200.
    #[error("the server answered {status}{}", .location.as_ref().map(|l| format!(", pointing to {l} (configure that URL)")).unwrap_or_default())]
    Status {
        /// The status received.
        status: StatusCode,
        /// The `Location` header of a redirect, if any.
        location: Option<String>,
    },
    /// The body could not be read.
    #[error("reading the document")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body exceeds [`MAX_DOCUMENT_BYTES`].
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The body is not JSON of a JWKS document.
    #[error("not a JWKS document")]
    Json(#[from] serde_json::Error),
    /// The document holds no key this server can use; the text says why.
    #[error("the document has no usable key: {0}")]
    NoKeys(String),
    /// The fetch took longer than the given time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A host without the brackets of an IPv6 literal.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// One fetch of the document.
pub type Fetch = Pin<Box<dyn Future<Output = Result<Bytes, FetchError>> + Send>>;

/// Fetches the document anew on each call.
pub type Source = Box<dyn Fn() -> Fetch + Send + Sync>;

/// GET `uri` over TLS configured by `tls` (or plain, for http to loopback),
/// bounded by [`FETCH_TIMEOUT`].
pub fn https_source(uri: Uri, tls: rustls::ClientConfig) -> Source {
    let mut tls = tls;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
    Box::new(move || {
        let (uri, tls) = (uri.clone(), tls.clone());
        Box::pin(async move {
            tokio::time::timeout(FETCH_TIMEOUT, get(&uri, &tls))
                .await
                .map_err(|_| FetchError::Timeout(FETCH_TIMEOUT))?
        })
    })
}

async fn get(uri: &Uri, tls: &tokio_rustls::TlsConnector) -> Result<Bytes, FetchError> {
    let host = bare(uri.host().unwrap_or_default()).to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| FetchError::Connect {
            authority: format!("{host}:{port}"),
            source,
        })?;
    if !https {
        return exchange(tcp, uri).await;
    }
    let tls_error = |source| FetchError::Tls {
        host: host.clone(),
        source,
    };
    let name = ServerName::try_from(host.clone())
        .map_err(|e| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let stream = tls.connect(name, tcp).await.map_err(tls_error)?;
    exchange(stream, uri).await
}

async fn exchange<S>(stream: S, uri: &Uri) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; gone with this function, on every path.
    let _connection = AbortOnDropHandle::new(tokio::spawn(connection));
    let authority = uri.authority().map_or("", |a| a.as_str());
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, authority)
        .header(ACCEPT, "application/jwk-set+json, application/json")
        .header(
            USER_AGENT,
            concat!("pgbroadcast/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    if !status.is_success() {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        return Err(FetchError::Status { status, location });
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Body(e)
            }
        })?;
    Ok(body.to_bytes())
}

/// The keys at one URL, with what it takes to fetch them again.
pub(super) struct Remote {
    /// For logs.
    url: String,
    source: Source,
    keys: RwLock<Arc<Vec<Key>>>,
    /// Held while fetching: one fetch at a time. Inside: when the last
    /// fetch for an unknown `kid` started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    /// Fetches the keys for the first time.
    pub(super) async fn start(url: String, source: Source) -> Result<Arc<Remote>, FetchError> {
        let keys = fetch(&url, &source).await?;
        tracing::info!(%url, keys = keys.len(), "JWT keys fetched");
        Ok(Arc::new(Remote {
            url,
            source,
            keys: RwLock::new(Arc::new(keys)),
            fetching: tokio::sync::Mutex::new(None),
        }))
    }

    /// The current keys.
    pub(super) fn keys(&self) -> Arc<Vec<Key>> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn knows(&self, kid: &str) -> bool {
        self.keys().iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// A token names `kid`, which no key has: fetches again, unless the last
    /// fetch for that reason started less than [`MIN_REFETCH`] ago. Whether
    /// `kid` is known afterwards.
    pub(super) async fn refresh_for(&self, kid: &str) -> bool {
        let mut last = self.fetching.lock().await;
        // Someone else's fetch, awaited just now, may have brought it.
        if self.knows(kid) {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            tracing::debug!(
                url = %self.url,
                "a token names an unknown kid; not fetching again within {MIN_REFETCH:?} of the last such fetch"
            );
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_and_keep("a token names an unknown kid").await;
        self.knows(kid)
    }

    /// Fetches again now (the periodic refresh).
    pub(super) async fn refresh(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch_and_keep("periodic refresh").await;
    }

    /// Replaces the keys with fetched ones; on failure keeps them and says why.
    async fn fetch_and_keep(&self, why: &str) {
        match fetch(&self.url, &self.source).await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), why, "JWT keys fetched");
                let keys = Arc::new(keys);
                match self.keys.write() {
                    Ok(mut current) => *current = keys,
                    Err(poisoned) => *poisoned.into_inner() = keys,
                }
            }
            Err(err) => tracing::warn!(
                url = %self.url,
                why,
                error = %crate::logging::error_chain(&err),
                "JWT keys could not be fetched; keeping the last good ones"
            ),
        }
    }
}

async fn fetch(url: &str, source: &Source) -> Result<Vec<Key>, FetchError> {
    let document = source().await?;
    let set: JwkSet = serde_json::from_slice(&document)?;
    let (keys, skipped) = keys_from_jwks(&set);
    for problem in &skipped {
        tracing::warn!(%url, problem, "a key in the JWKS document is skipped");
    }
    if keys.is_empty() {
        return Err(FetchError::NoKeys(if skipped.is_empty() {
            "expected RS256 or ES256 signing keys".into()
        } else {
            skipped.join("; ")
        }));
    }
    Ok(keys)
}

/// Fetches the keys every `period` for as long as they are in use.
pub(super) async fn refresh_every(remote: Weak<Remote>, period: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(remote) = remote.upgrade() else {
            return;
        };
        remote.refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A JWKS document with the test RSA key under each of `kids`.
    fn document(kids: &[&str]) -> String {
        let mut set: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/rs256-jwks.json")).unwrap();
        let key = set["keys"][0].clone();
        set["keys"] = kids
            .iter()
            .map(|kid| {
                let mut key = key.clone();
                key["kid"] = (*kid).into();
                key
            })
            .collect();
        set.to_string()
    }

    /// A source serving whatever `served` holds (an error for `None`), counting fetches.
    struct Scripted {
        served: Arc<Mutex<Option<String>>>,
        fetches: Arc<AtomicUsize>,
        /// When set, each fetch waits for a permit.
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl Scripted {
        fn new(kids: &[&str]) -> Scripted {
            Scripted {
                served: Arc::new(Mutex::new(Some(document(kids)))),
                fetches: Arc::new(AtomicUsize::new(0)),
                gate: None,
            }
        }

        fn serve(&self, kids: Option<&[&str]>) {
            *self.served.lock().unwrap() = kids.map(document);
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn source(&self) -> Source {
            let (served, fetches, gate) = (
                Arc::clone(&self.served),
                Arc::clone(&self.fetches),
                self.gate.clone(),
            );
            Box::new(move || {
                let (served, fetches, gate) =
                    (Arc::clone(&served), Arc::clone(&fetches), gate.clone());
                Box::pin(async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    if let Some(gate) = gate {
                        gate.acquire().await.unwrap().forget();
                    }
                    let served = served.lock().unwrap().clone();
                    served.map(Bytes::from).ok_or(FetchError::Status {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        location: None,
                    })
                })
            })
        }
    }

    fn kids(remote: &Remote) -> Vec<String> {
        remote.keys().iter().filter_map(|k| k.kid.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_fetches_at_most_once_per_window() {
        let scripted = Scripted::new(&["a"]);
        let remote = Remote::start("test".into(), scripted.source())
            .await
            .unwrap();
        assert_eq!((scripted.fetches(), kids(&remote)), (1, vec!["a".into()]));
        // Known kids never fetch.
        assert!(remote.refresh_for("a").await);
        assert_eq!(scripted.fetches(), 1);
        // Rotated: b is fetched on demand.
        scripted.serve(Some(&["a", "b"]));
        assert!(remote.refresh_for("b").await);
        assert_eq!(scripted.fetches(), 2);
        // c is published too, but the window since b's fetch is still open.
        scripted.serve(Some(&["b", "c"]));
        assert!(!remote.refresh_for("c").await);
        assert!(!remote.refresh_for("made-up").await);
        tokio::time::advance(MIN_REFETCH - Duration::from_millis(1)).await;
        assert!(!remote.refresh_for("c").await);
        assert_eq!(scripted.fetches(), 2);
        // Once the window has passed, one more fetch.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(remote.refresh_for("c").await);
        assert_eq!(scripted.fetches(), 3);
        assert_eq!(kids(&remote), vec!["b".to_owned(), "c".into()]);
        assert!(!remote.refresh_for("made-up").await);
        assert_eq!(scripted.fetches(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_waiting_for_a_kid_share_one_fetch() {
        let mut scripted = Scripted::new(&["a"]);
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        scripted.gate = Some(Arc::clone(&gate));
        let remote = Remote::start("test".into(), scripted.source())
            .await
            .unwrap();
        scripted.serve(Some(&["a", "b"]));
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let remote = Arc::clone(&remote);
                tokio::spawn(async move { remote.refresh_for("b").await })
            })
            .collect();
        // The paused clock moves only once every task is parked: one in the
        // fetch (held at the gate), the others waiting for it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(scripted.fetches(), 2);
        // Verification meanwhile reads the keys without waiting.
        assert_eq!(kids(&remote), vec!["a".to_owned()]);
        gate.add_permits(1);
        for task in waiting {
            assert!(task.await.unwrap());
        }
        assert_eq!(scripted.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_fetched_again_every_period_while_in_use() {
        let scripted = Scripted::new(&["a"]);
        let remote = Remote::start("test".into(), scripted.source())
            .await
            .unwrap();
        let period = Duration::from_secs(600);
        let task = tokio::spawn(refresh_every(Arc::downgrade(&remote), period));
        scripted.serve(Some(&["b"]));
        tokio::time::sleep(period - Duration::from_secs(1)).await;
        assert_eq!((scripted.fetches(), kids(&remote)), (1, vec!["a".into()]));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!((scripted.fetches(), kids(&remote)), (2, vec!["b".into()]));
        tokio::time::sleep(period).await;
        assert_eq!(scripted.fetches(), 3);
        // A periodic fetch does not use up the window for unknown kids.
        scripted.serve(Some(&["c"]));
        assert!(remote.refresh_for("c").await);
        assert_eq!(scripted.fetches(), 4);
        // Without users, the refresh stops.
        drop(remote);
        tokio::time::sleep(period).await;
        assert!(task.is_finished());
        assert_eq!(scripted.fetches(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_keeps_the_last_good_keys() {
        let scripted = Scripted::new(&["a"]);
        let remote = Remote::start("test".into(), scripted.source())
            .await
            .unwrap();
        // The server fails, then serves something that is no JWKS, then no usable key.
        let bad = [
            None,
            Some("<html>".to_owned()),
            Some(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "b"}]}"#.to_owned()),
        ];
        for served in bad {
            *scripted.served.lock().unwrap() = served;
            assert!(!remote.refresh_for("b").await);
            remote.refresh().await;
            assert_eq!(kids(&remote), vec!["a".to_owned()]);
            tokio::time::advance(MIN_REFETCH).await;
        }
        assert_eq!(scripted.fetches(), 7);
    }

    #[tokio::test]
    async fn the_first_fetch_must_succeed() {
        let scripted = Scripted::new(&["a"]);
        scripted.serve(None);
        let err = Remote::start("test".into(), scripted.source())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("503"), "{err}");
        scripted.serve(Some(&[]));
        let err = Remote::start("test".into(), scripted.source())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("no usable key"), "{err}");
    }
}
