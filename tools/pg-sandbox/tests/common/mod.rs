//! Test helpers: a sandbox on a free port, a webhook receiver that records what arrives, and
//! clients that talk to the sandbox over real HTTP.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use pg_sandbox::Sandbox;
use serde_json::{Value, json};

pub const TOKEN: &str = "local-steppay-secret-token";
pub const REFERER: &str = "https://shop.example.com";

#[derive(Clone, Debug)]
pub struct Received {
    pub content_type: String,
    pub body: String,
    pub signature: Option<String>,
}

/// Records every webhook POSTed to it.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let sink = sink.clone();
                async move {
                    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
                    sink.lock().unwrap().push(Received {
                        content_type: header("content-type").unwrap_or_default(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        signature: header("steppay-signature"),
                    });
                    "OK"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, received, task }
    }

    /// Waits until `n` webhooks arrived (or 5 s), returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..100 {
            if self.received.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Env {
    pub sandbox: Sandbox,
    pub base: String,
    pub http: reqwest::Client,
}

pub async fn env() -> Env {
    let sandbox = Sandbox::start(0).await.unwrap();
    let base = sandbox.base_url();
    Env { sandbox, base, http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap() }
}

impl Env {
    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    pub async fn ledger(&self) -> Value {
        self.http.get(format!("{}/__admin/ledger", self.base)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn scenario(&self, scenario: Value) {
        self.admin("/__admin/scenarios", scenario).await;
    }

    /// StepPay call with the secret token.
    pub async fn steppay(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("Secret-Token", TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A first self payment through the SDK stand-in; returns the idKey (a billing key for *_BILL).
    pub async fn steppay_billing_key(&self) -> String {
        let v: Value = self
            .http
            .post(format!("{}/__sandbox/steppay/sdk/pay", self.base))
            .json(&json!({"amount": 0, "method": "CARD_BILL"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success");
        v["idKey"].as_str().unwrap().to_string()
    }

    /// Payple partner auth with `flags`; returns (cst token, key token, AuthKey, return_url).
    pub async fn payple_auth(&self, flags: Value) -> (String, String, String, String) {
        let mut body = json!({"cst_id": "test", "custKey": "abcd1234567890"});
        for (k, v) in flags.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v: Value = self
            .http
            .post(format!("{}/php/auth.php", self.base))
            .header("Referer", REFERER)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["result"], "success", "{v}");
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        (s("cst_id"), s("custKey"), s("AuthKey"), s("return_url"))
    }

    /// POSTs JSON to a Payple URL with the Referer.
    pub async fn payple_post(&self, url: &str, body: &Value) -> Value {
        self.http.post(url).header("Referer", REFERER).json(body).send().await.unwrap().json().await.unwrap()
    }

    /// The registration window (AUTH/PAY/CERT) with `fields`, answered as JSON.
    pub async fn payple_window(&self, fields: Value) -> Value {
        let (_, _, auth_key, _) = self.payple_auth(json!({})).await;
        let mut body = fields;
        body["PCD_AUTH_KEY"] = json!(auth_key);
        self.http
            .post(format!("{}/__sandbox/payple/window?format=json", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Registers a card (window AUTH) and returns its PCD_PAYER_ID.
    pub async fn payple_payer(&self) -> String {
        let v = self
            .payple_window(
                json!({"PCD_PAY_WORK": "AUTH", "PCD_PAY_TYPE": "card", "PCD_CARD_VER": "01", "PCD_PAYER_NO": "1",
                "PCD_PAYER_NAME": "홍길동", "PCD_RST_URL": "https://shop.example.com/result"}),
            )
            .await;
        assert_eq!(v["PCD_PAY_RST"], "success", "{v}");
        v["PCD_PAYER_ID"].as_str().unwrap().to_string()
    }

    /// A re-pay (seed 003 body) with a fresh auth.
    pub async fn payple_repay(&self, payer_id: &str, oid: &str, total: Value) -> Value {
        let (cst, key, auth_key, url) = self.payple_auth(json!({"PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"})).await;
        let body = json!({
            "PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
            "PCD_PAY_TYPE": "card", "PCD_PAYER_ID": payer_id, "PCD_PAY_GOODS": "테스트 상품명",
            "PCD_PAY_TOTAL": total, "PCD_SIMPLE_FLAG": "Y", "PCD_PAY_OID": oid,
            "PCD_PAYER_NAME": "홍길동", "PCD_PAYER_HP": "01012345678", "PCD_PAYER_EMAIL": "test@payple.kr",
        });
        self.payple_post(&url, &body).await
    }
}
