//! `refund`: `GET /payments/{id}`, `POST /payments/{id}/refunds` (DESIGN §2, §6),
//! `POST /payments/{id}/refunds/{refund_id}/resolve`, a person's verdict on a refund left unknown
//! ([`review`], DESIGN §13), and the partner's books, `GET /payments` and `GET /payments/export`
//! ([`books`], issue #24 §4).
//!
//! A refund is reserved before the PG is called (a conditional update on the payment's
//! `refundable`), so no number of concurrent requests can refund more than was paid. The PG's
//! answer settles it: success moves the amount to `refunded`, a decline releases it, and an unknown
//! outcome keeps it reserved until a lookup at the PG says which — never a second PG refund.
//! `Idempotency-Key` is required: the refund id is derived from it, so a retried request finds its
//! own refund instead of making another.

mod books;
mod books_csv;
mod refunds;
mod review;

use http::{Method, StatusCode};
use lambda_http::{Body, Error, Request, Response};
use paycycle::api::{self, ApiError};

/// Everything the handler needs, built once per cold start ([`Services::new`]).
pub type Deps = paycycle::boot::Services;

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    let result = route(deps, &req).await;
    Ok(api::respond(result, &request_id, "refund"))
}

async fn route(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let key = api::authenticate(&deps.store, req).await?;
    let Some(payment_id) = api::path_param(req, "id") else {
        return books::route(deps, &key, req).await;
    };
    let path = req.uri().path().trim_end_matches('/');
    if let Some(refund_id) = api::path_param(req, "refund_id").filter(|_| path.ends_with("/resolve")) {
        return match *req.method() {
            Method::POST => review::resolve_refund(deps, &key, &payment_id, &refund_id, req)
                .await
                .map(|(status, v)| api::json(status, &v)),
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )),
        };
    }
    match (req.method(), path.ends_with("/refunds")) {
        (&Method::GET, false) => refunds::get_payment(deps, &key, &payment_id).await,
        (&Method::POST, true) => refunds::create_refund(deps, &key, &payment_id, req).await,
        _ => {
            Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route"))
        }
    }
}

#[cfg(test)]
mod books_tests;
#[cfg(test)]
mod in_memory_tests;
