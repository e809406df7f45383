//! A partner's sample checkout (issue #26): one page and a tiny backend, the way a shop would
//! start a subscription through paycycle on each PG mode.
//!
//! - The backend holds the partner API key and is the only one to call paycycle (`POST
//!   /checkouts`, `POST /payments/verify`, `POST /subscriptions/{id}/cancel`): the browser never
//!   sees the key, and it never picks an amount — it picks a plan of the shop's own catalogue.
//! - Payple: the page loads Payple's window script and calls `PaypleCpayAuthCheck` with the
//!   window parameters the checkout returned; Payple posts the result to `return_url`
//!   (`/return/payple`), which the backend forwards as received to `POST /payments/verify`.
//! - StepPay managed: the backend redirects to StepPay's pay URL; StepPay sends the customer back
//!   to `/return/steppay?order_code=…`, forwarded to verify.
//! - StepPay self: the page runs StepPay's SDK with the checkout's SDK parameters and posts the
//!   payment's `idKey` back (`/return/steppay-self`), forwarded to verify.
//!
//! What the browser posts is only evidence: paycycle's verify asks the PG, so a tampered total or
//! someone else's key changes nothing. The shop trusts only checkouts it created itself.

mod pages;

pub use pages::won;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Where the shop's backend finds paycycle and the PGs' browser scripts.
#[derive(Clone)]
pub struct ShopConfig {
    /// paycycle's API, e.g. `http://127.0.0.1:3000`.
    pub api: String,
    /// The partner API key: stays in this process (never in a page, never in a log).
    pub api_key: String,
    /// Payple's window script (`https://democpay.payple.kr/js/v1/payment.js` on Payple's test
    /// server; the sandbox's stand-in locally).
    pub payple_script: String,
    /// StepPay's payment SDK (`https://cdn.steppay.kr/js/steppay-0.7.1.js`; the sandbox's locally).
    pub steppay_sdk: String,
    /// The StepPay product and price a managed plan is sold as (StepPay keeps its own catalogue).
    pub steppay_product_code: String,
    pub steppay_price_code: String,
}

impl std::fmt::Debug for ShopConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopConfig").field("api", &self.api).field("api_key", &"***").finish_non_exhaustive()
    }
}

/// One plan of the shop's catalogue: the browser names it, the backend knows its price.
pub struct Plan {
    pub pg: &'static str,
    pub title: &'static str,
    pub name: &'static str,
    /// KRW (원), integer.
    pub amount: i64,
}

/// The shop's catalogue, one plan per PG mode.
pub const PLANS: [Plan; 3] = [
    Plan { pg: "payple", title: "Payple 정기결제", name: "Pro (Payple)", amount: 9_900 },
    Plan { pg: "steppay_managed", title: "StepPay 관리형", name: "Pro", amount: 19_900 },
    Plan { pg: "steppay_self", title: "StepPay 비관리형", name: "Pro (StepPay self)", amount: 12_000 },
];

/// A checkout this shop created: only these are forwarded to verify.
#[derive(Clone, Debug)]
struct Pending {
    checkout_id: String,
}

struct ShopState {
    config: ShopConfig,
    base: String,
    http: reqwest::Client,
    /// checkout id → the checkout; StepPay order code → checkout id; subscriptions it activated.
    checkouts: Mutex<HashMap<String, Pending>>,
    orders: Mutex<HashMap<String, String>>,
    subscriptions: Mutex<Vec<String>>,
    counter: AtomicU64,
}

type Shared = State<Arc<ShopState>>;

/// The running shop on 127.0.0.1. Dropping it stops it.
pub struct Shop {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Shop {
    /// Binds `127.0.0.1:port` (0 = any free port) and serves the shop.
    pub async fn start(port: u16, config: ShopConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(ShopState {
            config,
            base: format!("http://{addr}"),
            http,
            checkouts: Mutex::default(),
            orders: Mutex::default(),
            subscriptions: Mutex::default(),
            counter: AtomicU64::new(0),
        });
        let app = router(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(state: Arc<ShopState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/subscribe", post(subscribe))
        .route("/return/payple", post(payple_return))
        .route("/return/steppay", get(steppay_return))
        .route("/return/steppay-self", post(steppay_self_return))
        .route("/cancel", post(cancel))
        .with_state(state)
}

/// A clear JSON 4xx for input the shop cannot use.
fn bad_request(code: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn index() -> Html<String> {
    Html(pages::index())
}

impl ShopState {
    /// Calls paycycle with the partner key; the status and JSON body.
    async fn call(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.config.api)).bearer_auth(&self.config.api_key).json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (
                502,
                json!({"error": {"code": "paycycle_unreachable", "message": "paycycle did not answer; try again"}}),
            ),
        }
    }

    /// `POST /payments/verify` with the PG's evidence. Another verify of the same checkout may be
    /// running (the PG's webhook races the browser): wait for it, bounded.
    async fn verify(&self, evidence: Value) -> (u16, Value) {
        let mut answer = self.call("/payments/verify", &evidence, None).await;
        for _ in 0..40 {
            if answer.0 != 409 || answer.1["error"]["code"] != "verification_in_progress" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            answer = self.call("/payments/verify", &evidence, None).await;
        }
        if answer.0 == 200
            && let Some(sub) = answer.1["subscription"]["id"].as_str()
        {
            self.subscriptions.lock().expect("subscriptions").push(sub.to_string());
        }
        answer
    }

    fn known_checkout(&self, id: &str) -> Option<Pending> {
        self.checkouts.lock().expect("checkouts").get(id).cloned()
    }

    fn idempotency_key(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("shop-{t}-{n}")
    }
}

/// `POST /subscribe` (form: `plan`, `customer_id`, `name`, `phone`, `email`): creates the
/// checkout server-side and opens the PG.
async fn subscribe(State(shop): Shared, body: Bytes) -> Response {
    let f = form(&body);
    let Some(plan) = f.get("plan").and_then(|p| PLANS.iter().find(|plan| plan.pg == p)) else {
        return bad_request("unknown_plan", "plan must be one of payple, steppay_managed, steppay_self");
    };
    let customer_id = f.get("customer_id").map(String::as_str).unwrap_or_default();
    if customer_id.is_empty() || customer_id.len() > 64 {
        return bad_request("invalid_customer", "customer_id is required (at most 64 characters)");
    }
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let mut request = json!({
        "pg": plan.pg,
        "customer": {"id": customer_id, "name": field("name"), "phone": field("phone"), "email": field("email")},
        "plan": {"name": plan.name, "amount": plan.amount, "interval": "month", "interval_count": 1},
    });
    match plan.pg {
        "payple" => request["return_url"] = json!(format!("{}/return/payple", shop.base)),
        "steppay_managed" => {
            request["return_url"] = json!(format!("{}/return/steppay", shop.base));
            request["error_url"] = json!(format!("{}/return/steppay", shop.base));
            request["steppay"] = json!({"product_code": shop.config.steppay_product_code,
                "price_code": shop.config.steppay_price_code});
        }
        _ => {}
    }
    let (status, checkout) = shop.call("/checkouts", &request, Some(&shop.idempotency_key())).await;
    let Some(id) = checkout["id"].as_str().filter(|_| status == 201) else {
        // paycycle refused the customer's details (4xx: shown with that status) or failed (502).
        let shown = StatusCode::from_u16(status).ok().filter(StatusCode::is_client_error);
        let page = Html(pages::result(plan, status, &checkout, None));
        return (shown.unwrap_or(StatusCode::BAD_GATEWAY), page).into_response();
    };
    shop.checkouts.lock().expect("checkouts").insert(id.to_string(), Pending { checkout_id: id.to_string() });
    open_pg(&shop, plan, id, &checkout)
}

/// The PG step of a created checkout: a page that opens the window or SDK, or the pay URL.
fn open_pg(shop: &ShopState, plan: &Plan, checkout_id: &str, checkout: &Value) -> Response {
    match plan.pg {
        "payple" => Html(pages::payple(plan, &shop.config.payple_script, &checkout["payple"])).into_response(),
        "steppay_managed" => {
            let (Some(order), Some(pay_url)) =
                (checkout["steppay"]["order_code"].as_str(), checkout["steppay"]["pay_url"].as_str())
            else {
                return (StatusCode::BAD_GATEWAY, Html(pages::result(plan, 502, checkout, None))).into_response();
            };
            shop.orders.lock().expect("orders").insert(order.to_string(), checkout_id.to_string());
            Redirect::to(pay_url).into_response()
        }
        _ => Html(pages::steppay_self(plan, &shop.config.steppay_sdk, checkout_id, &checkout["steppay"]["sdk"]))
            .into_response(),
    }
}

fn plan_of(pg: &str) -> &'static Plan {
    PLANS.iter().find(|p| p.pg == pg).unwrap_or(&PLANS[0])
}

/// `POST /return/payple`: Payple's result form, as received, forwarded with the checkout id
/// (the window's `PCD_PAY_OID` is the checkout id paycycle issued).
async fn payple_return(State(shop): Shared, body: Bytes) -> Response {
    let f = form(&body);
    let Some(pending) = f.get("PCD_PAY_OID").and_then(|oid| shop.known_checkout(oid)) else {
        return bad_request("unknown_checkout", "PCD_PAY_OID names no checkout of this shop");
    };
    let mut evidence: serde_json::Map<String, Value> =
        f.into_iter().filter(|(k, _)| k.starts_with("PCD_")).map(|(k, v)| (k, Value::String(v))).collect();
    let pg_said = evidence.get("PCD_PAY_MSG").and_then(Value::as_str).map(str::to_string);
    evidence.insert("checkout_id".into(), json!(pending.checkout_id));
    let (status, answer) = shop.verify(Value::Object(evidence)).await;
    Html(pages::result(plan_of("payple"), status, &answer, pg_said.as_deref())).into_response()
}

/// `GET /return/steppay?order_code=…`: StepPay's redirect back (success or error URL).
async fn steppay_return(State(shop): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(order_code) = q.get("order_code") else {
        return bad_request("missing_order_code", "StepPay's redirect carries order_code");
    };
    let Some(checkout_id) = shop.orders.lock().expect("orders").get(order_code).cloned() else {
        return bad_request("unknown_checkout", "order_code names no checkout of this shop");
    };
    let (status, answer) = shop.verify(json!({"checkout_id": checkout_id, "order_code": order_code})).await;
    Html(pages::result(plan_of("steppay_managed"), status, &answer, None)).into_response()
}

/// `POST /return/steppay-self` (form: `checkout_id`, `idKey`): the SDK's payment, forwarded.
async fn steppay_self_return(State(shop): Shared, body: Bytes) -> Response {
    let f = form(&body);
    let Some(pending) = f.get("checkout_id").and_then(|id| shop.known_checkout(id)) else {
        return bad_request("unknown_checkout", "checkout_id names no checkout of this shop");
    };
    let Some(id_key) = f.get("idKey").filter(|k| !k.is_empty()) else {
        // The SDK reported no payment at all (closed before paying): nothing to verify.
        let answer = json!({"error": {"code": "payment_not_completed", "message": "the payment was not made"}});
        return Html(pages::result(plan_of("steppay_self"), 409, &answer, None)).into_response();
    };
    let (status, answer) = shop.verify(json!({"checkout_id": pending.checkout_id, "idKey": id_key})).await;
    Html(pages::result(plan_of("steppay_self"), status, &answer, None)).into_response()
}

/// `POST /cancel` (form: `subscription_id`): the customer cancels now.
async fn cancel(State(shop): Shared, body: Bytes) -> Response {
    let f = form(&body);
    let Some(id) = f.get("subscription_id").filter(|id| shop.subscriptions.lock().expect("subs").contains(id)) else {
        return bad_request("unknown_subscription", "subscription_id names no subscription of this shop");
    };
    let (status, answer) =
        shop.call(&format!("/subscriptions/{id}/cancel"), &json!({"at_period_end": false}), None).await;
    Html(pages::canceled(status, &answer)).into_response()
}
