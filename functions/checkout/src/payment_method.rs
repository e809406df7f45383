//! `POST /subscriptions/{id}/payment-method` (DESIGN §13): the customer's new card for a live
//! subscription. Answers a checkout in registration mode (`purpose: payment_method`) that the
//! partner completes through `POST /payments/verify` like a first payment:
//! - Payple: the window opens with `AUTH` (register a card, charge nothing). Verify confirms the
//!   new key with Payple for this checkout's payer, swaps it in one conditional write, hands the
//!   old key to renew for deletion at Payple (`PUSERDEL`), and a subscription in `past_due` is
//!   charged again on the new card at renew's next tick.
//! - StepPay managed: StepPay's payment-method order and its pay page; verify confirms the order
//!   with StepPay and records the change (StepPay keeps the card and retries on its own).
//! - StepPay self: 422 `card_change_unsupported` with what to do instead.
//!
//! Body: `{return_url, error_url?}`. `Idempotency-Key` is required (a retried request gets the
//! same checkout). `active`, `past_due` and `paused` subscriptions take a new card; any other
//! state answers 409.

use http::StatusCode;
use jiff::Timestamp;
use lambda_http::{Body, Request, Response};
use paycycle::Secret;
use paycycle::api::{self, ApiError, Keep};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::domain::subscription::{Renewer, TransitionError};
use paycycle::pg::PgError;
use paycycle::pg::checkout::CheckoutStart;
use paycycle::store::api_keys::ApiKeyRecord;
use paycycle::store::checkouts::CheckoutPurpose;
use paycycle::store::sha256_hex;
use paycycle::store::subscriptions::SubscriptionRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Deps, Opening, check_url, created_json, open_record, pg_error, store_unavailable};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CardChangeBody {
    /// Where the PG sends the customer back (Payple `PCD_RST_URL`, StepPay successUrl).
    return_url: String,
    #[serde(default)]
    error_url: Option<String>,
}

pub async fn route(
    deps: &Deps,
    req: &Request,
    key: &ApiKeyRecord,
    id: &str,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let idem_key = api::idempotency_key(req)?;
    let body: CardChangeBody = api::parse_json(req)?;
    check_url("return_url", Some(&body.return_url))?;
    check_url("error_url", body.error_url.as_deref())?;
    let scope = format!("payment-method:{}", key.partner_id);
    let hash = sha256_hex(format!("{id}\n{}", serde_json::to_string(&body).unwrap_or_default()).as_bytes());
    let keep = |status| if status == StatusCode::CREATED { Keep::Save } else { Keep::Release };
    api::idempotent(&deps.store, &scope, &idem_key, &hash, request_id, keep, || open(deps, key, id, &body)).await
}

/// The subscription if it exists and belongs to the key's partner; 404 otherwise.
async fn owned(deps: &Deps, key: &ApiKeyRecord, id: &str) -> Result<SubscriptionRecord, ApiError> {
    let Ok(id) = SubscriptionId::parse(id) else { return Err(ApiError::not_found("subscription")) };
    match deps.store.get_subscription(&id).await.map_err(store_unavailable)? {
        Some(r) if r.partner_id == key.partner_id => Ok(r),
        _ => Err(ApiError::not_found("subscription")),
    }
}

async fn open(
    deps: &Deps,
    key: &ApiKeyRecord,
    id: &str,
    body: &CardChangeBody,
) -> Result<(StatusCode, Value), ApiError> {
    let r = owned(deps, key, id).await?;
    let now = Timestamp::now();
    // The same check verify makes before the swap: refused now, not after the customer typed a card.
    r.subscription.payment_method_changed(now).map_err(|e| match e {
        TransitionError::UnknownOutcomePending(_) => {
            ApiError::conflict("charge_outcome_unknown", format!("{e}; change the card after renew settles it"))
        }
        e => ApiError::conflict("illegal_transition", format!("no new card: {e}")),
    })?;
    let checkout_id = paycycle::ids::new_id("chk");
    let start = CheckoutStart {
        checkout_id: &checkout_id,
        subscription_id: r.id(),
        plan_name: &r.subscription.plan.name,
        amount: r.subscription.plan.amount,
        customer: &r.customer,
        return_url: Some(&body.return_url),
        error_url: body.error_url.as_deref(),
        options: None,
        pg_customer: None,
    };
    let adapter = deps.pgs.adapter(r.pg);
    let pg_subscription = pg_subscription(deps, &r).await?;
    let prepared = match adapter.prepare_card_change(&start, pg_subscription.as_ref().map(Secret::expose)).await {
        Ok(p) => p,
        Err(PgError::Unsupported(why)) => return Err(ApiError::unprocessable("card_change_unsupported", why)),
        Err(e) => return Err(pg_error(e)),
    };
    let opening = Opening {
        pg: r.pg,
        customer: r.customer.clone(),
        plan: r.subscription.plan.clone(),
        subscription_id: r.id().clone(),
        return_url: Some(body.return_url.clone()),
        purpose: CheckoutPurpose::PaymentMethod,
    };
    let (record, answer) = open_record(key, checkout_id, opening, prepared, now);
    deps.store.create_checkout(&record).await.map_err(store_unavailable)?;
    tracing::info!(checkout_id = %record.checkout_id, subscription_id = %r.id(), pg = r.pg.as_str(), "card change checkout created");
    let mut out = created_json(&record);
    out[adapter.options_field()] = answer;
    Ok((StatusCode::CREATED, out))
}

/// StepPay managed: its own subscription's id, which paycycle keeps (sealed) as the billing key.
async fn pg_subscription(deps: &Deps, r: &SubscriptionRecord) -> Result<Option<Secret>, ApiError> {
    let Some(stored) = r.billing_key.as_ref().filter(|_| r.pg.renewer() == Renewer::Pg) else { return Ok(None) };
    deps.vault.open(r.id(), stored).await.map(Some).map_err(|e| {
        tracing::error!(subscription_id = %r.id(), error = %e, "the billing key did not open; nothing changed");
        ApiError::unavailable()
    })
}
