//! HTTP plumbing shared by the functions behind the HttpApi: the one JSON error shape of
//! DESIGN §2 and JSON responses. A handler returns `Result<Response, ApiError>`-like values and
//! never panics on input; every error a caller can see goes through [`ApiError`].

use std::borrow::Cow;

use base64::Engine;
use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::Value;

use crate::store::stream::{item_from_json, item_to_json};

/// An error a partner or PG sees: `{"error":{"code","message","request_id"}}`.
///
/// `code` is stable snake_case (clients switch on it); `message` is for humans and must never
/// carry secrets or unmasked customer data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        // Never say which part was wrong (missing, unknown, revoked).
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key is required")
    }

    /// An admin route without an IAM identity (unsigned, or a partner key): never says which.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "this route needs an AWS IAM (SigV4) signed request")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// The same Idempotency-Key with a different request body.
    pub fn idempotency_key_reused() -> Self {
        Self::unprocessable("idempotency_key_reused", "this Idempotency-Key was used with a different request")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body is over {limit} bytes"))
    }

    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
    }

    /// A route whose function exists but whose behaviour has not been built yet.
    pub fn not_implemented(function: &str, issue: u32) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!("{function} is not implemented yet (tracked in issue #{issue})"),
        )
    }

    /// The one answer for a PG call that did not give what was asked, in every function:
    /// `504 pg_unavailable` when the PG did not answer or may have acted (retry: nothing is
    /// charged twice, the retry looks it up first), `502 pg_configuration` when the PG refused
    /// paycycle's credentials, `502 pg_error` when the PG refused the request. A failure of our
    /// own store is never one of these ([`ApiError::unavailable`]).
    pub fn pg(e: &crate::pg::PgError) -> Self {
        use crate::pg::PgError;
        match e {
            // Our store, not the PG: nothing was sent.
            PgError::NotRecorded(_) => ApiError::unavailable(),
            e if e.retryable() || e.outcome_unknown() => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "pg_unavailable",
                "the PG did not answer, or not in a way paycycle can read; retry (a retry looks the outcome up first: \
                 nothing is done twice)",
            ),
            PgError::Config { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "pg_configuration",
                "the PG refused paycycle's credentials; check the PG settings",
            ),
            other => ApiError::new(StatusCode::BAD_GATEWAY, "pg_error", format!("the PG answered: {other}")),
        }
    }

    /// Our storage is unavailable: the request changed nothing and may be retried.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "temporarily unavailable; retry with the same Idempotency-Key",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; retry with the same Idempotency-Key",
        )
    }

    /// The JSON body for this error.
    pub fn body(&self, request_id: &str) -> String {
        let envelope = ErrorEnvelope { error: ErrorBody { code: &self.code, message: &self.message, request_id } };
        serde_json::to_string(&envelope).expect("error envelope serializes")
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        json_body(self.status, self.body(request_id))
    }
}

/// A route's result as the response to send: errors become the JSON error body with the request
/// id; server-side errors (5xx) are logged with `what` (e.g. `"refund"`).
pub fn respond(result: Result<Response<Body>, ApiError>, request_id: &str, what: &str) -> Response<Body> {
    match result {
        Ok(response) => response,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), code = %e.code, "{what} request failed");
            } else {
                tracing::debug!(status = e.status.as_u16(), code = %e.code, message = %e.message, "{what} request refused");
            }
            e.into_response(request_id)
        }
    }
}

/// The largest request body any route accepts (DESIGN §2).
pub const MAX_BODY: usize = 64 * 1024;

/// The request body, refusing more than [`MAX_BODY`] (413).
pub fn body(req: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    if bytes.len() > MAX_BODY {
        return Err(ApiError::payload_too_large(MAX_BODY));
    }
    Ok(bytes)
}

/// Parses a JSON body into `T`, as a 400 `invalid_json` / `invalid_request` with serde's reason.
pub fn parse_json<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes = body(req)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("invalid_request", "a JSON body is required"));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))
}

/// A path parameter (`{id}`).
pub fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref().and_then(|p| p.first(name)).map(str::to_string)
}

/// The `Idempotency-Key` header: required on every POST that moves money; 1–255 visible ASCII.
pub fn idempotency_key(req: &Request) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get("idempotency-key")
        .ok_or_else(|| ApiError::bad_request("idempotency_key_required", "the Idempotency-Key header is required"))?;
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be ASCII"))?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(key.to_string())
}

/// What [`idempotent`] does with a finished request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// A final answer: saved, and replayed to every retry with the same key and body.
    Save,
    /// Nothing final happened (a validation error, an outcome still unknown): the key is given
    /// back so a retry runs again.
    Release,
}

/// Runs `run` under an `Idempotency-Key` (DESIGN §2, Powertools semantics): the first request
/// with `key` in `scope` claims it; a repeat with the same `request_hash` gets the saved answer
/// again (with `idempotent-replayed: true`), with another hash a 422, while the first still runs
/// a 409. `keep` decides per answer whether it is final; a 409 never is.
pub async fn idempotent<F, Fut>(
    store: &crate::store::Store,
    scope: &str,
    key: &str,
    request_hash: &str,
    request_id: &str,
    keep: impl Fn(StatusCode) -> Keep,
    run: F,
) -> Result<Response<Body>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    use crate::store::idempotency::{Claim, IdempotencyConfig};
    let now = jiff::Timestamp::now();
    let claim =
        store.claim_idempotency(scope, key, request_hash, now, IdempotencyConfig::default()).await.map_err(|e| {
            tracing::error!(error = %e, "idempotency claim failed");
            ApiError::unavailable()
        })?;
    match claim {
        Claim::Claimed => {}
        Claim::Replay { status, body } => {
            let mut r = json_body(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
            r.headers_mut().insert("idempotent-replayed", http::HeaderValue::from_static("true"));
            return Ok(r);
        }
        Claim::InProgress => {
            return Err(ApiError::conflict(
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed",
            ));
        }
        Claim::Mismatch => return Err(ApiError::idempotency_key_reused()),
    }
    let (status, body) = match run().await {
        Ok((status, v)) => (status, v.to_string()),
        Err(e) => (e.status, e.body(request_id)),
    };
    // A 409 says something is in the way right now (a renewal in flight, a concurrent change):
    // never final, so a retry with the same key runs again once it clears.
    let keep = if status == StatusCode::CONFLICT { Keep::Release } else { keep(status) };
    let settled = match keep {
        Keep::Save => store.complete_idempotency(scope, key, request_hash, status.as_u16(), &body).await,
        Keep::Release => store.release_idempotency(scope, key, request_hash).await,
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, "idempotency record not updated");
    }
    Ok(json_body(status, body))
}

/// Checks `Authorization: Bearer <key>` against the stored SHA-256 hashes. Missing, malformed,
/// unknown and revoked keys all get the same 401: nothing tells which part was wrong.
pub async fn authenticate(
    store: &crate::store::Store,
    req: &Request,
) -> Result<crate::store::api_keys::ApiKeyRecord, ApiError> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(ApiError::unauthorized)?;
    let record = store.find_api_key(presented).await.map_err(|e| {
        tracing::error!(error = %e, "API key lookup failed");
        ApiError::unavailable()
    })?;
    let hash = crate::store::sha256_hex(presented.as_bytes());
    match record {
        Some(r) if crate::secret::Secret::new(r.key_hash.clone()).ct_eq(hash.as_bytes()) && r.is_active() => Ok(r),
        _ => Err(ApiError::unauthorized()),
    }
}

/// The IAM caller (its ARN) API Gateway's IAM authorizer verified for this request
/// (`requestContext.authorizer.iam` of the HTTP API payload v2). Admin routes call this first:
/// without an identity, or with a partner's `Bearer` key, the answer is 403 — API Gateway never
/// routes such a request to an IAM-authorized route, and the handler does not trust that alone.
pub fn iam_caller(req: &Request) -> Result<String, ApiError> {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")));
    if bearer {
        return Err(ApiError::forbidden());
    }
    let iam = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.iam.as_ref())
        }
        _ => None,
    };
    iam.and_then(|iam| iam.user_arn.clone()).filter(|arn| arn.starts_with("arn:")).ok_or_else(ApiError::forbidden)
}

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => json_body(status, body),
        Err(e) => {
            tracing::error!(error = %e, "response did not serialize");
            json_body(StatusCode::INTERNAL_SERVER_ERROR, ApiError::internal().body("unknown"))
        }
    }
}

fn json_body(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// The id that ties an error body to its log lines: the Lambda request id when running in
/// Lambda (or the local stack, which sets one), else API Gateway's, else `"local"`.
pub fn request_id(req: &Request) -> String {
    if let Some(ctx) = req.lambda_context_ref() {
        if !ctx.request_id.is_empty() {
            return ctx.request_id.clone();
        }
    }
    if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref() {
        if let Some(id) = &ctx.request_id {
            return id.clone();
        }
    }
    "local".to_string()
}

/// The `limit` query parameter of a paged list: 1-100, 20 when absent.
pub fn page_limit(req: &Request) -> Result<i32, ApiError> {
    limit_param(req, 20, 100)
}

/// The `limit` query parameter: 1-`max`, `default` when absent.
pub fn limit_param(req: &Request, default: i32, max: i32) -> Result<i32, ApiError> {
    match req.query_string_parameters().first("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<i32>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::bad_request("invalid_request", format!("limit must be 1-{max}"))),
    }
}

/// A page cursor: the index's last key, base64url JSON. Checked against the partition asked for,
/// so a cursor cannot wander into another partner's keys.
pub fn encode_cursor(item: &crate::store::Item) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(item_to_json(item).to_string())
}

/// A cursor [`encode_cursor`] made for the lookup-index partition `expected_lookup`, over items
/// whose `pk` starts with `pk_prefix` ([`decode_index_cursor`]).
pub fn decode_cursor(cursor: &str, expected_lookup: &str, pk_prefix: &str) -> Result<crate::store::Item, ApiError> {
    use crate::store::keys;
    let scope = CursorScope {
        partition: (keys::LOOKUP_PK, expected_lookup),
        sort: (keys::LOOKUP_SK, SortKind::Text),
        pk_prefixes: &[pk_prefix],
    };
    decode_index_cursor(cursor, &scope)
}

/// The index partition a cursor must stay in.
#[derive(Clone, Copy, Debug)]
pub struct CursorScope<'a> {
    /// The index's partition attribute and the partition asked for.
    pub partition: (&'a str, &'a str),
    /// The index's sort attribute and its type.
    pub sort: (&'a str, SortKind),
    /// What the items' `pk` may start with.
    pub pk_prefixes: &'a [&'a str],
}

/// The type of an index's sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKind {
    /// A string.
    Text,
    /// A whole number (epoch seconds).
    Number,
}

/// A cursor [`encode_cursor`] made in `scope`: exactly the four key attributes — non-empty `pk`
/// and `sk` strings, the partition asked for, a sort value of the index's type — and a `pk` of
/// the kinds listed. Anything else is `400 invalid_cursor` (never a store error), so a cursor
/// cannot wander into another partner's keys or make the table refuse the query.
pub fn decode_index_cursor(cursor: &str, scope: &CursorScope<'_>) -> Result<crate::store::Item, ApiError> {
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let item = item_from_json(&v).map_err(|_| bad())?;
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str).filter(|t| !t.is_empty());
    let (partition, expected) = scope.partition;
    let (sort, kind) = scope.sort;
    let sort_ok = match kind {
        SortKind::Text => text(sort).is_some(),
        SortKind::Number => item.get(sort).and_then(|v| v.as_n().ok()).is_some_and(|n| n.parse::<i64>().is_ok()),
    };
    let keys_ok = item.len() == 4 && text("pk").is_some() && text("sk").is_some() && sort_ok;
    let partition_ok = text(partition) == Some(expected);
    let pk_ok = text("pk").is_some_and(|pk| scope.pk_prefixes.iter().any(|p| pk.starts_with(p)));
    if keys_ok && partition_ok && pk_ok { Ok(item) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_only_a_key_of_the_partition_asked_for_with_a_sort_value_of_the_indexs_type() {
        use aws_sdk_dynamodb::types::AttributeValue;
        let key = |sort: AttributeValue, partition: &str, pk: &str| {
            let item: crate::store::Item = [
                ("pk".to_string(), AttributeValue::S(pk.into())),
                ("sk".to_string(), AttributeValue::S("SUB".into())),
                ("due_shard".to_string(), AttributeValue::S(partition.into())),
                ("next_attempt_at".to_string(), sort),
            ]
            .into_iter()
            .collect();
            encode_cursor(&item)
        };
        let scope = CursorScope {
            partition: ("due_shard", "review#partner_a"),
            sort: ("next_attempt_at", SortKind::Number),
            pk_prefixes: &["SUB#", "PAY#"],
        };
        let good = key(AttributeValue::N("1800000000".into()), "review#partner_a", "SUB#sub_a");
        assert!(decode_index_cursor(&good, &scope).is_ok());
        for bad in [
            key(AttributeValue::N("abc".into()), "review#partner_a", "SUB#sub_a"),
            key(AttributeValue::S("1800000000".into()), "review#partner_a", "SUB#sub_a"),
            key(AttributeValue::N("1800000000".into()), "review#partner_b", "SUB#sub_a"),
            key(AttributeValue::N("1800000000".into()), "review#partner_a", "CHK#chk_a"),
            key(AttributeValue::N("1800000000".into()), "review#partner_a", ""),
            "not base64!".to_string(),
        ] {
            let e = decode_index_cursor(&bad, &scope).unwrap_err();
            assert_eq!((e.status, e.code.as_ref()), (StatusCode::BAD_REQUEST, "invalid_cursor"), "{bad}");
        }
    }

    #[test]
    fn error_body_has_the_design_shape() {
        let e = ApiError::not_implemented("refund", 10);
        let v: serde_json::Value = serde_json::from_str(&e.body("req-1")).unwrap();
        assert_eq!(v["error"]["code"], "not_implemented");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(v["error"]["message"].as_str().unwrap().contains("#10"));
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn response_is_json_with_status() {
        let r = ApiError::payload_too_large(65536).into_response("r");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/json");
        match r.body() {
            Body::Text(t) => assert!(t.contains("payload_too_large")),
            other => panic!("unexpected body {other:?}"),
        }
    }

    #[test]
    fn messages_are_escaped_as_json() {
        let e = ApiError::bad_request("bad_json", "quote \" and newline \n");
        let v: serde_json::Value = serde_json::from_str(&e.body("x")).unwrap();
        assert_eq!(v["error"]["message"], "quote \" and newline \n");
    }
}
