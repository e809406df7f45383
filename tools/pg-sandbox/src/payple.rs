//! Payple recurring card payments, as seed 003 and Payple's card manual describe them.
//!
//! Wire facts from the documents: partner auth at `/php/auth.php` with `cst_id`/`custKey` and a
//! `Referer` (AUTH0004 without one, AUTH0007 for a different domain), returning one-time tokens
//! and the `return_url` to call; re-pay with `PCD_PAYER_ID` (`SPCD0000`; a repeated
//! `PCD_PAY_OID` is `SPCD0014` 이미 처리된 거래입니다; card minimum 100원); CERT confirm at
//! `PCD_PAY_COFURL` (`PCCF0000`); result lookup by OID and request date (`PCD_PAYCHK_FLAG`);
//! refund with `PCD_REFUND_KEY` (`PAYC0000` 환불성공); `PUSERDEL`; the test server prefixes
//! messages with `[test]`; numbers arrive as JSON numbers or strings.
//!
//! Sandbox choices where Payple publishes nothing (unconfirmed, marked `sandbox code`): the codes
//! of declines, of bad auth tokens, of lookups that find nothing, of window results other than
//! success, and the path of `PUSERDEL`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use jiff::SignedDuration;
use serde_json::{Map, Value, json};

use crate::state::{
    AuthGrant, Charge, Fault, Operation, Payer, PendingCert, Pg, RefundEntry, Shared, yyyymmdd, yyyymmddhhmmss,
};
use crate::webhooks::{self, Webhook};

type Sh = State<Arc<Shared>>;
type Fields = Map<String, Value>;

const REPAY_PATH: &str = "/php/SimplePayCardAct.php?ACT_=PAYM";
const CONFIRM_PATH: &str = "/php/PayCardConfirmAct.php?ACT_=PAYM";
const LOOKUP_PATH: &str = "/php/PayChkAct.php";
const REFUND_PATH: &str = "/php/account/api/cPayCAct.php";
const USERDEL_PATH: &str = "/php/cPayUser/api/cPayUserAct.php?ACT_=PUSERDEL";
/// PAYPLECORP/manual_card README "6. 등록카드 조회".
const USERINFO_PATH: &str = "/php/cPayUser/api/cPayUserAct.php?ACT_=PUSERINFO";
const WINDOW_PATH: &str = "/__sandbox/payple/window";

/// Parses a JSON or form body into fields.
fn fields(headers: &HeaderMap, body: &Bytes) -> Option<Fields> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form {
        Some(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect())
    } else {
        serde_json::from_slice::<Value>(body).ok()?.as_object().cloned()
    }
}

fn get(f: &Fields, k: &str) -> Option<String> {
    match f.get(k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(f: &Fields, k: &str) -> Option<i64> {
    get(f, k)?.trim().parse().ok()
}

fn host(headers: &HeaderMap) -> String {
    format!("http://{}", headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1"))
}

/// A Payple result body (`PCD_PAY_RST` error) with HTTP 200, as Payple answers.
fn fail(code: &str, msg: &str, extra: &[(&str, Value)]) -> Response {
    let mut f = Fields::new();
    f.insert("PCD_PAY_RST".into(), "error".into());
    f.insert("PCD_PAY_CODE".into(), code.into());
    f.insert("PCD_PAY_MSG".into(), format!("[test] {msg}").into());
    for (k, v) in extra {
        f.insert((*k).into(), v.clone());
    }
    Json(Value::Object(f)).into_response()
}

/// Checks `Referer` like Payple: missing → AUTH0004; not the configured domain → AUTH0007.
fn referer_error(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let referer = headers.get("referer").and_then(|v| v.to_str().ok()).unwrap_or("");
    let auth_error = |code: &str, msg: &str| {
        Json(json!({"result": "error", "result_msg": format!("[{code}] {msg}"), "code": code})).into_response()
    };
    if referer.is_empty() {
        return Some(auth_error("AUTH0004", "등록되지 않은 도메인입니다 (Referer 없음)"));
    }
    match shared.config().payple_referer {
        Some(expected) if expected.trim_end_matches('/') != referer.trim_end_matches('/') => {
            Some(auth_error("AUTH0007", "결제창을 띄운 도메인과 Referer가 다릅니다"))
        }
        _ => None,
    }
}

/// `POST /php/auth.php` — partner auth; the flags pick the call the AuthKey is good for.
pub async fn auth(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return Json(json!({"result": "error", "result_msg": "[AUTH0002] 잘못된 요청입니다"})).into_response();
    };
    let config = shared.config();
    if get(&f, "cst_id").as_deref() != Some(config.payple_cst_id.as_str())
        || get(&f, "custKey").as_deref() != Some(config.payple_cust_key.as_str())
    {
        return Json(json!({"result": "error", "result_msg": "[AUTH0003] 파트너 인증에 실패했습니다 (sandbox code)"}))
            .into_response();
    }
    let fault = shared.state.lock().expect("state").take_fault(Operation::Auth, None);
    match fault {
        Some(Fault::ServerError) => return (StatusCode::INTERNAL_SERVER_ERROR, "sandbox fault: 500").into_response(),
        Some(Fault::TooManyRequests { retry_after_s }) => return crate::load::too_many_requests(retry_after_s),
        // Partner auth refused with a code no document lists (e.g. maintenance): seed 003 3-2's
        // answer shape, `result` not success, the code inside `result_msg`.
        Some(Fault::DeclineWithCode { code }) => {
            return Json(json!({"result": "error", "result_msg": format!("[{code}] 인증 실패 (sandbox code)")}))
                .into_response();
        }
        _ => {}
    }
    let flag = |k: &str| get(&f, k).as_deref() == Some("Y");
    let purpose = if flag("PCD_PAYCANCEL_FLAG") {
        REFUND_PATH
    } else if flag("PCD_PAYCHK_FLAG") {
        LOOKUP_PATH
    } else if get(&f, "PCD_PAY_WORK").as_deref() == Some("PUSERDEL") {
        USERDEL_PATH
    } else if get(&f, "PCD_PAY_WORK").as_deref() == Some("PUSERINFO") {
        USERINFO_PATH
    } else if flag("PCD_SIMPLE_FLAG") && get(&f, "PCD_PAY_TYPE").is_some() {
        REPAY_PATH
    } else {
        WINDOW_PATH
    };
    let auth_key = shared.random(64);
    let (cst_token, key_token) = (shared.random(32), shared.random(32));
    {
        let mut state = shared.state.lock().expect("state");
        let expires = state.now().saturating_add(SignedDuration::from_mins(30)).unwrap_or_else(|_| state.now());
        state.auth_keys.insert(
            auth_key.clone(),
            AuthGrant { cst_token: cst_token.clone(), key_token: key_token.clone(), purpose, expires, used: false },
        );
    }
    let host = host(&headers);
    Json(json!({
        "server_name": host,
        "result": "success",
        "result_msg": "사용자 인증 완료",
        "cst_id": cst_token,
        "custKey": key_token,
        "AuthKey": auth_key,
        "PCD_PAY_HOST": host,
        "PCD_PAY_URL": purpose,
        "return_url": format!("{host}{purpose}"),
    }))
    .into_response()
}

/// Consumes the AuthKey of a REST call: it must exist, be unused, unexpired, issued for this call,
/// and come with the tokens auth returned.
fn use_auth(shared: &Shared, f: &Fields, purpose: &str) -> Result<(), Response> {
    let mut state = shared.state.lock().expect("state");
    let now = state.now();
    let key = get(f, "PCD_AUTH_KEY").unwrap_or_default();
    let Some(grant) = state.auth_keys.get_mut(&key) else {
        return Err(fail("AUTH0008", "파트너 인증 토큰이 유효하지 않습니다 (sandbox code)", &[]));
    };
    if grant.used || grant.expires < now || grant.purpose != purpose {
        return Err(fail("AUTH0009", "이미 사용되었거나 만료된 인증 토큰입니다 (sandbox code)", &[]));
    }
    if get(f, "PCD_CST_ID").as_deref() != Some(grant.cst_token.as_str())
        || get(f, "PCD_CUST_KEY").as_deref() != Some(grant.key_token.as_str())
    {
        return Err(fail("AUTH0010", "파트너 인증 정보가 일치하지 않습니다 (sandbox code)", &[]));
    }
    grant.used = true;
    Ok(())
}

async fn pre_fault(shared: &Shared, op: Operation, key: Option<&str>) -> Result<Option<Fault>, Response> {
    let fault = shared.state.lock().expect("state").take_fault(op, key);
    match fault {
        Some(Fault::ServerError) => Err((StatusCode::INTERNAL_SERVER_ERROR, "sandbox fault: 500").into_response()),
        Some(Fault::TooManyRequests { retry_after_s }) => Err(crate::load::too_many_requests(retry_after_s)),
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(None)
        }
        other => Ok(other),
    }
}

fn webhook_fault(f: &Option<Fault>) -> Option<Fault> {
    f.clone().filter(|f| matches!(f, Fault::WebhookTwice | Fault::WebhookLate { .. } | Fault::WebhookOutOfOrder))
}

fn send_webhook(shared: &Arc<Shared>, result: &Fields, fault: Option<Fault>) {
    let config = shared.config();
    let Some(url) = config.payple_webhook_url else { return };
    let (content_type, body) = webhooks::encode(result, config.payple_webhook_format);
    webhooks::deliver(shared.clone(), Webhook { pg: Pg::Payple, url, content_type, body, headers: vec![] }, fault);
}

fn decline(hard: bool) -> (&'static str, &'static str) {
    if hard {
        ("SPCD0005", "분실 또는 정지된 카드입니다 (sandbox code)")
    } else {
        ("SPCD0003", "잔액이 부족합니다 (sandbox code)")
    }
}

/// How a result carries its numbers (`PCD_PAY_TOTAL`, `PCD_PAY_TAXTOTAL`): Payple's card manual
/// (PAYPLECORP/manual_card README "3. 이후결제 - 정기결제" and "결제결과 조회" responses:
/// `"PCD_PAY_TOTAL" => 1000`, type `N`) shows JSON numbers for re-pay and lookup; seed 003 3-7's
/// CERT confirm response shows strings (`"PCD_PAY_TOTAL":"100"`) — the seed wins there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbers {
    Json,
    Strings,
}

/// The sandbox's card: its number as the window / re-pay / confirm results show it (seed 003
/// 3-7's sample: `2121-****-****-2031`) and as the result lookup shows it (manual_card README
/// "결제결과 조회": `12345678 ** ** 1234`, the first eight digits visible).
const CARD_MASKED: &str = "2121-****-****-2031";
const CARD_MASKED_LOOKUP: &str = "21211234 ** ** 2031";

fn payment_fields(c: &Charge, payer: &Payer, f: &Fields, code: &str, msg: &str, numbers: Numbers) -> Fields {
    let mut out = Fields::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.into(), v);
    };
    let number = |n: i64| if numbers == Numbers::Json { Value::from(n) } else { Value::from(n.to_string()) };
    put("PCD_PAY_RST", "success".into());
    put("PCD_PAY_CODE", code.into());
    put("PCD_PAY_MSG", format!("[test] {msg}").into());
    put("PCD_PAY_OID", c.id.clone().into());
    put("PCD_PAY_TYPE", "card".into());
    put("PCD_PAYER_ID", payer.payer_id.clone().into());
    // A number in the result lookup's answer (manual_card "결제결과 조회" shows `PCD_PAYER_NO` as a
    // JSON number), a string in the seeds' re-pay and CERT answers.
    let payer_no = match (numbers == Numbers::Json && code == LOOKUP_OK, payer.payer_no.parse::<i64>()) {
        (true, Ok(n)) => Value::from(n),
        _ => payer.payer_no.clone().into(),
    };
    put("PCD_PAYER_NO", payer_no);
    put("PCD_PAYER_NAME", c.payer_name.clone().unwrap_or_else(|| payer.name.clone()).into());
    put("PCD_PAYER_HP", get(f, "PCD_PAYER_HP").or(payer.hp.clone()).unwrap_or_default().into());
    put("PCD_PAYER_EMAIL", get(f, "PCD_PAYER_EMAIL").or(payer.email.clone()).unwrap_or_default().into());
    put("PCD_PAY_GOODS", c.goods.clone().into());
    if numbers == Numbers::Strings {
        // Seed 003 3-7 only (its CERT answer shows both; no discount here, so they are equal).
        put("PCD_PAY_AMOUNT", c.amount.to_string().into());
        put("PCD_PAY_AMOUNT_REAL", c.amount.to_string().into());
    }
    put("PCD_PAY_TOTAL", number(c.amount));
    put("PCD_PAY_ISTAX", get(f, "PCD_PAY_ISTAX").unwrap_or_else(|| "Y".into()).into());
    put("PCD_PAY_TAXTOTAL", number(int(f, "PCD_PAY_TAXTOTAL").unwrap_or(0)));
    put("PCD_PAY_TIME", c.pay_time.clone().into());
    put("PCD_PAY_CARDNAME", "NH".into());
    put(
        "PCD_PAY_CARDNUM",
        if numbers == Numbers::Json && code == LOOKUP_OK { CARD_MASKED_LOOKUP } else { CARD_MASKED }.into(),
    );
    put("PCD_PAY_CARDTRADENUM", c.trade_no.clone().into());
    put("PCD_PAY_CARDAUTHNO", c.trade_no[..8].to_string().into());
    put("PCD_PAY_CARDRECEIPT", format!("https://sandbox.invalid/receipt/{}", c.id).into());
    put("PCD_SIMPLE_FLAG", get(f, "PCD_SIMPLE_FLAG").unwrap_or_else(|| "N".into()).into());
    put("PCD_USER_DEFINE1", get(f, "PCD_USER_DEFINE1").unwrap_or_default().into());
    put("PCD_USER_DEFINE2", get(f, "PCD_USER_DEFINE2").unwrap_or_default().into());
    out
}

/// The fields of the result lookup's answer, exactly as PAYPLECORP/manual_card README "결제결과 조회"
/// lists them (its response table), plus `PCD_PAY_CODE`, which PAYPLECORP/sample_php
/// `cPayPayple/payInfo.php` reads: nothing else, so a client that relied on another field (a
/// refund total, a status, the payer's name) would fail against the sandbox.
const LOOKUP_FIELDS: &[&str] = &[
    "PCD_PAY_RST",
    "PCD_PAY_CODE",
    "PCD_PAY_MSG",
    "PCD_PAY_OID",
    "PCD_PAY_TYPE",
    "PCD_PAYER_NO",
    "PCD_PAYER_ID",
    "PCD_PAY_YEAR",
    "PCD_PAY_MONTH",
    "PCD_PAY_GOODS",
    "PCD_PAY_TOTAL",
    "PCD_PAY_ISTAX",
    "PCD_PAY_TAXTOTAL",
    "PCD_PAY_TIME",
    "PCD_REGULER_FLAG",
    "PCD_PAYER_EMAIL",
    "PCD_PAY_CARDNUM",
    "PCD_PAY_CARDNAME",
    "PCD_PAY_CARDTRADENUM",
    "PCD_PAY_CARDAUTHNO",
    "PCD_PAY_CARDRECEIPT",
];

/// The code of a lookup that found the payment (sandbox code: manual_card's lookup sample shows
/// no `PCD_PAY_CODE`; PAYPLECORP/sample_php `cPayPayple/payInfo.php` reads one).
const LOOKUP_OK: &str = "PCHK0000";

fn new_charge(shared: &Shared, now: jiff::Timestamp, oid: String, amount: i64, payer: &Payer, f: &Fields) -> Charge {
    Charge {
        pg: Pg::Payple,
        id: oid,
        amount,
        refunded: 0,
        status: "paid".into(),
        billing_key: Some(payer.payer_id.clone()),
        partner_order_id: None,
        order_id: None,
        method: "card".into(),
        goods: get(f, "PCD_PAY_GOODS").unwrap_or_default(),
        payer_name: get(f, "PCD_PAYER_NAME"),
        paid_at: now,
        pay_date: yyyymmdd(now),
        pay_time: yyyymmddhhmmss(now),
        trade_no: format!("{}{}", yyyymmddhhmmss(now), shared.random(10)),
    }
}

/// `POST {return_url}` for re-pay (`/php/SimplePayCardAct.php?ACT_=PAYM`).
pub async fn repay(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return fail("SPCD0099", "잘못된 요청입니다 (sandbox code)", &[]);
    };
    let payer_id = get(&f, "PCD_PAYER_ID").unwrap_or_default();
    let fault = match pre_fault(&shared, Operation::Charge, Some(&payer_id)).await {
        Ok(fault) => fault,
        Err(r) => return r,
    };
    if let Err(r) = use_auth(&shared, &f, REPAY_PATH) {
        return r;
    }
    let oid_echo = [("PCD_PAY_OID", get(&f, "PCD_PAY_OID").map(Value::from).unwrap_or(Value::Null))];
    let Some(amount) = int(&f, "PCD_PAY_TOTAL") else {
        return fail("SPCD0099", "PCD_PAY_TOTAL이 없습니다 (sandbox code)", &oid_echo);
    };
    if amount < 100 {
        return fail("SPCD0098", "카드 결제 최소 금액은 100원입니다 (sandbox code)", &oid_echo);
    }
    let (result, fault) = {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        let payer = match state.payers.get(&payer_id) {
            Some(p) if !p.deleted => p.clone(),
            // Reported on Payple's developer site as "the billing key does not exist" (PG-FACTS;
            // not in PAYPLECORP/manual_card or sample_php: unconfirmed).
            _ => return fail("SPCD0001", "빌링키가 존재하지 않습니다 (reported, unconfirmed)", &oid_echo),
        };
        let oid = get(&f, "PCD_PAY_OID").unwrap_or_else(|| format!("test{}", shared.random(12)));
        if state.charge(Pg::Payple, &oid).is_some() {
            return fail("SPCD0014", "이미 처리된 거래입니다", &oid_echo);
        }
        if let Some(Fault::Decline { hard }) = fault {
            let (code, msg) = decline(hard);
            return fail(code, msg, &oid_echo);
        }
        if let Some(Fault::DeclineWithCode { code }) = &fault {
            return fail(code, "카드사 승인 거절 (sandbox: an issuer code no client lists)", &oid_echo);
        }
        let charge = new_charge(&shared, now, oid, amount, &payer, &f);
        state.charges.push(charge.clone());
        (payment_fields(&charge, &payer, &f, "SPCD0000", "결제완료", Numbers::Json), fault)
    };
    send_webhook(&shared, &result, webhook_fault(&fault));
    if matches!(fault, Some(Fault::TimeoutAfterCharge)) {
        tokio::time::sleep(Duration::from_millis(shared.config().timeout_after_charge_ms)).await;
    }
    Json(Value::Object(result)).into_response()
}

/// `POST /php/PayChkAct.php` — result lookup by OID and request date.
pub async fn lookup(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return fail("PCHK0099", "잘못된 요청입니다 (sandbox code)", &[]);
    };
    let fault = match pre_fault(&shared, Operation::Lookup, None).await {
        Ok(fault) => fault,
        Err(r) => return r,
    };
    if let Err(r) = use_auth(&shared, &f, LOOKUP_PATH) {
        return r;
    }
    // An explicit error answer with a code of the test's choosing: Payple's manual ("결제결과
    // 조회") documents `PCD_PAY_RST` `success / error` and no codes, so a real lookup may answer
    // `error` for reasons other than "no such payment" (maintenance, limits), and a payment may
    // not show yet. `PCHK0001` (this sandbox's not-found code) simulates the latter.
    if let Some(Fault::DeclineWithCode { code }) = fault {
        let oid = get(&f, "PCD_PAY_OID").unwrap_or_default();
        return fail(&code, "조회 실패 (sandbox fault)", &[("PCD_PAY_OID", oid.into())]);
    }
    if get(&f, "PCD_PAYCHK_FLAG").as_deref() != Some("Y") {
        return fail("PCHK0002", "PCD_PAYCHK_FLAG가 필요합니다 (sandbox code)", &[]);
    }
    let oid = get(&f, "PCD_PAY_OID").unwrap_or_default();
    let date = get(&f, "PCD_PAY_DATE").unwrap_or_default();
    let state = shared.state.lock().expect("state");
    // A lagging lookup has not seen the charge yet.
    let lags = fault == Some(Fault::LookupLags);
    match state.charge(Pg::Payple, &oid) {
        Some(c) if c.pay_date == date && !lags => {
            let payer = state.payers.get(c.billing_key.as_deref().unwrap_or_default()).cloned().unwrap_or(Payer {
                payer_id: String::new(),
                payer_no: String::new(),
                name: String::new(),
                hp: None,
                email: None,
                deleted: false,
            });
            // Payple's manual (PAYPLECORP/manual_card README, "결제결과 조회") lists the lookup's
            // answer fields: the payment's, and no refund or status field. A refunded payment
            // looks exactly like a paid one here.
            let mut out = payment_fields(c, &payer, &f, LOOKUP_OK, "조회 성공", Numbers::Json);
            out.retain(|k, _| LOOKUP_FIELDS.contains(&k.as_str()));
            out.insert("PCD_PAY_YEAR".into(), c.pay_date[..4].to_string().into());
            out.insert("PCD_PAY_MONTH".into(), c.pay_date[4..6].to_string().into());
            out.insert("PCD_REGULER_FLAG".into(), "N".into());
            Json(Value::Object(out)).into_response()
        }
        _ => fail("PCHK0001", "조회된 결제내역이 없습니다 (sandbox code)", &[("PCD_PAY_OID", oid.into())]),
    }
}

/// `POST /php/account/api/cPayCAct.php` — full or partial refund.
pub async fn refund(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return fail("PAYC0099", "잘못된 요청입니다 (sandbox code)", &[]);
    };
    let fault = match pre_fault(&shared, Operation::Refund, None).await {
        Ok(fault) => fault,
        Err(r) => return r,
    };
    if let Err(r) = use_auth(&shared, &f, REFUND_PATH) {
        return r;
    }
    let config = shared.config();
    let oid = get(&f, "PCD_PAY_OID").unwrap_or_default();
    let echo = [("PCD_PAY_OID", Value::from(oid.clone()))];
    if get(&f, "PCD_REFUND_KEY").as_deref() != Some(config.payple_refund_key.as_str()) {
        return fail("PAYC0002", "환불 키가 올바르지 않습니다 (sandbox code)", &echo);
    }
    if get(&f, "PCD_PAYCANCEL_FLAG").as_deref() != Some("Y") {
        return fail("PAYC0003", "PCD_PAYCANCEL_FLAG가 필요합니다 (sandbox code)", &echo);
    }
    let Some(total) = int(&f, "PCD_REFUND_TOTAL").filter(|t| *t > 0) else {
        return fail("PAYC0004", "환불 금액이 올바르지 않습니다 (sandbox code)", &echo);
    };
    if let Some(Fault::Decline { .. }) = fault {
        return fail("PAYC0009", "환불이 거절되었습니다 (sandbox code)", &echo);
    }
    let date = get(&f, "PCD_PAY_DATE").unwrap_or_default();
    let result = {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        let Some(c) = state.charge_mut(Pg::Payple, &oid).filter(|c| c.pay_date == date) else {
            return fail("PAYC0001", "환불할 결제내역이 없습니다 (sandbox code)", &echo);
        };
        let remaining = c.amount - c.refunded;
        if total > remaining {
            return fail("PAYC0006", &format!("환불 가능 금액({remaining})을 초과했습니다 (sandbox code)"), &echo);
        }
        if total < c.amount && !config.payple_partial_refunds {
            return fail("PAYC0005", "테스트 계정은 카드 부분취소가 불가합니다 (sandbox code)", &echo);
        }
        c.refunded += total;
        c.status = if c.refunded == c.amount { "canceled" } else { "partial_canceled" }.into();
        let (c_payer, c_goods) = (c.billing_key.clone().unwrap_or_default(), c.goods.clone());
        let tid = shared.random(20);
        state.refunds.push(RefundEntry { pg: Pg::Payple, charge_id: oid.clone(), amount: total, tid, at: now });
        json!({
            "PCD_PAY_RST": "success",
            "PCD_PAY_CODE": "PAYC0000",
            "PCD_PAY_MSG": "[test] 환불성공",
            "PCD_PAY_OID": oid,
            "PCD_PAY_TYPE": "card",
            "PCD_PAYER_ID": c_payer,
            "PCD_PAY_GOODS": c_goods,
            // A JSON number, as manual_card README "4. 승인취소" answers (`"PCD_REFUND_TOTAL" => 1000`).
            "PCD_REFUND_TOTAL": total,
        })
    };
    if matches!(fault, Some(Fault::TimeoutAfterCharge)) {
        tokio::time::sleep(Duration::from_millis(config.timeout_after_charge_ms)).await;
    }
    Json(result).into_response()
}

/// `POST /php/cPayUser/api/cPayUserAct.php?ACT_=…` — the billing key calls (`PUSERDEL`,
/// `PUSERINFO`), told apart by `ACT_` as in Payple's paths.
pub async fn user_act(
    shared: Sh,
    query: Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match query.get("ACT_").map(String::as_str) {
        Some("PUSERINFO") => user_info(shared, headers, body).await,
        _ => user_delete(shared, headers, body).await,
    }
}

/// `PCD_PAY_WORK=PUSERINFO` — a billing key's registration (PAYPLECORP/manual_card README
/// "6. 등록카드 조회", PAYPLECORP/sample_php `cPayPayple/payUserInfo.php`): request
/// `PCD_PAYER_ID` and `PCD_PAYER_NO` (both required), answer `PCD_PAY_CODE` `0000`, the key,
/// name (unmasked in the manual's sample) / masked phone (`010-****-3333`) / card. Sandbox choice
/// (unconfirmed): a key registered under another `PCD_PAYER_NO` is answered like an unknown key
/// (`payple_userinfo_checks_payer_no: false` answers it anyway), and the request's `PCD_PAYER_NO`
/// comes back as is (the manual: "결과에 그대로 리턴").
pub async fn user_info(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return fail("PUSR0099", "잘못된 요청입니다 (sandbox code)", &[]);
    };
    if let Err(r) = pre_fault(&shared, Operation::Lookup, None).await {
        return r;
    }
    if let Err(r) = use_auth(&shared, &f, USERINFO_PATH) {
        return r;
    }
    let payer_id = get(&f, "PCD_PAYER_ID").unwrap_or_default();
    let Some(payer_no) = get(&f, "PCD_PAYER_NO") else {
        return fail("PUSR0002", "PCD_PAYER_NO가 필요합니다 (sandbox code)", &[]);
    };
    let binds_payer_no = shared.config().payple_userinfo_checks_payer_no;
    let state = shared.state.lock().expect("state");
    match state.payers.get(&payer_id) {
        Some(p) if !p.deleted && (p.payer_no == payer_no || !binds_payer_no) => {
            let hp = p.hp.as_deref().map(|h| {
                let d: String = h.chars().filter(char::is_ascii_digit).collect();
                if d.len() >= 8 { format!("{}-****-{}", &d[..3], &d[d.len() - 4..]) } else { "***".into() }
            });
            Json(json!({"PCD_PAY_RST": "success", "PCD_PAY_CODE": "0000", "PCD_PAY_MSG": "[test] 회원조회 성공",
                "PCD_PAY_TYPE": "card", "PCD_PAY_BANKACCTYPE": "개인", "PCD_PAYER_ID": payer_id,
                "PCD_PAYER_NO": payer_no, "PCD_PAYER_NAME": p.name, "PCD_PAYER_HP": hp.unwrap_or_default(),
                "PCD_PAY_CARD": "0200", "PCD_PAY_CARDNAME": "NH", "PCD_PAY_CARDNUM": "2121-****-****-2031"}))
            .into_response()
        }
        _ => fail("PUSR0001", "등록되지 않은 빌링키입니다 (sandbox code)", &[]),
    }
}

/// `POST {return_url}` for `PCD_PAY_WORK=PUSERDEL` — delete a billing key.
pub async fn user_delete(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return fail("PUSR0099", "잘못된 요청입니다 (sandbox code)", &[]);
    };
    if let Err(r) = use_auth(&shared, &f, USERDEL_PATH) {
        return r;
    }
    let payer_id = get(&f, "PCD_PAYER_ID").unwrap_or_default();
    let mut state = shared.state.lock().expect("state");
    match state.payers.get_mut(&payer_id) {
        Some(p) if !p.deleted && get(&f, "PCD_PAYER_NO").is_none_or(|n| n == p.payer_no) => {
            p.deleted = true;
            Json(json!({"PCD_PAY_RST": "success", "PCD_PAY_CODE": "PUSR0000", "PCD_PAY_MSG": "[test] 해지완료",
                "PCD_PAY_WORK": "PUSERDEL", "PCD_PAYER_ID": payer_id}))
            .into_response()
        }
        _ => fail("PUSR0001", "등록되지 않은 빌링키입니다 (sandbox code)", &[]),
    }
}

/// `POST /__sandbox/payple/window` — the payment window the customer fills in (AUTH, PAY or CERT),
/// answering with the `PCD_*` result the browser posts to `PCD_RST_URL`: an auto-submitting
/// HTML form, or JSON with `?format=json`. `SANDBOX_ACTION=close|error` simulates the customer
/// closing the window or a card error.
pub async fn window(
    State(shared): Sh,
    headers: HeaderMap,
    query: Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(f) = fields(&headers, &body) else {
        return (StatusCode::BAD_REQUEST, "expected a form or JSON").into_response();
    };
    let work = get(&f, "PCD_PAY_WORK").unwrap_or_else(|| "PAY".into());
    let rst_url = get(&f, "PCD_RST_URL").unwrap_or_default();
    let as_json = query.get("format").map(String::as_str) == Some("json");
    let respond = |result: Fields| -> Response {
        if as_json {
            return Json(Value::Object(result)).into_response();
        }
        let inputs: String = result
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!(r#"<input type="hidden" name="{}" value="{}">"#, html_escape(k), html_escape(&v))
            })
            .collect();
        Html(format!(
            r#"<!doctype html><html><body onload="document.forms[0].submit()"><form method="post" action="{}">{inputs}<noscript><button>계속</button></noscript></form></body></html>"#,
            html_escape(&rst_url)
        ))
        .into_response()
    };
    // The window's own AuthKey (auth without flags).
    let key = get(&f, "PCD_AUTH_KEY").unwrap_or_default();
    {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        match state.auth_keys.get_mut(&key) {
            Some(g) if !g.used && g.expires >= now && g.purpose == WINDOW_PATH => g.used = true,
            _ => {
                drop(state);
                let mut r = Fields::new();
                r.insert("PCD_PAY_RST".into(), "error".into());
                r.insert("PCD_PAY_CODE".into(), "AUTH0009".into());
                r.insert("PCD_PAY_MSG".into(), "[test] 인증 토큰이 유효하지 않습니다 (sandbox code)".into());
                return respond(r);
            }
        }
    }
    // `PCD_CARD_VER` is required for a card window: `01` 정기 (recurring, a billing key), `02`
    // 일반 (PAYPLECORP/manual_card README "1. 최초결제 - 공통" parameter table; PAYPLECORP/sample_php
    // `order_confirm.php` sets it for `card` only, default `01`). The refusal's code is sandbox code.
    if get(&f, "PCD_PAY_TYPE").as_deref() == Some("card")
        && !matches!(get(&f, "PCD_CARD_VER").as_deref(), Some("01" | "02"))
    {
        let mut r = Fields::new();
        r.insert("PCD_PAY_RST".into(), "error".into());
        r.insert("PCD_PAY_CODE".into(), "CARD0002".into());
        r.insert("PCD_PAY_MSG".into(), "[test] PCD_CARD_VER(01|02)가 필요합니다 (sandbox code)".into());
        return respond(r);
    }
    let mut base = Fields::new();
    base.insert("PCD_PAY_WORK".into(), work.clone().into());
    base.insert("PCD_PAY_OID".into(), get(&f, "PCD_PAY_OID").unwrap_or_default().into());
    base.insert("PCD_USER_DEFINE1".into(), get(&f, "PCD_USER_DEFINE1").unwrap_or_default().into());
    base.insert("PCD_USER_DEFINE2".into(), get(&f, "PCD_USER_DEFINE2").unwrap_or_default().into());
    match get(&f, "SANDBOX_ACTION").as_deref() {
        Some("close") => {
            base.insert("PCD_PAY_RST".into(), "close".into());
            base.insert("PCD_PAY_CODE".into(), "".into());
            base.insert("PCD_PAY_MSG".into(), "[test] 결제창이 닫혔습니다".into());
            return respond(base);
        }
        Some("error") => {
            base.insert("PCD_PAY_RST".into(), "error".into());
            base.insert("PCD_PAY_CODE".into(), "CARD0001".into());
            base.insert("PCD_PAY_MSG".into(), "[test] 카드 정보가 올바르지 않습니다 (sandbox code)".into());
            return respond(base);
        }
        _ => {}
    }
    let fault = shared.state.lock().expect("state").take_fault(Operation::Charge, None);
    if let Some(Fault::Decline { hard }) = fault {
        let (code, msg) = decline(hard);
        base.insert("PCD_PAY_RST".into(), "error".into());
        base.insert("PCD_PAY_CODE".into(), code.into());
        base.insert("PCD_PAY_MSG".into(), format!("[test] {msg}").into());
        return respond(base);
    }
    let amount = int(&f, "PCD_PAY_TOTAL");
    if work != "AUTH" && amount.is_none_or(|a| a < 100) {
        base.insert("PCD_PAY_RST".into(), "error".into());
        base.insert("PCD_PAY_CODE".into(), "SPCD0098".into());
        base.insert("PCD_PAY_MSG".into(), "[test] 카드 결제 최소 금액은 100원입니다 (sandbox code)".into());
        return respond(base);
    }
    let (result, webhook) = {
        let mut state = shared.state.lock().expect("state");
        let now = state.now();
        let payer = Payer {
            payer_id: shared.random(44),
            payer_no: get(&f, "PCD_PAYER_NO").unwrap_or_else(|| "1".into()),
            name: get(&f, "PCD_PAYER_NAME").unwrap_or_else(|| "홍길동".into()),
            hp: get(&f, "PCD_PAYER_HP"),
            email: get(&f, "PCD_PAYER_EMAIL"),
            deleted: false,
        };
        state.payers.insert(payer.payer_id.clone(), payer.clone());
        let oid = get(&f, "PCD_PAY_OID").unwrap_or_else(|| format!("test{}", shared.random(12)));
        match work.as_str() {
            "AUTH" => {
                let mut r = base.clone();
                r.insert("PCD_PAY_RST".into(), "success".into());
                r.insert("PCD_PAY_CODE".into(), "CPAY0000".into());
                r.insert("PCD_PAY_MSG".into(), "[test] 카드등록완료".into());
                r.insert("PCD_PAY_TYPE".into(), "card".into());
                r.insert("PCD_PAYER_ID".into(), payer.payer_id.clone().into());
                r.insert("PCD_PAYER_NO".into(), payer.payer_no.clone().into());
                r.insert("PCD_PAYER_NAME".into(), payer.name.clone().into());
                r.insert("PCD_PAY_CARDNAME".into(), "NH".into());
                r.insert("PCD_PAY_CARDNUM".into(), "2121-****-****-2031".into());
                (r, false)
            }
            "CERT" => {
                let reqkey = shared.random(40);
                let confirm_key = shared.random(64);
                let mut r = base.clone();
                r.insert("PCD_PAY_RST".into(), "success".into());
                r.insert("PCD_PAY_CODE".into(), "CERT0000".into());
                r.insert("PCD_PAY_MSG".into(), "[test] 인증완료 - 결제 승인 요청 필요".into());
                r.insert("PCD_PAY_OID".into(), oid.clone().into());
                r.insert("PCD_PAY_TYPE".into(), "card".into());
                r.insert("PCD_PAYER_ID".into(), payer.payer_id.clone().into());
                r.insert("PCD_PAY_TOTAL".into(), amount.unwrap_or(0).to_string().into());
                r.insert("PCD_PAY_GOODS".into(), get(&f, "PCD_PAY_GOODS").unwrap_or_default().into());
                r.insert("PCD_AUTH_KEY".into(), confirm_key.clone().into());
                r.insert("PCD_PAY_REQKEY".into(), reqkey.clone().into());
                r.insert("PCD_PAY_COFURL".into(), format!("{}{CONFIRM_PATH}", host(&headers)).into());
                state.pending_certs.insert(
                    reqkey,
                    PendingCert {
                        auth_key: confirm_key,
                        payer_id: payer.payer_id.clone(),
                        oid,
                        amount: amount.unwrap_or(0),
                        goods: get(&f, "PCD_PAY_GOODS").unwrap_or_default(),
                        payer_name: payer.name.clone(),
                        fields: f.clone(),
                    },
                );
                (r, false)
            }
            _ => {
                if state.charge(Pg::Payple, &oid).is_some() {
                    let mut r = base.clone();
                    r.insert("PCD_PAY_RST".into(), "error".into());
                    r.insert("PCD_PAY_CODE".into(), "SPCD0014".into());
                    r.insert("PCD_PAY_MSG".into(), "[test] 이미 처리된 거래입니다".into());
                    return respond(r);
                }
                let charge = new_charge(&shared, now, oid, amount.unwrap_or(0), &payer, &f);
                state.charges.push(charge.clone());
                let mut r = payment_fields(&charge, &payer, &f, "PAYM0000", "결제완료", Numbers::Strings);
                r.insert("PCD_PAY_WORK".into(), work.clone().into());
                (r, true)
            }
        }
    };
    if webhook {
        send_webhook(&shared, &result, webhook_fault(&fault));
    }
    respond(result)
}

/// `POST {PCD_PAY_COFURL}` — the partner confirms a CERT payment; only now is the card charged.
pub async fn confirm(State(shared): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = referer_error(&shared, &headers) {
        return r;
    }
    let Some(f) = fields(&headers, &body) else {
        return fail("PCCF0099", "잘못된 요청입니다 (sandbox code)", &[]);
    };
    let config = shared.config();
    // Seed 003's sample sends the partner's own cst_id and custKey here.
    if get(&f, "PCD_CST_ID").as_deref() != Some(config.payple_cst_id.as_str())
        || get(&f, "PCD_CUST_KEY").as_deref() != Some(config.payple_cust_key.as_str())
    {
        return fail("PCCF0002", "파트너 인증 정보가 일치하지 않습니다 (sandbox code)", &[]);
    }
    let reqkey = get(&f, "PCD_PAY_REQKEY").unwrap_or_default();
    let pending = shared.state.lock().expect("state").pending_certs.get(&reqkey).cloned();
    let Some(pending) = pending else {
        return fail("PCCF0001", "승인 요청 정보가 없거나 이미 처리되었습니다 (sandbox code)", &[]);
    };
    if get(&f, "PCD_AUTH_KEY").as_deref() != Some(pending.auth_key.as_str())
        || get(&f, "PCD_PAYER_ID").as_deref() != Some(pending.payer_id.as_str())
    {
        return fail("PCCF0003", "승인 요청 정보가 일치하지 않습니다 (sandbox code)", &[]);
    }
    let fault = match pre_fault(&shared, Operation::Charge, Some(&pending.payer_id)).await {
        Ok(fault) => fault,
        Err(r) => return r,
    };
    let echo = [("PCD_PAY_OID", Value::from(pending.oid.clone()))];
    if let Some(Fault::Decline { hard }) = fault {
        shared.state.lock().expect("state").pending_certs.remove(&reqkey);
        let (code, msg) = decline(hard);
        return fail(code, msg, &echo);
    }
    let result = {
        let mut state = shared.state.lock().expect("state");
        state.pending_certs.remove(&reqkey);
        let now = state.now();
        if state.charge(Pg::Payple, &pending.oid).is_some() {
            return fail("SPCD0014", "이미 처리된 거래입니다", &echo);
        }
        let payer = state.payers.get(&pending.payer_id).cloned().expect("the window registered the payer");
        let mut charge = new_charge(&shared, now, pending.oid.clone(), pending.amount, &payer, &pending.fields);
        charge.goods = pending.goods.clone();
        charge.payer_name = Some(pending.payer_name.clone());
        state.charges.push(charge.clone());
        let mut r = payment_fields(&charge, &payer, &pending.fields, "PCCF0000", "카드결제완료", Numbers::Strings);
        r.insert("PCD_PAY_REQKEY".into(), reqkey.into());
        r
    };
    send_webhook(&shared, &result, webhook_fault(&fault));
    if matches!(fault, Some(Fault::TimeoutAfterCharge)) {
        tokio::time::sleep(Duration::from_millis(config.timeout_after_charge_ms)).await;
    }
    Json(Value::Object(result)).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}
