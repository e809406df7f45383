//! What a PG's answer means for money, end to end over the local stack's HTTP API (renew through
//! `POST /__dev/tick`, refunds through `POST /payments/{id}/refunds`), checked on the sandbox's
//! ledger:
//!
//! - an explicit failure answer with an issuer code nobody publishes is a soft decline that dunning
//!   retries, never an unknown outcome that ends in `needs_review` (issue 20 item 6);
//! - a refund whose outcome is unknown stays reserved until the PG positively says what happened;
//!   where the PG cannot show refunds (Payple) it goes to a person (issue 20 item 10).

use jiff::civil::date;
use jiff::{SignedDuration, Timestamp};
use paycycle::calendar::seoul;
use paycycle::domain::attempt::SubscriptionId;
use paycycle::domain::subscription::SubscriptionState;
use paycycle::pg::PgMode;
use paycycle::pg::{Payer, Registry};
use paycycle::store::Store;
use paycycle::store::subscriptions::SubscriptionRecord;
use paycycle_dev::{LocalStack, Options};
use paycycle_e2e::{Partner, SandboxDriver};
use serde_json::{Value, json};

struct Env {
    stack: LocalStack,
    store: Store,
    partner: Partner,
    pgs: Registry,
}

async fn env() -> Env {
    let stack =
        LocalStack::start(Options { api_port: 0, pg_timeout_ms: Some(1_000), ..Options::default() }).await.unwrap();
    let store = stack.store().await;
    let key = stack.create_api_key("e2e", "default").await.unwrap();
    let partner = Partner::new(stack.api_url(), key);
    let names = paycycle_dev::LocalNames::of(&stack.provisioned);
    let config = paycycle_dev::local_config(&names, &stack.sandbox.base_url(), Some(1_000)).unwrap();
    let pgs = Registry::new(&config.pg, &paycycle_dev::local_secrets());
    Env { stack, store, partner, pgs }
}

fn kst(y: i16, m: i8, d: i8, h: i8) -> Timestamp {
    date(y, m, d).at(h, 0, 0, 0).to_zoned(seoul()).unwrap().timestamp()
}

fn payer() -> Payer {
    Payer { customer_id: "c".into(), name: "홍길동".into(), phone: None, email: None, payer_no: Some("1".into()) }
}

impl Env {
    fn driver(&self) -> SandboxDriver {
        SandboxDriver::new(self.stack.sandbox.base_url())
    }

    async fn admin(&self, path: &str, body: Value) {
        self.driver().admin(path, body).await
    }

    async fn billing_key(&self, pg: PgMode) -> String {
        match pg {
            PgMode::Payple => self.driver().payple_billing_key(&self.pgs.payple, &payer()).await,
            _ => self.driver().steppay_billing_key().await,
        }
    }

    /// An active monthly subscription of partner `default` with a real billing key at the sandbox.
    async fn subscription(&self, id: &str, pg: PgMode, anchor: Timestamp) -> (SubscriptionRecord, String) {
        let key = self.billing_key(pg).await;
        let vault = self.stack.vault().await;
        let r = paycycle_dev::seed_subscription(&self.store, &vault, id, pg, anchor, 9_900, &key).await.unwrap();
        (r, key)
    }

    /// One renew tick at billing time `now`, as the schedule would send it.
    async fn tick(&self, now: Timestamp) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/__dev/tick", self.stack.api_url()))
            .json(&json!({"now": now.to_string()}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        v["report"].clone()
    }

    async fn get(&self, id: &str) -> SubscriptionRecord {
        self.store.get_subscription(&SubscriptionId::parse(id).unwrap()).await.unwrap().unwrap()
    }

    /// The subscription's state as the partner sees it.
    async fn status(&self, id: &str) -> String {
        let (code, v) = self.partner.get(&format!("/subscriptions/{id}")).await;
        assert_eq!(code, 200, "{v}");
        v["state"].as_str().unwrap_or_default().to_string()
    }

    /// The PG's charges for subscription `id` (our charge ids, as the PG recorded them).
    async fn pg_charges(&self, id: &str) -> Vec<String> {
        let ledger = self.driver().ledger().await;
        ledger["charges"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                let ours = c["partner_order_id"].as_str().or(c["id"].as_str())?;
                ours.starts_with(&format!("{id}-p")).then(|| ours.to_string())
            })
            .collect()
    }
}

/// A decline with an issuer code the client does not list, on the first try of period 1: the
/// subscription must go `past_due` and be charged by dunning's +1 day retry.
async fn unknown_issuer_code_is_dunned(pg: PgMode, id: &str, code: &str) {
    let e = env().await;
    let (s, key) = e.subscription(id, pg, kst(2027, 1, 31, 10)).await;
    let due = s.subscription.next_attempt_at.unwrap();
    e.admin(
        "/__admin/scenarios",
        json!({"billing_key": key, "count": 1, "fault": {"kind": "decline_with_code", "code": code}}),
    )
    .await;
    let report = e.tick(due).await;
    assert_eq!((report["declined"].as_u64(), report["unknown"].as_u64()), (Some(1), Some(0)), "{report}");
    let after = e.get(id).await;
    assert_eq!(after.subscription.state, SubscriptionState::PastDue, "{:?}", after.subscription);
    assert_eq!(e.status(id).await, "past_due");
    let retry = after.subscription.next_attempt_at.unwrap();
    assert_eq!(retry, due.checked_add(SignedDuration::from_hours(24)).unwrap(), "dunning's first retry");
    assert!(e.pg_charges(id).await.is_empty(), "nothing was charged");

    // Still no review a day later: dunning charges the retry.
    let report = e.tick(retry).await;
    assert_eq!(report["charged"].as_u64(), Some(1), "{report}");
    assert_eq!(e.status(id).await, "active");
    assert_eq!(e.pg_charges(id).await, [format!("{id}-p1-a2")]);
}

#[tokio::test]
async fn an_explicit_payple_failure_with_an_unknown_issuer_code_is_a_soft_decline_retried_by_dunning() {
    unknown_issuer_code_is_dunned(PgMode::Payple, "sub_ppissuer", "CARD9134").await;
}

#[tokio::test]
async fn an_explicit_steppay_failure_with_an_unknown_error_code_is_a_soft_decline_retried_by_dunning() {
    unknown_issuer_code_is_dunned(PgMode::SteppaySelf, "sub_spissuer", "ISSUER_REFUSED_51").await;
}

#[tokio::test]
async fn a_payple_auth_failure_sends_nothing_and_is_retried_without_review() {
    let e = env().await;
    let id = "sub_ppauth";
    let (s, _) = e.subscription(id, PgMode::Payple, kst(2027, 1, 31, 10)).await;
    let due = s.subscription.next_attempt_at.unwrap();
    // Payple's partner auth refuses twice with a code no document lists (the re-pay's auth, then
    // the next auth whatever it is for): no charge request ever leaves.
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "auth", "count": 2, "fault": {"kind": "decline_with_code", "code": "AUTH0099"}}),
    )
    .await;
    let report = e.tick(due).await;
    assert_eq!(report["unknown"].as_u64(), Some(0), "nothing was sent: not an unknown outcome: {report}");
    let after = e.get(id).await;
    assert!(
        after.subscription.collection.as_ref().is_none_or(|c| c.unknown_since.is_none()),
        "no unknown outcome recorded: {:?}",
        after.subscription
    );
    // A day later (past the review window) the auth fails once more: still not a review case.
    let later = due.checked_add(SignedDuration::from_hours(25)).unwrap();
    e.tick(later).await;
    assert_eq!(e.status(id).await, "active");
    // Then Payple answers again and the same period is charged, once.
    let report = e.tick(later.checked_add(SignedDuration::from_mins(10)).unwrap()).await;
    assert_eq!(report["charged"].as_u64(), Some(1), "{report}");
    assert_eq!(e.pg_charges(id).await.len(), 1);
}

impl Env {
    /// A real renewal-style charge at the sandbox, recorded as partner `default`'s payment.
    async fn payment(&self, pg: PgMode, sub: &str, amount: i64) -> paycycle::store::payments::PaymentRecord {
        use paycycle::domain::attempt::ChargeId;
        use paycycle::money::Krw;
        use paycycle::pg::ChargeRequest;
        let billing_key = self.billing_key(pg).await;
        let charge_id = ChargeId::new(SubscriptionId::parse(sub).unwrap(), 1, 1).unwrap();
        let req = ChargeRequest {
            billing_key,
            charge_id: charge_id.clone(),
            amount: Krw::new(amount).unwrap(),
            goods: "Pro".into(),
            payer: payer(),
        };
        let charged = self.pgs.adapter(pg).charge(&req).await.unwrap().0;
        let p = paycycle::store::payments::PaymentRecord::paid(
            pg,
            &charged.pg_payment_id,
            "cus_1",
            charged.amount,
            charged.approved_at,
            Some(SubscriptionId::parse(sub).unwrap()),
            Some(charge_id),
            None,
        )
        .for_partner("default");
        self.store.create_payment(&p).await.unwrap();
        p
    }

    async fn refund(&self, payment_id: &str, idem: &str, body: Value) -> (u16, Value) {
        self.partner.post(&format!("/payments/{payment_id}/refunds"), &body, Some(idem)).await
    }

    async fn pg_refunds(&self) -> (usize, i64) {
        let ledger = self.driver().ledger().await;
        (ledger["refunds"].as_array().unwrap().len(), ledger["totals"]["refunded"].as_i64().unwrap())
    }
}

#[tokio::test]
async fn a_payple_refund_with_an_unknown_outcome_stays_reserved_and_cannot_be_refunded_twice() {
    let e = env().await;
    let p = e.payment(PgMode::Payple, "sub_pprefund", 10_000).await;
    // Payple refunds, then holds its answer past our 1 s timeout. Its result lookup has no refund
    // fields (manual_card "결제결과 조회"): it shows the payment as paid, refunded or not.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    let (status, body) = e.refund(&p.payment_id, "pp-1", json!({"reason": "unknown outcome"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
    assert_eq!(e.pg_refunds().await, (1, 10_000), "Payple did refund");
    let (_, ours) = e.partner.get(&format!("/payments/{}", p.payment_id)).await;
    assert_eq!((ours["refund_pending"].as_i64(), ours["refundable"].as_i64()), (Some(10_000), Some(0)), "{ours}");
    assert_eq!(ours["refunds"][0]["status"], "unknown", "{ours}");

    // The same key again: nothing Payple can show settles it, so it stays unknown and reserved.
    let (status, body) = e.refund(&p.payment_id, "pp-1", json!({"reason": "unknown outcome"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
    // A new key cannot refund the reserved money again.
    let (status, body) = e.refund(&p.payment_id, "pp-2", json!({"reason": "try again"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("nothing_refundable")), "{body}");
    let (status, body) = e.refund(&p.payment_id, "pp-3", json!({"amount": 1000, "reason": "a part"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("amount_exceeds_refundable")), "{body}");
    assert_eq!(e.pg_refunds().await, (1, 10_000), "exactly one PG refund, never more than was paid");
}

#[tokio::test]
async fn a_steppay_refund_in_progress_stays_reserved_until_the_receipt_shows_it() {
    let e = env().await;
    let p = e.payment(PgMode::SteppaySelf, "sub_sprefund", 10_000).await;
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    // Every receipt taken meanwhile (ours, and verify's for StepPay's CANCELED webhook) still says
    // the cancel is in progress, without an amount.
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "lookup", "count": 100, "fault": {"kind": "cancel_in_progress"}}),
    )
    .await;
    let (status, body) = e.refund(&p.payment_id, "sp-1", json!({"amount": 4000, "reason": "lagging"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
    let (_, ours) = e.partner.get(&format!("/payments/{}", p.payment_id)).await;
    assert_eq!((ours["refund_pending"].as_i64(), ours["refundable"].as_i64()), (Some(4000), Some(6000)), "{ours}");

    let (status, body) = e.refund(&p.payment_id, "sp-1", json!({"amount": 4000, "reason": "lagging"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{body}");
    let driver = e.driver();
    driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();

    // The retry finds the receipt settled: succeeded, not refunded twice.
    let (status, body) = e.refund(&p.payment_id, "sp-1", json!({"amount": 4000, "reason": "lagging"})).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("succeeded")), "{body}");
    assert_eq!(e.pg_refunds().await, (1, 4000));
}

#[tokio::test]
async fn a_steppay_refund_is_not_released_on_a_receipt_that_has_not_caught_up_with_it() {
    let e = env().await;
    let p = e.payment(PgMode::SteppaySelf, "sub_splag", 10_000).await;
    // StepPay cancels, then holds its answer past our 1 s timeout; its receipt lags behind the
    // cancel for a while (still COMPLETE, nothing canceled), then shows it.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 2500})).await;
    e.admin(
        "/__admin/scenarios",
        json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}}),
    )
    .await;
    e.admin("/__admin/scenarios", json!({"operation": "lookup", "count": 100, "fault": {"kind": "lookup_lags"}})).await;
    let body = json!({"amount": 4000, "reason": "lagging receipt"});
    let (status, v) = e.refund(&p.payment_id, "lag-1", body.clone()).await;
    assert_eq!(e.pg_refunds().await, (1, 4000), "StepPay did refund");
    assert_eq!((status, v["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{v}");
    let (_, ours) = e.partner.get(&format!("/payments/{}", p.payment_id)).await;
    assert_eq!((ours["refund_pending"].as_i64(), ours["refundable"].as_i64()), (Some(4000), Some(6000)), "{ours}");
    // The same key while the receipt still lags: still unknown, still reserved.
    let (status, v) = e.refund(&p.payment_id, "lag-1", body.clone()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (504, Some("refund_outcome_unknown")), "{v}");
    let driver = e.driver();
    driver.http.delete(driver.url("/__admin/scenarios")).send().await.unwrap().error_for_status().unwrap();
    // The receipt caught up: the refund succeeded, once.
    let (status, v) = e.refund(&p.payment_id, "lag-1", body).await;
    assert_eq!((status, v["status"].as_str()), (201, Some("succeeded")), "{v}");
    assert_eq!(e.pg_refunds().await, (1, 4000), "exactly one PG refund");
}
