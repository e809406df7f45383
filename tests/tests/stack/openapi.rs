//! The contract checker the end-to-end tests rely on (every `Partner` call is checked against
//! `openapi.yaml`) must itself catch violations, or those checks would pass vacuously.

use paycycle_e2e::OpenApi;
use serde_json::json;

#[test]
fn the_checker_accepts_a_conforming_answer_and_catches_violations() {
    let spec = OpenApi::get();
    let error = json!({"error": {"code": "not_found", "message": "no such payment", "request_id": "r-1"}});
    spec.check("GET", "/payments/pay_1", 404, &error).unwrap();
    // Missing fields, wrong types, unknown routes and undocumented statuses are all caught.
    assert!(spec.check("GET", "/payments/pay_1", 404, &json!({"error": {"code": "Not Found"}})).is_err());
    assert!(spec.check("GET", "/payments/pay_1", 200, &json!({"id": "pay_1", "amount": "9900"})).is_err());
    assert!(spec.check("GET", "/nope", 200, &json!({})).is_err());
    assert!(spec.check("GET", "/payments/pay_1", 418, &error).is_err());
    assert!(spec.check("DELETE", "/payments/pay_1", 404, &error).is_err());
    // Literal segments win over templates: /payments/verify is not /payments/{id}.
    assert!(spec.check("POST", "/payments/verify", 200, &json!({"checkout": {}})).is_err());
    let sub = json!({"data": [], "has_more": false, "next_cursor": null});
    spec.check("GET", "/subscriptions?customer_id=c", 200, &sub).unwrap();
    assert!(
        spec.check("GET", "/subscriptions", 200, &json!({"data": [], "has_more": "no", "next_cursor": null})).is_err()
    );
}

/// A payment shows the card it was paid with (Payple: card company, masked number, trade number)
/// and its receipt URL, `null` where the PG gives none; a number that is not masked is never a
/// conforming answer.
#[test]
fn a_payment_shows_its_masked_card_and_receipt_and_never_a_full_card_number() {
    let spec = OpenApi::get();
    let mut p = json!({"id": "pay_1", "pg": "payple", "status": "paid", "amount": 9900, "refunded": 0,
        "refund_pending": 0, "refundable": 9900, "currency": "KRW", "paid_at": "2027-01-31T01:00:00Z",
        "customer_id": "cus_1", "subscription_id": "sub_1", "charge_id": null, "refunds": [],
        "card": {"name": "NH", "number_masked": "2121********2031", "trade_number": "20270131100000abc"},
        "receipt_url": "https://www.danalpay.com/receipt/creditcard/view.aspx?x=1"});
    spec.check("GET", "/payments/pay_1", 200, &p).unwrap();
    for full in ["2121000012342031", "2121-0000-1234-2031", "2121 0000 1234 2031"] {
        p["card"]["number_masked"] = json!(full);
        assert!(spec.check("GET", "/payments/pay_1", 200, &p).is_err(), "{full}");
    }
    p["card"] = json!(null);
    p["receipt_url"] = json!(null);
    spec.check("GET", "/payments/pay_1", 200, &p).unwrap();
    p.as_object_mut().unwrap().remove("card");
    assert!(spec.check("GET", "/payments/pay_1", 200, &p).is_err(), "card is always there (null when unknown)");
}

/// The event catalog (`webhooks` in openapi.yaml) names exactly the kinds paycycle publishes, and
/// its check catches an event of another shape: a missing field, an extra one, a wrong type, a
/// kind it does not list, data of the other subject.
#[test]
fn the_event_catalog_lists_every_kind_and_the_event_check_catches_other_shapes() {
    use paycycle::domain::events::EventKind;
    let text = std::fs::read_to_string(paycycle_testkit::repo_root().join("openapi.yaml")).unwrap();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let mut listed: Vec<&str> = doc["webhooks"].as_object().unwrap().keys().map(String::as_str).collect();
    listed.sort();
    let mut kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.detail_type()).collect();
    kinds.sort();
    assert_eq!(listed, kinds);

    let spec = OpenApi::get();
    let data = json!({"subscription_id": "sub_1", "partner_id": "p", "customer_id": "c", "state": "active",
        "period": 1, "next_attempt_at": "2027-03-01T00:00:00Z", "payment_id": "pay_1", "amount": 9900, "version": 3});
    let event = |kind: &str, data: serde_json::Value| {
        json!({"detail-type": kind, "detail": {"id": "evt_0123456789abcdef01234567", "type": kind,
            "occurred_at": "2027-02-01T00:00:00Z", "data": data}})
    };
    spec.check_event(&event("subscription.renewed", data.clone())).unwrap();
    let mut missing = data.clone();
    missing.as_object_mut().unwrap().remove("amount");
    assert!(spec.check_event(&event("subscription.renewed", missing)).is_err());
    let mut extra = data.clone();
    extra["external"] = json!(false);
    assert!(spec.check_event(&event("subscription.canceled", extra)).is_err());
    let mut wrong = data.clone();
    wrong["amount"] = json!("9900");
    assert!(spec.check_event(&event("payment.succeeded", wrong)).is_err());
    assert!(spec.check_event(&event("subscription.exploded", data.clone())).is_err());
    assert!(spec.check_event(&event("refund.succeeded", data)).is_err());
    let refund = json!({"refund_id": "ref_1", "payment_id": "pay_1", "amount": 1000, "partner_id": "p"});
    assert!(spec.check_event(&event("refund.succeeded", refund.clone())).is_err(), "external is required");
    let mut refund = refund;
    refund["external"] = json!(true);
    spec.check_event(&event("refund.succeeded", refund)).unwrap();
}
