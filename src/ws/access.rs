//! One connection's standing: whether it has authenticated, until when its
//! token holds, and which topics its claims may see (asked of the database
//! once per topic, cached until the token changes, re-checked periodically so
//! revokes reach open connections).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::{AuthError, AuthorizeError, Identity, Security};
use crate::wire::Topic;

/// Answers kept per connection before the cache starts over.
const MAX_CACHED: usize = 4096;

/// WebSocket close code for a missing, invalid or expired token.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;

/// What one connection may do: its token's identity and the answers of
/// `broadcast.authorize` for it.
pub struct Access {
    security: Arc<Security>,
    /// Boxed: 8 bytes in every connection, most of which have no token.
    identity: Option<Box<Identity>>,
    /// Answers of `broadcast.authorize` for the current token (none until
    /// one is asked: most connections never ask).
    #[allow(clippy::box_collection)] // 8 bytes in every connection, not 48
    cache: Option<Box<HashMap<Topic, bool>>>,
    /// Whether `auth_expiring` has been sent for the current token.
    pub expiry_notified: bool,
}

impl Access {
    /// Access for a connection that authenticated with `identity` (if any) at the upgrade.
    pub fn new(security: Arc<Security>, identity: Option<Identity>) -> Access {
        Access {
            security,
            identity: identity.map(Box::new),
            cache: None,
            expiry_notified: false,
        }
    }

    /// Does this server authenticate clients at all?
    pub fn required(&self) -> bool {
        self.security.enabled()
    }

    /// Whether the connection may subscribe: it has a token, or none is required.
    pub fn authenticated(&self) -> bool {
        !self.required() || self.identity.is_some()
    }

    /// The current token's identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// Verifies a token (first or refreshed); on success it replaces the
    /// current one, cached answers are dropped, and its `exp` is returned.
    pub async fn accept(&mut self, token: &str) -> Result<u64, AuthError> {
        let Some(authenticator) = &self.security.authenticator else {
            return Err(AuthError::Malformed);
        };
        let identity = authenticator.verify(token).await?;
        self.identity = Some(Box::new(identity));
        self.cache = None;
        self.expiry_notified = false;
        Ok(self.identity.as_ref().map_or(0, |id| id.expires_at))
    }

    /// When the current token expires (far away without one, and at most
    /// that far for an `exp` beyond it: the client chose it, so it may be
    /// anything up to `u64::MAX` seconds).
    pub fn expires(&self) -> Instant {
        match &self.identity {
            Some(id) => after(id.remaining()),
            None => far_future(),
        }
    }

    /// When to send `auth_expiring`.
    pub fn notice_at(&self) -> Instant {
        match &self.identity {
            Some(id) => after(id.remaining().saturating_sub(self.security.expiry_notice)),
            None => far_future(),
        }
    }

    /// Splits `topics` into the allowed and the denied ones, asking the
    /// database about those not yet answered for this token.
    pub async fn authorize(
        &mut self,
        topics: &[Topic],
    ) -> Result<(Vec<Topic>, Vec<Topic>), AuthorizeError> {
        let (Some(authorizer), Some(identity)) = (&self.security.authorizer, &self.identity) else {
            return Ok((topics.to_vec(), Vec::new()));
        };
        let cache = self.cache.get_or_insert_with(Default::default);
        let unknown: Vec<Topic> = topics
            .iter()
            .filter(|t| !cache.contains_key(*t))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            // Denied topics are remembered too; a client probing many cannot
            // grow this without bound.
            if cache.len() + unknown.len() > MAX_CACHED {
                cache.clear();
            }
            let answers = authorizer.allowed(&identity.claims, &unknown).await?;
            cache.extend(unknown.into_iter().zip(answers));
        }
        Ok(topics.iter().cloned().partition(|t| cache[t]))
    }

    /// Asks again about every topic held (a DBA may have revoked a grant);
    /// returns the ones no longer allowed.
    pub async fn recheck(&mut self, held: &[Topic]) -> Result<Vec<Topic>, AuthorizeError> {
        self.cache = None;
        let (_, denied) = self.authorize(held).await?;
        Ok(denied)
    }

    /// How often held topics are authorized again (at least every 100 ms apart).
    pub fn recheck_every(&self) -> Duration {
        self.security.recheck.max(Duration::from_millis(100))
    }

    /// How long the connection may take to send its first token.
    pub fn auth_timeout(&self) -> Duration {
        self.security.auth_timeout
    }
}

/// How far away [`far_future`] is: any deadline is at most this far.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A deadline that never comes (timers of features not in use).
pub fn far_future() -> Instant {
    after(FAR)
}

/// `wait` from now, capped at [`FAR`] so no clock can overflow.
fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Authenticator, unix_now};
    use crate::config::AuthArgs;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const SECRET: &str = "a-unit-test-secret-of-at-least-32-bytes";

    /// A time claim as a client might send it: absent, null, any integer or
    /// float JSON can carry, the edges of u64/i64, past every clock, not a number.
    fn time_claim() -> impl Strategy<Value = Option<Value>> {
        const EDGES: [&str; 19] = [
            "0",
            "1",
            "-1",
            "10000000000000000000",
            "18446744073709551615",
            "18446744073709551614",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "18446744073709551616",
            "1e20",
            "1e300",
            "-1e300",
            "0.5",
            "-0.0",
            "1e-300",
            "253402300799",
            "\"tomorrow\"",
            "true",
        ];
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            prop::sample::select(&EDGES[..]).prop_map(|t| Some(serde_json::from_str(t).unwrap())),
            any::<u64>().prop_map(|n| Some(json!(n))),
            any::<i64>().prop_map(|n| Some(json!(n))),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(|f| Some(json!(f))),
            // Around the real clock, where the boundaries are.
            (-100_000i64..100_000).prop_map(|d| Some(json!(unix_now() as i64 + d))),
        ]
    }

    /// A claim's value as a real number, if it is one, read as documented:
    /// before 1970 as 1970, beyond `u64` seconds as `u64::MAX`.
    fn real(claim: &Option<Value>) -> Option<f64> {
        claim
            .as_ref()
            .and_then(Value::as_f64)
            .map(|t| t.clamp(0.0, u64::MAX as f64))
    }

    /// `a <= b` up to a second and the rounding of floats this large.
    fn about_le(a: f64, b: f64) -> bool {
        a <= b + 1.0 + a.abs().max(b.abs()) * f64::EPSILON * 4.0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the time claims and the clock, verifying a token and
        /// turning it into the session's deadlines never panics, and an
        /// accepted token has an exp ahead and nbf/iat behind (within the leeway).
        #[test]
        fn time_claims_never_panic(
            exp in time_claim(),
            nbf in time_claim(),
            iat in time_claim(),
            clock in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(u64::MAX)), any::<u64>().prop_map(Some)],
            leeway in 0u64..=300,
            notice in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
        ) {
            let mut claims = json!({"sub": "u1"});
            for (name, claim) in [("exp", &exp), ("nbf", &nbf), ("iat", &iat)] {
                if let Some(value) = claim {
                    claims[name] = value.clone();
                }
            }
            let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let authenticator = runtime.block_on(Authenticator::new(&AuthArgs {
                jwt_secret: Some(SECRET.into()),
                jwt_leeway: Duration::from_secs(leeway),
                ..AuthArgs::default()
            })).unwrap();
            let security = Arc::new(Security {
                authenticator: authenticator.map(Arc::new),
                expiry_notice: Duration::from_secs(notice),
                ..Security::default()
            });
            let auth = security.authenticator.as_deref().unwrap();
            let now = clock.unwrap_or_else(unix_now);
            let (t, l) = (now as f64, leeway as f64);
            match auth.verify_at(&token, now) {
                Ok(identity) => {
                    prop_assert!(real(&exp).is_some_and(|exp| about_le(t, exp + l)), "{claims}");
                    prop_assert!(real(&nbf).is_none_or(|nbf| about_le(nbf, t + l)), "{claims}");
                    prop_assert!(real(&iat).is_none_or(|iat| about_le(iat, t + l)), "{claims}");
                    let access = Access::new(Arc::clone(&security), Some(identity));
                    let (notice_at, expires) = (access.notice_at(), access.expires());
                    prop_assert!(notice_at <= expires);
                    prop_assert!(expires <= far_future());
                }
                Err(AuthError::NoExpiry) => prop_assert!(matches!(exp, None | Some(Value::Null))),
                Err(AuthError::BadTimeClaim(name)) => {
                    let claim = match name { "exp" => &exp, "nbf" => &nbf, _ => &iat };
                    prop_assert!(claim.as_ref().is_some_and(|v| !v.is_number() && !v.is_null()));
                }
                Err(AuthError::Expired) => {
                    prop_assert!(real(&exp).is_some_and(|exp| about_le(exp + l, t)), "{claims}")
                }
                Err(AuthError::NotYetValid) => {
                    prop_assert!(real(&nbf).is_some_and(|nbf| about_le(t + l, nbf)), "{claims}")
                }
                Err(AuthError::IssuedInFuture) => {
                    prop_assert!(real(&iat).is_some_and(|iat| about_le(t + l, iat)), "{claims}")
                }
                Err(other) => prop_assert!(false, "{other} for {claims}"),
            }
            // The session's own path, on the real clock.
            let mut access = Access::new(Arc::clone(&security), None);
            if runtime.block_on(access.accept(&token)).is_ok() {
                prop_assert!(access.notice_at() <= access.expires());
                prop_assert!(access.expires() <= far_future());
            }
        }
    }
}
