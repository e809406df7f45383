//! Typed PG clients behind one [`PaymentGateway`] trait (DESIGN §4–§6, §11; Hyperswitch style:
//! one module per PG, wire types in `transformers` mirroring the PG's documents exactly).
//!
//! This module owns one rule above all: **an outcome is only what the PG explicitly said**. A
//! charge is approved only on the PG's success code with its payment id. An explicit failure answer
//! (Payple `PCD_PAY_RST=error`, StepPay `FAILED` or its error body refusing the request) says no
//! money moved: it is a decline — soft unless the code is known to be hard — confirmed by the PG's
//! lookup where it has one. Only ambiguity after the request may have reached the PG — timeouts,
//! 5xx, unreadable bodies, a success we cannot read — is [`PgError::Unknown`] or
//! [`PgError::Unrecognized`], which the callers resolve by lookup or webhook and never retry
//! blind. A request that never left (connection refused, partner auth refused) is
//! [`PgError::Transient`]. Clients never persist anything.

pub mod budget;
pub mod checkout;
pub mod config;
pub mod credentials;
pub mod first;
pub mod notice;
pub mod payple;
mod registry;
pub mod steppay;
pub mod trace;

pub use config::{PgConfig, PgConfigured};
pub use credentials::Credentials;
pub use first::{CheckoutTerms, Evidence, HeldCheckout, Source};
pub use notice::WebhookIntake;
pub use notice::{IntakeError, Notice, OrderReport, PgSubscriptionState, RenewalOutcome};
pub use paycycle_domain::gateway::{
    Capabilities, CardInfo, PaymentDetails, Pg, PgCustomer, PgMode, RefundLookupCapability,
};
pub use payple::mask_card_number;
pub use registry::{Adapter, PgChange, Registry};

use std::time::Duration;

use jiff::Timestamp;

use paycycle_domain::attempt::ChargeId;
use paycycle_domain::money::Krw;

/// Why a PG call did not produce the result asked for. The class drives what the caller may do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// The PG refused the payment. `hard` = retrying cannot help (billing key gone, card lost).
    #[error("declined ({code}): {message}")]
    Declined { hard: bool, code: String, message: String },
    /// The request was (or may have been) sent and no trustworthy answer came back. Never retry
    /// blind: look the outcome up first.
    #[error("outcome unknown: {reason}")]
    Unknown { reason: String },
    /// The PG says this charge id was already processed (Payple `SPCD0014`, StepPay repeated
    /// `partnerOrderId`): a previous attempt went through. Resolve by lookup.
    #[error("already processed by the PG{}", pg_payment_id.as_ref().map(|id| format!(" as {id}")).unwrap_or_default())]
    AlreadyProcessed { pg_payment_id: Option<String> },
    /// Nothing was sent (connection refused, auth step failed before the call): safe to retry.
    #[error("not sent: {reason}")]
    Transient { reason: String },
    /// Credentials, Referer or endpoint are wrong: an operator must fix configuration.
    #[error("PG configuration error ({code}): {message}")]
    Config { code: String, message: String },
    /// We sent something the PG (or we) consider malformed: a bug on our side.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The PG answered with a status or code this client does not know. Treated like `Unknown`
    /// for money movements: never as paid, never as failed.
    #[error("unrecognized PG answer ({code}): {message}")]
    Unrecognized { code: String, message: String },
    /// paycycle could not record, before sending it, that a payment of its own is about to be
    /// sent (its store failed): nothing was sent. Not the PG's doing — answered as paycycle
    /// being unavailable, never as a PG error.
    #[error("not sent: the send could not be recorded first ({0})")]
    NotRecorded(String),
    /// A lookup found nothing.
    #[error("not found at the PG")]
    NotFound,
    /// The PG has no such operation (e.g. StepPay has no lookup by our charge id).
    #[error("not supported by this PG: {0}")]
    Unsupported(&'static str),
    /// A first payment's evidence did not check out, for good: the PG reports it failed or
    /// canceled, or the amount differs from the checkout's (tampered).
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// The PG has no completed payment for this evidence (yet): waiting for a deposit, the
    /// customer has not paid the order. Not final.
    #[error("not paid (yet): {0}")]
    NotPaid(String),
    /// A first payment went through at another amount than the checkout's (a tampered window
    /// total the PG charged anyway, a confirm or receipt of another amount): money moved, so it
    /// must be recorded — refundable — but nothing activates on it. Not an unknown outcome.
    #[error("the PG charged {} for {}, the checkout expects {expected}", charged.amount, charged.pg_payment_id)]
    PaidOtherAmount { charged: Charged, expected: Krw },
    /// The caller's evidence names something that is not this checkout's (another payment, a
    /// key Payple does not confirm for this payer, a confirm URL off Payple's host). Nothing the
    /// PG said fails the checkout: nothing changes.
    #[error("evidence mismatch: {0}")]
    Mismatch(String),
}

impl PgError {
    /// Whether the money may have moved: the caller must look it up before anything else.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, PgError::Unknown { .. } | PgError::Unrecognized { .. } | PgError::AlreadyProcessed { .. })
    }

    /// Whether the same request may simply be sent again.
    pub fn retryable(&self) -> bool {
        matches!(self, PgError::Transient { .. } | PgError::NotRecorded(_))
    }
}

/// The customer data a PG wants with a re-payment (Payple sends receipts only when given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payer {
    pub customer_id: String,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Payple `PCD_PAYER_NO` (the partner's member number); numeric, up to 10 digits.
    pub payer_no: Option<String>,
}

/// A renewal charge on a billing key. `Debug` shows no key.
#[derive(Clone)]
pub struct ChargeRequest {
    pub billing_key: String,
    pub charge_id: ChargeId,
    pub amount: Krw,
    pub goods: String,
    pub payer: Payer,
}

impl std::fmt::Debug for ChargeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeRequest")
            .field("billing_key", &"***")
            .field("charge_id", &self.charge_id)
            .field("amount", &self.amount)
            .field("goods", &self.goods)
            .field("payer", &self.payer)
            .finish()
    }
}

/// An approved charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charged {
    /// StepPay payment `idKey`; Payple `PCD_PAY_OID`.
    pub pg_payment_id: String,
    pub amount: Krw,
    pub approved_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct RefundRequest {
    pub pg_payment_id: String,
    pub amount: Krw,
    /// The payment's `YYYYMMDD` in KST (Payple `PCD_PAY_DATE`).
    pub pay_date_kst: String,
    /// Our refund id (for logs; neither PG takes one).
    pub refund_id: String,
    /// StepPay managed: the order the payment paid; the refund goes through it.
    pub pg_order: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refunded {
    pub pg_refund_id: Option<String>,
    pub amount: Krw,
}

/// What a PG's own record says about the refunds of one payment. Only a definite answer releases
/// or settles a refund whose outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundLookup {
    /// The PG's definite refunded total for the payment (zero: nothing was refunded).
    Settled { refunded: Krw },
    /// A refund is still being processed at the PG (StepPay `CANCEL_PROGRESS`): no answer yet.
    InProgress,
}

/// What to look up.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// By our charge id and the KST date it was requested (Payple's lookup needs the date).
    Charge { charge_id: ChargeId, request_date_kst: String },
    /// By the PG's payment id (StepPay idKey, Payple OID).
    PgPayment { pg_payment_id: String, request_date_kst: Option<String> },
}

/// What the PG says about a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentState {
    /// Paid (possibly partly refunded).
    Paid { pg_payment_id: String, amount: Krw, refunded: Krw, paid_at: Option<Timestamp> },
    /// Fully refunded.
    Refunded { pg_payment_id: String, amount: Krw },
    /// Not paid and never will be (failed, canceled by the user).
    Failed { code: String, message: String },
    /// Not paid yet (waiting for a deposit, an order not paid).
    Pending,
}

/// Evidence of a first payment, as the partner's redirect handler or a webhook received it.
#[derive(Clone, Debug)]
pub enum FirstPaymentEvidence {
    /// Payple window result fields (`PCD_*`), JSON or form, as received.
    ///
    /// Checked against what the checkout stored (the work, the OID, the payer number), never
    /// against the browser's claims.
    PaypleResult { fields: serde_json::Map<String, serde_json::Value>, window: payple::WindowCheck },
    /// StepPay managed redirect: `order_code` (and `order_id`, `status`).
    SteppayOrder { order_code: String },
    /// StepPay self: the first payment's `idKey` (from the SDK callback or webhook), and the
    /// `partnerOrderId` it must carry (our checkout id) when StepPay reports one.
    SteppayPayment { id_key: String, partner_order_id: Option<String> },
}

/// A verified first payment. `Debug` shows whether it has a billing key, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct FirstPayment {
    /// The payment, if money moved (Payple AUTH registers a card without paying).
    pub charged: Option<Charged>,
    /// What renewals charge: Payple `PCD_PAYER_ID`, StepPay idKey of a `*_BILL` payment; for
    /// StepPay managed, StepPay's subscription id.
    pub billing_key: Option<String>,
}

impl std::fmt::Debug for FirstPayment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.billing_key.as_ref().map(|_| "***");
        f.debug_struct("FirstPayment").field("charged", &self.charged).field("billing_key", &key).finish()
    }
}

/// The operations verify, renew and refund need from any PG.
pub trait PaymentGateway {
    /// Charges a billing key. The charge id goes to the PG so a repeat is rejected there too.
    fn charge(&self, req: &ChargeRequest) -> impl Future<Output = Result<Charged, PgError>> + Send;
    /// Refunds part or all of a payment.
    fn refund(&self, req: &RefundRequest) -> impl Future<Output = Result<Refunded, PgError>> + Send;
    /// Asks the PG what happened to a payment.
    fn lookup(&self, q: &Lookup) -> impl Future<Output = Result<PaymentState, PgError>> + Send;
    /// Checks a first payment's evidence with the PG (never trusting the caller) against the
    /// amount the checkout expects.
    fn verify_first_payment(
        &self,
        evidence: &FirstPaymentEvidence,
        expected: Krw,
    ) -> impl Future<Output = Result<FirstPayment, PgError>> + Send;
}

/// Timeouts for PG calls.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        // Payple answers within seconds; a renew tick has minutes. A charge that takes longer
        // than `total` becomes Unknown and is looked up, never retried.
        Self { connect: Duration::from_secs(3), total: Duration::from_secs(20) }
    }
}

/// The HTTP client for PG calls: rustls verifying against the system's trust store (loaded once,
/// when the client is built), timeouts, no redirects, built once per cold start. Not
/// paycycle-tls's compiled-in roots, which the AWS SDK uses: which CA a PG's API host chains to
/// is no document's promise, and a compiled-in set is frozen at the build — a PG whose chain it
/// lacks would stop every charge until a rebuild.
pub fn http_client(timeouts: Timeouts) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("paycycle/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initializes")
}

/// Classifies a transport failure. `moves_money`: the request may have changed state at the PG.
pub(crate) fn transport_error(e: &reqwest::Error, moves_money: bool) -> PgError {
    // A connect error (refused, DNS, connect timeout) means nothing reached the PG.
    if e.is_connect() || e.is_builder() {
        return PgError::Transient { reason: format!("could not connect: {e}") };
    }
    if moves_money {
        PgError::Unknown { reason: format!("sent, no answer: {e}") }
    } else {
        PgError::Transient { reason: format!("no answer: {e}") }
    }
}

/// A PG's body (webhook, redirect result) as JSON: `application/x-www-form-urlencoded` becomes an
/// object of strings; anything else is parsed as JSON (both PGs may send either).
pub fn body_value(content_type: &str, body: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    if content_type.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Ok(serde_json::Value::Object(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
                .collect(),
        ));
    }
    serde_json::from_slice(body)
}

/// Accepts a JSON number or a numeric string (both PGs send either).
pub(crate) fn de_opt_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        Some(other) => Some(other.to_string()),
    })
}
