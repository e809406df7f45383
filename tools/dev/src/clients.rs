//! HTTP clients for the local stack, used by `make demo`'s journeys and (wrapped with asserts and
//! the OpenAPI contract check) by the end-to-end tests: the partner API with an API key, and the
//! PG sandbox as its admin and as the customer in the PG's window or pay page.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

pub type ClientResult<T> = Result<T, String>;

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

/// The PG sandbox: its admin API and the customer's side of a first payment.
pub struct Sandbox {
    pub base: String,
    pub http: reqwest::Client,
}

impl Sandbox {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into(), http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs to an admin route; a non-2xx is an error.
    pub async fn admin(&self, path: &str, body: Value) -> ClientResult<Value> {
        let r = self.http.post(self.url(path)).json(&body).send().await.map_err(|e| format!("sandbox {path}: {e}"))?;
        let status = r.status();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        if status.is_success() { Ok(v) } else { Err(format!("sandbox {path}: {status} {v}")) }
    }

    /// What the PG believes happened: charges, refunds, billing keys.
    pub async fn ledger(&self) -> ClientResult<Value> {
        let r = self.http.get(self.url("/__admin/ledger")).send().await.map_err(|e| format!("sandbox ledger: {e}"))?;
        r.json().await.map_err(|e| format!("sandbox ledger: {e}"))
    }

    pub async fn post_json(&self, path: &str, body: &impl serde::Serialize) -> ClientResult<Value> {
        let r = self.http.post(self.url(path)).json(body).send().await.map_err(|e| format!("sandbox {path}: {e}"))?;
        r.json().await.map_err(|e| format!("sandbox {path}: {e}"))
    }

    /// The customer in Payple's window with a checkout's parameters; the result fields
    /// (`action` = `Some("close")` closes the window instead).
    pub async fn payple_window(&self, params: &Value, action: Option<&str>) -> ClientResult<Map<String, Value>> {
        let mut params = params.clone();
        if let Some(a) = action {
            params["SANDBOX_ACTION"] = json!(a);
        }
        match self.post_json("/__sandbox/payple/window?format=json", &params).await? {
            Value::Object(m) => Ok(m),
            other => Err(format!("Payple's window answered {other}")),
        }
    }

    /// The StepPay SDK's payment in the customer's browser with a checkout's parameters.
    pub async fn steppay_sdk_pay(&self, sdk: &Value) -> ClientResult<Value> {
        self.post_json("/__sandbox/steppay/sdk/pay", sdk).await
    }

    /// Defines a monthly StepPay price plan for managed orders.
    pub async fn steppay_price(&self, product: &str, price: &str, amount: i64) -> ClientResult<()> {
        self.admin(
            "/__admin/steppay/prices",
            json!({"product_code": product, "price_code": price, "amount": amount, "product_name": "Pro",
                   "interval": "MONTH", "interval_count": 1}),
        )
        .await
        .map(|_| ())
    }

    /// The customer on StepPay's pay page; the redirect's query (`order_id`, `order_code`, `status`).
    pub async fn steppay_pay_page(&self, pay_url: &str) -> ClientResult<HashMap<String, String>> {
        let no_redirect =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client builds");
        let r = no_redirect.get(pay_url).send().await.map_err(|e| format!("pay page: {e}"))?;
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("the pay page did not redirect")?
            .to_string();
        let url = url::Url::parse(&location).map_err(|e| format!("redirect {location}: {e}"))?;
        Ok(url.query_pairs().into_owned().collect())
    }
}
