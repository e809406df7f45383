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
