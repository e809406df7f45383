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
