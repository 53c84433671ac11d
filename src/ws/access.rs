//! One connection's standing: whether it has authenticated, until when its
//! token holds, and which topics its claims may see (asked of the database
//! once per topic, cached until the token changes, re-checked periodically so
//! revokes reach open connections).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::{AuthError, AuthorizeError, Identity, Security};
use crate::hub::Topic;

/// Answers kept per connection before the cache starts over.
const MAX_CACHED: usize = 4096;

/// WebSocket close code for a missing, invalid or expired token.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;

pub struct Access<'a> {
    security: &'a Security,
    identity: Option<Identity>,
    /// Answers of `broadcast.authorize` for the current token.
    cache: HashMap<Topic, bool>,
    /// Whether `auth_expiring` has been sent for the current token.
    pub expiry_notified: bool,
}

impl<'a> Access<'a> {
    pub fn new(security: &'a Security, identity: Option<Identity>) -> Access<'a> {
        Access {
            security,
            identity,
            cache: HashMap::new(),
            expiry_notified: false,
        }
    }

    /// Does this server authenticate clients at all?
    pub fn required(&self) -> bool {
        self.security.enabled()
    }

    pub fn authenticated(&self) -> bool {
        !self.required() || self.identity.is_some()
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Verifies a token (first or refreshed); on success it replaces the
    /// current one, cached answers are dropped, and its `exp` is returned.
    pub fn accept(&mut self, token: &str) -> Result<u64, AuthError> {
        let Some(authenticator) = &self.security.authenticator else {
            return Err(AuthError::Malformed);
        };
        let identity = authenticator.verify(token)?;
        self.identity = Some(identity);
        self.cache.clear();
        self.expiry_notified = false;
        Ok(self.identity.as_ref().map_or(0, |id| id.expires_at))
    }

    /// When the current token expires (far away without one).
    pub fn expires(&self) -> Instant {
        match &self.identity {
            Some(id) => Instant::now() + id.remaining(),
            None => far_future(),
        }
    }

    /// When to send `auth_expiring`.
    pub fn notice_at(&self) -> Instant {
        match &self.identity {
            Some(id) => Instant::now() + id.remaining().saturating_sub(self.security.expiry_notice),
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
        let unknown: Vec<Topic> = topics
            .iter()
            .filter(|t| !self.cache.contains_key(*t))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            // Denied topics are remembered too; a client probing many cannot
            // grow this without bound.
            if self.cache.len() + unknown.len() > MAX_CACHED {
                self.cache.clear();
            }
            let answers = authorizer.allowed(&identity.claims, &unknown).await?;
            self.cache.extend(unknown.into_iter().zip(answers));
        }
        Ok(topics.iter().cloned().partition(|t| self.cache[t]))
    }

    /// Asks again about every topic held (a DBA may have revoked a grant);
    /// returns the ones no longer allowed.
    pub async fn recheck(&mut self, held: &[Topic]) -> Result<Vec<Topic>, AuthorizeError> {
        self.cache.clear();
        let (_, denied) = self.authorize(held).await?;
        Ok(denied)
    }

    pub fn recheck_every(&self) -> Duration {
        self.security.recheck.max(Duration::from_millis(100))
    }

    pub fn auth_timeout(&self) -> Duration {
        self.security.auth_timeout
    }
}

/// A deadline that never comes (timers of features not in use).
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
