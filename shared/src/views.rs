//! The JSON the partner API shows for stored records (DESIGN §2; `openapi.yaml` describes the
//! same shapes). One place, so every route shows a payment or a subscription the same way.

use serde_json::{Value, json};

use crate::store::checkouts::CheckoutRecord;
use crate::store::payments::{PaymentRecord, RefundRecord};
use crate::store::subscriptions::SubscriptionRecord;

pub fn refund_json(r: &RefundRecord) -> Value {
    json!({
        "id": r.refund_id,
        "payment_id": r.payment_id,
        "amount": r.amount,
        "currency": "KRW",
        "status": r.status,
        "reason": r.reason,
        "created_at": r.requested_at.to_string(),
        "pg_refund_id": r.pg_refund_id,
        "failure": r.failure_code.as_ref().map(|code| json!({"code": code, "message": r.failure_message})),
        "resolution": r.resolution,
    })
}

pub fn payment_json(p: &PaymentRecord, refunds: &[RefundRecord]) -> Value {
    let status = if p.amounts.refunded.is_zero() {
        "paid"
    } else if p.amounts.refunded == p.amounts.paid {
        "refunded"
    } else {
        "partially_refunded"
    };
    json!({
        "id": p.payment_id,
        "pg": p.pg,
        "status": status,
        "amount": p.amounts.paid,
        "refunded": p.amounts.refunded,
        "refund_pending": p.amounts.refund_pending,
        "refundable": p.refundable,
        "currency": "KRW",
        "paid_at": p.paid_at.to_string(),
        "customer_id": p.customer_id,
        "subscription_id": p.subscription_id,
        "charge_id": p.charge_id,
        // The card and receipt the PG reported (Payple); `null` where it gave none. The number is
        // masked when stored; masking it again here costs nothing and keeps a full one off the API.
        "card": p.card.as_ref().map(|c| json!({
            "name": c.name,
            "number_masked": c.number_masked.as_deref().and_then(crate::pg::mask_card_number),
            "trade_number": c.trade_number,
        })),
        "receipt_url": p.receipt_url,
        "refunds": refunds.iter().map(refund_json).collect::<Vec<_>>(),
    })
}

pub fn subscription_json(r: &SubscriptionRecord) -> Value {
    let s = &r.subscription;
    json!({
        "id": s.id,
        "customer_id": r.customer.id,
        "pg": r.pg,
        "state": s.state,
        "renewer": s.renewer,
        "plan": {
            "name": s.plan.name,
            "amount": s.plan.amount,
            "currency": "KRW",
            "interval": s.plan.interval.unit(),
            "interval_count": s.plan.interval.count(),
        },
        "current_period": s.current_period.map(|p| json!({
            "index": p.index, "start": p.start.to_string(), "end": p.end.to_string(),
        })),
        "next_attempt_at": s.next_attempt_at.map(|t| t.to_string()),
        "collection": s.collection.as_ref().map(|c| json!({
            "period": c.period,
            "attempt": c.attempt,
            "due_at": c.due_at.to_string(),
            "outcome_unknown_since": c.unknown_since.map(|t| t.to_string()),
        })),
        "cancel_at_period_end": s.cancel_at_period_end,
        "pause_at_period_end": s.pause_at_period_end,
        "paused_at": s.pause.as_ref().map(|p| p.at.to_string()),
        "canceled_at": s.canceled_at.map(|t| t.to_string()),
        "has_billing_key": r.billing_key.is_some(),
        "created_at": r.created_at.to_string(),
        "version": r.version,
    })
}

pub fn checkout_json(c: &CheckoutRecord) -> Value {
    json!({
        "id": c.checkout_id,
        "purpose": c.purpose.as_str(),
        "pg": c.pg,
        "status": c.status,
        "subscription_id": c.subscription_id,
        "customer_id": c.customer.id,
        "amount": c.plan.amount,
        "currency": "KRW",
        "payment_id": c.payment_id,
        "failure": c.failure,
        "created_at": c.created_at.to_string(),
    })
}
