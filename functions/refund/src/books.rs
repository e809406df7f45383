//! The partner's books (issue #24 §4): `GET /payments` (JSON, paged) and `GET /payments/export`
//! (CSV, paged), both over the partner's own payments only, oldest first by time paid, read from
//! the `paid` index — never a table scan.
//!
//! `from`/`to` take a KST date (`2027-01-01`: the whole day in Seoul, both ends inclusive) or an
//! RFC 3339 instant (`from` inclusive, `to` exclusive). A cursor is bound to the partner's index
//! partition and to the window it was made in; anything else is `400 invalid_cursor`.

use http::{HeaderValue, Method, StatusCode, header};
use jiff::{Timestamp, ToSpan, civil::Date};
use lambda_http::{Body, Request, RequestExt, Response};
use paycycle::api::{self, ApiError, CursorScope, SortKind};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::keys;
use paycycle::store::payments::{PaidWindow, PaymentFilter, PaymentPage, PaymentRecord, RefundRecord, paid_partition};
use paycycle::views::payment_json;
use serde_json::{Value, json};

use crate::Deps;
use crate::books_csv;

/// Payments per export page (their refund rows come on top): a page stays far below Lambda's
/// 6 MB response limit (~400 bytes a row).
const EXPORT_PAGE: i32 = 1_000;

/// `GET /payments` and `GET /payments/export`.
pub async fn route(deps: &Deps, key: &ApiKeyRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        ));
    }
    if req.uri().path().trim_end_matches('/').ends_with("/export") {
        export(deps, key, req).await
    } else {
        list(deps, key, req).await
    }
}

/// What a books request asked for.
struct BooksQuery {
    window: PaidWindow,
    filter: PaymentFilter,
    start: Option<paycycle::store::Item>,
}

fn invalid(code: &'static str, message: &str) -> ApiError {
    ApiError::bad_request(code, message)
}

/// A `from`/`to` bound: a KST date's start (`from`) or its next day's start (`to`), or an instant.
fn bound(name: &str, value: &str, is_to: bool) -> Result<Timestamp, ApiError> {
    let message = format!("{name} must be a KST date (YYYY-MM-DD) or an RFC 3339 time (2027-01-01T00:00:00+09:00)");
    let bad = || ApiError::bad_request("invalid_date", message.clone());
    if value.len() == 10 {
        let date: Date = value.parse().map_err(|_| bad())?;
        let day = if is_to { date.checked_add(1.day()).map_err(|_| bad())? } else { date };
        return day.to_zoned(paycycle::calendar::seoul()).map(|z| z.timestamp()).map_err(|_| bad());
    }
    value.parse::<Timestamp>().map_err(|_| bad())
}

fn books_query(key: &ApiKeyRecord, req: &Request) -> Result<BooksQuery, ApiError> {
    let params = req.query_string_parameters();
    let from = params.first("from").map(|v| bound("from", v, false)).transpose()?;
    let to = params.first("to").map(|v| bound("to", v, true)).transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(invalid("invalid_range", "from must not be after to"));
        }
    }
    let customer_id = params.first("customer_id").map(str::to_string);
    if customer_id.as_deref().is_some_and(|c| c.is_empty() || c.len() > 64 || c.chars().any(char::is_control)) {
        return Err(invalid("invalid_request", "customer_id must be 1-64 characters"));
    }
    let subscription_id = params
        .first("subscription_id")
        .map(SubscriptionId::parse)
        .transpose()
        .map_err(|_| invalid("invalid_request", "subscription_id is not a subscription id (sub_…)"))?;
    let window = PaidWindow { from, to };
    let partition = paid_partition(&key.partner_id);
    let scope = CursorScope {
        partition: (keys::PAID_PK, &partition),
        sort: (keys::PAID_SK, SortKind::Text),
        pk_prefixes: &["PAY#"],
    };
    let start = params.first("cursor").map(|c| api::decode_index_cursor(c, &scope)).transpose()?;
    if start.as_ref().is_some_and(|s| !window.admits(s)) {
        return Err(invalid("invalid_cursor", "cursor is not one this API returned for this from/to"));
    }
    Ok(BooksQuery { window, filter: PaymentFilter { customer_id, subscription_id }, start })
}

fn store_error(e: paycycle::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::unavailable()
}

async fn page(deps: &Deps, key: &ApiKeyRecord, q: BooksQuery, limit: i32) -> Result<PaymentPage, ApiError> {
    let limit = usize::try_from(limit).unwrap_or(1);
    deps.store.payments_of_partner(&key.partner_id, q.window, &q.filter, limit, q.start).await.map_err(store_error)
}

/// The refunds that moved or hold money on `p` (succeeded, reserved, unknown): read only where its
/// amounts say there are any, so a page of payments without refunds costs no reads beyond the index.
async fn money_refunds(deps: &Deps, p: &PaymentRecord) -> Result<Vec<RefundRecord>, ApiError> {
    if p.amounts.refunded.is_zero() && p.amounts.refund_pending.is_zero() {
        return Ok(Vec::new());
    }
    let refunds = deps.store.refunds_of(&p.payment_id).await.map_err(store_error)?;
    Ok(refunds.into_iter().filter(|r| r.status != paycycle::domain::payment::RefundStatus::Failed).collect())
}

async fn list(deps: &Deps, key: &ApiKeyRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    let q = books_query(key, req)?;
    let page = page(deps, key, q, api::page_limit(req)?).await?;
    let mut data: Vec<Value> = Vec::with_capacity(page.payments.len());
    for p in &page.payments {
        data.push(payment_json(p, &money_refunds(deps, p).await?));
    }
    let next_cursor = page.next.as_ref().map(api::encode_cursor);
    Ok(api::json(StatusCode::OK, &json!({"data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor})))
}

async fn export(deps: &Deps, key: &ApiKeyRecord, req: &Request) -> Result<Response<Body>, ApiError> {
    let q = books_query(key, req)?;
    let window = q.window;
    let page = page(deps, key, q, api::limit_param(req, EXPORT_PAGE, EXPORT_PAGE)?).await?;
    let mut csv = books_csv::start();
    for p in &page.payments {
        books_csv::payment_rows(p, &money_refunds(deps, p).await?, &mut csv);
    }
    let mut res = Response::new(Body::Text(csv));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let disposition = format!("attachment; filename=\"{}\"", file_name(window));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal())?);
    if let Some(next) = page.next.as_ref().map(api::encode_cursor) {
        let link = format!("<{}>; rel=\"next\"", next_url(req, &next));
        headers.insert(header::LINK, HeaderValue::from_str(&link).map_err(|_| ApiError::internal())?);
        headers.insert("next-cursor", HeaderValue::from_str(&next).map_err(|_| ApiError::internal())?);
    }
    Ok(res)
}

/// `paycycle-payments_20270101-20271231.csv`: the window's KST days (`to` is exclusive, so its
/// last day is the one before it), `start`/`now` for an open end.
fn file_name(w: PaidWindow) -> String {
    let day = |t: Timestamp| paycycle::calendar::in_seoul(t).strftime("%Y%m%d").to_string();
    let from = w.from.map_or_else(|| "start".to_string(), day);
    let to = w.to.and_then(|t| t.checked_sub(1.nanosecond()).ok()).map_or_else(|| "now".to_string(), day);
    format!("paycycle-payments_{from}-{to}.csv")
}

/// This request's path and query with `cursor` set to `next`.
fn next_url(req: &Request, next: &str) -> String {
    let params = req.query_string_parameters();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for name in ["from", "to", "customer_id", "subscription_id", "limit"] {
        if let Some(v) = params.first(name) {
            query.append_pair(name, v);
        }
    }
    query.append_pair("cursor", next);
    format!("{}?{}", req.uri().path(), query.finish())
}
