//! Local StepPay and Payple simulators (DESIGN §10). An outside party written from the PG
//! documents (the seeds and their public specs): it never imports the `paycycle` crate, so a
//! field our clients misread cannot be mirrored here and pass unnoticed.
//!
//! It keeps its own ledger (charges, refunds, billing keys), sends webhooks, and can be told per
//! billing key or for the next N requests to approve, decline (soft/hard), time out after
//! charging, answer 5xx, answer slowly, or send webhooks twice, late or out of order. Everything
//! under `/__admin` is the sandbox's own control API; `/__sandbox` stands in for what a
//! customer's browser does at the PG. See the README section "PG sandbox".

// Handlers return early with a ready `Response` as their error: it is the natural type here, and a
// request's error path is not hot.
#![allow(clippy::result_large_err)]

pub mod load;
pub mod payple;
pub mod scripts;
pub mod shapes;
pub mod state;
pub mod steppay;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::{Value, json};

pub use state::{Config, Fault, Operation, Scenario, WebhookFormat};
use state::{Pg, Shared};

type Sh = State<Arc<Shared>>;

/// The sandbox's routes over shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        // StepPay
        .route("/api/payment/billing", post(steppay::billing))
        .route("/api/internal/payment/cancel", post(steppay::cancel))
        .route("/api/payment/receipt/{id_key}", get(steppay::receipt))
        .route("/api/v1/customers", post(steppay::create_customer))
        .route("/api/v1/orders", post(steppay::create_order))
        .route("/api/v1/orders/{id}", get(steppay::get_order))
        .route("/api/v1/subscriptions/{id}", get(steppay::get_subscription))
        .route("/api/v1/subscriptions/{id}/cancel", post(steppay::cancel_subscription))
        .route("/api/v1/subscriptions/{id}/pause", post(steppay::pause_subscription))
        .route("/api/v1/subscriptions/{id}/active", post(steppay::activate_subscription))
        .route("/api/v1/subscriptions/{id}/payment-method", put(steppay::change_payment_method))
        .route("/api/v1/orders/{id}/cancel", patch(steppay::cancel_order))
        .route("/api/public/orders/{code}/pay", get(steppay::pay_page))
        .route(
            "/__sandbox/steppay/sdk/pay",
            post(steppay::sdk_pay).layer(axum::middleware::map_response(scripts::allow_any_origin)),
        )
        .route("/js/steppay-0.7.1.js", get(scripts::steppay_sdk_js))
        // Payple
        .route("/php/auth.php", post(payple::auth))
        .route("/php/SimplePayCardAct.php", post(payple::repay))
        .route("/php/PayCardConfirmAct.php", post(payple::confirm))
        .route("/php/PayChkAct.php", post(payple::lookup))
        .route("/php/account/api/cPayCAct.php", post(payple::refund))
        .route("/php/cPayUser/api/cPayUserAct.php", post(payple::user_act))
        .route("/__sandbox/payple/window", post(payple::window))
        .route("/js/v1/payment.js", get(scripts::payple_payment_js))
        // Admin
        .route("/__admin/load", get(load::report).delete(load::reset))
        .route("/__admin/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/__admin/ledger", get(ledger))
        .route("/__admin/scenarios", post(add_scenario).get(list_scenarios).delete(clear_scenarios))
        .route("/__admin/reset", post(reset))
        .route("/__admin/config", get(get_config).post(set_config))
        .route("/__admin/clock", post(set_clock).delete(reset_clock))
        .route("/__admin/webhooks", get(deliveries))
        .route("/__admin/shapes", get(shapes::report))
        .route("/__admin/shapes/drift", post(shapes::set_drift).delete(shapes::clear_drift))
        .route("/__admin/webhooks/flush", post(flush))
        .route("/__admin/webhooks/send", post(send_webhook))
        .route("/__admin/steppay/prices", post(steppay::admin_price))
        .route("/__admin/steppay/subscriptions/{id}/renew", post(steppay::admin_renew))
        .route("/__admin/steppay/subscriptions/{id}/status", post(steppay::admin_subscription_status))
        // Every PG route's bodies are checked against the documented shapes (after routing, so
        // the route's template is known).
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), shapes::check))
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), load::meter))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "no such sandbox route"}))) })
        .with_state(shared)
}

async fn ledger(State(shared): Sh) -> Response {
    let state = shared.state.lock().expect("state");
    let steppay_keys: Vec<&String> =
        state.steppay_billing_keys.iter().filter(|(_, deleted)| !**deleted).map(|(k, _)| k).collect();
    let payers: Vec<&String> = state.payers.values().filter(|p| !p.deleted).map(|p| &p.payer_id).collect();
    let charged: i64 = state.charges.iter().map(|c| c.amount).sum();
    let refunded: i64 = state.refunds.iter().map(|r| r.amount).sum();
    Json(json!({
        "charges": state.charges,
        "refunds": state.refunds,
        "billing_keys": {"steppay": steppay_keys, "payple": payers},
        "totals": {"charges": state.charges.len(), "charged": charged, "refunded": refunded},
    }))
    .into_response()
}

async fn add_scenario(State(shared): Sh, body: Bytes) -> Response {
    let scenario: Scenario = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    };
    if scenario.billing_key.is_none() && scenario.operation.is_none() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "give billing_key or operation"}))).into_response();
    }
    shared.state.lock().expect("state").scenarios.push(scenario.clone());
    (StatusCode::CREATED, Json(scenario)).into_response()
}

async fn list_scenarios(State(shared): Sh) -> Response {
    Json(json!(shared.state.lock().expect("state").scenarios)).into_response()
}

async fn clear_scenarios(State(shared): Sh) -> Response {
    shared.state.lock().expect("state").scenarios.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(shared): Sh) -> Response {
    *shared.state.lock().expect("state") = state::State::default();
    shared.held.lock().expect("held").clear();
    *shared.shape_log.lock().expect("shape log") = state::ShapeLog::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_config(State(shared): Sh) -> Response {
    Json(json!(shared.config())).into_response()
}

/// Merges the given fields into the configuration.
async fn set_config(State(shared): Sh, Json(patch): Json<Value>) -> Response {
    let mut current = serde_json::to_value(shared.config()).expect("config serializes");
    if let (Some(cur), Some(patch)) = (current.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            cur.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value::<Config>(current) {
        Ok(config) => {
            *shared.config.lock().expect("config") = config.clone();
            Json(json!(config)).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

/// `{"now": "2027-02-28T00:00:00+09:00"}`: the sandbox's clock (payment dates, Payple's
/// `PCD_PAY_DATE`) follows the caller's time travel.
async fn set_clock(State(shared): Sh, Json(body): Json<Value>) -> Response {
    let parsed = body
        .get("now")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok().or_else(|| s.parse::<jiff::Zoned>().ok().map(|z| z.timestamp())));
    let Some(now) = parsed else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "now must be an RFC 3339 time"}))).into_response();
    };
    let mut state = shared.state.lock().expect("state");
    state.clock_offset = now.duration_since(Timestamp::now());
    Json(json!({"now": state.now().to_string()})).into_response()
}

async fn reset_clock(State(shared): Sh) -> Response {
    shared.state.lock().expect("state").clock_offset = jiff::SignedDuration::ZERO;
    StatusCode::NO_CONTENT.into_response()
}

async fn deliveries(State(shared): Sh) -> Response {
    Json(json!(shared.state.lock().expect("state").deliveries)).into_response()
}

async fn flush(State(shared): Sh) -> Response {
    let n = webhooks::flush_held(&shared).await;
    Json(json!({"flushed": n})).into_response()
}

/// `{"pg": "steppay"|"payple", "body": {...}, "format"?: "json"|"form", "fault"?: {...}}`:
/// sends an arbitrary webhook to the configured URL (a PG re-sending one from its portal).
async fn send_webhook(State(shared): Sh, Json(req): Json<Value>) -> Response {
    let config = shared.config();
    let (pg, url, default_format) = match req.get("pg").and_then(Value::as_str) {
        Some("steppay") => (Pg::Steppay, config.steppay_webhook_url, config.steppay_webhook_format),
        Some("payple") => (Pg::Payple, config.payple_webhook_url, config.payple_webhook_format),
        _ => return (StatusCode::BAD_REQUEST, Json(json!({"error": "pg must be steppay or payple"}))).into_response(),
    };
    let Some(url) = url else {
        return (StatusCode::CONFLICT, Json(json!({"error": "no webhook URL configured for that PG"}))).into_response();
    };
    let Some(fields) = req.get("body").and_then(Value::as_object) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "body must be an object"}))).into_response();
    };
    let format = req.get("format").and_then(|f| serde_json::from_value(f.clone()).ok()).unwrap_or(default_format);
    let fault: Option<Fault> = req.get("fault").and_then(|f| serde_json::from_value(f.clone()).ok());
    let (content_type, body) = webhooks::encode(fields, format);
    webhooks::deliver_injected(
        shared.clone(),
        webhooks::Webhook { pg, url, content_type, body, headers: vec![] },
        fault,
    );
    (StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response()
}

/// A running sandbox: its address and the task serving it (aborted on drop).
pub struct Sandbox {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Serves on 127.0.0.1:`port` (0 = a free port) with the default configuration.
    pub async fn start(port: u16) -> std::io::Result<Self> {
        Self::start_with(port, Config::default()).await
    }

    pub async fn start_with(port: u16, config: Config) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
