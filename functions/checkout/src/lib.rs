//! `checkout`: `POST /checkouts` prepares a first payment (DESIGN §2) for Payple, StepPay self
//! and StepPay managed.
//!
//! A checkout stores what the first payment must be — the plan, its amount, the customer, the
//! PG reference the payment will carry — so that verify can compare the PG's answer with it and
//! never with what a browser claims. It answers with what the partner's page needs:
//! - Payple: a fresh partner auth (one AuthKey per window) and the window parameters
//!   (`PCD_PAY_WORK`, `PCD_PAY_TOTAL`, `PCD_PAY_OID` = the checkout id, `PCD_RST_URL`, …);
//! - StepPay managed: the order created at StepPay and its pay URL (successUrl / errorUrl);
//! - StepPay self: the SDK's payment parameters (`partnerOrderId` = the checkout id).
//!
//! `Idempotency-Key` is required: a retried request gets the same checkout back.

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use lambda_http::{Body, Error, Request, Response};
use paycycle::api::{self, ApiError, Keep};
use paycycle::boot::Boot;
use paycycle::calendar::{Interval, IntervalUnit};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::domain::customer::Customer;
use paycycle::domain::subscription::{MAX_PLAN_AMOUNT, MIN_PLAN_AMOUNT, Plan};
use paycycle::money::Krw;
use paycycle::pg::checkout::{CheckoutStart, PrepareError, Prepared};
use paycycle::pg::{Adapter, Pg, PgCustomer, PgError, PgMode, Registry};
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::checkouts::{CHECKOUT_RETENTION, CheckoutPurpose, CheckoutRecord, CheckoutStatus};
use paycycle::store::pg_customers::{ClaimToken, PgCustomerClaim};
use paycycle::store::vault::KeyVault;
use paycycle::store::{Store, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod payment_method;

/// Everything the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
    pub pgs: Registry,
    /// Opens a StepPay managed subscription's id (kept sealed as its billing key) for a card
    /// change at StepPay; nothing else here reads a billing key.
    pub vault: KeyVault,
}

impl Deps {
    pub fn new(boot: Boot) -> Self {
        Self {
            store: Store::new(&boot.sdk, &boot.config.table),
            pgs: Registry::new(&boot.config.pg, &boot.secrets).with_credentials(&boot.credentials),
            vault: KeyVault::new(&boot.sdk, &boot.config.billing_key_kms_key),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CustomerBody {
    id: String,
    name: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    name: String,
    amount: Krw,
    interval: IntervalUnit,
    #[serde(default = "one")]
    interval_count: u32,
}

fn one() -> u32 {
    1
}

/// `POST /checkouts` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    pg: PgMode,
    customer: CustomerBody,
    plan: PlanBody,
    /// Where the PG sends the customer back (Payple `PCD_RST_URL`, StepPay successUrl).
    #[serde(default)]
    return_url: Option<String>,
    /// StepPay managed errorUrl (defaults to `return_url`).
    #[serde(default)]
    error_url: Option<String>,
    /// The PG's options, under the PG's name (`payple: {work}`, `steppay: {product_code,
    /// price_code}`): checked by the PG's adapter. Taken out of the body before the rest is read.
    #[serde(skip_deserializing, default)]
    options: std::collections::BTreeMap<Pg, Value>,
}

/// Reads the body: the PG options objects (one field per PG of the registry) apart, the rest
/// strictly (an unknown field is a 400).
fn parse_body(req: &Request) -> Result<CheckoutBody, ApiError> {
    let mut value: Value = api::parse_json(req)?;
    let mut options = std::collections::BTreeMap::new();
    if let Some(fields) = value.as_object_mut() {
        for pg in Pg::ALL {
            if let Some(v) = fields.remove(pg.as_str()).filter(|v| !v.is_null()) {
                options.insert(pg, v);
            }
        }
    }
    let mut body: CheckoutBody =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    body.options = options;
    Ok(body)
}

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    let result = route(deps, &req, &request_id).await;
    Ok(api::respond(result, &request_id, "checkout"))
}

async fn route(deps: &Deps, req: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST /checkouts or POST /subscriptions/{id}/payment-method",
        ));
    }
    let key = api::authenticate(&deps.store, req).await?;
    api::body(req)?; // 413 before anything else about the body
    if req.uri().path().trim_end_matches('/').ends_with("/payment-method") {
        let id = api::path_param(req, "id").unwrap_or_default();
        return payment_method::route(deps, req, &key, &id, request_id).await;
    }
    let idem_key = api::idempotency_key(req)?;
    let mut body = parse_body(req)?;
    let plan = validate(&mut body, &deps.pgs)?;
    let scope = format!("checkout:{}", key.partner_id);
    let request_hash = sha256_hex(serde_json::to_string(&body).unwrap_or_default().as_bytes());
    let keep = |status| if status == StatusCode::CREATED { Keep::Save } else { Keep::Release };
    api::idempotent(&deps.store, &scope, &idem_key, &request_hash, request_id, keep, || create(deps, &key, &body, plan))
        .await
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

fn is_url(s: &str) -> bool {
    s.len() <= 2048 && url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// Where a customer's browser is sent back with the PG's result (which carries billing keys):
/// `https`, or plain `http` only to this machine (127.0.0.0/8, ::1, localhost) for development.
fn is_secure_return_url(s: &str) -> bool {
    let Ok(u) = url::Url::parse(s) else { return false };
    match (u.scheme(), u.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}

/// A return or error URL the PG sends the customer to: absolute, and https unless local.
pub(crate) fn check_url(name: &str, url: Option<&str>) -> Result<(), ApiError> {
    if url.is_some_and(|u| !is_url(u)) {
        return Err(invalid("invalid_url", format!("{name} must be an absolute http(s) URL")));
    }
    if url.is_some_and(|u| !is_secure_return_url(u)) {
        return Err(invalid(
            "insecure_return_url",
            format!("{name} must be https (plain http only to localhost, 127.0.0.0/8 or ::1)"),
        ));
    }
    Ok(())
}

/// Checks everything a PG would otherwise reject later, and builds the plan.
fn validate(b: &mut CheckoutBody, pgs: &Registry) -> Result<Plan, ApiError> {
    let c = &b.customer;
    if c.id.is_empty() || c.id.len() > 64 || !c.id.bytes().all(|ch| ch.is_ascii_alphanumeric() || b"_-.@".contains(&ch))
    {
        return Err(invalid("invalid_customer", "customer.id must be 1-64 characters of A-Z a-z 0-9 _ - . @"));
    }
    let name_len = c.name.trim().chars().count();
    if name_len == 0 || name_len > 50 {
        return Err(invalid("invalid_customer", "customer.name must be 1-50 characters"));
    }
    if let Some(p) = &c.phone {
        if p.is_empty() || p.len() > 20 || !p.bytes().all(|ch| ch.is_ascii_digit() || ch == b'-') {
            return Err(invalid("invalid_customer", "customer.phone must be up to 20 digits (dashes allowed)"));
        }
    }
    if let Some(e) = &c.email {
        let parts: Vec<&str> = e.split('@').collect();
        if e.len() > 100 || parts.len() != 2 || parts[0].is_empty() || !parts[1].contains('.') {
            return Err(invalid("invalid_customer", "customer.email must be an address of up to 100 characters"));
        }
    }
    let plan_name_len = b.plan.name.trim().chars().count();
    if plan_name_len == 0 || plan_name_len > 100 {
        return Err(invalid("invalid_plan", "plan.name must be 1-100 characters"));
    }
    // Payple's card minimum is 100원 (seed 003); StepPay's is not published, so one rule for all.
    if !(MIN_PLAN_AMOUNT..=MAX_PLAN_AMOUNT).contains(&b.plan.amount.won()) {
        return Err(invalid("invalid_plan", format!("plan.amount must be {MIN_PLAN_AMOUNT}-{MAX_PLAN_AMOUNT} (KRW)")));
    }
    let interval = Interval::new(b.plan.interval, b.plan.interval_count)
        .map_err(|e| invalid("invalid_plan", format!("plan.interval_count: {e}")))?;
    check_url("return_url", b.return_url.as_deref())?;
    check_url("error_url", b.error_url.as_deref())?;
    // Options of another PG than the checkout's, then the PG's own part, by its adapter; the
    // options are kept in the adapter's canonical form (the request hash compares them).
    if let Some(other) = b.options.keys().find(|pg| **pg != b.pg.pg()) {
        let modes: Vec<&str> =
            other.modes().into_iter().filter(|m| pgs.adapter(*m).takes_options()).map(PgMode::as_str).collect();
        return Err(invalid("invalid_request", format!("{other} options only apply to pg={}", modes.join("|"))));
    }
    let pg = b.pg.pg();
    match pgs.adapter(b.pg).check_checkout(b.return_url.is_some(), b.options.get(&pg)) {
        Ok(Some(canonical)) => {
            b.options.insert(pg, canonical);
        }
        Ok(None) => {}
        Err(r) => return Err(invalid(r.code, r.message)),
    }
    Ok(Plan { name: b.plan.name.trim().to_string(), amount: b.plan.amount, interval })
}

pub(crate) fn pg_error(e: PgError) -> ApiError {
    tracing::warn!(error = %e, "PG call for a checkout failed");
    match e {
        // What a checkout sends the PG is the partner's (its StepPay product and price, the
        // customer, the amount): the PG refusing it is the partner's to fix, not an outage.
        PgError::Invalid(why) => ApiError::unprocessable("pg_refused", format!("the PG refused the checkout: {why}")),
        e => ApiError::pg(&e),
    }
}

/// How long a checkout may take to create a customer at StepPay before another may try (wall clock).
const PG_CUSTOMER_LEASE: SignedDuration = SignedDuration::from_secs(30);

/// The PG's customer for the partner's customer, where the PG keeps customers
/// ([`Adapter::needs_pg_customer`]): the one recorded (StepPay's own `id`/`code`, step-api-spec
/// `service/account.json` `CustomerV1DTO`), or a new one created once. Concurrent checkouts of
/// one customer wait briefly for the one creating it, then answer 409 (retry); see
/// `store::pg_customers`.
async fn pg_customer(
    deps: &Deps,
    adapter: Adapter<'_>,
    partner_id: &str,
    customer: &Customer,
) -> Result<PgCustomer, ApiError> {
    let pg = adapter.mode().pg();
    for _ in 0..20 {
        let claim = deps
            .store
            .claim_pg_customer(pg, partner_id, &customer.id, Timestamp::now(), PG_CUSTOMER_LEASE)
            .await
            .map_err(store_unavailable)?;
        match claim {
            PgCustomerClaim::Known(c) => return Ok(c),
            PgCustomerClaim::Claimed(token) => {
                return create_pg_customer(deps, adapter, partner_id, customer, &token).await;
            }
            PgCustomerClaim::Busy => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    Err(customer_in_progress(pg))
}

fn customer_in_progress(pg: Pg) -> ApiError {
    ApiError::conflict(
        "customer_in_progress",
        format!("another checkout is creating this customer at the PG ({pg}); retry in a few seconds"),
    )
}

/// Creates the claimed customer at the PG and records the PG's ids. A refusal created nothing
/// and gives the claim up; no answer keeps it until its lease ends (the PG may have created it).
async fn create_pg_customer(
    deps: &Deps,
    adapter: Adapter<'_>,
    partner_id: &str,
    customer: &Customer,
    claim: &ClaimToken,
) -> Result<PgCustomer, ApiError> {
    let pg = adapter.mode().pg();
    match adapter.create_customer(partner_id, customer).await {
        Ok(created) => {
            deps.store.record_pg_customer(pg, partner_id, &customer.id, claim, &created).await.map_err(|e| {
                match e {
                    // Our claim was taken over (slower than its lease): the other request records
                    // its customer; this checkout is retried and uses it.
                    paycycle::store::StoreError::Conflict(_) => customer_in_progress(pg),
                    e => store_unavailable(e),
                }
            })
        }
        Err(e) => {
            if matches!(e, PgError::Invalid(_) | PgError::Config { .. }) {
                if let Err(release) = deps.store.release_pg_customer(pg, partner_id, &customer.id, claim).await {
                    tracing::warn!(error = %release, "PG customer claim not released; its lease ends it");
                }
            }
            Err(pg_error(e))
        }
    }
}

pub(crate) fn store_unavailable(e: paycycle::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::unavailable()
}

async fn create(
    deps: &Deps,
    key: &ApiKeyRecord,
    body: &CheckoutBody,
    plan: Plan,
) -> Result<(StatusCode, Value), ApiError> {
    let now = Timestamp::now();
    let checkout_id = paycycle::ids::new_id("chk");
    let subscription_id = SubscriptionId::parse(&paycycle::ids::new_id("sub")).map_err(|_| ApiError::internal())?;
    let customer = Customer {
        id: body.customer.id.clone(),
        name: body.customer.name.trim().to_string(),
        phone: body.customer.phone.clone(),
        email: body.customer.email.clone(),
    };
    let adapter = deps.pgs.adapter(body.pg);
    let pg_customer = match adapter.needs_pg_customer() {
        true => Some(pg_customer(deps, adapter, &key.partner_id, &customer).await?),
        false => None,
    };
    let start = CheckoutStart {
        checkout_id: &checkout_id,
        subscription_id: &subscription_id,
        plan_name: &plan.name,
        amount: plan.amount,
        customer: &customer,
        return_url: body.return_url.as_deref(),
        error_url: body.error_url.as_deref(),
        options: body.options.get(&body.pg.pg()),
        pg_customer: pg_customer.as_ref(),
    };
    let prepared = match adapter.prepare_checkout(&start).await {
        Ok(p) => p,
        Err(PrepareError::Pg(e)) => return Err(pg_error(e)),
        Err(PrepareError::PlanMismatch(why)) => return Err(ApiError::unprocessable("plan_amount_mismatch", why)),
    };
    let opening = Opening {
        pg: body.pg,
        customer,
        plan,
        subscription_id,
        return_url: body.return_url.clone(),
        purpose: CheckoutPurpose::Subscribe,
    };
    let (record, answer) = open_record(key, checkout_id.clone(), opening, prepared, now);
    deps.store.create_checkout(&record).await.map_err(|e| {
        tracing::error!(error = %e, "checkout not stored");
        ApiError::unavailable()
    })?;
    tracing::info!(checkout_id = %checkout_id, pg = body.pg.as_str(), amount = %record.plan.amount, "checkout created");
    let mut out = created_json(&record);
    out[adapter.options_field()] = answer;
    Ok((StatusCode::CREATED, out))
}

/// What a new checkout is opened for.
pub(crate) struct Opening {
    pub pg: PgMode,
    pub customer: Customer,
    pub plan: Plan,
    pub subscription_id: SubscriptionId,
    pub return_url: Option<String>,
    pub purpose: CheckoutPurpose,
}

/// A new open checkout with what its PG prepared, and the PG's part of the answer.
pub(crate) fn open_record(
    key: &ApiKeyRecord,
    checkout_id: String,
    opening: Opening,
    prepared: Prepared,
    now: Timestamp,
) -> (CheckoutRecord, Value) {
    let record = CheckoutRecord {
        pg_reference: Some(prepared.reference.unwrap_or_else(|| checkout_id.clone())),
        checkout_id,
        partner_id: key.partner_id.clone(),
        pg: opening.pg,
        customer: opening.customer,
        plan: opening.plan,
        status: CheckoutStatus::Open,
        subscription_id: opening.subscription_id,
        created_at: now,
        failure: None,
        version: 1,
        work: prepared.work,
        return_url: opening.return_url,
        verifying_until: 0,
        first_charge_at: None,
        last_sent_at: None,
        sweep_after: None,
        payment_id: None,
        payer_no: prepared.payer_no,
        purpose: opening.purpose,
    };
    (record, prepared.answer)
}

/// The `201` answer for a created checkout, without its PG part.
pub(crate) fn created_json(c: &CheckoutRecord) -> Value {
    let expires_at = c.created_at.saturating_add(CHECKOUT_RETENTION).unwrap_or(c.created_at);
    json!({
        "id": c.checkout_id,
        "purpose": c.purpose.as_str(),
        "pg": c.pg,
        "status": "open",
        "subscription_id": c.subscription_id,
        "customer_id": c.customer.id,
        "amount": c.plan.amount,
        "currency": "KRW",
        "plan": {"name": c.plan.name, "interval": c.plan.interval.unit(), "interval_count": c.plan.interval.count()},
        "created_at": c.created_at.to_string(),
        "expires_at": expires_at.to_string(),
    })
}
