//! The sandbox's memory: configuration, the ledger (what the PG believes happened), billing keys,
//! orders, auth keys, fault scenarios and the webhook log. One mutex: the sandbox favours
//! obviously-correct bookkeeping over throughput.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How webhooks are encoded (both PGs may send either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Form,
}

/// Sandbox settings; changeable at run time through `POST /__admin/config`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// StepPay `Secret-Token` (and `Secret-Key` for cancels).
    pub steppay_secret_token: String,
    pub steppay_webhook_url: Option<String>,
    pub steppay_webhook_format: WebhookFormat,
    /// When set, v2 webhooks carry `Steppay-Signature` (dev-docs `docs/08-1-3_Signature.md`).
    pub steppay_signing_secret: Option<String>,
    /// Whether the partner subscribed StepPay's v2 `payment.*` events in the portal (dev-docs
    /// `docs/08-1-1_Webhook-Events.md`): billing charges then also send `payment.completed` /
    /// `payment.failed` (Payment schema, `08-1-2_Webhook-Schema.md`). Off by default: the self
    /// webhook (seeds 000/001) is what a self partner gets without it.
    pub steppay_payment_events: bool,
    pub payple_cst_id: String,
    pub payple_cust_key: String,
    pub payple_refund_key: String,
    /// When set, Payple calls must send exactly this `Referer` (else AUTH0007); when unset, any
    /// non-empty `Referer` is accepted (a missing one is AUTH0004).
    pub payple_referer: Option<String>,
    pub payple_webhook_url: Option<String>,
    pub payple_webhook_format: WebhookFormat,
    /// Payple's test account cannot partially cancel card payments; `false` emulates it.
    pub payple_partial_refunds: bool,
    /// How long a "timeout after charge" holds the answer back.
    pub timeout_after_charge_ms: u64,
    /// Whether PUSERINFO answers only for a key registered under the request's `PCD_PAYER_NO`
    /// (the sandbox's default reading). Payple's manual only calls the field one that "comes
    /// back as is" (unconfirmed): `false` emulates the other reading — any live key is answered,
    /// the request's number echoed, with the key holder's own name and masked phone.
    pub payple_userinfo_checks_payer_no: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            steppay_secret_token: "local-steppay-secret-token".into(),
            steppay_webhook_url: None,
            steppay_webhook_format: WebhookFormat::Json,
            steppay_signing_secret: None,
            steppay_payment_events: false,
            payple_cst_id: "test".into(),
            payple_cust_key: "abcd1234567890".into(),
            payple_refund_key: "local-payple-refund-key".into(),
            payple_referer: None,
            payple_webhook_url: None,
            payple_webhook_format: WebhookFormat::Json,
            payple_partial_refunds: true,
            timeout_after_charge_ms: 30_000,
            payple_userinfo_checks_payer_no: true,
        }
    }
}

/// Which PG a ledger entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pg {
    Steppay,
    Payple,
}

/// A StepPay payment that failed: it has an idKey and a receipt, but moved no money.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedPayment {
    pub id_key: String,
    pub payment_id: u64,
    pub partner_order_id: Option<String>,
    pub amount: i64,
    pub goods: String,
    pub at: Timestamp,
}

/// A charge the PG made (approved money movement).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Charge {
    pub pg: Pg,
    /// StepPay payment `idKey`; Payple `PCD_PAY_OID`.
    pub id: String,
    pub amount: i64,
    pub refunded: i64,
    /// StepPay payment status, or Payple `paid`/`canceled`/`partial_canceled`.
    pub status: String,
    /// The billing key it was charged on (StepPay idKey of the first *_BILL payment; Payple payer id).
    pub billing_key: Option<String>,
    /// StepPay `partnerOrderId`.
    pub partner_order_id: Option<String>,
    /// StepPay order id the payment belongs to.
    pub order_id: Option<u64>,
    pub method: String,
    pub goods: String,
    pub payer_name: Option<String>,
    pub paid_at: Timestamp,
    /// `YYYYMMDD` KST.
    pub pay_date: String,
    /// `YYYYMMDDhhmmss` KST.
    pub pay_time: String,
    /// Payple card trade number.
    pub trade_no: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefundEntry {
    pub pg: Pg,
    pub charge_id: String,
    pub amount: i64,
    pub tid: String,
    pub at: Timestamp,
}

/// A customer's stored card at Payple.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payer {
    pub payer_id: String,
    pub payer_no: String,
    pub name: String,
    pub hp: Option<String>,
    pub email: Option<String>,
    pub deleted: bool,
}

/// A one-time Payple partner auth.
#[derive(Clone, Debug)]
pub struct AuthGrant {
    /// The returned cst_id / custKey tokens that must come back with the call.
    pub cst_token: String,
    pub key_token: String,
    /// Which call it authorizes (the return_url path).
    pub purpose: &'static str,
    pub expires: Timestamp,
    pub used: bool,
}

/// A Payple CERT window result awaiting the partner's confirm.
#[derive(Clone, Debug)]
pub struct PendingCert {
    pub auth_key: String,
    pub payer_id: String,
    pub oid: String,
    pub amount: i64,
    pub goods: String,
    pub payer_name: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A StepPay price plan (managed mode) the sandbox sells.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Price {
    pub product_code: String,
    pub price_code: String,
    pub product_name: String,
    pub amount: i64,
    /// `ONE_TIME` or a recurring interval (`DAY`, `WEEK`, `MONTH`, `YEAR`).
    pub interval: Option<String>,
    #[serde(default = "one")]
    pub interval_count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Customer {
    pub id: u64,
    pub code: String,
    pub uuid: String,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub marketing: [bool; 3],
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub order_id: u64,
    pub order_code: String,
    /// The order's payment idKey (issued at creation, paid when the pay page completes).
    pub id_key: String,
    pub order_type: String,
    pub customer_id: u64,
    pub price: Price,
    pub paid: bool,
    pub failed: Option<(String, String)>,
    pub subscription_id: Option<u64>,
    /// Set on renewal orders: the subscription renewed.
    pub parent_subscription: Option<u64>,
    /// A PAYMENT_METHOD order: the subscription whose card it changes once paid. Kept by the
    /// sandbox only (no document says how the order names it).
    #[serde(default)]
    pub changes_payment_of: Option<u64>,
    pub created_at: Timestamp,
    pub payment_date: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subscription {
    pub id: u64,
    pub status: String,
    pub customer_id: u64,
    pub price: Price,
    pub billing_key: String,
    pub start_date: Timestamp,
    pub last_payment_date: Timestamp,
    pub next_payment_date: Timestamp,
    pub recurring_count: u32,
    pub orders: Vec<u64>,
}

/// What a scenario applies to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// StepPay billing charge, Payple re-pay, CERT confirm, window payment, pay page.
    Charge,
    Refund,
    Lookup,
    Auth,
    /// StepPay managed subscription changes: pause, resume (`/active`), cancel.
    Lifecycle,
    Any,
}

/// A fault (or an explicit approval) to inject.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    Approve,
    /// Soft decline (insufficient funds, limit) or hard (billing key gone, card lost).
    Decline {
        hard: bool,
    },
    /// An explicit failure answer carrying an issuer `code` the partner was never told about: card
    /// issuers' decline codes are not published (PG-FACTS), so a real PG answers with codes no
    /// client lists. Payple answers `PCD_PAY_RST=error` with it as `PCD_PAY_CODE`; StepPay a 400
    /// error body with it as `errorCode`. Nothing is charged.
    DeclineWithCode {
        code: String,
    },
    /// A refund still being processed at StepPay. On a receipt lookup the payment shows
    /// `CANCEL_PROGRESS` (a status StepPay's cancel answer documents) and no canceled amount yet;
    /// on a cancel (`operation: refund`) the answer's `cancelPayment.paymentStatus` is
    /// `CANCEL_PROGRESS` while the refund goes on to be made.
    CancelInProgress,
    /// A lookup taken before the PG's records caught up with what it already did. StepPay: the
    /// receipt shows the payment as it was before its latest refund (`COMPLETE` if that was its
    /// first). Payple: the result lookup does not find the charge yet (`PCHK0001`). Neither PG's
    /// documents promise read-after-write on these lookups, so a snapshot right after an
    /// ambiguous answer may lag like this.
    LookupLags,
    /// A StepPay receipt that contradicts itself: `paymentStatus` COMPLETE with `paymentDate`
    /// null. Only those two fields are documented (dev-docs `07-1`, `09-2`) and nothing promises
    /// they agree at every moment; a client must not read it as a decline.
    ReceiptWithoutPaymentDate,
    /// The charge is recorded, then the answer is held back past any sane client timeout.
    TimeoutAfterCharge,
    /// The charge is declined (a FAILED payment with its own idKey, no money moved), then the
    /// answer is held back past any sane client timeout: the client cannot know it was declined.
    TimeoutAfterDecline,
    /// 5xx before doing anything.
    ServerError,
    /// `429 Too Many Requests` before doing anything, with `Retry-After` seconds if given. Neither
    /// PG documents a rate limit or its answer (PG-FACTS); this is HTTP's way to say "slow down",
    /// for proving a client backs off instead of multiplying its requests.
    TooManyRequests {
        retry_after_s: Option<u64>,
    },
    /// Answer normally after a delay.
    Delay {
        ms: u64,
    },
    /// Deliver the resulting webhook twice.
    WebhookTwice,
    /// Deliver the resulting webhook after a delay.
    WebhookLate {
        ms: u64,
    },
    /// Hold the resulting webhook back and deliver it after the next one.
    WebhookOutOfOrder,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    /// Applies to requests using this billing key (StepPay idKey or Payple PCD_PAYER_ID), always.
    #[serde(default)]
    pub billing_key: Option<String>,
    /// Or: applies to the next `count` requests of this operation. With a billing key, `count`
    /// limits it to that key's next `count` requests (absent = always).
    #[serde(default)]
    pub operation: Option<Operation>,
    #[serde(default)]
    pub count: Option<u32>,
    pub fault: Fault,
}

/// A webhook the sandbox sent (or tried to).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub pg: Pg,
    pub url: String,
    pub content_type: String,
    pub body: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: Timestamp,
}

#[derive(Default)]
pub struct State {
    pub charges: Vec<Charge>,
    pub refunds: Vec<RefundEntry>,
    /// StepPay billing keys: idKey of a first *_BILL payment → deleted?
    pub steppay_billing_keys: BTreeMap<String, bool>,
    /// StepPay billing payments that FAILED (no money moved): their receipts answer FAILED.
    pub steppay_failed_payments: Vec<FailedPayment>,
    pub payers: BTreeMap<String, Payer>,
    pub auth_keys: HashMap<String, AuthGrant>,
    pub pending_certs: HashMap<String, PendingCert>,
    pub prices: Vec<Price>,
    pub customers: Vec<Customer>,
    pub orders: Vec<Order>,
    pub subscriptions: Vec<Subscription>,
    pub scenarios: Vec<Scenario>,
    pub deliveries: Vec<Delivery>,
    /// Offset added to the real clock (set by `POST /__admin/clock` for time travel).
    pub clock_offset: SignedDuration,
}

impl State {
    pub fn now(&self) -> Timestamp {
        Timestamp::now().saturating_add(self.clock_offset).unwrap_or_else(|_| Timestamp::now())
    }

    pub fn charge(&self, pg: Pg, id: &str) -> Option<&Charge> {
        self.charges.iter().find(|c| c.pg == pg && c.id == id)
    }

    pub fn charge_mut(&mut self, pg: Pg, id: &str) -> Option<&mut Charge> {
        self.charges.iter_mut().find(|c| c.pg == pg && c.id == id)
    }

    /// The fault for a request: a billing-key scenario first, then the first "next N" scenario
    /// of this operation (consuming one of its N).
    pub fn take_fault(&mut self, op: Operation, billing_key: Option<&str>) -> Option<Fault> {
        if let Some(key) = billing_key {
            // A billing-key scenario applies to charges unless it names another operation; always,
            // or to the next `count` of them when a count is given.
            let hit = self.scenarios.iter().position(|s| {
                s.billing_key.as_deref() == Some(key)
                    && s.count != Some(0)
                    && s.operation.as_ref().map_or(op == Operation::Charge, |o| *o == op || *o == Operation::Any)
            });
            if let Some(index) = hit {
                let s = &mut self.scenarios[index];
                let fault = s.fault.clone();
                if let Some(count) = s.count {
                    if count <= 1 {
                        self.scenarios.remove(index);
                    } else {
                        s.count = Some(count - 1);
                    }
                }
                return Some(fault);
            }
        }
        let index = self.scenarios.iter().position(|s| {
            s.billing_key.is_none()
                && s.count.unwrap_or(1) > 0
                && matches!(&s.operation, Some(o) if *o == op || *o == Operation::Any)
        })?;
        let s = &mut self.scenarios[index];
        let fault = s.fault.clone();
        let left = s.count.unwrap_or(1).saturating_sub(1);
        if left == 0 {
            self.scenarios.remove(index);
        } else {
            s.count = Some(left);
        }
        Some(fault)
    }
}

/// Everything behind the routes.
pub struct Shared {
    pub config: Mutex<Config>,
    pub state: Mutex<State>,
    /// Webhooks held back to be delivered out of order.
    pub held: Mutex<Vec<crate::webhooks::Webhook>>,
    pub http: reqwest::Client,
    /// What was checked and what did not have its documented shape (`GET /__admin/shapes`).
    pub shape_log: Mutex<ShapeLog>,
    counter: AtomicU64,
    seed: u64,
    /// Peaks of the PG routes' load (`GET /__admin/load`).
    pub load: crate::load::Load,
}

/// Bodies checked against the documented shapes, per route, and the ones that failed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShapeLog {
    /// `"steppay POST /api/internal/payment/cancel"` → bodies checked (requests and answers).
    pub checked: BTreeMap<String, u64>,
    pub violations: Vec<pg_shapes::Violation>,
    /// A drift planted on purpose (`POST /__admin/shapes/drift`): every JSON answer has this
    /// field renamed `(from, to)`, to prove the checks catch a sandbox that drifts.
    pub drift: Option<(String, String)>,
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl Shared {
    pub fn new(config: Config) -> Self {
        let seed = Timestamp::now().as_nanosecond() as u64 ^ u64::from(std::process::id());
        Self {
            config: Mutex::new(config),
            state: Mutex::new(State::default()),
            held: Mutex::new(Vec::new()),
            http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("http client"),
            shape_log: Mutex::new(ShapeLog::default()),
            counter: AtomicU64::new(1),
            seed,
            load: crate::load::Load::default(),
        }
    }

    pub fn config(&self) -> Config {
        self.config.lock().expect("config lock").clone()
    }

    pub fn next_number(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// `n` pseudo-random alphanumerics (unique per sandbox run; not for secrets).
    pub fn random(&self, n: usize) -> String {
        let mut out = String::with_capacity(n);
        let mut block = 0u64;
        while out.len() < n {
            let digest = Sha256::digest(format!("{}:{}:{block}", self.seed, self.next_number()).as_bytes());
            for b in digest {
                if out.len() == n {
                    break;
                }
                out.push(ALNUM[usize::from(b) % ALNUM.len()] as char);
            }
            block += 1;
        }
        out
    }

    /// StepPay idKey: 13-digit epoch milliseconds + 16 alphanumerics (29 characters).
    pub fn steppay_id_key(&self, now: Timestamp) -> String {
        format!("{:013}{}", now.as_millisecond(), self.random(16))
    }
}

pub fn kst(t: Timestamp) -> jiff::Zoned {
    t.to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").expect("bundled tzdb has Asia/Seoul"))
}

pub fn yyyymmdd(t: Timestamp) -> String {
    kst(t).strftime("%Y%m%d").to_string()
}

pub fn yyyymmddhhmmss(t: Timestamp) -> String {
    kst(t).strftime("%Y%m%d%H%M%S").to_string()
}
