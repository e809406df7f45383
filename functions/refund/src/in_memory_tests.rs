//! refund's orchestration on an in-memory store, through its Lambda handler and against the PG
//! sandbox in this process over real HTTP: each case runs in milliseconds (issue 22 §2). The
//! DynamoDB side — fifty concurrent refunds on moto, the HTTP API end to end — is
//! `tests/tests/refunds.rs`.

use crate::Deps;
use paycycle::domain::attempt::ChargeId;
use paycycle::money::Krw;
use paycycle::pg::{ChargeRequest, Payer, PgMode};
use paycycle::store::payments::PaymentRecord;
use paycycle_fixtures::{Fresh, Pgs, json_body, request};
use serde_json::{Value, json};

const PARTNER: &str = "partner_a";

struct Env {
    fresh: Fresh,
    pgs: Pgs,
    deps: Deps,
    key: String,
}

async fn env() -> Env {
    let fresh = Fresh::in_memory();
    let pgs = Pgs::start().await;
    let deps = fresh.services(&pgs);
    let key = fresh.api_key(PARTNER).await;
    Env { fresh, pgs, deps, key }
}

impl Env {
    /// A charge the sandbox approved (StepPay self, on a billing key it issued), recorded as ours.
    async fn payment(&self, subscription: &str, won: i64) -> PaymentRecord {
        let billing_key = self.pgs.billing_key(PgMode::SteppaySelf).await;
        let charge_id: ChargeId = format!("{subscription}-p1-a1").parse().unwrap();
        let payer =
            Payer { customer_id: "cus_1".into(), name: "홍길동".into(), phone: None, email: None, payer_no: None };
        let amount = Krw::new(won).unwrap();
        let req = ChargeRequest { billing_key, charge_id: charge_id.clone(), amount, goods: "Pro".into(), payer };
        let (charged, _) = self.pgs.registry.adapter(PgMode::SteppaySelf).charge(&req).await.unwrap();
        let p = PaymentRecord::paid(
            PgMode::SteppaySelf,
            &charged.pg_payment_id,
            "cus_1",
            charged.amount,
            charged.approved_at,
            Some(charge_id.subscription().clone()),
            Some(charge_id),
            None,
        )
        .for_partner(PARTNER);
        self.fresh.store.create_payment(&p).await.unwrap();
        p
    }

    /// `POST /payments/{id}/refunds` through the handler: the status and the JSON answer.
    async fn refund(&self, p: &PaymentRecord, body: Value, idempotency_key: &str) -> (u16, Value) {
        let req = request("POST", &format!("/payments/{}/refunds", p.payment_id))
            .bearer(&self.key)
            .idempotency_key(idempotency_key)
            .path_param("id", &p.payment_id)
            .json(&body)
            .build();
        let res = crate::handler(&self.deps, req).await.unwrap();
        (res.status().as_u16(), json_body(&res))
    }

    /// What the PG says it refunded in all.
    async fn pg_refunded(&self) -> i64 {
        let ledger = self.pgs.client.ledger().await.unwrap();
        ledger["refunds"].as_array().unwrap().iter().map(|r| r["amount"].as_i64().unwrap_or_default()).sum()
    }

    async fn stored(&self, p: &PaymentRecord) -> PaymentRecord {
        self.fresh.store.get_payment(&p.payment_id).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn refunds_never_exceed_what_was_paid_and_match_the_pg() {
    let e = env().await;
    let p = e.payment("sub_rf1", 10_000).await;
    let (status, a) = e.refund(&p, json!({"amount": 6_000, "reason": "고객 요청"}), "k1").await;
    assert_eq!((status, a["status"].as_str()), (201, Some("succeeded")), "{a}");
    let (status, b) = e.refund(&p, json!({"amount": 5_000, "reason": "고객 요청"}), "k2").await;
    assert_eq!((status, b["error"]["code"].as_str()), (422, Some("amount_exceeds_refundable")), "{b}");
    let (status, c) = e.refund(&p, json!({"reason": "나머지 전부"}), "k3").await;
    assert_eq!((status, c["amount"].as_i64()), (201, Some(4_000)), "{c}");
    let (status, d) = e.refund(&p, json!({"reason": "또"}), "k4").await;
    assert_eq!((status, d["error"]["code"].as_str()), (422, Some("nothing_refundable")), "{d}");
    let stored = e.stored(&p).await;
    assert_eq!((stored.amounts.refunded.won(), stored.refundable.won()), (10_000, 0));
    assert_eq!(e.pg_refunded().await, 10_000, "the PG refunded exactly what we recorded");
}

#[tokio::test]
async fn a_replayed_request_answers_the_same_refund_and_refunds_once() {
    let e = env().await;
    let p = e.payment("sub_rf2", 9_900).await;
    let body = json!({"amount": 1_000, "reason": "부분 환불"});
    let (first, a) = e.refund(&p, body.clone(), "same-key").await;
    let (again, b) = e.refund(&p, body, "same-key").await;
    assert_eq!((first, again), (201, 201));
    assert_eq!(a["id"], b["id"], "one refund");
    let (reused, c) = e.refund(&p, json!({"amount": 2_000, "reason": "다른 요청"}), "same-key").await;
    assert_eq!((reused, c["error"]["code"].as_str()), (422, Some("idempotency_key_reused")), "{c}");
    assert_eq!(e.pg_refunded().await, 1_000);
}

#[tokio::test]
async fn a_declined_refund_gives_its_reservation_back() {
    let e = env().await;
    let p = e.payment("sub_rf3", 5_000).await;
    let decline = json!({"operation": "refund", "count": 1, "fault": {"kind": "decline", "hard": false}});
    e.pgs.client.admin("/__admin/scenarios", decline).await.unwrap();
    let (status, a) = e.refund(&p, json!({"amount": 5_000, "reason": "고객 요청"}), "k1").await;
    assert_eq!((status, a["error"]["code"].as_str()), (502, Some("refund_declined")), "{a}");
    let stored = e.stored(&p).await;
    assert_eq!((stored.refundable.won(), stored.amounts.refund_pending.won()), (5_000, 0), "nothing stays reserved");
    let (status, b) = e.refund(&p, json!({"amount": 5_000, "reason": "다시"}), "k2").await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(e.pg_refunded().await, 5_000);
}

#[tokio::test]
async fn another_partners_payment_is_not_found() {
    let e = env().await;
    let p = e.payment("sub_rf4", 5_000).await;
    let other = e.fresh.api_key("partner_b").await;
    let req = request("POST", &format!("/payments/{}/refunds", p.payment_id))
        .bearer(&other)
        .idempotency_key("k")
        .path_param("id", &p.payment_id)
        .json(&json!({"reason": "x"}))
        .build();
    let res = crate::handler(&e.deps, req).await.unwrap();
    assert_eq!(res.status().as_u16(), 404, "{}", json_body(&res));
    assert_eq!(e.pg_refunded().await, 0);
}
