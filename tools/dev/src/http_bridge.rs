//! Turns local HTTP requests into the `lambda_http::Request`s API Gateway's HTTP API (payload v2)
//! would hand each function — path parameters, query parameters, a Lambda context with a request
//! id — and calls the very handler the Lambda binary runs. Also turns `POST /__dev/tick` into the
//! EventBridge scheduled event renew receives, `POST /__dev/sweep` into verify's scheduled sweep
//! and `POST /__dev/deliver` into deliver's retry sweep (each accepts `{"now": ...}` to travel in
//! time). Routes the template marks `AWS_IAM` pass API Gateway's IAM authorizer first
//! ([`crate::iam_authorizer`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, post};
use http::StatusCode;
use lambda_http::RequestExt;
use paycycle::api::ApiError;
use paycycle::boot::Boot;
use paycycle_testkit::template::Route;
use serde_json::{Value, json};

/// API Gateway's own payload limit for HTTP APIs (10 MB); the functions enforce their own, lower ones.
const GATEWAY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Every function's dependencies, built once like a cold start.
pub struct Functions {
    webhook_ingest: webhook_ingest::Deps,
    verify: verify::Deps,
    renew: renew::Deps,
    refund: refund::Deps,
    checkout: checkout::Deps,
    subscriptions: subscriptions::Deps,
    deliver: deliver::Deps,
    webhook_endpoints: webhook_endpoints::Deps,
    reconcile: reconcile::Deps,
    admin: admin::Deps,
    request_counter: AtomicU64,
    /// The PG sandbox, whose clock follows `tick`'s time travel.
    sandbox_url: Option<String>,
    http: reqwest::Client,
}

/// The cargo binary behind each template logical id the local stack knows how to run.
pub const BINARIES: &[(&str, &str)] = &[
    ("WebhookIngestFunction", "webhook-ingest"),
    ("VerifyFunction", "verify"),
    ("RenewFunction", "renew"),
    ("RefundFunction", "refund"),
    ("CheckoutFunction", "checkout"),
    ("SubscriptionsFunction", "subscriptions"),
    ("DeliverFunction", "deliver"),
    ("WebhookEndpointsFunction", "webhook-endpoints"),
    ("ReconcileFunction", "reconcile"),
    ("AdminFunction", "admin"),
];

impl Functions {
    /// `webhooks`: the partner-webhook functions' config (its queues are the stack's; time travel
    /// allowed, so endpoints on loopback are too).
    /// Whether renew and reconcile accept a travelled `now`.
    pub fn travels_in_time(&self) -> bool {
        self.renew.settings.allow_time_travel || self.reconcile.allow_time_travel
    }

    /// Time travel on or off (on by default; off against real PGs, [`crate::PgTarget`]).
    pub fn allow_time_travel(&mut self, allowed: bool) {
        self.renew.settings.allow_time_travel = allowed;
        self.reconcile.allow_time_travel = allowed;
    }

    pub fn new(boot: Boot, sandbox_url: Option<String>, webhooks: &paycycle::config::WebhookConfig) -> Self {
        // The local stack travels in time: renew accepts `{"now": ...}` here, never in AWS.
        let mut renew = renew::Deps::new(boot.clone());
        renew.settings.allow_time_travel = true;
        let mut reconcile = reconcile::Deps::new(boot.clone());
        reconcile.allow_time_travel = true;
        Self {
            webhook_ingest: webhook_ingest::Deps::new(boot.clone()),
            verify: verify::Deps::new(&boot),
            renew,
            refund: refund::Deps::new(&boot),
            checkout: checkout::Deps::new(boot.clone()),
            subscriptions: subscriptions::Deps::new(&boot),
            deliver: deliver::Deps::new(webhooks, &boot.sdk),
            webhook_endpoints: webhook_endpoints::Deps::new(webhooks, &boot.sdk),
            admin: admin::Deps::new(&boot.sdk, &boot.config.table),
            reconcile,
            request_counter: AtomicU64::new(0),
            sandbox_url,
            http: reqwest::Client::new(),
        }
    }

    /// The DynamoDB request counter of the function with logical id `function` (benchmarks read
    /// them to count requests per operation).
    pub fn store_counter(&self, function: &str) -> Option<Arc<paycycle::store::RequestCounter>> {
        Some(
            match function {
                "WebhookIngestFunction" => &self.webhook_ingest.store,
                "VerifyFunction" => &self.verify.store,
                "RenewFunction" => &self.renew.store,
                "RefundFunction" => &self.refund.store,
                "CheckoutFunction" => &self.checkout.store,
                "SubscriptionsFunction" => &self.subscriptions.store,
                "DeliverFunction" => &self.deliver.store,
                "WebhookEndpointsFunction" => &self.webhook_endpoints.store,
                "ReconcileFunction" => &self.reconcile.store,
                "AdminFunction" => &self.admin.store,
                _ => return None,
            }
            .counter
            .clone(),
        )
    }

    /// Every AWS call the function with logical id `function` made since it started, as IAM
    /// authorizes them; empty unless `PAYCYCLE_RECORD_AWS_CALLS` was set before the stack started.
    pub fn aws_calls(&self, function: &str) -> std::collections::BTreeSet<paycycle::aws::calls::AwsCall> {
        let none = None;
        let (store, publisher, queues) = match function {
            "WebhookIngestFunction" => (&self.webhook_ingest.store, None, [&none, &none]),
            "VerifyFunction" => (&self.verify.store, Some(&self.verify.publisher), [&none, &none]),
            "RenewFunction" => (&self.renew.store, Some(&self.renew.publisher), [&none, &none]),
            "RefundFunction" => (&self.refund.store, Some(&self.refund.publisher), [&none, &none]),
            "CheckoutFunction" => (&self.checkout.store, None, [&none, &none]),
            "SubscriptionsFunction" => (&self.subscriptions.store, Some(&self.subscriptions.publisher), [&none, &none]),
            "DeliverFunction" => {
                (&self.deliver.store, None, [&Some(self.deliver.queue.clone()), &self.deliver.dead_letters])
            }
            "WebhookEndpointsFunction" => {
                (&self.webhook_endpoints.store, None, [&Some(self.webhook_endpoints.queue.clone()), &none])
            }
            "ReconcileFunction" => (&self.reconcile.store, Some(&self.reconcile.publisher), [&none, &none]),
            "AdminFunction" => (&self.admin.store, None, [&none, &none]),
            _ => return Default::default(),
        };
        let vault = match function {
            "VerifyFunction" => Some(&self.verify.vault),
            "RenewFunction" => Some(&self.renew.vault),
            "RefundFunction" => Some(&self.refund.vault),
            "SubscriptionsFunction" => Some(&self.subscriptions.vault),
            _ => None,
        };
        let queue_logs: Vec<_> = queues.into_iter().flatten().filter_map(|q| q.calls().cloned()).collect();
        let logs = store.calls.iter().chain(publisher.and_then(|p| p.calls())).chain(queue_logs.iter());
        let logs = logs.chain(vault.and_then(|v| v.calls()));
        logs.flat_map(|log| log.calls()).collect()
    }

    /// Whether the function reads the PG credentials at its cold start (the partner-webhook
    /// functions and admin call no PG and load none).
    pub fn reads_pg_secrets(function: &str) -> bool {
        !matches!(function, "DeliverFunction" | "WebhookEndpointsFunction" | "AdminFunction")
    }

    /// webhook-ingest's dependencies (benchmarks call its handler directly).
    pub fn webhook_ingest_deps(&self) -> &webhook_ingest::Deps {
        &self.webhook_ingest
    }

    /// deliver's dependencies (the SQS feeder calls deliver like the event source mappings).
    pub fn deliver_deps(&self) -> deliver::Deps {
        self.deliver.clone()
    }

    /// verify's dependencies (the stream feeder calls verify like the event source mapping).
    pub fn verify_deps(&self) -> verify::Deps {
        self.verify.clone()
    }

    fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("local-{:08x}-{n:06}", std::process::id())
    }

    fn context(&self) -> lambda_http::Context {
        let mut ctx = lambda_http::Context::default();
        ctx.request_id = self.next_request_id();
        ctx
    }

    /// Calls the HTTP handler of the function with logical id `function`.
    pub async fn call_http(
        &self,
        function: &str,
        req: lambda_http::Request,
    ) -> lambda_http::Response<lambda_http::Body> {
        let request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
        let result = match function {
            "WebhookIngestFunction" => webhook_ingest::handler(&self.webhook_ingest, req).await,
            "VerifyFunction" => verify::handler(&self.verify, req).await,
            "RefundFunction" => refund::handler(&self.refund, req).await,
            "CheckoutFunction" => checkout::handler(&self.checkout, req).await,
            "SubscriptionsFunction" => subscriptions::handler(&self.subscriptions, req).await,
            "WebhookEndpointsFunction" => webhook_endpoints::handler(&self.webhook_endpoints, req).await,
            "AdminFunction" => admin::handler(&self.admin, req).await,
            other => {
                return ApiError::new(StatusCode::NOT_FOUND, "route_not_found", format!("{other} has no HTTP handler"))
                    .into_response(&request_id);
            }
        };
        result.unwrap_or_else(|e| {
            // In Lambda a handler error becomes API Gateway's bare 500; keep the JSON shape here.
            tracing::error!(function, error = %e, "handler returned an error");
            ApiError::internal().into_response(&request_id)
        })
    }

    /// The EventBridge scheduled event of `rule`, at the wall clock, carrying `now` when travelling
    /// in time.
    fn scheduled_event(&self, rule: &str, now: Option<&str>) -> Value {
        let mut event = json!({
            "version": "0",
            "id": self.next_request_id(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "000000000000",
            "time": jiff::Timestamp::now().to_string(),
            "region": "ap-northeast-2",
            "resources": [format!("arn:aws:events:ap-northeast-2:000000000000:rule/{rule}")],
            "detail": {}
        });
        if let Some(now) = now {
            event["now"] = json!(now);
        }
        event
    }

    /// Runs one renew tick as EventBridge would, optionally travelling to `now`.
    pub async fn tick(&self, now: Option<&str>) -> Result<Value, String> {
        let event = self.scheduled_event("paycycle-local-renew", now);
        if let Some(now) = now {
            // The PG's clock travels too (payment dates, Payple's PCD_PAY_DATE lookups).
            if let Some(url) = &self.sandbox_url {
                let _ = self.http.post(format!("{url}/__admin/clock")).json(&json!({"now": now})).send().await;
            }
        }
        renew::handler(&self.renew, lambda_runtime::LambdaEvent::new(event, self.context()))
            .await
            .map_err(|e| e.to_string())
    }
}

impl Functions {
    /// Runs verify's scheduled sweep as EventBridge would, optionally travelling to `now` (the
    /// sandbox's clock travels too, as for [`Functions::tick`]).
    pub async fn sweep(&self, now: Option<&str>) -> Result<Value, String> {
        let now = match now {
            Some(now) => {
                if let Some(url) = &self.sandbox_url {
                    let _ = self.http.post(format!("{url}/__admin/clock")).json(&json!({"now": now})).send().await;
                }
                now.parse::<jiff::Timestamp>()
                    .or_else(|_| now.parse::<jiff::Zoned>().map(|z| z.timestamp()))
                    .map_err(|e| format!("now: {e}"))?
            }
            None => jiff::Timestamp::now(),
        };
        Ok(verify::sweep(&self.verify, now).await)
    }

    /// Runs the daily reconciliation of KST day `day` (`YYYYMMDD`), as its schedule would for the
    /// day after.
    pub async fn reconcile(&self, day: &str) -> Result<Value, String> {
        let event = json!({"day": day});
        reconcile::handler(&self.reconcile, lambda_runtime::LambdaEvent::new(event, self.context()))
            .await
            .map_err(|e| format!("{}: {}", e.error_type, e.error_message))
    }

    /// Runs deliver's scheduled retry sweep as EventBridge would, optionally travelling to `now`.
    pub async fn deliver_sweep(&self, now: Option<&str>) -> Result<Value, String> {
        let event = self.scheduled_event("paycycle-local-deliver", now);
        deliver::handler(&self.deliver, lambda_runtime::LambdaEvent::new(event, self.context()))
            .await
            .map_err(|e| e.to_string())
    }
}

fn method_filter(method: &str) -> Option<MethodFilter> {
    Some(match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        "DELETE" => MethodFilter::DELETE,
        "HEAD" => MethodFilter::HEAD,
        _ => return None,
    })
}

/// The axum router for the template's routes plus `POST /__dev/tick`.
pub fn router(routes: &[Route], functions: Arc<Functions>) -> Result<Router, paycycle_testkit::KitError> {
    let mut by_path: BTreeMap<String, MethodRouter> = BTreeMap::new();
    for route in routes {
        if !BINARIES.iter().any(|(id, _)| *id == route.function) {
            return Err(paycycle_testkit::KitError::Template(format!(
                "route {} {} reaches {}, which the local stack does not know",
                route.method, route.path, route.function
            )));
        }
        let filter = method_filter(&route.method)
            .ok_or_else(|| paycycle_testkit::KitError::Template(format!("unsupported method {}", route.method)))?;
        let target = Target { function: route.function.clone(), iam: route.iam };
        let fns = functions.clone();
        let handler = move |params: Option<Path<HashMap<String, String>>>, req: Request| async move {
            let params = params.map(|Path(p)| p).unwrap_or_default();
            forward(&fns, &target, params, req).await
        };
        let entry = by_path.remove(&route.path).unwrap_or_default();
        by_path.insert(route.path.clone(), entry.on(filter, handler));
    }
    let mut app = Router::new();
    for (path, methods) in by_path {
        app = app.route(&path, methods);
    }
    app = app
        .route("/__dev/tick", dev_job(functions.clone(), |f, now| async move { f.tick(now.as_deref()).await }))
        .route("/__dev/sweep", dev_job(functions.clone(), |f, now| async move { f.sweep(now.as_deref()).await }))
        .route(
            "/__dev/deliver",
            dev_job(functions.clone(), |f, now| async move { f.deliver_sweep(now.as_deref()).await }),
        );
    let fallback_fns = functions;
    Ok(app.fallback(move || async move {
        let id = fallback_fns.next_request_id();
        to_axum(ApiError::route_not_found().into_response(&id))
    }))
}

/// A `POST /__dev/…` route that runs `job` with the body's `{"now": …}` (time travel) and answers
/// `{"ok": true, "report"}` or `{"ok": false, "error"}`.
fn dev_job<F, Fut>(functions: Arc<Functions>, job: F) -> MethodRouter
where
    F: Fn(Arc<Functions>, Option<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, String>> + Send + 'static,
{
    post(move |body: Bytes| async move {
        let now = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("now").and_then(Value::as_str).map(str::to_string));
        match job(functions, now).await {
            Ok(report) => (StatusCode::OK, axum::Json(json!({"ok": true, "report": report}))).into_response(),
            Err(e) => (StatusCode::OK, axum::Json(json!({"ok": false, "error": e}))).into_response(),
        }
    })
}

/// The function a route reaches, and whether API Gateway checks an IAM signature first.
#[derive(Clone)]
struct Target {
    function: String,
    iam: bool,
}

async fn forward(functions: &Functions, target: &Target, params: HashMap<String, String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, GATEWAY_BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            let id = functions.next_request_id();
            return to_axum(ApiError::payload_too_large(GATEWAY_BODY_LIMIT).into_response(&id));
        }
    };
    // API Gateway's IAM authorizer answers an unsigned or badly signed request itself: the
    // function never sees it.
    if target.iam && !crate::iam_authorizer::verify(&parts, &bytes, std::time::SystemTime::now()) {
        let id = functions.next_request_id();
        return to_axum(ApiError::forbidden().into_response(&id));
    }
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => lambda_http::Body::Text(text),
            Err(e) => lambda_http::Body::Binary(e.into_bytes()),
        }
    };
    let query: HashMap<String, Vec<String>> = parts
        .uri
        .query()
        .map(|q| {
            let mut map: HashMap<String, Vec<String>> = HashMap::new();
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_default().push(v.into_owned());
            }
            map
        })
        .unwrap_or_default();
    let mut req = lambda_http::Request::from_parts(parts, body)
        .with_path_parameters(params)
        .with_query_string_parameters(query)
        .with_lambda_context(functions.context());
    if target.iam {
        let op = &crate::iam_authorizer::LOCAL_OPERATOR;
        req = req.with_request_context(paycycle_fixtures::iam_request_context(
            op.user_arn,
            op.access_key_id,
            op.account_id,
        ));
    }
    to_axum(functions.call_http(&target.function, req).await)
}

fn to_axum(res: lambda_http::Response<lambda_http::Body>) -> Response {
    let (parts, body) = res.into_parts();
    let bytes: Vec<u8> = match body {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
