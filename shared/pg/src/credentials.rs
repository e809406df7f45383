//! The PG credentials as the clients read them, at request time: a [`Credentials`] handle over
//! whatever keeps them current. This crate only reads through the handle; what refreshes it (the
//! facade's Secrets Manager cache, `paycycle::secrets`) lives outside, so no AWS type reaches here.
//!
//! Each PG call reads the handle once where it builds its request. A rotation between two calls
//! of one sequence (Payple: partner auth, then the re-pay with the auth's own tokens) changes no
//! charge id and repeats no request: the charge id is derived from subscription, period and
//! attempt, never from a credential, and renew's lease and budget logic is not touched by it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::Secrets;

/// A future of the current credentials.
pub type Current<'a> = Pin<Box<dyn Future<Output = Arc<Secrets>> + Send + 'a>>;

/// What keeps the credentials current. [`current`](CredentialSource::current) answers the last
/// good value at once or after a bounded refresh; it never fails (a failed refresh keeps the last
/// good value).
pub trait CredentialSource: Send + Sync + fmt::Debug {
    fn current(&self) -> Current<'_>;
}

/// Credentials that never change: local runs, tests, and the environment source.
#[derive(Debug)]
struct Fixed(Arc<Secrets>);

impl CredentialSource for Fixed {
    fn current(&self) -> Current<'_> {
        let value = self.0.clone();
        Box::pin(async move { value })
    }
}

/// The shared handle the registry's clients read per request.
#[derive(Clone, Debug)]
pub struct Credentials(Arc<dyn CredentialSource>);

impl Credentials {
    /// Credentials read once (local runs, tests).
    pub fn fixed(secrets: Secrets) -> Self {
        Self(Arc::new(Fixed(Arc::new(secrets))))
    }

    /// Credentials kept current by `source`.
    pub fn from_source(source: Arc<dyn CredentialSource>) -> Self {
        Self(source)
    }

    /// The credentials to use for the request being built now.
    pub async fn current(&self) -> Arc<Secrets> {
        self.0.current().await
    }
}
