//! What a person decides about a charge or a refund paycycle could not settle on its own
//! (DESIGN §13): the verdict, what happens next, and who said so, when and why. The resolution is
//! kept on the attempt or refund it settles, and travels with the event it emits.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A person's verdict on a charge or refund whose outcome stayed unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The charge was paid (the PG's lookup must confirm it, amount and all).
    Paid,
    /// The charge was not paid (the PG's lookup must not show it paid).
    NotPaid,
    /// The refund was made at the PG.
    Refunded,
    /// The refund was not made at the PG: its reservation goes back to the refundable amount.
    NotRefunded,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Paid => "paid",
            Verdict::NotPaid => "not_paid",
            Verdict::Refunded => "refunded",
            Verdict::NotRefunded => "not_refunded",
        }
    }
}

/// What happens to a subscription after a person settled its charge as not paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewNext {
    /// Charge the period again now, as a new attempt (a new charge id: the PG sees a new order).
    Retry,
    /// Past due: dunning goes on as after a soft decline (its next retry, or its final action).
    PastDue,
    /// Canceled now.
    Cancel,
}

/// How sure the record is of the PG's side of a resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgConfirmation {
    /// The PG's own lookup agreed with the verdict.
    Confirmed,
    /// The PG has no lookup that can say (Payple shows no refunds; StepPay has no lookup by our
    /// charge id): the person's verdict is recorded on their word, with their reason.
    OperatorOnly,
}

/// A person's resolution, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub verdict: Verdict,
    /// For a charge settled as not paid (or paid and then canceled): what the subscription does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ReviewNext>,
    /// Who: the name of the API key that resolved it.
    pub by: String,
    /// When (wall clock).
    pub at: Timestamp,
    /// Why, in the person's words.
    pub reason: String,
    pub pg: PgConfirmation,
    /// The PG's payment the verdict names (a `paid` charge's transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_payment_id: Option<String>,
}

/// The decline code of a charge a person settled not paid and did not have charged again (its
/// subscription canceled, or dunning over).
pub const NOT_PAID_ON_REVIEW: &str = "not_paid_on_review";

/// The longest reason kept (characters).
pub const MAX_REASON_CHARS: usize = 500;
