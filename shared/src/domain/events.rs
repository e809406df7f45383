//! Domain events: what happened, named as on the EventBridge bus (`detail-type`, DESIGN §7).
//! The store writes them to the outbox in the same transaction as the state change.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "checkout.completed")]
    CheckoutCompleted,
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "subscription.activated")]
    SubscriptionActivated,
    #[serde(rename = "subscription.renewed")]
    SubscriptionRenewed,
    #[serde(rename = "subscription.past_due")]
    SubscriptionPastDue,
    #[serde(rename = "subscription.unpaid")]
    SubscriptionUnpaid,
    #[serde(rename = "subscription.paused")]
    SubscriptionPaused,
    #[serde(rename = "subscription.resumed")]
    SubscriptionResumed,
    #[serde(rename = "subscription.canceled")]
    SubscriptionCanceled,
    /// Not on the design card's list but needed by operations: an unknown charge outcome stayed
    /// unresolved past its window (an alarm matches it).
    #[serde(rename = "subscription.needs_review")]
    SubscriptionNeedsReview,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl EventKind {
    /// The EventBridge `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventKind::CheckoutCompleted => "checkout.completed",
            EventKind::PaymentSucceeded => "payment.succeeded",
            EventKind::PaymentFailed => "payment.failed",
            EventKind::SubscriptionActivated => "subscription.activated",
            EventKind::SubscriptionRenewed => "subscription.renewed",
            EventKind::SubscriptionPastDue => "subscription.past_due",
            EventKind::SubscriptionUnpaid => "subscription.unpaid",
            EventKind::SubscriptionPaused => "subscription.paused",
            EventKind::SubscriptionResumed => "subscription.resumed",
            EventKind::SubscriptionCanceled => "subscription.canceled",
            EventKind::SubscriptionNeedsReview => "subscription.needs_review",
            EventKind::RefundSucceeded => "refund.succeeded",
            EventKind::RefundFailed => "refund.failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_is_the_detail_type() {
        for kind in [
            EventKind::CheckoutCompleted,
            EventKind::PaymentSucceeded,
            EventKind::PaymentFailed,
            EventKind::SubscriptionActivated,
            EventKind::SubscriptionRenewed,
            EventKind::SubscriptionPastDue,
            EventKind::SubscriptionUnpaid,
            EventKind::SubscriptionPaused,
            EventKind::SubscriptionResumed,
            EventKind::SubscriptionCanceled,
            EventKind::SubscriptionNeedsReview,
            EventKind::RefundSucceeded,
            EventKind::RefundFailed,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.detail_type());
        }
    }
}
