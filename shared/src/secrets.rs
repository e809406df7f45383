//! The PG secret kept current: a cache over Secrets Manager with a TTL
//! (`PAYCYCLE_SECRETS_TTL_SECONDS`), behind the [`Credentials`] handle the PG clients read at each
//! request, so a rotated secret takes effect within one TTL and without a redeploy.
//!
//! The first request after the TTL reads the secret again (one `GetSecretValue`, the call the
//! cold start already makes): at most one read is in flight — requests meanwhile use the value
//! they have — and a failed read keeps the last good value and logs a warning naming the secret
//! and the error, never a value; it is tried again one TTL later.
//!
//! Not `aws_secretsmanager_caching`: that crate depends on `aws-config` and
//! `aws-sdk-secretsmanager` with their default features, which would bring the legacy TLS stack
//! (hyper 0.14, rustls 0.21, ring) back into every function (see the workspace `Cargo.toml`).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use paycycle_pg::credentials::{CredentialSource, Current};

use crate::config::{Secrets, get_secret};
use crate::pg::Credentials;

/// How long a refresh may wait for Secrets Manager before the last good value is kept.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// A refresh that would turn StepPay's signature check off (no signing secrets where there were
/// some) is refused: an operator who means that deploys it (a cold start), not a TTL.
fn dropped_webhook_secrets(held: &Secrets, fresh: &Secrets) -> bool {
    !held.steppay_webhook_secrets.is_empty() && fresh.steppay_webhook_secrets.is_empty()
}

/// The cache behind a Secrets Manager source's [`Credentials`].
#[derive(Debug)]
pub struct SecretsCache {
    id: String,
    client: aws_sdk_secretsmanager::Client,
    ttl: Duration,
    /// The last good value and when it was last read (or a read of it last failed).
    held: RwLock<(Arc<Secrets>, Instant)>,
    refreshing: tokio::sync::Mutex<()>,
}

impl SecretsCache {
    /// Credentials over secret `id`, starting from `loaded` (the cold start's read).
    pub fn credentials(
        client: aws_sdk_secretsmanager::Client,
        id: &str,
        ttl: Duration,
        loaded: Secrets,
    ) -> Credentials {
        let held = RwLock::new((Arc::new(loaded), Instant::now()));
        let cache = Self { id: id.to_string(), client, ttl, held, refreshing: tokio::sync::Mutex::new(()) };
        Credentials::from_source(Arc::new(cache))
    }

    fn held(&self) -> (Arc<Secrets>, Instant) {
        self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, value: Arc<Secrets>) {
        *self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (value, Instant::now());
    }

    async fn refreshed(&self) -> Arc<Secrets> {
        let (value, read_at) = self.held();
        if read_at.elapsed() < self.ttl {
            return value;
        }
        // Another request is reading it: this one goes on with the value it has.
        let Ok(_reading) = self.refreshing.try_lock() else { return value };
        let (value, read_at) = self.held();
        if read_at.elapsed() < self.ttl {
            return value;
        }
        // Bounded: the request that refreshes must not wait on a stalled Secrets Manager.
        let read = tokio::time::timeout(REFRESH_TIMEOUT, get_secret(&self.client, &self.id)).await;
        let refused = match read {
            Ok(Ok(fresh)) => match dropped_webhook_secrets(&value, &fresh) {
                false => {
                    let fresh = Arc::new(fresh);
                    self.set(fresh.clone());
                    return fresh;
                }
                true => "it has no steppay_webhook_secrets where the last good value had some (signatures would go unchecked)".to_string(),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {} ms", REFRESH_TIMEOUT.as_millis()),
        };
        tracing::warn!(secret = %self.id, reason = %refused, "PG secret not re-read; the last good value stays in use");
        self.set(value.clone());
        value
    }
}

impl CredentialSource for SecretsCache {
    fn current(&self) -> Current<'_> {
        Box::pin(self.refreshed())
    }
}
