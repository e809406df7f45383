//! End-to-end tests live in `tests/` of this crate: they start the local stack of `tools/dev`
//! (moto + PG sandbox + every function behind the HttpApi routes on 127.0.0.1) and talk to it over
//! HTTP. This library holds what they share: driving the PG sandbox as a customer and as its admin.

use paycycle::pg::Payer;
use paycycle::pg::payple::{PaypleClient, WindowWork};
use serde_json::{Value, json};

/// The PG sandbox seen from a test: its admin API and the customer's side of a first payment.
pub struct SandboxDriver {
    pub base: String,
    pub http: reqwest::Client,
}

impl SandboxDriver {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into(), http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs to an admin route and insists on success.
    pub async fn admin(&self, path: &str, body: Value) {
        let status = self.http.post(self.url(path)).json(&body).send().await.expect("sandbox reachable").status();
        assert!(status.is_success(), "{path}: {status}");
    }

    /// What the PG believes happened.
    pub async fn ledger(&self) -> Value {
        self.http
            .get(self.url("/__admin/ledger"))
            .send()
            .await
            .expect("sandbox reachable")
            .json()
            .await
            .expect("JSON ledger")
    }

    async fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Value {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("sandbox reachable")
            .json()
            .await
            .expect("JSON answer")
    }

    /// A first StepPay self payment with `CARD_BILL`: its idKey is the billing key.
    pub async fn steppay_billing_key(&self) -> String {
        let v = self.post_json("/__sandbox/steppay/sdk/pay", &json!({"amount": 0, "method": "CARD_BILL"})).await;
        v["idKey"].as_str().expect("idKey").to_string()
    }

    /// A card registered in Payple's window (AUTH): its `PCD_PAYER_ID` is the billing key.
    pub async fn payple_billing_key(&self, payple: &PaypleClient, payer: &Payer) -> String {
        let params = payple
            .window_params(WindowWork::Auth, "reg", "Pro", None, payer, "http://127.0.0.1/r", "e2e")
            .await
            .expect("window auth");
        let v = self.post_json("/__sandbox/payple/window?format=json", &params).await;
        v["PCD_PAYER_ID"].as_str().expect("PCD_PAYER_ID").to_string()
    }
}
