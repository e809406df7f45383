//! HTTP clients for the local stack, used by `make demo`'s journeys and (wrapped with asserts and
//! the OpenAPI contract check) by the end-to-end tests: the partner API with an API key, and the
//! PG sandbox as its admin and as the customer in the PG's window or pay page.

use serde_json::Value;

pub use paycycle_fixtures::sandbox_client::{ClientResult, Sandbox};

/// Checks one answer (method, path, status, body); the tests plug the OpenAPI contract in here.
pub type Checker = Box<dyn Fn(&str, &str, u16, &Value) -> Result<(), String> + Send + Sync>;

/// The partner API with an API key.
pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
    pub checker: Option<Checker>,
}

impl Api {
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds");
        Self { base: base.into(), key: key.into(), http, checker: None }
    }

    /// Sends a request; the status and JSON body (Null if none). `Err` only if the API is
    /// unreachable or the answer breaks the checker.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> ClientResult<(u16, Value)> {
        let method_name = method.as_str().to_string();
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.map_err(|e| format!("{method_name} {path}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(check) = &self.checker {
            check(&method_name, path, status, &body).map_err(|e| format!("contract: {e}\nbody: {body}"))?;
        }
        Ok((status, body))
    }

    pub async fn post(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> ClientResult<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body), idempotency_key).await
    }

    pub async fn get(&self, path: &str) -> ClientResult<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    /// A call that must answer `want`.
    pub async fn expect(
        &self,
        want: u16,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> ClientResult<Value> {
        let (status, v) = self.call(method.clone(), path, body, key).await?;
        if status == want { Ok(v) } else { Err(format!("{method} {path}: {status} (wanted {want}): {v}")) }
    }

    /// `POST /checkouts` with a fresh Idempotency-Key, which must succeed.
    pub async fn checkout(&self, body: &Value) -> ClientResult<Value> {
        let key = format!("chk-{}", paycycle::ids::random_base32(12));
        self.expect(201, reqwest::Method::POST, "/checkouts", Some(body), Some(&key)).await
    }
}
