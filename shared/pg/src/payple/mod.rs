//! The Payple client (seed 003, DESIGN §11): a fresh partner auth for every call (an AuthKey
//! serves one request only), the call itself at the `return_url` auth returned (Payple says it
//! may change: never hard-coded), and `Referer` on everything (AUTH0004/AUTH0007 otherwise).

pub mod transformers;

use crate::budget::Budget;
use jiff::Timestamp;
use serde::Serialize;
use url::Url;

use self::transformers::{
    AuthRequest, AuthResponse, CallAuth, ConfirmRequest, LookupRequest, PaypleResult, RefundRequestBody, RepayRequest,
    ResultStatus, UserDeleteRequest, UserInfoRequest, classify_auth, classify_error, classify_query_error,
};
use super::{
    ChargeRequest, Charged, FirstPayment, FirstPaymentEvidence, Lookup, Payer, PaymentDetails, PaymentGateway,
    PaymentState, PgError, RefundRequest, Refunded, transport_error,
};
use paycycle_domain::money::Krw;
use paycycle_domain::secret::Secret;

use crate::credentials::Credentials;

#[derive(Clone, Debug)]
pub struct PaypleClient {
    http: reqwest::Client,
    base: Url,
    referer: String,
    cst_id: Secret,
    cust_key: Secret,
    refund_key: Secret,
    /// When set, the partner keys are read from here per request (a rotated secret).
    credentials: Option<Credentials>,
    budget: Budget,
}

/// The partner's own keys, read once for one request.
struct PartnerKeys {
    cst_id: Secret,
    cust_key: Secret,
    refund_key: Secret,
}

/// A one-time partner auth.
#[derive(Clone, Debug)]
pub struct Grant {
    /// Tokens to send back as `PCD_CST_ID` / `PCD_CUST_KEY` (not the partner's own values).
    pub cst_id: Secret,
    pub cust_key: Secret,
    pub auth_key: Secret,
    pub return_url: Url,
}

impl Grant {
    /// The fields that tie a call to this auth.
    pub fn call_auth(&self) -> CallAuth<'_> {
        CallAuth { cst_id: self.cst_id.expose(), cust_key: self.cust_key.expose(), auth_key: self.auth_key.expose() }
    }
}

/// What the partner's page needs to open Payple's window (seed 003 3-3).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WindowParams {
    #[serde(rename = "PCD_AUTH_KEY")]
    pub auth_key: String,
    #[serde(rename = "PCD_PAY_URL")]
    pub pay_url: String,
    #[serde(rename = "PCD_PAY_WORK")]
    pub work: String,
    #[serde(rename = "PCD_PAY_TYPE")]
    pub pay_type: String,
    /// Required for card windows: `01` 정기 (recurring: the window issues a billing key), `02`
    /// 일반 (PAYPLECORP/manual_card README "1. 최초결제 - 공통": `PCD_CARD_VER | 일반/정기결제 | O
    /// | 01 : 정기, 02 : 일반`; PAYPLECORP/sample_php `order_confirm.php`: set for `card`,
    /// default `01` "간편/정기결제"). paycycle renews with the key: always [`CARD_VER_RECURRING`].
    #[serde(rename = "PCD_CARD_VER")]
    pub card_ver: String,
    #[serde(rename = "PCD_PAY_GOODS")]
    pub goods: String,
    #[serde(rename = "PCD_PAY_TOTAL", skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    #[serde(rename = "PCD_PAY_OID")]
    pub oid: String,
    #[serde(rename = "PCD_RST_URL")]
    pub rst_url: String,
    #[serde(rename = "PCD_PAYER_NO", skip_serializing_if = "Option::is_none")]
    pub payer_no: Option<String>,
    #[serde(rename = "PCD_PAYER_NAME")]
    pub payer_name: String,
    #[serde(rename = "PCD_PAYER_HP", skip_serializing_if = "Option::is_none")]
    pub payer_hp: Option<String>,
    #[serde(rename = "PCD_PAYER_EMAIL", skip_serializing_if = "Option::is_none")]
    pub payer_email: Option<String>,
    #[serde(rename = "PCD_USER_DEFINE1")]
    pub user_define1: String,
}

/// `PCD_CARD_VER` of a recurring card window (see [`WindowParams::card_ver`]).
pub const CARD_VER_RECURRING: &str = "01";

/// The window's work type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WindowWork {
    /// Register a card without paying (no `PCD_PAY_TOTAL`).
    Auth,
    /// Register and pay at once in the browser.
    Pay,
    /// Register and authorize; the partner confirms (charges) afterwards.
    Cert,
}

impl WindowWork {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowWork::Auth => "AUTH",
            WindowWork::Pay => "PAY",
            WindowWork::Cert => "CERT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AUTH" => Some(WindowWork::Auth),
            "PAY" => Some(WindowWork::Pay),
            "CERT" => Some(WindowWork::Cert),
            _ => None,
        }
    }

    /// The work a checkout stored when it opened its window (none stored: `PAY`, the default).
    /// Anything else is a record this code did not write: refused, never guessed.
    pub fn stored(work: Option<&str>) -> Result<Self, PgError> {
        work.map_or(Some(WindowWork::Pay), WindowWork::parse)
            .ok_or_else(|| PgError::Invalid(format!("checkout work {work:?} is not PAY, CERT or AUTH")))
    }

    /// Whether paycycle sends this work's payment itself (AUTH's first charge, CERT's confirm).
    pub fn sends_its_own_payment(self) -> bool {
        matches!(self, WindowWork::Auth | WindowWork::Cert)
    }
}

/// What a window result is checked against: what the checkout stored when it opened the window.
/// The browser's `PCD_PAY_WORK`, OID and total choose nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCheck {
    pub work: WindowWork,
    /// The OID we issued (`PCD_PAY_OID` of the window).
    pub oid: String,
    pub expected: Krw,
    /// The `PCD_PAYER_NO` we set for this checkout's payer; a billing key is charged only when
    /// Payple confirms it for this number (PUSERINFO).
    pub payer_no: Option<String>,
    /// The checkout's customer, whom PUSERINFO's holder must not contradict.
    pub holder: KeyHolder,
    /// When the window was opened (the payment's KST date is that day or later).
    pub opened_at: Timestamp,
}

/// Who a billing key must belong to: the checkout's customer as the partner named them (the
/// window was opened with this `PCD_PAYER_NAME` / `PCD_PAYER_HP`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHolder {
    pub name: String,
    pub phone: Option<String>,
}

impl KeyHolder {
    /// Why PUSERINFO's holder (`name`, `phone` as Payple returns them, possibly masked) is
    /// definitely someone else, or `None` when nothing contradicts ours. Masking is not
    /// documented beyond the manual's sample (`010-****-3333`; the name unmasked), so any
    /// character that is not a letter or digit is read as a mask covering one or more
    /// characters, and only a visible character that differs is a mismatch. A field either
    /// side leaves empty proves nothing.
    pub fn contradiction(&self, name: Option<&str>, phone: Option<&str>) -> Option<String> {
        let theirs = normalize_name(name.unwrap_or_default());
        let ours = normalize_name(&self.name);
        if theirs.chars().any(char::is_alphanumeric) && !ours.is_empty() && !masked_match(&theirs, &ours) {
            return Some("PUSERINFO names another holder".into());
        }
        let theirs = phone_chars(phone.unwrap_or_default());
        let ours: String = self.phone.as_deref().map(phone_chars).unwrap_or_default();
        let visible = theirs.chars().filter(char::is_ascii_digit).count();
        if visible >= 4 && ours.len() >= 4 && !masked_match(&theirs, &ours) {
            return Some("PUSERINFO names another holder's phone".into());
        }
        None
    }
}

fn normalize_name(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// A phone's digits and mask characters, without separators, with a leading Korean country code
/// (`+82 10…`, `82-10…`) written as the national `010…`.
fn phone_chars(s: &str) -> String {
    let kept: String = s.chars().filter(|c| !matches!(c, '-' | ' ' | '.' | '(' | ')' | '+')).collect();
    match kept.strip_prefix("82") {
        Some(rest) if s.trim_start().starts_with('+') || s.trim_start().starts_with("82") => format!("0{rest}"),
        _ => kept,
    }
}

/// Whether `value` fits the possibly masked `pattern`: a run of non-alphanumeric characters in
/// `pattern` stands for one or more characters; every other character must be equal.
fn masked_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // fits[i][j]: p[i..] fits v[j..].
    let mut fits = vec![vec![false; v.len() + 1]; p.len() + 1];
    fits[p.len()][v.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=v.len()).rev() {
            fits[i][j] = if p[i].is_alphanumeric() {
                j < v.len() && p[i] == v[j] && fits[i + 1][j + 1]
            } else {
                // A mask covers v[j] and then either ends or goes on.
                j < v.len() && (fits[i + 1][j + 1] || fits[i][j + 1])
            };
        }
    }
    fits[0][0]
}

/// The `YYYYMMDD` of a `PCD_PAY_TIME` (`YYYYMMDDhhmmss`), if it starts with 8 ASCII digits.
/// Never slices a string at a byte that could be inside a character.
pub fn pay_date(pay_time: &str) -> Option<String> {
    let head = pay_time.as_bytes().get(..8)?;
    head.iter().all(u8::is_ascii_digit).then(|| String::from_utf8_lossy(head).into_owned())
}

pub use paycycle_domain::pii::mask_card_number;

fn krw(s: Option<&str>, what: &str) -> Result<Krw, PgError> {
    let s = s.ok_or_else(|| PgError::Unrecognized {
        code: "missing".into(),
        message: format!("no {what} in Payple's answer"),
    })?;
    Krw::parse_decimal(s).map_err(|e| PgError::Unrecognized { code: what.into(), message: format!("{s:?}: {e}") })
}

/// `PCD_PAY_TIME` (`YYYYMMDDhhmmss`, KST).
fn pay_time(s: Option<&str>) -> Option<Timestamp> {
    let dt = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", s?).ok()?;
    dt.to_zoned(paycycle_domain::calendar::seoul()).ok().map(|z| z.timestamp())
}

impl PaypleClient {
    pub fn new(
        http: reqwest::Client,
        base: Url,
        referer: &Url,
        cst_id: Secret,
        cust_key: Secret,
        refund_key: Secret,
    ) -> Self {
        let referer = referer.as_str().trim_end_matches('/').to_string();
        Self {
            http,
            base,
            referer,
            cst_id,
            cust_key,
            refund_key,
            credentials: None,
            budget: Budget::unlimited("payple"),
        }
    }

    /// Reads the partner keys from `credentials` at each request instead of those given to
    /// [`Self::new`].
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        Self { credentials: Some(credentials), ..self }
    }

    /// `cst_id`, `custKey` and `PCD_REFUND_KEY` for the request being built now.
    async fn keys(&self) -> PartnerKeys {
        match &self.credentials {
            Some(c) => {
                let s = c.current().await;
                PartnerKeys {
                    cst_id: s.payple_cst_id.clone(),
                    cust_key: s.payple_cust_key.clone(),
                    refund_key: s.payple_refund_key.clone(),
                }
            }
            None => PartnerKeys {
                cst_id: self.cst_id.clone(),
                cust_key: self.cust_key.clone(),
                refund_key: self.refund_key.clone(),
            },
        }
    }

    /// Every request (partner auths too) within `budget` ([`crate::budget`]).
    pub fn with_budget(self, budget: Budget) -> Self {
        Self { budget, ..self }
    }

    /// The budget every request of this client waits on.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Partner auth for one call. No money moves here: failures are `Transient` or `Config`.
    pub async fn auth(&self, flags: AuthRequest<'_>) -> Result<Grant, PgError> {
        let keys = self.keys().await;
        let body = AuthRequest { cst_id: keys.cst_id.expose(), cust_key: keys.cust_key.expose(), ..flags };
        let url = self.base.join("/php/auth.php").map_err(|e| PgError::Invalid(e.to_string()))?;
        let request =
            self.http.post(url).header("Referer", &self.referer).header("Cache-Control", "no-cache").json(&body);
        let resp = self.budget.send(request).await.map_err(|e| e.into_pg(false))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| transport_error(&e, false))?;
        if !status.is_success() {
            return Err(PgError::Transient { reason: format!("Payple auth answered {status}") });
        }
        let r: AuthResponse = serde_json::from_str(&text)
            .map_err(|e| PgError::Transient { reason: format!("unreadable Payple auth answer: {e}") })?;
        if r.result != "success" {
            return Err(classify_auth(&r));
        }
        let missing =
            |what: &str| PgError::Unrecognized { code: "auth".into(), message: format!("auth answer without {what}") };
        let return_url = r.return_url.as_deref().ok_or_else(|| missing("return_url"))?;
        let return_url = Url::parse(return_url).map_err(|_| missing("a valid return_url"))?;
        if !matches!(return_url.scheme(), "https" | "http") {
            return Err(missing("an http(s) return_url"));
        }
        Ok(Grant {
            cst_id: Secret::new(r.cst_id.ok_or_else(|| missing("cst_id"))?),
            cust_key: Secret::new(r.cust_key.ok_or_else(|| missing("custKey"))?),
            auth_key: Secret::new(r.auth_key.ok_or_else(|| missing("AuthKey"))?),
            return_url,
        })
    }

    /// POSTs `body` to `url` and parses the Payple result. `moves_money` decides how failures
    /// after sending are classed.
    async fn call<B: Serialize>(&self, url: Url, body: &B, moves_money: bool) -> Result<PaypleResult, PgError> {
        let request =
            self.http.post(url).header("Referer", &self.referer).header("Cache-Control", "no-cache").json(body);
        let resp = self.budget.send(request).await.map_err(|e| e.into_pg(moves_money))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| transport_error(&e, moves_money))?;
        let unknown =
            |reason: String| if moves_money { PgError::Unknown { reason } } else { PgError::Transient { reason } };
        if !status.is_success() {
            return Err(unknown(format!("Payple answered {status}")));
        }
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unknown(format!("unreadable Payple answer: {e}")))?;
        PaypleResult::from_value(value).map_err(|e| unknown(e.to_string()))
    }

    /// Re-pay with the billing key (seed 003 §4), the charge id as `PCD_PAY_OID`.
    pub async fn repay(&self, req: &ChargeRequest) -> Result<Charged, PgError> {
        self.repay_detailed(req).await.map(|(charged, _)| charged)
    }

    /// [`Self::repay`] with the card and receipt of the approval (manual_card README "3. 이후결제 -
    /// 정기결제" response: `PCD_PAY_CARDNAME`, `PCD_PAY_CARDNUM`, `PCD_PAY_CARDTRADENUM`,
    /// `PCD_PAY_CARDRECEIPT`).
    pub async fn repay_detailed(&self, req: &ChargeRequest) -> Result<(Charged, PaymentDetails), PgError> {
        if req.amount.won() < 100 {
            return Err(PgError::Invalid(format!("{} is below Payple's 100원 card minimum", req.amount)));
        }
        let grant =
            self.auth(AuthRequest { pay_type: Some("card"), simple_flag: Some("Y"), ..Default::default() }).await?;
        let oid = req.charge_id.to_string();
        // The lookup that confirms a failure needs the KST date the request was sent.
        let sent_on = paycycle_domain::calendar::kst_yyyymmdd(Timestamp::now());
        let body = RepayRequest {
            auth: grant.call_auth(),
            pay_type: "card",
            payer_id: &req.billing_key,
            payer_no: req.payer.payer_no.as_deref(),
            payer_name: &req.payer.name,
            payer_hp: req.payer.phone.as_deref(),
            payer_email: req.payer.email.as_deref(),
            goods: &req.goods,
            total: req.amount.won().to_string(),
            oid: &oid,
            simple_flag: "Y",
            user_define1: req.charge_id.subscription().as_str(),
        };
        let r = self.call(grant.return_url.clone(), &body, true).await?;
        match r.status().map_err(|e| PgError::Unknown { reason: e.to_string() })? {
            ResultStatus::Success if r.code() == "SPCD0000" => {}
            ResultStatus::Success => return Err(PgError::Unrecognized { code: r.code().into(), message: r.message() }),
            ResultStatus::Error | ResultStatus::Close => {
                return Err(self.confirm_failure(classify_error(&r), &oid, &sent_on).await);
            }
        }
        if r.oid.as_deref() != Some(oid.as_str()) {
            return Err(PgError::Unrecognized {
                code: "oid".into(),
                message: format!("approved OID {:?} is not {oid}", r.oid),
            });
        }
        let total = krw(r.total.as_deref(), "PCD_PAY_TOTAL")?;
        if total != req.amount {
            return Err(PgError::Unrecognized {
                code: "total".into(),
                message: format!("charged {total}, asked {}", req.amount),
            });
        }
        let charged = Charged {
            pg_payment_id: oid,
            amount: total,
            approved_at: pay_time(r.time.as_deref()).unwrap_or_else(Timestamp::now),
        };
        Ok((charged, r.details()))
    }

    /// A payment's failure answer (`PCD_PAY_RST=error`) says no money moved; Payple's own record
    /// confirms it (manual_card README "결제결과 조회": the lookup exists for answers that went
    /// astray). A decline stands only if the lookup finds no payment under the OID; if it shows one,
    /// or cannot answer, the outcome is unknown and renew resolves it by lookup later.
    async fn confirm_failure(&self, failure: PgError, oid: &str, pay_date: &str) -> PgError {
        let PgError::Declined { code, .. } = &failure else { return failure };
        match self.lookup_oid(oid, pay_date).await {
            Err(PgError::NotFound) | Ok(PaymentState::Failed { .. }) => failure,
            Ok(state) => {
                PgError::Unknown { reason: format!("declined ({code}) but Payple's record of {oid}: {state:?}") }
            }
            Err(e) => PgError::Unknown { reason: format!("declined ({code}), not confirmed by lookup: {e}") },
        }
    }

    /// Result lookup by OID and the KST date the payment was requested.
    pub async fn lookup_oid(&self, oid: &str, pay_date: &str) -> Result<PaymentState, PgError> {
        self.lookup_detail(oid, pay_date).await.map(|found| found.state)
    }

    /// [`PaymentGateway::lookup`] with the card and receipt of the payment found.
    pub async fn lookup_with_details(&self, q: &Lookup) -> Result<(PaymentState, PaymentDetails), PgError> {
        let (oid, date) = match q {
            Lookup::Charge { charge_id, request_date_kst } => (charge_id.to_string(), request_date_kst.as_str()),
            Lookup::PgPayment { pg_payment_id, request_date_kst: Some(date) } => (pg_payment_id.clone(), date.as_str()),
            Lookup::PgPayment { request_date_kst: None, .. } => {
                return Err(PgError::Invalid("Payple's lookup needs the request date (PCD_PAY_DATE)".into()));
            }
        };
        self.lookup_detail(&oid, date).await.map(|found| (found.state, found.details))
    }

    /// The lookup with the billing key Payple has on record for the payment (`PCD_PAYER_ID`,
    /// when its answer carries one): what a webhook or a browser claims is checked against it.
    /// Read from the answer (manual_card README "결제결과 조회", JSON numbers or strings): the
    /// payment's fields and its card fields; it has no refund field, so nothing refund-related is
    /// read from it.
    pub async fn lookup_detail(&self, oid: &str, pay_date: &str) -> Result<Found, PgError> {
        let grant = self.auth(AuthRequest { paychk_flag: Some("Y"), ..Default::default() }).await?;
        let body = LookupRequest { auth: grant.call_auth(), paychk_flag: "Y", pay_type: "card", oid, pay_date };
        let r = self.call(grant.return_url.clone(), &body, false).await?;
        match r.status()? {
            ResultStatus::Success => {
                let amount = krw(r.total.as_deref(), "PCD_PAY_TOTAL")?;
                let payer_id = r.payer_id.clone().filter(|p| !p.is_empty());
                // The answer has no refund fields (manual_card "결제결과 조회", PG-FACTS): a refunded
                // payment looks paid here, so `refunded` is never read from it — refunds are not
                // looked up at Payple at all (`Registry::refund_lookup`).
                let state = PaymentState::Paid {
                    pg_payment_id: oid.to_string(),
                    amount,
                    refunded: Krw::ZERO,
                    paid_at: pay_time(r.time.as_deref()),
                };
                Ok(Found { state, payer_id, details: r.details() })
            }
            _ => Err(classify_query_error(&r)),
        }
    }

    /// Refund with `PCD_REFUND_KEY`; less than paid is a partial refund.
    pub async fn refund_payment(&self, req: &RefundRequest) -> Result<Refunded, PgError> {
        let grant = self.auth(AuthRequest { paycancel_flag: Some("Y"), ..Default::default() }).await?;
        let keys = self.keys().await;
        let body = RefundRequestBody {
            auth: grant.call_auth(),
            refund_key: keys.refund_key.expose(),
            paycancel_flag: "Y",
            oid: &req.pg_payment_id,
            pay_date: &req.pay_date_kst,
            refund_total: req.amount.won().to_string(),
        };
        let r = self.call(grant.return_url.clone(), &body, true).await?;
        match r.status().map_err(|e| PgError::Unknown { reason: e.to_string() })? {
            ResultStatus::Success if r.code() == "PAYC0000" => {}
            ResultStatus::Success => return Err(PgError::Unrecognized { code: r.code().into(), message: r.message() }),
            _ => return Err(classify_error(&r)),
        }
        // The refund answer's own `PCD_REFUND_TOTAL` (manual_card README "4. 승인취소" response,
        // a JSON number there). `PAYC0000` 환불성공 already says the refund asked for was made; a
        // total that says otherwise is not taken as a success.
        let refunded = match r.refund_total.as_deref() {
            None => req.amount,
            some => krw(some, "PCD_REFUND_TOTAL")?,
        };
        if refunded != req.amount {
            return Err(PgError::Unrecognized {
                code: "total".into(),
                message: format!("refunded {refunded}, asked {}", req.amount),
            });
        }
        Ok(Refunded { pg_refund_id: None, amount: refunded })
    }

    /// Deletes a billing key (`PUSERDEL`).
    pub async fn delete_billing_key(&self, payer_id: &str, payer_no: Option<&str>) -> Result<(), PgError> {
        let grant = self.auth(AuthRequest { pay_work: Some("PUSERDEL"), ..Default::default() }).await?;
        let body = UserDeleteRequest { auth: grant.call_auth(), pay_work: "PUSERDEL", payer_id, payer_no };
        let r = self.call(grant.return_url.clone(), &body, false).await?;
        match r.status()? {
            ResultStatus::Success => Ok(()),
            _ => Err(classify_query_error(&r)),
        }
    }

    /// Confirms a billing key with Payple (`PCD_PAY_WORK=PUSERINFO`) for the payer number we
    /// gave the window and the checkout's customer. Request and answer fields: PAYPLECORP/
    /// manual_card README "6. 등록카드 조회" and PAYPLECORP/sample_php `cPayPayple/payUserInfo.php`
    /// — request `PCD_PAYER_ID` and `PCD_PAYER_NO` (both required), answer `PCD_PAY_RST`,
    /// `PCD_PAY_CODE` (`0000` on success), `PCD_PAYER_ID`, `PCD_PAYER_NAME` (결제자명),
    /// `PCD_PAYER_HP` (masked: `010-****-3333`), card fields.
    ///
    /// **Unconfirmed**: whether Payple refuses a key registered under another `PCD_PAYER_NO` (the
    /// manual calls the field one that comes back as is — if Payple merely echoes it, comparing
    /// it proves nothing). So the answer must also not contradict the checkout's customer: the
    /// holder's name and masked phone are compared ([`KeyHolder::contradiction`]) and a definite
    /// mismatch is refused. An error answer is a mismatch too: nothing is charged on a key
    /// Payple does not vouch for. Residual risk, if Payple echoes the number: a key of another
    /// customer with the same name and the same visible phone digits.
    pub async fn confirm_billing_key(&self, payer_id: &str, payer_no: &str, holder: &KeyHolder) -> Result<(), PgError> {
        let grant = self.auth(AuthRequest { pay_work: Some("PUSERINFO"), ..Default::default() }).await?;
        let body = UserInfoRequest { auth: grant.call_auth(), payer_id, payer_no };
        let r = self.call(grant.return_url.clone(), &body, false).await?;
        let refused = |why: String| {
            PgError::Mismatch(format!("Payple does not confirm this billing key for this checkout's payer: {why}"))
        };
        match r.status() {
            Ok(ResultStatus::Success) if r.code().ends_with("0000") => {}
            Ok(ResultStatus::Success) => return Err(refused(format!("code {}", r.code()))),
            _ => {
                return match classify_error(&r) {
                    e @ PgError::Config { .. } => Err(e),
                    _ => Err(refused(format!("{} {}", r.code(), r.message()))),
                };
            }
        }
        if r.payer_id.as_deref().is_some_and(|p| p != payer_id) {
            return Err(refused("the answer names another key".into()));
        }
        if r.payer_no.as_deref().is_some_and(|n| n != payer_no) {
            return Err(refused("the key belongs to another payer number".into()));
        }
        if let Some(why) = holder.contradiction(r.payer_name.as_deref(), r.payer_hp.as_deref()) {
            return Err(refused(why));
        }
        Ok(())
    }

    /// A fresh window auth and the parameters for the partner's page. `total` is required for
    /// PAY and CERT and absent for AUTH.
    #[allow(clippy::too_many_arguments)]
    pub async fn window_params(
        &self,
        work: WindowWork,
        oid: &str,
        goods: &str,
        total: Option<Krw>,
        payer: &Payer,
        rst_url: &str,
        user_define1: &str,
    ) -> Result<WindowParams, PgError> {
        if work != WindowWork::Auth && total.is_none_or(|t| t.won() < 100) {
            return Err(PgError::Invalid("PAY and CERT need a total of at least 100원".into()));
        }
        let grant = self.auth(AuthRequest::default()).await?;
        Ok(WindowParams {
            auth_key: grant.auth_key.expose().to_string(),
            pay_url: grant.return_url.to_string(),
            work: work.as_str().into(),
            pay_type: "card".into(),
            card_ver: CARD_VER_RECURRING.into(),
            goods: goods.into(),
            total: if work == WindowWork::Auth { None } else { total.map(|t| t.won().to_string()) },
            oid: oid.into(),
            rst_url: rst_url.into(),
            payer_no: payer.payer_no.clone(),
            payer_name: payer.name.clone(),
            payer_hp: payer.phone.clone(),
            payer_email: payer.email.clone(),
            user_define1: user_define1.into(),
        })
    }

    /// Checks a window result with Payple. The work, OID and amount are the checkout's
    /// (`check`), never the browser's: a PAY is Payple's lookup of our OID (the browser's
    /// `PCD_PAY_RST` changes nothing), a CERT counts only once the confirm succeeds, and an AUTH
    /// key is returned only after Payple confirms it for this checkout's payer (PUSERINFO).
    /// AUTH answers without a charge: the caller charges the confirmed key.
    pub async fn verify_window_result(
        &self,
        fields: &serde_json::Map<String, serde_json::Value>,
        check: &WindowCheck,
    ) -> Result<(FirstPayment, PaymentDetails), PgError> {
        match check.work {
            WindowWork::Pay => {
                let r = window_result(fields)?;
                let hint = r.time.as_deref().and_then(pay_date);
                self.paid_window(&check.oid, hint.into_iter().collect(), check).await
            }
            WindowWork::Cert => {
                let confirm = self.cert_confirm(fields, check)?;
                self.send_cert_confirm(&confirm).await
            }
            WindowWork::Auth => {
                let (_, payer_id) = window_success(fields)?;
                let payer_no = check.payer_no.as_deref().ok_or_else(|| {
                    PgError::Mismatch("this checkout has no payer number: open a new checkout".into())
                })?;
                self.confirm_billing_key(&payer_id, payer_no, &check.holder).await?;
                Ok((FirstPayment { charged: None, billing_key: Some(payer_id) }, PaymentDetails::default()))
            }
        }
    }

    /// A CERT window result checked against the checkout (`check`) and ready to confirm: nothing
    /// is sent, so a caller can record that the confirm goes out before it does.
    pub fn cert_confirm(
        &self,
        fields: &serde_json::Map<String, serde_json::Value>,
        check: &WindowCheck,
    ) -> Result<CertConfirm, PgError> {
        let (r, payer_id) = window_success(fields)?;
        if r.oid.as_deref() != Some(check.oid.as_str()) {
            return Err(PgError::Mismatch("the CERT result is not for this checkout's OID".into()));
        }
        let cofurl = r.cofurl.as_deref().ok_or_else(|| PgError::Mismatch("CERT without PCD_PAY_COFURL".into()))?;
        let cofurl = Url::parse(cofurl).map_err(|_| PgError::Mismatch("bad PCD_PAY_COFURL".into()))?;
        if cofurl.host_str() != self.base.host_str()
            || cofurl.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err(PgError::Mismatch(format!("PCD_PAY_COFURL {cofurl} is not Payple's host")));
        }
        Ok(CertConfirm { result: r, payer_id, cofurl, oid: check.oid.clone(), expected: check.expected })
    }

    /// Payple's record of a window payment by our OID: paid the expected amount, with the
    /// billing key Payple has for it ([`Self::find_payment`]'s dates), and its card and receipt.
    pub async fn paid_window(
        &self,
        oid: &str,
        hints: Vec<String>,
        check: &WindowCheck,
    ) -> Result<(FirstPayment, PaymentDetails), PgError> {
        match self.find_payment(oid, hints, check.opened_at).await? {
            Some(found) => {
                first_payment(oid, found.state, found.payer_id, check.expected).map(|fp| (fp, found.details))
            }
            None => Err(PgError::NotPaid(format!("Payple has no payment {oid}"))),
        }
    }

    /// Payple's record of `oid` with the billing key it names, tried on the KST dates it can
    /// have been requested on (the lookup needs the request date): `hints` (the dates it was
    /// sent on, or a result's `PCD_PAY_TIME`, only a guess), the day of `opened_at`, and today.
    /// `None`: every date answered "no such payment".
    pub async fn find_payment(
        &self,
        oid: &str,
        hints: Vec<String>,
        opened_at: Timestamp,
    ) -> Result<Option<Found>, PgError> {
        let mut dates: Vec<String> = Vec::new();
        for d in hints.into_iter().chain([
            paycycle_domain::calendar::kst_yyyymmdd(opened_at),
            paycycle_domain::calendar::kst_yyyymmdd(Timestamp::now()),
        ]) {
            if !dates.contains(&d) {
                dates.push(d);
            }
        }
        for date in &dates {
            match self.lookup_detail(oid, date).await {
                Err(PgError::NotFound) => continue,
                Err(e) => return Err(e),
                Ok(found) => return Ok(Some(found)),
            }
        }
        Ok(None)
    }

    /// CERT: POSTs the confirm to `PCD_PAY_COFURL` (checked to be on Payple's host); only its
    /// `PCCF0000` for this checkout's OID counts.
    pub async fn send_cert_confirm(&self, confirm: &CertConfirm) -> Result<(FirstPayment, PaymentDetails), PgError> {
        let (r, oid) = (&confirm.result, confirm.oid.as_str());
        let keys = self.keys().await;
        let body = ConfirmRequest {
            auth: CallAuth {
                cst_id: keys.cst_id.expose(),
                cust_key: keys.cust_key.expose(),
                auth_key: r.auth_key.as_deref().unwrap_or_default(),
            },
            reqkey: r.reqkey.as_deref().unwrap_or_default(),
            payer_id: &confirm.payer_id,
        };
        let sent_on = paycycle_domain::calendar::kst_yyyymmdd(Timestamp::now());
        let c = self.call(confirm.cofurl.clone(), &body, true).await?;
        match c.status().map_err(|e| PgError::Unknown { reason: e.to_string() })? {
            ResultStatus::Success if c.code() == "PCCF0000" => {}
            ResultStatus::Success => return Err(PgError::Unrecognized { code: c.code().into(), message: c.message() }),
            _ => return Err(self.confirm_failure(classify_error(&c), oid, &sent_on).await),
        }
        if c.oid.as_deref().is_some_and(|o| o != oid) {
            return Err(PgError::Unrecognized {
                code: "oid".into(),
                message: format!("Payple confirmed {:?}, not {oid}", c.oid),
            });
        }
        let total = krw(c.total.as_deref(), "PCD_PAY_TOTAL")?;
        let charged = Charged {
            pg_payment_id: oid.to_string(),
            amount: total,
            approved_at: pay_time(c.time.as_deref()).unwrap_or_else(Timestamp::now),
        };
        if total != confirm.expected {
            // The window authorized a tampered total and the confirm charged it.
            return Err(PgError::PaidOtherAmount { charged, expected: confirm.expected });
        }
        Ok((FirstPayment { charged: Some(charged), billing_key: Some(confirm.payer_id.clone()) }, c.details()))
    }
}

/// What Payple's result lookup found: the payment's state, the billing key it names, and its
/// card and receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub state: PaymentState,
    pub payer_id: Option<String>,
    pub details: PaymentDetails,
}

/// A CERT window result checked against its checkout, not yet confirmed.
#[derive(Clone, Debug)]
pub struct CertConfirm {
    result: PaypleResult,
    payer_id: String,
    cofurl: Url,
    oid: String,
    expected: Krw,
}

/// The browser's window result, as Payple's result type (a mismatch if it is none).
fn window_result(fields: &serde_json::Map<String, serde_json::Value>) -> Result<PaypleResult, PgError> {
    PaypleResult::from_value(serde_json::Value::Object(fields.clone()))
        .map_err(|e| PgError::Mismatch(format!("not a Payple result: {e}")))
}

/// A CERT or AUTH window result that says success, with its usable `PCD_PAYER_ID`. A close or
/// error from the browser is no answer from Payple: it changes nothing (the checkout stays open).
fn window_success(fields: &serde_json::Map<String, serde_json::Value>) -> Result<(PaypleResult, String), PgError> {
    let r = window_result(fields)?;
    match r.status() {
        Ok(ResultStatus::Success) => {}
        _ => return Err(PgError::NotPaid(format!("the window reported {:?}: nothing to verify", r.rst))),
    }
    let payer_id = r
        .payer_id
        .clone()
        .filter(|p| !p.is_empty() && p.len() <= 255)
        .ok_or_else(|| PgError::Mismatch("no usable PCD_PAYER_ID".into()))?;
    Ok((r, payer_id))
}

/// A looked-up payment as a first payment: paid the expected amount, with Payple's billing key.
fn first_payment(
    oid: &str,
    state: PaymentState,
    payer_id: Option<String>,
    expected: Krw,
) -> Result<FirstPayment, PgError> {
    match state {
        PaymentState::Paid { amount, paid_at, .. } if amount == expected => {
            let Some(payer_id) = payer_id else {
                return Err(PgError::NotPaid(format!("Payple's record of {oid} names no billing key")));
            };
            Ok(FirstPayment {
                charged: Some(Charged {
                    pg_payment_id: oid.to_string(),
                    amount,
                    approved_at: paid_at.unwrap_or_else(Timestamp::now),
                }),
                billing_key: Some(payer_id),
            })
        }
        // Payple charged another amount (the browser changed the window's total): recorded by
        // the caller, never activated.
        PaymentState::Paid { amount, paid_at, .. } => Err(PgError::PaidOtherAmount {
            charged: Charged {
                pg_payment_id: oid.to_string(),
                amount,
                approved_at: paid_at.unwrap_or_else(Timestamp::now),
            },
            expected,
        }),
        PaymentState::Refunded { .. } => Err(PgError::VerificationFailed(format!("{oid} was refunded"))),
        PaymentState::Failed { code, message } => Err(PgError::VerificationFailed(format!("{code}: {message}"))),
        PaymentState::Pending => Err(PgError::NotPaid(format!("{oid} is pending"))),
    }
}

impl PaymentGateway for PaypleClient {
    async fn charge(&self, req: &ChargeRequest) -> Result<Charged, PgError> {
        self.repay(req).await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Refunded, PgError> {
        self.refund_payment(req).await
    }

    async fn lookup(&self, q: &Lookup) -> Result<PaymentState, PgError> {
        self.lookup_with_details(q).await.map(|(state, _)| state)
    }

    async fn verify_first_payment(
        &self,
        evidence: &FirstPaymentEvidence,
        expected: Krw,
    ) -> Result<FirstPayment, PgError> {
        match evidence {
            FirstPaymentEvidence::PaypleResult { fields, window } if window.expected == expected => {
                self.verify_window_result(fields, window).await.map(|(fp, _)| fp)
            }
            FirstPaymentEvidence::PaypleResult { .. } => Err(PgError::Invalid("two different expected amounts".into())),
            _ => Err(PgError::Invalid("StepPay evidence sent to Payple".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyHolder, mask_card_number};

    #[test]
    fn a_card_number_is_never_kept_with_more_than_its_first_and_last_four_digits() {
        for (raw, kept) in [
            // manual_card README: the payment responses, the lookup's sample, seed 003's sample.
            ("1111********4444", "1111********4444"),
            ("12345678 ** ** 1234", "1234********1234"),
            ("2121-****-****-2031", "2121********2031"),
            ("1111 * * * * * * * * 4444", "1111********4444"),
            // Not masked at all, or masked otherwise: masked here.
            ("4111111111111111", "4111********1111"),
            ("4111-1111-1111-1111", "4111********1111"),
            ("378282246310005", "3782*******0005"),
            ("4111XXXXXXXX1111", "4111********1111"),
            ("****1234", "****1234"),
            ("12345678", "****5678"),
            ("1234", "****"),
        ] {
            assert_eq!(mask_card_number(raw).as_deref(), Some(kept), "{raw}");
        }
        for raw in ["", "12", "--", &"1".repeat(40)] {
            assert_eq!(mask_card_number(raw), None, "{raw}");
        }
    }
    use super::transformers::AuthResponse;

    #[test]
    fn a_puserinfo_holder_is_refused_only_on_a_definite_mismatch() {
        let ours = KeyHolder { name: "홍길동".into(), phone: Some("010-1234-5678".into()) };
        // The manual's sample shapes, and masks we may meet: nothing contradicts ours.
        for (name, hp) in [
            (Some("홍길동"), Some("010-****-5678")),
            (Some("홍*동"), Some("010****5678")),
            (Some("홍**"), Some("+82-10-****-5678")),
            (Some("*"), Some("")),
            (None, None),
            (Some(" 홍 길동 "), Some("01012345678")),
        ] {
            assert_eq!(ours.contradiction(name, hp), None, "{name:?} {hp:?}");
        }
        // A visible character that differs is another person.
        for (name, hp) in [
            (Some("김철수"), Some("010-****-5678")),
            (Some("김*수"), None),
            (Some("홍길동"), Some("010-****-8888")),
            (Some("홍길동"), Some("01099998888")),
            (Some("홍길동님"), None),
        ] {
            assert!(ours.contradiction(name, hp).is_some(), "{name:?} {hp:?}");
        }
        // A customer without a phone is checked by name alone.
        let no_phone = KeyHolder { name: "Hong Gildong".into(), phone: None };
        assert_eq!(no_phone.contradiction(Some("HONG GILDONG"), Some("010-****-1111")), None);
        assert!(no_phone.contradiction(Some("Kim"), None).is_some());
    }

    #[test]
    fn the_seed_auth_response_parses() {
        // Seed 003 3-2's response sample.
        let sample = r#"{"server_name": "요청 URL", "result": "결과확인", "result_msg": "결과 메시지", "cst_id": "파트너사 아이디",
            "custKey": "파트너사 키", "AuthKey": "파트너사 인증토큰", "PCD_PAY_HOST": "https://democpay.payple.kr",
            "PCD_PAY_URL": "/auth.php", "return_url": "https://democpay.payple.kr/auth.php"}"#;
        let r: AuthResponse = serde_json::from_str(sample).unwrap();
        assert_eq!(r.auth_key.as_deref(), Some("파트너사 인증토큰"));
        assert_eq!(r.return_url.as_deref(), Some("https://democpay.payple.kr/auth.php"));
        assert_ne!(r.result, "success", "only `success` is success");
    }
}
