//! Domain events: what happened, named as on the EventBridge bus (`detail-type`, DESIGN §7).
//! The store writes them to the outbox in the same transaction as the state change.

use serde::{Deserialize, Serialize};

use crate::attempt::SubscriptionId;
use crate::money::Krw;
use crate::subscription::SubscriptionState;

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
    /// A person settled the charge in review (`POST /subscriptions/{id}/resolve`); the attempt
    /// keeps who, when and why.
    #[serde(rename = "subscription.review_resolved")]
    SubscriptionReviewResolved,
    /// The customer registered a new card (`POST /subscriptions/{id}/payment-method`, verified
    /// with the PG): renewals charge it from now on; one in dunning is charged again at once.
    #[serde(rename = "subscription.payment_method_updated")]
    SubscriptionPaymentMethodUpdated,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
    /// A person settled a refund left unknown (`POST /payments/{id}/refunds/{refund_id}/resolve`);
    /// the refund keeps who, when and why.
    #[serde(rename = "refund.review_resolved")]
    RefundReviewResolved,
}

impl EventKind {
    /// Every kind, the one place that names them (the catalog in `openapi.yaml`'s `webhooks`
    /// has one entry per kind).
    pub const ALL: [EventKind; 16] = [
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
        EventKind::SubscriptionReviewResolved,
        EventKind::SubscriptionPaymentMethodUpdated,
        EventKind::RefundSucceeded,
        EventKind::RefundFailed,
        EventKind::RefundReviewResolved,
    ];

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
            EventKind::SubscriptionReviewResolved => "subscription.review_resolved",
            EventKind::SubscriptionPaymentMethodUpdated => "subscription.payment_method_updated",
            EventKind::RefundSucceeded => "refund.succeeded",
            EventKind::RefundFailed => "refund.failed",
            EventKind::RefundReviewResolved => "refund.review_resolved",
        }
    }

    /// What the event is about, which fixes its data: every kind has exactly one payload type.
    pub fn subject(self) -> Subject {
        match self {
            EventKind::RefundSucceeded | EventKind::RefundFailed | EventKind::RefundReviewResolved => Subject::Refund,
            _ => Subject::Subscription,
        }
    }
}

/// What an event is about: the type of its `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// [`SubscriptionEventData`]: checkout, payment and subscription events.
    Subscription,
    /// [`RefundEventData`]: refund events.
    Refund,
}

/// The data of every checkout, payment and subscription event: the subscription as the change
/// left it, and the payment when money moved. Every producer of these kinds builds this one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEventData {
    pub subscription_id: SubscriptionId,
    pub partner_id: String,
    pub customer_id: String,
    pub state: SubscriptionState,
    /// The current period's index (0 = the first, paid at activation).
    pub period: Option<u32>,
    /// When renew next charges it (RFC 3339, UTC).
    pub next_attempt_at: Option<String>,
    pub payment_id: Option<String>,
    pub amount: Option<Krw>,
    /// The subscription's version after the change. Deliveries are not ordered: a receiver that
    /// has seen a higher version of this subscription drops the event as stale.
    pub version: u64,
}

/// The data of every refund event, whether the partner asked paycycle for the refund or the PG
/// reported one made outside it (`external`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEventData {
    pub refund_id: String,
    pub payment_id: String,
    pub amount: Krw,
    pub partner_id: String,
    /// Made at the PG outside paycycle (e.g. in its dashboard) and recorded when the PG said so.
    pub external: bool,
}

/// An event's data, of the type its kind's [`Subject`] names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventData {
    Subscription(SubscriptionEventData),
    Refund(RefundEventData),
}

impl EventData {
    pub fn subject(&self) -> Subject {
        match self {
            EventData::Subscription(_) => Subject::Subscription,
            EventData::Refund(_) => Subject::Refund,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            EventData::Subscription(d) => serde_json::to_value(d),
            EventData::Refund(d) => serde_json::to_value(d),
        };
        // Plain structs of strings and integers: serializing them cannot fail.
        value.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_is_the_detail_type() {
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.detail_type());
        }
    }
}
