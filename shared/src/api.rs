//! HTTP plumbing shared by the functions behind the HttpApi: the one JSON error shape of
//! DESIGN §2 and JSON responses. A handler returns `Result<Response, ApiError>`-like values and
//! never panics on input; every error a caller can see goes through [`ApiError`].

use std::borrow::Cow;

use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

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

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
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

#[cfg(test)]
mod tests {
    use super::*;

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
