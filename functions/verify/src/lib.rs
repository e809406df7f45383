//! `verify`: confirms first payments and PG webhooks with the PG, never trusting the caller.
//!
//! Routes: POST /payments/verify (and the table's stream). The behaviour is built by issue #8; until then every request gets a JSON
//! 501 `not_implemented` error (the README's status table says so). The handler is a plain async
//! fn over its dependencies so tests and the local stack call it directly.

use lambda_http::{Body, Error, Request, Response};
use paycycle::api::{self, ApiError};
use paycycle::boot::Boot;

/// Everything the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub boot: Boot,
}

impl Deps {
    pub fn new(boot: Boot) -> Self {
        Self { boot }
    }
}

pub async fn handler(_deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    tracing::info!(method = %req.method(), path = %req.uri().path(), "not implemented yet");
    Ok(ApiError::not_implemented("verify", 8).into_response(&request_id))
}
