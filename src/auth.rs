//! Who a client is and what it may see. [`Authenticator`] validates JWTs
//! (HS256 with a shared secret; RS256/ES256 with public keys from a PEM or
//! JWKS file and from a JWKS URL, see [`jwks`]); [`Authorizer`] asks the
//! database, through `broadcast.authorize(claims, channel, entity_id)`,
//! whether those claims may subscribe to a topic. Tokens are never logged and
//! never echoed.

pub mod jwks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::AuthArgs;
use crate::wire::Topic;

/// Why security settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The key file could not be read.
    #[error("cannot read JWT public keys from {path}")]
    Read {
        /// The file named by `--jwt-public-keys`.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file holds no key this server can use.
    #[error(
        "{path}: no usable public key (expected PEM \"PUBLIC KEY\" blocks of RSA or EC P-256 keys, or a JWKS document)"
    )]
    NoKeys {
        /// The file named by `--jwt-public-keys`.
        path: PathBuf,
    },
    /// A key in the file could not be parsed.
    #[error("{path}: {message}")]
    BadKey {
        /// The file named by `--jwt-public-keys`.
        path: PathBuf,
        /// What is wrong with the key.
        message: String,
    },
    /// The secret is set but empty.
    #[error(
        "the JWT secret (--jwt-secret / PGBROADCAST_JWT_SECRET) is set but empty, which would turn authentication off: set a random secret of at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`), or unset it"
    )]
    EmptySecret,
    /// The secret is too short for HS256.
    #[error(
        "the JWT secret (--jwt-secret / PGBROADCAST_JWT_SECRET) is {len} bytes; HS256 needs at least {MIN_SECRET_BYTES} (RFC 7518 section 3.2): use a random secret such as `openssl rand -base64 48`"
    )]
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
    },
    /// `--jwks-url` is not a usable HTTPS URL.
    #[error("--jwks-url {url}: {message}")]
    JwksUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS client for the JWKS URL could not be set up.
    #[error("TLS for --jwks-url")]
    JwksTls(#[source] crate::tls::Error),
    /// The first fetch of the JWKS document failed.
    #[error(
        "cannot fetch JWT keys from {url} (--jwks-url; the first fetch must succeed, later failures keep the last good keys)"
    )]
    JwksFetch {
        /// The URL as given.
        url: String,
        /// Why the fetch failed.
        #[source]
        source: jwks::FetchError,
    },
}

/// Shortest HS256 secret accepted: the hash size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token was refused. The messages name the reason, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The `exp` claim has passed.
    #[error("the token has expired")]
    Expired,
    /// The `nbf` claim is in the future.
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    /// The `iat` claim is in the future.
    #[error("the token's iat (issued at) is in the future")]
    IssuedInFuture,
    /// A time claim (named here) is not a number of seconds.
    #[error("the token's {0} claim is not a NumericDate (a number of seconds since 1970)")]
    BadTimeClaim(&'static str),
    /// The signature does not match any configured key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The `aud` claim does not name the configured audience.
    #[error("the token is not for this audience")]
    WrongAudience,
    /// The `iss` claim does not name the configured issuer.
    #[error("the token is not from the expected issuer")]
    WrongIssuer,
    /// The token has no `exp` claim.
    #[error("the token has no exp claim; exp is required")]
    NoExpiry,
    /// A claim the server is configured to require (named here) is absent.
    #[error("the token has no {0} claim, which this server requires")]
    MissingClaim(&'static str),
    /// The header's `alg` is not one the configured keys verify.
    #[error("the token's algorithm is not accepted here")]
    WrongAlgorithm,
    /// The header's `kid` names no configured key.
    #[error("the token's signing key (kid) is not known here")]
    UnknownKey,
    /// The token cannot be decoded as a JWT.
    #[error("the token is malformed")]
    Malformed,
}

/// A verified token's claims.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The payload, as passed to `broadcast.authorize`.
    pub claims: Value,
    /// `exp`, seconds since the Unix epoch (saturated at `u64::MAX`).
    pub expires_at: u64,
}

impl Identity {
    /// Time left until `exp`.
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(unix_now()))
    }
}

/// Seconds since the Unix epoch (0 for a clock set before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies JWTs against the configured keys.
pub struct Authenticator {
    /// From the secret and the public key file.
    keys: Vec<Key>,
    /// From the JWKS URL.
    remote: Option<Arc<jwks::Remote>>,
    audience: Option<String>,
    issuer: Option<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`, in seconds.
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys or secrets.
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.len())
            .field("remote_keys", &self.remote.as_ref().map(|r| r.keys().len()))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Authenticator {
    /// `None` when no secret, public keys or JWKS URL are configured. A
    /// secret that is set must be at least [`MIN_SECRET_BYTES`] long: an
    /// empty one would silently turn authentication off. A JWKS URL is
    /// fetched now (an error if that fails), then refreshed in the background
    /// for as long as the authenticator lives.
    pub async fn new(args: &AuthArgs) -> Result<Option<Authenticator>, ConfigError> {
        let mut keys = Vec::new();
        if let Some(secret) = &args.jwt_secret {
            if secret.is_empty() {
                return Err(ConfigError::EmptySecret);
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::ShortSecret { len: secret.len() });
            }
            keys.push(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(path) = &args.jwt_public_keys {
            keys.extend(load_public_keys(path)?);
        }
        let remote = match &args.jwks_url {
            Some(url) => {
                let uri = crate::config::jwks_uri(url).map_err(|message| ConfigError::JwksUrl {
                    url: url.clone(),
                    message,
                })?;
                let tls = crate::tls::client_config(args.jwks_ca_file.as_deref())
                    .map_err(ConfigError::JwksTls)?;
                let remote = jwks::Remote::start(url.clone(), jwks::https_source(uri, tls))
                    .await
                    .map_err(|source| ConfigError::JwksFetch {
                        url: url.clone(),
                        source,
                    })?;
                tokio::spawn(jwks::refresh_every(
                    Arc::downgrade(&remote),
                    args.jwks_refresh,
                ));
                Some(remote)
            }
            None => None,
        };
        if keys.is_empty() && remote.is_none() {
            return Ok(None);
        }
        Ok(Some(Authenticator {
            keys,
            remote,
            audience: args.jwt_audience.clone(),
            issuer: args.jwt_issuer.clone(),
            leeway: args.jwt_leeway.as_secs(),
        }))
    }

    /// Verifies `token` now (see [`Authenticator::verify_at`]). A token
    /// naming a `kid` that no key has makes the JWKS URL be fetched again
    /// (at most once per [`jwks::MIN_REFETCH`]), and waits for that.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match self.verify_at(token, unix_now()) {
            Err(AuthError::UnknownKey) => {
                let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
                match (&self.remote, kid) {
                    (Some(remote), Some(kid)) if remote.refresh_for(&kid).await => {
                        self.verify_at(token, unix_now())
                    }
                    _ => Err(AuthError::UnknownKey),
                }
            }
            verified => verified,
        }
    }

    /// Verifies `token` as of `now` (Unix seconds) with the keys at hand: the
    /// signature; `exp` (required), `nbf` and `iat` (when present) within the
    /// leeway; and `aud`/`iss` when configured. [`AuthError::UnknownKey`]
    /// when the token names a `kid` that no key has.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let remote = self.remote.as_ref().map(|r| r.keys());
        let of_algorithm: Vec<&Key> = self
            .keys
            .iter()
            .chain(remote.iter().flat_map(|keys| keys.iter()))
            .filter(|k| k.algorithm == header.alg)
            .collect();
        let candidates: Vec<&Key> = of_algorithm
            .iter()
            .copied()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .collect();
        // A kid no key has: keys may have been rotated at the JWKS URL.
        let unknown_kid = header.kid.is_some()
            && (self.remote.is_some() || !of_algorithm.is_empty())
            && !candidates.iter().any(|k| k.kid == header.kid);
        if candidates.is_empty() {
            return Err(if unknown_kid {
                AuthError::UnknownKey
            } else {
                AuthError::WrongAlgorithm
            });
        }
        let mut validation = Validation::new(header.alg);
        // Times are checked below, with arithmetic that cannot overflow.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // A configured audience or issuer must be named, not only match when present.
        let mut required = Vec::new();
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let expires_at = check_times(&data.claims, now, self.leeway)?;
                    return Ok(Identity {
                        claims: data.claims,
                        expires_at,
                    });
                }
                Err(err) => {
                    last = match err.kind() {
                        ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                        ErrorKind::InvalidIssuer => return Err(AuthError::WrongIssuer),
                        ErrorKind::MissingRequiredClaim(claim) => {
                            return Err(match claim.as_str() {
                                "aud" => AuthError::MissingClaim("aud"),
                                "iss" => AuthError::MissingClaim("iss"),
                                _ => AuthError::Malformed,
                            });
                        }
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        _ => AuthError::Malformed,
                    }
                }
            }
        }
        // Only keys without a kid were tried, and none fits: the token's own
        // key, named by its kid, may be new at the JWKS URL.
        if last == AuthError::BadSignature && unknown_kid && self.remote.is_some() {
            return Err(AuthError::UnknownKey);
        }
        Err(last)
    }
}

/// Checks `exp` (required), `nbf` and `iat` against `now` with `leeway`
/// seconds of clock skew; returns `exp`.
fn check_times(claims: &Value, now: u64, leeway: u64) -> Result<u64, AuthError> {
    let exp = numeric_date(claims, "exp", Round::Down)?.ok_or(AuthError::NoExpiry)?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    let latest = now.saturating_add(leeway);
    if numeric_date(claims, "nbf", Round::Up)?.is_some_and(|nbf| nbf > latest) {
        return Err(AuthError::NotYetValid);
    }
    if numeric_date(claims, "iat", Round::Up)?.is_some_and(|iat| iat > latest) {
        return Err(AuthError::IssuedInFuture);
    }
    Ok(exp)
}

/// Which way a fractional NumericDate is rounded: toward the stricter reading.
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// A NumericDate claim (RFC 7519 §2: seconds since 1970, possibly
/// fractional) as whole seconds; before 1970 reads as 0, beyond `u64` as
/// `u64::MAX`. `None` when absent or null.
fn numeric_date(
    claims: &Value,
    name: &'static str,
    round: Round,
) -> Result<Option<u64>, AuthError> {
    let number = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(AuthError::BadTimeClaim(name)),
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(Some(seconds));
    }
    if number.is_i64() {
        // Negative: before 1970.
        return Ok(Some(0));
    }
    let seconds = number.as_f64().ok_or(AuthError::BadTimeClaim(name))?;
    let seconds = match round {
        Round::Down => seconds.floor(),
        Round::Up => seconds.ceil(),
    };
    // `as` saturates: negative to 0, too large to u64::MAX.
    Ok(Some(seconds as u64))
}

fn load_public_keys(path: &Path) -> Result<Vec<Key>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| ConfigError::BadKey {
        path: path.to_owned(),
        message,
    };
    let mut keys = Vec::new();
    if text.trim_start().starts_with('{') {
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a JWKS document: {e}")))?;
        let (usable, problems) = keys_from_jwks(&set);
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        keys = usable;
    } else {
        for block in text.split_inclusive("-----END PUBLIC KEY-----") {
            let Some(start) = block.find("-----BEGIN PUBLIC KEY-----") else {
                continue;
            };
            let pem = &block.as_bytes()[start..];
            if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                keys.push(Key {
                    kid: None,
                    algorithm: Algorithm::RS256,
                    key,
                });
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                keys.push(Key {
                    kid: None,
                    algorithm: Algorithm::ES256,
                    key,
                });
            } else {
                return Err(bad("a PUBLIC KEY block is neither RSA nor EC".into()));
            }
        }
    }
    if keys.is_empty() {
        return Err(ConfigError::NoKeys {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

/// The RS256 and ES256 signing keys of a JWKS document; keys for other
/// algorithms or for encryption are passed over, broken ones are named.
fn keys_from_jwks(set: &JwkSet) -> (Vec<Key>, Vec<String>) {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for jwk in &set.keys {
        let name = jwk.common.key_id.as_deref().unwrap_or("without kid");
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256) | None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256) | None, AlgorithmParameters::EllipticCurve(ec))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (Some(KeyAlgorithm::RS256 | KeyAlgorithm::ES256), _) => {
                problems.push(format!(
                    "key {name}: its parameters do not fit its alg (RS256 needs an RSA key, ES256 a P-256 key)"
                ));
                continue;
            }
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            }),
            Err(e) => problems.push(format!("key {name}: {e}")),
        }
    }
    (keys, problems)
}

/// Asks the database whether claims may subscribe to a topic.
#[derive(Clone)]
pub struct Authorizer {
    pool: deadpool_postgres::Pool,
}

/// Why `broadcast.authorize` could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// No pooled connection could be had.
    #[error("no database connection for authorization")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The query failed.
    #[error("broadcast.authorize failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// The query did not answer within the given time.
    #[error("broadcast.authorize did not answer within {0:?}")]
    Timeout(Duration),
}

/// How long one authorization round trip may take.
const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(5);

impl Authorizer {
    /// An authorizer that asks through connections of `pool`.
    pub fn new(pool: deadpool_postgres::Pool) -> Authorizer {
        Authorizer { pool }
    }

    /// `broadcast.authorize(claims, channel, entity_id)` for every topic, in
    /// one round trip, bounded in time.
    pub async fn allowed(
        &self,
        claims: &Value,
        topics: &[Topic],
    ) -> Result<Vec<bool>, AuthorizeError> {
        tokio::time::timeout(AUTHORIZE_TIMEOUT, self.ask(claims, topics))
            .await
            .map_err(|_| AuthorizeError::Timeout(AUTHORIZE_TIMEOUT))?
    }

    async fn ask(&self, claims: &Value, topics: &[Topic]) -> Result<Vec<bool>, AuthorizeError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "select coalesce(broadcast.authorize($1::jsonb, t.channel, t.entity), false) \
                 from unnest($2::text[], $3::text[]) with ordinality as t(channel, entity, n) order by t.n",
            )
            .await?;
        let channels: Vec<&str> = topics.iter().map(|t| t.channel.as_str()).collect();
        let entities: Vec<Option<&str>> = topics.iter().map(|t| t.entity.as_deref()).collect();
        let rows = client
            .query(&statement, &[claims, &channels, &entities])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Everything the WebSocket and REST edges need to know about security.
#[derive(Clone)]
pub struct Security {
    /// Verifies tokens; `None` when authentication is off.
    pub authenticator: Option<std::sync::Arc<Authenticator>>,
    /// Asks `broadcast.authorize`; `None` when authentication is off.
    pub authorizer: Option<Authorizer>,
    /// Browser origins allowed to open a WebSocket; empty: any.
    pub allowed_origins: Vec<String>,
    /// How long a connection may take to send its first token.
    pub auth_timeout: Duration,
    /// How long before a token's expiry `auth_expiring` is sent.
    pub expiry_notice: Duration,
    /// How often the authorization of held topics is asked again.
    pub recheck: Duration,
}

impl Default for Security {
    /// No authentication (the loopback default).
    fn default() -> Self {
        Security {
            authenticator: None,
            authorizer: None,
            allowed_origins: Vec::new(),
            auth_timeout: Duration::from_secs(10),
            expiry_notice: Duration::from_secs(30),
            recheck: Duration::from_secs(60),
        }
    }
}

impl Security {
    /// Whether clients must authenticate.
    pub fn enabled(&self) -> bool {
        self.authenticator.is_some()
    }
}

/// Query parameter names that carry credentials, compared after
/// percent-decoding, trimmed, case-insensitively, with `-` read as `_`.
pub const CREDENTIAL_PARAMETERS: [&str; 10] = [
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "jwt",
    "auth",
    "authorization",
    "bearer",
    "api_key",
    "apikey",
];

/// Whether a URL query carries a credential: a parameter named like one (see
/// [`CREDENTIAL_PARAMETERS`]; with or without a value, however often), or a
/// JWT as any parameter's name or value. Refused, since URLs are logged.
pub fn token_in_query(query: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    // `;` separates parameters for some servers and proxies too.
    query.split(';').any(|part| {
        form_urlencoded::parse(part.as_bytes()).any(|(name, value)| {
            let normalized = name.trim().to_ascii_lowercase().replace('-', "_");
            CREDENTIAL_PARAMETERS.contains(&normalized.as_str())
                || looks_like_jwt(&name)
                || looks_like_jwt(&value)
        })
    })
}

/// A compact JWS or JWE (`eyJ…` header, 3 or 5 base64url parts), bare or after `Bearer `.
fn looks_like_jwt(text: &str) -> bool {
    let text = text.trim();
    let text = match text.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => text[7..].trim_start(),
        _ => text,
    };
    let parts: Vec<&str> = text.split('.').collect();
    text.starts_with("eyJ")
        && matches!(parts.len(), 3 | 5)
        && parts[0].len() > 3
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-unit-test-secret-of-at-least-32-bytes";

    /// [`Authenticator::new`] for tests without a runtime of their own.
    fn authenticator(args: &AuthArgs) -> Result<Option<Authenticator>, ConfigError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(Authenticator::new(args))
    }

    fn with_secret(secret: &str) -> AuthArgs {
        AuthArgs {
            jwt_secret: Some(secret.into()),
            ..AuthArgs::default()
        }
    }

    fn now() -> u64 {
        unix_now()
    }

    fn token(secret: &str, claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_checks_signature_expiry_audience_issuer() {
        let auth = authenticator(&AuthArgs {
            jwt_audience: Some("app".into()),
            jwt_issuer: Some("me".into()),
            ..with_secret(SECRET)
        })
        .unwrap()
        .unwrap();
        let claims = |extra: Value| {
            let mut c =
                serde_json::json!({"sub": "u1", "exp": now() + 60, "aud": "app", "iss": "me"});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            c
        };
        let id = auth
            .verify_at(&token(SECRET, claims(serde_json::json!({}))), now())
            .unwrap();
        assert_eq!(id.claims["sub"], "u1");
        assert!(id.remaining() > Duration::from_secs(50));
        let err = |t: String| auth.verify_at(&t, now()).unwrap_err();
        assert_eq!(
            err(token("other", claims(serde_json::json!({})))),
            AuthError::BadSignature
        );
        assert_eq!(
            err(token(
                SECRET,
                claims(serde_json::json!({"exp": now() - 60}))
            )),
            AuthError::Expired
        );
        assert_eq!(
            err(token(SECRET, claims(serde_json::json!({"exp": null})))),
            AuthError::NoExpiry
        );
        assert_eq!(
            err(token(SECRET, claims(serde_json::json!({"aud": "else"})))),
            AuthError::WrongAudience
        );
        assert_eq!(
            err(token(SECRET, claims(serde_json::json!({"iss": "else"})))),
            AuthError::WrongIssuer
        );
        // Configured aud and iss are required, not only checked when present.
        assert_eq!(
            err(token(SECRET, claims(serde_json::json!({"aud": null})))),
            AuthError::MissingClaim("aud")
        );
        assert_eq!(
            err(token(SECRET, claims(serde_json::json!({"iss": null})))),
            AuthError::MissingClaim("iss")
        );
        assert_eq!(err("not.a.jwt".into()), AuthError::Malformed);
        // An error never carries the token.
        let t = token("other", claims(serde_json::json!({})));
        assert!(!err(t.clone()).to_string().contains(&t[..20]));
    }

    #[test]
    fn exp_nbf_and_iat_are_checked_within_the_leeway() {
        const NOW: u64 = 1_700_000_000;
        let auth = |leeway: u64| {
            authenticator(&AuthArgs {
                jwt_leeway: Duration::from_secs(leeway),
                ..with_secret(SECRET)
            })
            .unwrap()
            .unwrap()
        };
        let check = |leeway: u64, claims: Value| {
            auth(leeway)
                .verify_at(&token(SECRET, claims), NOW)
                .map(|id| id.expires_at)
        };
        let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        // exp: valid until exp + leeway.
        assert!(check(0, json!({"exp": NOW + 1})).is_ok());
        assert_eq!(check(0, json!({"exp": NOW})), Err(AuthError::Expired));
        assert!(check(5, json!({"exp": NOW - 4})).is_ok());
        assert_eq!(check(5, json!({"exp": NOW - 5})), Err(AuthError::Expired));
        // nbf: valid from nbf - leeway.
        let valid_from = |nbf: u64| json!({"exp": NOW + 3600, "nbf": nbf});
        assert!(check(0, valid_from(NOW)).is_ok());
        assert_eq!(check(0, valid_from(NOW + 1)), Err(AuthError::NotYetValid));
        assert!(check(5, valid_from(NOW + 5)).is_ok());
        assert_eq!(check(5, valid_from(NOW + 6)), Err(AuthError::NotYetValid));
        assert_eq!(
            check(5, valid_from(NOW + 3600)),
            Err(AuthError::NotYetValid)
        );
        // iat: not after now + leeway.
        let issued = |iat: u64| json!({"exp": NOW + 3600, "iat": iat});
        assert!(check(5, issued(NOW - 3600)).is_ok());
        assert!(check(5, issued(NOW + 5)).is_ok());
        assert_eq!(check(5, issued(NOW + 6)), Err(AuthError::IssuedInFuture));
        assert_eq!(check(5, issued(u64::MAX)), Err(AuthError::IssuedInFuture));
        // Fractions (RFC 7519 allows them) round toward the stricter reading.
        assert_eq!(
            check(0, json(&format!(r#"{{"exp": {NOW}.9}}"#))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check(
                0,
                json(&format!(r#"{{"exp": {}, "nbf": {NOW}.1}}"#, NOW + 60))
            ),
            Err(AuthError::NotYetValid)
        );
        // Before 1970 is long ago; null is absent; anything else is malformed.
        assert_eq!(check(5, json!({"exp": -1})), Err(AuthError::Expired));
        assert!(check(5, json!({"exp": NOW + 60, "nbf": -1, "iat": -1.5})).is_ok());
        assert!(check(5, json!({"exp": NOW + 60, "nbf": null})).is_ok());
        assert_eq!(check(5, json!({"exp": null})), Err(AuthError::NoExpiry));
        for (claim, value) in [
            ("exp", json!("tomorrow")),
            ("exp", json!(true)),
            ("nbf", json!("1700000000")),
            ("iat", json!(false)),
            ("iat", json!([1])),
        ] {
            let mut claims = json!({"exp": NOW + 60});
            claims[claim] = value;
            let err = check(5, claims).unwrap_err();
            assert_eq!(err, AuthError::BadTimeClaim(claim));
            assert!(err.to_string().contains(claim), "{err}");
        }
        // Arrays and objects as exp or nbf already stop the JWT library's decoder.
        for claim in ["exp", "nbf"] {
            for value in [json!([1]), json!({"s": 1})] {
                let mut claims = json!({"exp": NOW + 60});
                claims[claim] = value;
                assert_eq!(check(5, claims), Err(AuthError::Malformed));
            }
        }
    }

    #[test]
    fn no_keys_means_no_authentication() {
        assert!(authenticator(&AuthArgs::default()).unwrap().is_none());
    }

    #[test]
    fn empty_and_short_secrets_are_refused() {
        let err = authenticator(&with_secret("")).unwrap_err();
        assert!(matches!(err, ConfigError::EmptySecret), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");
        for secret in ["x", "s3cret", "0123456789abcdef0123456789abcde"] {
            let err = authenticator(&with_secret(secret)).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&format!("is {} bytes", secret.len())) && message.contains("32"),
                "{message}"
            );
            assert!(!message.contains(secret), "{message}");
        }
        // 32 bytes is enough (multi-byte characters count as their bytes).
        assert!(
            authenticator(&with_secret("0123456789abcdef0123456789abcdef"))
                .unwrap()
                .is_some()
        );
        assert!(
            authenticator(&with_secret(&"é".repeat(16)))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn tokens_in_urls_are_spotted() {
        assert!(token_in_query(Some("token=abc")));
        assert!(token_in_query(Some("x=1&access_token=abc")));
        assert!(token_in_query(Some("JWT=abc")));
        assert!(!token_in_query(Some("x=1")));
        assert!(!token_in_query(Some("")));
        assert!(!token_in_query(None));
    }

    #[test]
    fn tokens_in_urls_are_spotted_however_spelled() {
        let jwt = token(
            "0123456789abcdef0123456789abcdef",
            serde_json::json!({"exp": 1}),
        );
        let spotted = [
            // Percent-encoded names, as a server decodes them.
            "%74oken=abc",
            "tok%65n=abc",
            "%54%4F%4B%45%4E=abc",
            // Every common name, in any case, `-` or `_`.
            "id_token=abc",
            "refresh_token=abc",
            "api_key=abc",
            "apikey=abc",
            "API-KEY=abc",
            "Access-Token=abc",
            "authorization=Bearer%20abc",
            "bearer=abc",
            "auth=abc",
            // Empty values, no value, repeated names, blanks around the name.
            "token=",
            "token",
            "x=1&token=a&token=b",
            "+token+=abc",
            "x=1;token=abc",
            "&&token=abc&&",
        ];
        for query in spotted {
            assert!(token_in_query(Some(query)), "{query}");
        }
        // A JWT under any name, or as a bare parameter.
        assert!(token_in_query(Some(&format!("q={jwt}"))));
        assert!(token_in_query(Some(&format!("x=1&{jwt}"))));
        assert!(token_in_query(Some(&format!("h=Bearer+{jwt}"))));
        let harmless = [
            "x=1",
            "tokens=3",
            "tokenizer=on",
            "my_token_count=2",
            "author=ada",
            "keyboard=us",
            "v=eyJ",
            "v=a.b.c",
            "%2574oken=abc",
        ];
        for query in harmless {
            assert!(!token_in_query(Some(query)), "{query}");
        }
    }
}
