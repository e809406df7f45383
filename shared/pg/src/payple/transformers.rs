//! Payple wire types, named exactly as seed 003 and Payple's card manual name them (`PCD_*`), and
//! the mapping of result codes onto our classes. Numbers may arrive as JSON numbers or strings.
//!
//! Result code table (`PCD_PAY_CODE` with `PCD_PAY_RST`):
//!
//! | code | meaning | class | source |
//! |---|---|---|---|
//! | `SPCD0000` | re-pay approved | approved | Payple docs |
//! | `PCCF0000` | CERT confirm approved | approved | seed 003 |
//! | `PAYC0000` | refund done (환불성공) | refunded | Payple docs |
//! | `SPCD0014` | 이미 처리된 거래입니다 (OID used) | `AlreadyProcessed` → lookup | Payple docs |
//! | `SPCD0001` | the billing key does not exist (the key is gone: dunning stops) | `Declined { hard: true }` | **reported** on Payple's developer site (PG-FACTS), not in `PAYPLECORP/manual_card` or `sample_php`: unconfirmed; the sandbox answers it for an unknown or deleted `PCD_PAYER_ID` |
//! | `SPCD0002` | unknown / deleted `PCD_PAYER_ID` (an older sandbox code) | `Declined { hard: true }` | unconfirmed |
//! | `SPCD0003` | insufficient funds / limit | `Declined { hard: false }` | unconfirmed (sandbox) |
//! | `SPCD0005` | lost / suspended card | `Declined { hard: true }` | unconfirmed (sandbox) |
//! | `PAYC0001` | no such payment to refund | `NotFound` | unconfirmed (sandbox) |
//! | `PAYC0002` | wrong refund key | `Config` | unconfirmed (sandbox) |
//! | `PAYC0005` | partial cancel not allowed (test account) | `Declined { hard: true }` | Payple card manual / sandbox code |
//! | `PAYC0006` | more than remains | `Declined { hard: true }` | unconfirmed (sandbox) |
//! | `PAYC0009` | refund refused | `Declined { hard: false }` | unconfirmed (sandbox) |
//! | `PCHK0001` | lookup found nothing | `NotFound` — the only lookup answer that is | unconfirmed (sandbox); see [`classify_query_error`] |
//! | any other `error` answer to a lookup | Payple could not answer (maintenance, a limit …) | `Transient` | manual_card documents no lookup codes |
//! | `AUTH0004`, `AUTH0007` | Referer missing / not the window's domain | `Config` | seed 003 |
//! | `AUTH0003`, `AUTH0008`–`AUTH0010` | partner credentials / token refused | `Config` | unconfirmed (sandbox) |
//! | any other code with `PCD_PAY_RST=error` | an explicit failure: no money moved | `Declined { hard: false }` | manual_card (below) |
//! | anything else (`success` with a code we do not know, no `PCD_PAY_RST`) | — | `Unrecognized` | — |
//!
//! Why an unknown code with `PCD_PAY_RST=error` is a soft decline, not an unknown outcome: Payple's
//! card manual (`PAYPLECORP/manual_card` README.md, "이후결제 - 정기결제" and "승인취소") documents
//! `PCD_PAY_RST` as `success, error` — the request's result — and publishes no table of failure
//! codes; card issuers' decline codes are not published at all (PG-FACTS). So an `error` answer is
//! Payple saying the payment (or refund) was not made, whatever the code. The re-pay client still
//! confirms a charge's failure with the result lookup (manual_card "결제결과 조회") before it reports
//! a decline. Only a known hard code stops dunning; only ambiguity (timeout, 5xx, an unreadable
//! body, a `success` we cannot read) is an unknown outcome.

use serde::{Deserialize, Serialize};

use crate::{CardInfo, PaymentDetails, PgError, de_opt_string};

/// Partner auth request (`POST /php/auth.php`): the partner's credentials plus the flag naming
/// the call the AuthKey will serve.
#[derive(Debug, Serialize, Default)]
pub struct AuthRequest<'a> {
    pub cst_id: &'a str,
    #[serde(rename = "custKey")]
    pub cust_key: &'a str,
    #[serde(rename = "PCD_PAY_TYPE", skip_serializing_if = "Option::is_none")]
    pub pay_type: Option<&'a str>,
    #[serde(rename = "PCD_SIMPLE_FLAG", skip_serializing_if = "Option::is_none")]
    pub simple_flag: Option<&'a str>,
    #[serde(rename = "PCD_PAYCANCEL_FLAG", skip_serializing_if = "Option::is_none")]
    pub paycancel_flag: Option<&'a str>,
    #[serde(rename = "PCD_PAYCHK_FLAG", skip_serializing_if = "Option::is_none")]
    pub paychk_flag: Option<&'a str>,
    #[serde(rename = "PCD_PAY_WORK", skip_serializing_if = "Option::is_none")]
    pub pay_work: Option<&'a str>,
}

/// Partner auth response (seed 003 3-2).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthResponse {
    pub result: String,
    #[serde(default)]
    pub result_msg: Option<String>,
    #[serde(default)]
    pub cst_id: Option<String>,
    #[serde(default, rename = "custKey")]
    pub cust_key: Option<String>,
    #[serde(default, rename = "AuthKey")]
    pub auth_key: Option<String>,
    #[serde(default, rename = "PCD_PAY_HOST")]
    pub pay_host: Option<String>,
    #[serde(default, rename = "PCD_PAY_URL")]
    pub pay_url: Option<String>,
    #[serde(default)]
    pub return_url: Option<String>,
}

/// The tokens a partner auth returned, sent with the one call it authorizes: `PCD_CST_ID` and
/// `PCD_CUST_KEY` (the returned tokens, not the partner's own values) and `PCD_AUTH_KEY`.
/// The CERT confirm sends the partner's own values in the same fields (seed 003 3-7).
#[derive(Debug, Serialize)]
pub struct CallAuth<'a> {
    #[serde(rename = "PCD_CST_ID")]
    pub cst_id: &'a str,
    #[serde(rename = "PCD_CUST_KEY")]
    pub cust_key: &'a str,
    #[serde(rename = "PCD_AUTH_KEY")]
    pub auth_key: &'a str,
}

/// Re-pay request (seed 003 4-3), sent to the auth's `return_url`.
#[derive(Debug, Serialize)]
pub struct RepayRequest<'a> {
    #[serde(flatten)]
    pub auth: CallAuth<'a>,
    #[serde(rename = "PCD_PAY_TYPE")]
    pub pay_type: &'a str,
    #[serde(rename = "PCD_PAYER_ID")]
    pub payer_id: &'a str,
    #[serde(rename = "PCD_PAYER_NO", skip_serializing_if = "Option::is_none")]
    pub payer_no: Option<&'a str>,
    #[serde(rename = "PCD_PAYER_NAME")]
    pub payer_name: &'a str,
    #[serde(rename = "PCD_PAYER_HP", skip_serializing_if = "Option::is_none")]
    pub payer_hp: Option<&'a str>,
    #[serde(rename = "PCD_PAYER_EMAIL", skip_serializing_if = "Option::is_none")]
    pub payer_email: Option<&'a str>,
    #[serde(rename = "PCD_PAY_GOODS")]
    pub goods: &'a str,
    #[serde(rename = "PCD_PAY_TOTAL")]
    pub total: String,
    #[serde(rename = "PCD_PAY_OID")]
    pub oid: &'a str,
    #[serde(rename = "PCD_SIMPLE_FLAG")]
    pub simple_flag: &'a str,
    /// Comes back unchanged in results and webhooks: our subscription id.
    #[serde(rename = "PCD_USER_DEFINE1")]
    pub user_define1: &'a str,
}

/// Result lookup (`PCD_PAYCHK_FLAG=Y`).
#[derive(Debug, Serialize)]
pub struct LookupRequest<'a> {
    #[serde(flatten)]
    pub auth: CallAuth<'a>,
    #[serde(rename = "PCD_PAYCHK_FLAG")]
    pub paychk_flag: &'a str,
    #[serde(rename = "PCD_PAY_TYPE")]
    pub pay_type: &'a str,
    #[serde(rename = "PCD_PAY_OID")]
    pub oid: &'a str,
    #[serde(rename = "PCD_PAY_DATE")]
    pub pay_date: &'a str,
}

/// Refund (`PCD_PAYCANCEL_FLAG=Y`).
#[derive(Debug, Serialize)]
pub struct RefundRequestBody<'a> {
    #[serde(flatten)]
    pub auth: CallAuth<'a>,
    #[serde(rename = "PCD_REFUND_KEY")]
    pub refund_key: &'a str,
    #[serde(rename = "PCD_PAYCANCEL_FLAG")]
    pub paycancel_flag: &'a str,
    #[serde(rename = "PCD_PAY_OID")]
    pub oid: &'a str,
    #[serde(rename = "PCD_PAY_DATE")]
    pub pay_date: &'a str,
    #[serde(rename = "PCD_REFUND_TOTAL")]
    pub refund_total: String,
}

/// Billing key deletion (`PCD_PAY_WORK=PUSERDEL`).
#[derive(Debug, Serialize)]
pub struct UserDeleteRequest<'a> {
    #[serde(flatten)]
    pub auth: CallAuth<'a>,
    #[serde(rename = "PCD_PAY_WORK")]
    pub pay_work: &'a str,
    #[serde(rename = "PCD_PAYER_ID")]
    pub payer_id: &'a str,
    #[serde(rename = "PCD_PAYER_NO", skip_serializing_if = "Option::is_none")]
    pub payer_no: Option<&'a str>,
}

/// Billing key info (`PCD_PAY_WORK=PUSERINFO`, PAYPLECORP/manual_card README "6. 등록카드 조회";
/// PAYPLECORP/sample_php `cPayPayple/payUserInfo.php`): both fields are required by the manual.
#[derive(Debug, Serialize)]
pub struct UserInfoRequest<'a> {
    #[serde(flatten)]
    pub auth: CallAuth<'a>,
    #[serde(rename = "PCD_PAYER_ID")]
    pub payer_id: &'a str,
    #[serde(rename = "PCD_PAYER_NO")]
    pub payer_no: &'a str,
}

/// CERT confirm (seed 003 3-7): the partner's own `cst_id`/`custKey` with the window's
/// `PCD_AUTH_KEY`, `PCD_PAY_REQKEY`, `PCD_PAYER_ID`.
#[derive(Debug, Serialize)]
pub struct ConfirmRequest<'a> {
    #[serde(flatten)]
    pub auth: CallAuth<'a>,
    #[serde(rename = "PCD_PAY_REQKEY")]
    pub reqkey: &'a str,
    #[serde(rename = "PCD_PAYER_ID")]
    pub payer_id: &'a str,
}

/// A Payple result (window, re-pay, confirm, lookup, refund, webhook). Every field optional:
/// which ones arrive depends on the call.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PaypleResult {
    #[serde(rename = "PCD_PAY_RST", default, deserialize_with = "de_opt_string")]
    pub rst: Option<String>,
    #[serde(rename = "PCD_PAY_CODE", default, deserialize_with = "de_opt_string")]
    pub code: Option<String>,
    #[serde(rename = "PCD_PAY_MSG", default, deserialize_with = "de_opt_string")]
    pub msg: Option<String>,
    #[serde(rename = "PCD_PAY_OID", default, deserialize_with = "de_opt_string")]
    pub oid: Option<String>,
    #[serde(rename = "PCD_PAY_TYPE", default, deserialize_with = "de_opt_string")]
    pub pay_type: Option<String>,
    #[serde(rename = "PCD_PAY_WORK", default, deserialize_with = "de_opt_string")]
    pub work: Option<String>,
    #[serde(rename = "PCD_PAYER_ID", default, deserialize_with = "de_opt_string")]
    pub payer_id: Option<String>,
    #[serde(rename = "PCD_PAYER_NO", default, deserialize_with = "de_opt_string")]
    pub payer_no: Option<String>,
    /// The key holder's name (PUSERINFO: "결제자명", unmasked in the manual's sample).
    #[serde(rename = "PCD_PAYER_NAME", default, deserialize_with = "de_opt_string")]
    pub payer_name: Option<String>,
    /// The key holder's phone (PUSERINFO: masked, `010-****-3333` in the manual's sample).
    #[serde(rename = "PCD_PAYER_HP", default, deserialize_with = "de_opt_string")]
    pub payer_hp: Option<String>,
    #[serde(rename = "PCD_PAY_GOODS", default, deserialize_with = "de_opt_string")]
    pub goods: Option<String>,
    #[serde(rename = "PCD_PAY_TOTAL", default, deserialize_with = "de_opt_string")]
    pub total: Option<String>,
    #[serde(rename = "PCD_PAY_TIME", default, deserialize_with = "de_opt_string")]
    pub time: Option<String>,
    /// 카드사명 (PAYPLECORP/manual_card README: the payment responses and "결제결과 조회"; the
    /// manual's "1-2" and "3." response samples spell it `PCD_PAY_CARDNANE`, accepted too).
    #[serde(rename = "PCD_PAY_CARDNAME", alias = "PCD_PAY_CARDNANE", default, deserialize_with = "de_opt_string")]
    pub card_name: Option<String>,
    /// 카드번호, masked by Payple ("카드번호(중간 8자리 * 처리)": `1111********4444`; the lookup's
    /// sample `12345678 ** ** 1234` shows eight leading digits) — masked again before it is kept
    /// ([`super::mask_card_number`]).
    #[serde(rename = "PCD_PAY_CARDNUM", default, deserialize_with = "de_opt_string")]
    pub card_num: Option<String>,
    /// 카드거래번호 / 거래 키 (manual_card README, same sections).
    #[serde(rename = "PCD_PAY_CARDTRADENUM", default, deserialize_with = "de_opt_string")]
    pub card_trade_num: Option<String>,
    /// 카드전표URL / 매출전표 출력 링크 (manual_card README, same sections).
    #[serde(rename = "PCD_PAY_CARDRECEIPT", default, deserialize_with = "de_opt_string")]
    pub card_receipt: Option<String>,
    /// The refunded amount — in the refund answer only (manual_card README "4. 승인취소" response:
    /// `"PCD_REFUND_TOTAL" => 1000`). The result lookup ("결제결과 조회") has no refund field:
    /// never read from a lookup.
    #[serde(rename = "PCD_REFUND_TOTAL", default, deserialize_with = "de_opt_string")]
    pub refund_total: Option<String>,
    #[serde(rename = "PCD_AUTH_KEY", default, deserialize_with = "de_opt_string")]
    pub auth_key: Option<String>,
    #[serde(rename = "PCD_PAY_REQKEY", default, deserialize_with = "de_opt_string")]
    pub reqkey: Option<String>,
    #[serde(rename = "PCD_PAY_COFURL", default, deserialize_with = "de_opt_string")]
    pub cofurl: Option<String>,
    #[serde(rename = "PCD_USER_DEFINE1", default, deserialize_with = "de_opt_string")]
    pub user_define1: Option<String>,
    #[serde(rename = "PCD_USER_DEFINE2", default, deserialize_with = "de_opt_string")]
    pub user_define2: Option<String>,
}

/// `PCD_PAY_RST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultStatus {
    Success,
    Error,
    /// The customer closed the window.
    Close,
}

impl PaypleResult {
    pub fn status(&self) -> Result<ResultStatus, PgError> {
        match self.rst.as_deref() {
            Some("success") => Ok(ResultStatus::Success),
            Some("error") => Ok(ResultStatus::Error),
            Some("close") => Ok(ResultStatus::Close),
            other => Err(PgError::Unrecognized {
                code: other.unwrap_or("missing").to_string(),
                message: "unknown PCD_PAY_RST".into(),
            }),
        }
    }

    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    pub fn message(&self) -> String {
        self.msg.clone().unwrap_or_default()
    }

    /// Parses a JSON object or a form body.
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Self, PgError> {
        let value = crate::body_value(content_type, body)
            .map_err(|e| PgError::Invalid(format!("Payple result is not JSON: {e}")))?;
        Self::from_value(value)
    }

    pub fn from_value(value: serde_json::Value) -> Result<Self, PgError> {
        if !value.is_object() {
            return Err(PgError::Invalid("Payple result is not an object".into()));
        }
        serde_json::from_value(value).map_err(|e| PgError::Invalid(format!("Payple result: {e}")))
    }

    /// What this result says for the customer's records: the card (its number masked again by
    /// us) and the receipt URL (only an `http(s)` URL, at most the manual's 1024 characters).
    pub fn details(&self) -> PaymentDetails {
        let text = |v: &Option<String>, max: usize| {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty() && s.chars().count() <= max).map(str::to_string)
        };
        let card = CardInfo {
            name: text(&self.card_name, 100),
            number_masked: self.card_num.as_deref().and_then(super::mask_card_number),
            trade_number: text(&self.card_trade_num, 128),
        };
        let receipt_url = text(&self.card_receipt, 1024)
            .filter(|u| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "https" | "http")));
        PaymentDetails { card: (card != CardInfo::default()).then_some(card), receipt_url }
    }

    /// The DESIGN §3 dedupe key of a webhook: OID + RST + CODE.
    pub fn dedupe_key(&self) -> String {
        format!("{}:{}:{}", self.oid.as_deref().unwrap_or(""), self.rst.as_deref().unwrap_or(""), self.code())
    }
}

/// Maps the answer to a call that moves money (re-pay, CERT confirm, refund) when it is not the
/// success the caller wanted. `PCD_PAY_RST=error` is Payple's explicit failure answer (module docs):
/// a known code keeps its class, any other code is a soft decline.
pub fn classify_error(r: &PaypleResult) -> PgError {
    let code = r.code().to_string();
    let message = r.message();
    let declined = |hard| PgError::Declined { hard, code: code.clone(), message: message.clone() };
    match code.as_str() {
        "SPCD0014" => PgError::AlreadyProcessed { pg_payment_id: r.oid.clone() },
        "SPCD0003" | "PAYC0009" => declined(false),
        // Reported on Payple's developer site as "the billing key does not exist" (PG-FACTS), in
        // neither PAYPLECORP/manual_card nor sample_php: unconfirmed. A hard decline: the key is
        // gone, so retrying cannot help and dunning stops.
        "SPCD0001" => declined(true),
        "SPCD0002" | "SPCD0005" | "PAYC0005" | "PAYC0006" => declined(true),
        "PAYC0001" | "PCHK0001" => PgError::NotFound,
        "PAYC0002" | "AUTH0003" | "AUTH0004" | "AUTH0007" | "AUTH0008" | "AUTH0009" | "AUTH0010" => {
            PgError::Config { code, message }
        }
        _ if r.rst.as_deref() == Some("error") => declined(false),
        _ => PgError::Unrecognized { code, message },
    }
}

/// The one lookup answer counted as "Payple has no such payment" (sandbox code, **unconfirmed**:
/// Payple's card manual, `PAYPLECORP/manual_card` README "결제결과 조회", documents only `PCD_PAY_RST`
/// `success / error` and `PCD_PAY_MSG` "… / 실패" — no error codes at all).
pub const LOOKUP_NOT_FOUND: &str = "PCHK0001";

/// Maps the error answer of a call that moves no money (result lookup, `PUSERDEL`). Credentials
/// problems are `Config`; only [`LOOKUP_NOT_FOUND`] is `NotFound`. Any other `error` answer —
/// maintenance, a rate limit, a code no document lists — says Payple could not answer, not that
/// the payment does not exist, so it is `Transient` (ask again later): a "not found" decides
/// real things (verify fails an AUTH checkout whose first charge stays unseen for an hour; renew
/// charges again under the same OID), and only Payple's positive word may decide them. If the
/// real not-found answer uses another code, it reads as `Transient` too: a checkout then stays
/// open until a person looks (verify's sweep raises the needs-review alarm after a day) and a
/// renewal's outcome stays unknown until renew's review window sends it to `needs_review` —
/// never a checkout failed, or a renewal charged again, on a guess.
pub fn classify_query_error(r: &PaypleResult) -> PgError {
    match classify_error(r) {
        e @ PgError::Config { .. } => e,
        _ if r.code() == LOOKUP_NOT_FOUND => PgError::NotFound,
        _ if r.rst.as_deref() == Some("error") => {
            PgError::Transient { reason: format!("Payple could not answer ({}): {}", r.code(), r.message()) }
        }
        _ => PgError::Unrecognized { code: r.code().to_string(), message: r.message() },
    }
}

/// Maps a failed partner auth (`result` ≠ success): the code is inside `result_msg`. The auth
/// step moves no money and nothing else was sent yet, so an auth failure is never an unknown
/// outcome: bad credentials or Referer are `Config`, anything else `Transient` (safe to retry).
pub fn classify_auth(r: &AuthResponse) -> PgError {
    let msg = r.result_msg.clone().unwrap_or_default();
    let code = ["AUTH0003", "AUTH0004", "AUTH0007"].into_iter().find(|c| msg.contains(c));
    match code {
        Some(code) => PgError::Config { code: code.into(), message: msg },
        None => PgError::Transient { reason: format!("Payple auth refused, nothing sent: {msg}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_cert_response_parses() {
        // Seed 003 3-7's response sample (commas restored).
        let sample = r#"{"PCD_PAY_RST":"success","PCD_PAY_CODE":"PCCF0000","PCD_PAY_MSG":"카드결제완료",
            "PCD_PAY_REQKEY":"d2NtOFExTVF...","PCD_PAY_OID":"test123456789","PCD_PAY_TYPE":"card",
            "PCD_PAYER_ID":"YWpJQXZ...","PCD_PAYER_NO":"1234","PCD_PAYER_NAME":"홍길동","PCD_PAYER_HP":"01012345678",
            "PCD_PAYER_EMAIL":"test@payple.kr","PCD_PAY_GOODS":"테스트 상품명","PCD_PAY_AMOUNT":"100",
            "PCD_PAY_AMOUNT_REAL":"100","PCD_PAY_TOTAL":"100","PCD_PAY_TAXTOTAL":"0","PCD_PAY_ISTAX":"Y",
            "PCD_PAY_CARDNAME":"NH","PCD_PAY_CARDNUM":"2121-****-****-2031","PCD_PAY_CARDTRADENUM":"202110201407049643824400",
            "PCD_PAY_CARDAUTHNO":"12345678","PCD_PAY_CARDRECEIPT":"https://www.danalpay.com/...","PCD_PAY_TIME":"20211020140706",
            "PCD_SIMPLE_FLAG":"N"}"#;
        let r = PaypleResult::parse("application/json", sample.as_bytes()).unwrap();
        assert_eq!(r.status().unwrap(), ResultStatus::Success);
        assert_eq!((r.code(), r.total.as_deref(), r.oid.as_deref()), ("PCCF0000", Some("100"), Some("test123456789")));
        assert_eq!(r.dedupe_key(), "test123456789:success:PCCF0000");
    }

    #[test]
    fn numbers_or_strings_json_or_form() {
        let r = PaypleResult::parse("application/json", br#"{"PCD_PAY_RST":"success","PCD_PAY_TOTAL":9900}"#).unwrap();
        assert_eq!(r.total.as_deref(), Some("9900"));
        let f = PaypleResult::parse(
            "application/x-www-form-urlencoded",
            "PCD_PAY_RST=close&PCD_PAY_MSG=%EB%8B%AB%ED%9E%98".as_bytes(),
        )
        .unwrap();
        assert_eq!(f.status().unwrap(), ResultStatus::Close);
        assert_eq!(f.message(), "닫힘");
        assert!(PaypleResult::parse("application/json", b"[1]").is_err());
        let odd = PaypleResult::parse("application/json", br#"{"PCD_PAY_RST":"maybe"}"#).unwrap();
        assert!(matches!(odd.status(), Err(PgError::Unrecognized { .. })));
    }

    #[test]
    fn the_code_table() {
        let r = |code: &str| PaypleResult {
            rst: Some("error".into()),
            code: Some(code.into()),
            oid: Some("o".into()),
            ..Default::default()
        };
        assert_eq!(classify_error(&r("SPCD0014")), PgError::AlreadyProcessed { pg_payment_id: Some("o".into()) });
        assert!(matches!(classify_error(&r("SPCD0003")), PgError::Declined { hard: false, .. }));
        assert!(matches!(classify_error(&r("SPCD0005")), PgError::Declined { hard: true, .. }));
        assert!(matches!(classify_error(&r("SPCD0002")), PgError::Declined { hard: true, .. }));
        assert!(matches!(classify_error(&r("AUTH0007")), PgError::Config { .. }));
        assert!(matches!(classify_error(&r("SPCD0001")), PgError::Declined { hard: true, .. }));
    }

    #[test]
    fn only_a_lookup_answer_that_says_no_such_payment_is_not_found() {
        let r = |rst: &str, code: &str| PaypleResult {
            rst: Some(rst.into()),
            code: Some(code.into()),
            oid: Some("o".into()),
            ..Default::default()
        };
        assert_eq!(classify_query_error(&r("error", "PCHK0001")), PgError::NotFound);
        // Maintenance, a limit, a code no document lists: Payple could not answer, which says
        // nothing about the payment.
        for code in ["PCHK9999", "SYS0001", ""] {
            let e = classify_query_error(&r("error", code));
            assert!(matches!(e, PgError::Transient { .. }), "{code}: {e:?}");
        }
        // Refund and re-pay codes in a lookup's answer are no "not found" either.
        assert!(matches!(classify_query_error(&r("error", "SPCD0003")), PgError::Transient { .. }));
        assert!(matches!(classify_query_error(&r("error", "PAYC0001")), PgError::Transient { .. }));
    }

    #[test]
    fn an_explicit_error_with_an_unknown_code_is_a_soft_decline_not_an_unknown_outcome() {
        let r = |rst: &str, code: &str| PaypleResult {
            rst: Some(rst.into()),
            code: Some(code.into()),
            oid: Some("o".into()),
            ..Default::default()
        };
        let e = classify_error(&r("error", "CARD9134"));
        assert!(matches!(e, PgError::Declined { hard: false, .. }), "{e:?}");
        assert!(!e.outcome_unknown());
        // A `success` we cannot read is still ambiguous.
        assert!(classify_error(&r("success", "ZZZZ9999")).outcome_unknown());
        assert!(matches!(classify_query_error(&r("error", "AUTH0009")), PgError::Config { .. }));
        let auth = AuthResponse {
            result: "error".into(),
            result_msg: Some("[AUTH0099] 점검중".into()),
            cst_id: None,
            cust_key: None,
            auth_key: None,
            pay_host: None,
            pay_url: None,
            return_url: None,
        };
        assert!(matches!(classify_auth(&auth), PgError::Transient { .. }), "nothing was sent");
    }
}
