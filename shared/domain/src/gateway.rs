//! Which PG and mode a customer pays through, and what a PG told about a payment: the
//! PG-neutral facts the store and the API keep. Everything that speaks a PG's wire is in the `pg`
//! crate, which implements these against each PG's documents.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::subscription::Renewer;

/// A payment gateway paycycle speaks to. The one spelling of a PG: its [`Pg::as_str`] names its
/// webhook route (`/webhooks/{pg}`), its stored webhook events and the keys of its PG
/// transactions (both StepPay modes share StepPay's ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pg {
    Steppay,
    Payple,
}

impl Pg {
    /// Every PG in the registry: the webhook routes, their config and the sandbox follow this list.
    pub const ALL: [Pg; 2] = [Pg::Steppay, Pg::Payple];

    pub fn as_str(self) -> &'static str {
        match self {
            Pg::Steppay => "steppay",
            Pg::Payple => "payple",
        }
    }

    pub fn parse(name: &str) -> Option<Pg> {
        Pg::ALL.into_iter().find(|pg| pg.as_str() == name)
    }

    /// The route the PG delivers its webhooks to.
    pub fn webhook_path(self) -> String {
        format!("/webhooks/{}", self.as_str())
    }

    /// The PG whose webhook route `path` is (a stage prefix and a trailing `/` allowed).
    pub fn of_webhook_path(path: &str) -> Option<Pg> {
        let path = path.trim_end_matches('/');
        Pg::ALL.into_iter().find(|pg| path.ends_with(&pg.webhook_path()))
    }

    /// The modes this PG runs subscriptions in.
    pub fn modes(self) -> Vec<PgMode> {
        PgMode::ALL.into_iter().filter(|m| m.pg() == self).collect()
    }
}

impl fmt::Display for Pg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three PG modes of the source documents: a PG and who renews on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgMode {
    /// Payple recurring: we schedule and re-pay with `PCD_PAYER_ID`.
    Payple,
    /// StepPay self (비관리형): we schedule and charge the billing idKey.
    SteppaySelf,
    /// StepPay managed (관리형): StepPay renews; we verify its order webhooks.
    SteppayManaged,
}

impl PgMode {
    pub const ALL: [PgMode; 3] = [PgMode::Payple, PgMode::SteppaySelf, PgMode::SteppayManaged];

    pub fn as_str(self) -> &'static str {
        match self {
            PgMode::Payple => "payple",
            PgMode::SteppaySelf => "steppay_self",
            PgMode::SteppayManaged => "steppay_managed",
        }
    }

    pub fn parse(name: &str) -> Option<PgMode> {
        PgMode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Who renews subscriptions in this mode.
    pub fn renewer(self) -> Renewer {
        self.capabilities().renewer
    }

    /// The PG of this mode.
    pub fn pg(self) -> Pg {
        match self {
            PgMode::Payple => Pg::Payple,
            PgMode::SteppaySelf | PgMode::SteppayManaged => Pg::Steppay,
        }
    }

    /// A PG reference of this mode as it may be shown (logs, events, the partner's CSV): in full
    /// where references are ours (Payple OIDs are our ids), else masked — a StepPay idKey may be
    /// a billing key (a self first payment's is) ([`crate::pii::mask_reference`]).
    pub fn shown_reference(self, reference: &str) -> String {
        if self.capabilities().references_are_ours {
            reference.to_string()
        } else {
            crate::pii::mask_reference(reference)
        }
    }

    /// What the PG can do in this mode; callers branch on these, never on the PG.
    pub fn capabilities(self) -> Capabilities {
        match self {
            PgMode::Payple => Capabilities {
                renewer: Renewer::Paycycle,
                refund_lookup: RefundLookupCapability::None,
                lookup_by_date: true,
                lifecycle_at_pg: false,
                references_are_ours: true,
                refunds_through_order: false,
                late_payments: true,
                deletes_billing_keys: true,
            },
            PgMode::SteppaySelf => Capabilities {
                renewer: Renewer::Paycycle,
                refund_lookup: RefundLookupCapability::Receipt,
                lookup_by_date: false,
                lifecycle_at_pg: false,
                references_are_ours: false,
                refunds_through_order: false,
                late_payments: false,
                deletes_billing_keys: false,
            },
            PgMode::SteppayManaged => Capabilities {
                renewer: Renewer::Pg,
                refund_lookup: RefundLookupCapability::Receipt,
                lookup_by_date: false,
                lifecycle_at_pg: true,
                references_are_ours: false,
                refunds_through_order: true,
                late_payments: true,
                deletes_billing_keys: false,
            },
        }
    }
}

impl From<PgMode> for Pg {
    fn from(mode: PgMode) -> Pg {
        mode.pg()
    }
}

impl fmt::Display for PgMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a PG mode can do, for the callers that must behave differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Who charges renewals: paycycle (on a billing key) or the PG itself.
    pub renewer: Renewer,
    /// Whether the PG can show what was refunded of a payment.
    pub refund_lookup: RefundLookupCapability,
    /// The PG's lookup takes the KST date a charge was sent on (Payple `PCD_PAY_DATE`): a charge
    /// re-sent on another day is asked under each of its dates.
    pub lookup_by_date: bool,
    /// Cancel, pause and resume are made at the PG first and recorded here on its yes (StepPay
    /// managed: StepPay renews, so the subscription's state is StepPay's).
    pub lifecycle_at_pg: bool,
    /// The PG's payment references are ids paycycle chose (Payple's OID = our checkout or charge
    /// id) and may be shown; otherwise they may be billing keys (a StepPay idKey) and are masked.
    pub references_are_ours: bool,
    /// A payment is refunded through the PG order it paid (StepPay managed: `PATCH
    /// /api/v1/orders/{id}/cancel`), so the order is recorded with it: a checkout's first payment
    /// keeps the checkout's PG reference (its order code).
    pub refunds_through_order: bool,
    /// The PG can report a checkout's payment after the checkout failed (Payple: a window
    /// result's or the first charge's webhook; StepPay managed: the order can be paid again on
    /// StepPay's pay page). What it confirms then is recorded on the failed checkout for a refund.
    pub late_payments: bool,
    /// A billing key can be deleted at the PG (Payple `PCD_PAY_WORK=PUSERDEL`, PAYPLECORP/
    /// manual_card README "5. 등록카드 해지(정기결제)"): a canceled customer's key is, unless another live
    /// subscription uses it. StepPay publishes no billing key deletion.
    pub deletes_billing_keys: bool,
}

/// Whether a PG can show what was refunded of a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundLookupCapability {
    /// StepPay: the receipt (`GET /api/payment/receipt/{idKey}`) carries the payment's cancel
    /// status and canceled amount.
    Receipt,
    /// Payple: the result lookup (`PayChkAct`) has no refund fields (manual_card README
    /// "결제결과 조회", PG-FACTS) and no other refund lookup is published. An unknown refund there
    /// is never guessed: it stays reserved and goes to a person.
    None,
}

/// What the PG told about a payment that the customer's records need: the card it was paid with
/// and the receipt (Payple `PCD_PAY_CARDNAME`, `PCD_PAY_CARDNUM`, `PCD_PAY_CARDTRADENUM`,
/// `PCD_PAY_CARDRECEIPT`: PAYPLECORP/manual_card README "결제결과 조회" and the payment responses).
/// Kept on the payment record and shown on the payments API. Never a full card number: the
/// number is masked again by us whatever the PG sent ([`crate::pii::mask_card_number`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentDetails {
    pub card: Option<CardInfo>,
    /// The card slip (매출전표) URL, only when it is an `https` or `http` URL.
    pub receipt_url: Option<String>,
}

/// The card a payment was made with, as far as the PG said.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardInfo {
    /// The card company (카드사명), e.g. `BC카드`.
    pub name: Option<String>,
    /// At most the first and the last four digits, every other digit `*`.
    pub number_masked: Option<String>,
    /// The card transaction number (카드거래번호 / 거래 키).
    pub trade_number: Option<String>,
}

/// A PG's own customer (StepPay managed: `CustomerV1DTO.id` and `.code`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgCustomer {
    pub id: String,
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_pg_and_mode() {
        for pg in Pg::ALL {
            assert_eq!(Pg::parse(pg.as_str()), Some(pg));
            assert_eq!(serde_json::to_value(pg).unwrap(), pg.as_str());
            assert_eq!(Pg::of_webhook_path(&format!("/prod{}/", pg.webhook_path())), Some(pg));
            assert!(!pg.modes().is_empty(), "{pg} serves no mode");
        }
        for mode in PgMode::ALL {
            assert_eq!(PgMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
            assert!(mode.pg().modes().contains(&mode));
        }
        assert_eq!(Pg::of_webhook_path("/webhooks/toss"), None);
        assert_eq!(PgMode::SteppayManaged.renewer(), Renewer::Pg);
        assert_eq!(PgMode::SteppaySelf.pg(), PgMode::SteppayManaged.pg());
    }
}
