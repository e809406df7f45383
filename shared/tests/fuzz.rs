//! Issue #15: fuzzing the parsers that face the PGs (cargo-fuzz needs a nightly toolchain this
//! project does not download; proptest runs on stable, shrinks, and replays failures from
//! `proptest-regressions/`). Structure-aware inputs — JSON and form bodies built from the real
//! field names with values of every JSON type, deep nesting, odd Unicode — plus raw bytes:
//!
//! - StepPay webhooks (self `PAYMENT`/`CANCELED`… and v2 `order.*`), JSON and form;
//! - Payple results (`PCD_*`), JSON and form, and their classification;
//! - the `Steppay-Signature` header (any mix of `timestamp=`, `key=`, base64, separators);
//! - PG error answers: StepPay's status + body classification, Payple's result codes.
//!
//! Besides "never panics", each target checks a money-safety property (a money-moving call's
//! unreadable or 5xx answer is `Unknown`, never a decline; only known decline codes decline; a
//! signature holds only for the exact body, secret and fresh timestamp). `make fuzz` runs each
//! target with FUZZ_CASES (default 10,000) cases; `make test` with 512.

use paycycle::pg::PgError;
use paycycle::pg::payple::transformers::{PaypleResult, classify_error};
use paycycle::pg::steppay::transformers::classify;
use paycycle::pg::steppay::webhook::{parse, sign, verify_signature};
use paycycle::secret::Secret;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() }
}

/// Any string, biased to the troublemakers: empty, digits, huge numbers, Korean, control and
/// combining characters, JSON and form metacharacters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,30}",
        "-?[0-9]{1,4}\\.[0-9]{1,4}",
        "[가-힣]{1,10}",
        "[\\x00-\\x1f\"\\\\&=%+;,:]{1,10}",
        ".{0,40}",
        "(success|error|close|PAY|CERT|AUTH|card|transfer|PAID|COMPLETE|CANCELED|FAILED|order\\.paid)",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object over `fields` (and a few unknown ones) with values of any type.
fn object_over(fields: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![4 => prop::sample::select(fields).prop_map(str::to_string), 1 => "[a-zA-Z_]{1,16}"];
    prop::collection::btree_map(key, json_value(), 0..fields.len() + 3).prop_map(|m| m.into_iter().collect())
}

/// The same fields as a form body (values as their JSON text, strings bare).
fn as_form(m: &Map<String, Value>) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in m {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        f.append_pair(k, &v);
    }
    f.finish()
}

const STEPPAY_FIELDS: &[&str] = &["webHookType", "orderId", "idKey", "event", "timestamp", "version", "data"];

/// StepPay webhook bodies: mostly shaped like the self (`webHookType`, `orderId`, `idKey`) or
/// v2 (`timestamp`, `version`, `event`, `data`) webhooks with odd values, some anything at all.
fn steppay_body() -> impl Strategy<Value = Map<String, Value>> {
    let kind = prop_oneof![
        prop::sample::select(&["PAYMENT", "VBANK", "CANCELED", "USER_CANCELED", "FAILED", "CMS", "BILLKEY"][..])
            .prop_map(|k| json!(k)),
        json_value(),
    ];
    let event = prop_oneof![
        prop::sample::select(
            &[
                "order.payment_completed",
                "order.updated",
                "subscription.updated",
                "payment.completed",
                "payment.failed",
                "payment.canceled",
                "invoice.created",
                "order.paid",
            ][..]
        )
        .prop_map(|k| json!(k)),
        json_value(),
    ];
    let self_hook =
        (kind, prop_oneof![text().prop_map(Value::String), json_value()], json_value(), object_over(STEPPAY_FIELDS))
            .prop_map(|(kind, id_key, order_id, mut extra)| {
                extra.insert("webHookType".into(), kind);
                extra.insert("idKey".into(), id_key);
                extra.insert("orderId".into(), order_id);
                extra
            });
    let v2 = (event, json_value(), json_value()).prop_map(|(event, timestamp, data)| {
        let mut m = Map::new();
        m.insert("event".into(), event);
        m.insert("timestamp".into(), timestamp);
        m.insert("data".into(), data);
        m
    });
    prop_oneof![3 => self_hook, 2 => v2, 1 => object_over(STEPPAY_FIELDS)]
}

const PAYPLE_FIELDS: &[&str] = &[
    "PCD_PAY_RST",
    "PCD_PAY_CODE",
    "PCD_PAY_MSG",
    "PCD_PAY_OID",
    "PCD_PAY_TYPE",
    "PCD_PAY_WORK",
    "PCD_PAYER_ID",
    "PCD_PAYER_NO",
    "PCD_PAY_TOTAL",
    "PCD_PAY_AMOUNT",
    "PCD_PAY_TIME",
    "PCD_PAY_CARDNAME",
    "PCD_PAY_CARDNUM",
    "PCD_PAY_CARDTRADENUM",
    "PCD_PAY_CARDRECEIPT",
    "PCD_USER_DEFINE1",
    "PCD_PAY_REQKEY",
    "PCD_PAY_COFURL",
    "PCD_PAY_GOODS",
    "PCD_PAY_ISTAX",
    "PCD_PAY_TAXTOTAL",
    "PCD_REFUND_TOTAL",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=UTF-8",
    "text/plain",
    "",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn steppay_webhooks_parse_or_refuse_never_panic(fields in steppay_body(), form in any::<bool>(),
                                                    ct in prop::sample::select(CONTENT_TYPES)) {
        let body = if form { as_form(&fields) } else { Value::Object(fields.clone()).to_string() };
        let first = parse(ct, body.as_bytes()).map(|w| format!("{w:?}")).map_err(|e| e.to_string());
        // Deterministic: the same bytes parse the same way (the dedupe key depends on it).
        let second = parse(ct, body.as_bytes()).map(|w| format!("{w:?}")).map_err(|e| e.to_string());
        prop_assert_eq!(first, second);
    }

    #[test]
    fn steppay_webhooks_from_raw_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512),
                                                   ct in prop::sample::select(CONTENT_TYPES)) {
        let _ = parse(ct, &body);
    }

    #[test]
    fn payple_results_parse_or_refuse_and_keep_their_oid(fields in object_over(PAYPLE_FIELDS), form in any::<bool>(),
                                                         ct in prop::sample::select(CONTENT_TYPES)) {
        let body = if form { as_form(&fields) } else { Value::Object(fields.clone()).to_string() };
        if let Ok(r) = PaypleResult::parse(ct, body.as_bytes()) {
            let _ = r.status();
            let _ = r.message();
            // Classifying any result never panics. An explicit failure answer (`PCD_PAY_RST=error`)
            // says no money moved: never an unknown outcome (but a repeated OID, SPCD0014). Only a
            // known hard code is a hard decline; anything else that declines is soft.
            let e = classify_error(&r);
            let explicit_error = r.rst.as_deref() == Some("error");
            if explicit_error && r.code() != "SPCD0014" {
                prop_assert!(!e.outcome_unknown(), "{:?} → {e:?}", r.code());
            }
            if let PgError::Declined { code, hard, .. } = &e {
                let known = ["SPCD0003", "PAYC0009", "SPCD0001", "SPCD0002", "SPCD0005", "PAYC0005", "PAYC0006"];
                prop_assert!(explicit_error || known.contains(&code.as_str()), "{code}");
                if *hard {
                    prop_assert!(["SPCD0001", "SPCD0002", "SPCD0005", "PAYC0005", "PAYC0006"].contains(&code.as_str()), "{code}");
                }
            }
            // When the body is encoded as its content type says, the OID is the one sent.
            let encoded_as_said = form == ct.starts_with("application/x-www-form-urlencoded");
            if let (true, Some(Value::String(oid))) = (encoded_as_said, fields.get("PCD_PAY_OID")) {
                prop_assert!(r.dedupe_key().starts_with(oid.as_str()), "{} vs {oid}", r.dedupe_key());
            }
        }
    }

    #[test]
    fn an_explicit_payple_failure_is_a_decline_never_an_unknown_outcome(
        code in prop_oneof!["[A-Z]{4}[0-9]{4}", prop::sample::select(&["SPCD0001", "SPCD0003", "SPCD0014", "PAYC0006", ""][..]).prop_map(str::to_string)],
        msg in text(),
    ) {
        let r = PaypleResult { rst: Some("error".into()), code: Some(code.clone()), msg: Some(msg), ..Default::default() };
        let e = classify_error(&r);
        prop_assert!(code == "SPCD0014" || !e.outcome_unknown(), "{code} → {e:?}");
        if let PgError::Declined { hard: true, .. } = e {
            prop_assert!(["SPCD0001", "SPCD0002", "SPCD0005", "PAYC0005", "PAYC0006"].contains(&code.as_str()), "{code}");
        }
    }

    #[test]
    fn payple_results_from_raw_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512),
                                                 ct in prop::sample::select(CONTENT_TYPES)) {
        if let Ok(r) = PaypleResult::parse(ct, &body) {
            let _ = (r.status(), r.dedupe_key(), classify_error(&r));
        }
    }

    #[test]
    fn signature_headers_of_any_shape_never_verify_by_accident(
        parts in prop::collection::vec(prop_oneof![
            "timestamp=-?[0-9]{0,20}",
            "key=[A-Za-z0-9+/=]{0,60}",
            "[A-Za-z0-9+/=]{0,60}",
            ".{0,20}",
        ], 0..6),
        sep in prop::sample::select(&[",", ";", ", ", " ; "][..]),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = parts.join(sep);
        let secret = Secret::new("whsec_fuzz");
        // Random headers never carry a valid HMAC of this body under this secret.
        prop_assert!(verify_signature(Some(&header), &body, std::slice::from_ref(&secret)).is_err());
    }

    #[test]
    fn a_signature_holds_only_for_its_body_and_secret_whatever_its_age(
        body in prop::collection::vec(any::<u8>(), 0..256),
        age in -400_000_000i64..400_000_000,
        other_secret in "[a-z]{1,12}",
    ) {
        let secret = Secret::new("whsec_fuzz");
        // StepPay checks no age (dev-docs 08-1-3_Signature.md) and portal re-sends are not
        // re-signed: a valid signature from any time verifies.
        let header = sign(&secret, 1_800_000_000 - age, &body);
        let result = verify_signature(Some(&header), &body, std::slice::from_ref(&secret));
        prop_assert!(result.is_ok(), "{result:?} at age {age}");
        // Another secret, or a rotated list without ours, never verifies.
        let wrong = Secret::new(format!("{other_secret}_not_it"));
        prop_assert!(verify_signature(Some(&header), &body, &[wrong]).is_err());
    }

    #[test]
    fn steppay_error_answers_never_look_like_an_outcome_they_are_not(
        status in prop_oneof![400u16..600, 100u16..400],
        body in prop_oneof![
            ".{0,80}",
            object_over(&["errorCode", "errorMessage", "details", "status", "message"]).prop_map(|m| Value::Object(m).to_string()),
            (prop::sample::select(&["PAYMENT_DECLINED", "BILLING_KEY_INVALID", "DUPLICATE_PARTNER_ORDER_ID",
                "PAYMENT_NOT_FOUND", "INVALID_REQUEST", "SOMETHING_NEW", ""][..]), json_value())
                .prop_map(|(code, details)| json!({"errorCode": code, "errorMessage": "m", "details": details}).to_string()),
        ],
        moves_money in any::<bool>(),
    ) {
        let e = classify(status, &body, moves_money);
        if moves_money && status >= 500 {
            prop_assert!(matches!(e, PgError::Unknown { .. }), "{status} → {e:?}");
        }
        if moves_money && serde_json::from_str::<Value>(&body).is_err() && status != 401 && status != 403 {
            prop_assert!(matches!(e, PgError::Unknown { .. }), "unreadable {status} → {e:?}");
        }
        if let PgError::Declined { code, hard, .. } = &e {
            // Only StepPay refusing a charge or refund with its error body, and never hard: StepPay
            // publishes no codes, so none can say a retry is hopeless.
            prop_assert!(moves_money && !*hard && matches!(status, 400 | 402 | 404 | 422), "{status} {code}");
        }
    }
}

/// The structure-aware generators must reach past the parsers' first checks, or the properties
/// above would hold vacuously: a fair share of generated bodies parse.
#[test]
fn the_generators_reach_past_the_first_checks() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut steppay_ok, mut payple_ok) = (0, 0);
    for _ in 0..300 {
        let s = steppay_body().new_tree(&mut runner).unwrap().current();
        steppay_ok += parse("application/json", Value::Object(s).to_string().as_bytes()).is_ok() as u32;
        let p = object_over(PAYPLE_FIELDS).new_tree(&mut runner).unwrap().current();
        payple_ok += PaypleResult::parse("application/x-www-form-urlencoded", as_form(&p).as_bytes()).is_ok() as u32;
    }
    eprintln!("of 300 generated bodies: StepPay {steppay_ok} parsed, Payple {payple_ok} parsed");
    assert!(steppay_ok >= 18 && payple_ok >= 30, "StepPay {steppay_ok}, Payple {payple_ok}");
}

proptest! {
    #![proptest_config(config())]

    /// Issue 20 item 11: `PCD_PAY_TIME` comes from a browser or a webhook body; the KST date
    /// taken from it for a lookup is 8 ASCII digits or nothing — multi-byte, combining and
    /// oversized values never panic (the old `t[..8]` sliced inside a character).
    #[test]
    fn the_lookup_date_of_any_pay_time_is_eight_digits_or_nothing(
        t in prop_oneof![text(), "[0-9]{0,7}[가-힣😀é\u{301}][0-9]{0,20}", ".{0,3000}", "[0-9]{8,14}"]
    ) {
        match paycycle::pg::payple::pay_date(&t) {
            Some(d) => {
                prop_assert_eq!(d.len(), 8);
                prop_assert!(d.bytes().all(|b| b.is_ascii_digit()));
                prop_assert!(t.starts_with(&d));
            }
            None => prop_assert!(t.len() < 8 || !t.as_bytes()[..8].iter().all(u8::is_ascii_digit)),
        }
    }
}
