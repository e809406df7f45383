//! The paying customer and the PG mode a subscription runs on.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::subscription::Renewer;
use crate::pii::{mask_email, mask_phone};

/// The partner's customer. Name, phone and email go to the PG on re-payment (Payple sends the
/// receipt mail and 알림톡 only when they are given), so they are stored; `Debug` masks them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The partner's own customer id.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let initial: String = self.name.chars().take(1).collect();
        f.debug_struct("Customer")
            .field("id", &self.id)
            .field("name", &format!("{initial}**"))
            .field("phone", &self.phone.as_deref().map(mask_phone))
            .field("email", &self.email.as_deref().map(mask_email))
            .finish()
    }
}

/// The three PG modes of the source documents.
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
    pub fn as_str(self) -> &'static str {
        match self {
            PgMode::Payple => "payple",
            PgMode::SteppaySelf => "steppay_self",
            PgMode::SteppayManaged => "steppay_managed",
        }
    }

    /// Who renews subscriptions in this mode.
    pub fn renewer(self) -> Renewer {
        match self {
            PgMode::SteppayManaged => Renewer::Pg,
            PgMode::Payple | PgMode::SteppaySelf => Renewer::Paycycle,
        }
    }

    /// The PG (for keys that identify a PG transaction: both StepPay modes share StepPay's ids).
    pub fn pg(self) -> &'static str {
        match self {
            PgMode::Payple => "payple",
            PgMode::SteppaySelf | PgMode::SteppayManaged => "steppay",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_personal_data() {
        let c = Customer {
            id: "cus_1".into(),
            name: "홍길동".into(),
            phone: Some("01012345678".into()),
            email: Some("hong@example.com".into()),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("12345678") && !d.contains("hong@") && !d.contains("길동"), "{d}");
        assert!(d.contains("cus_1"));
    }

    #[test]
    fn modes() {
        assert_eq!(PgMode::SteppayManaged.renewer(), Renewer::Pg);
        assert_eq!(serde_json::to_value(PgMode::SteppaySelf).unwrap(), "steppay_self");
        assert_eq!(PgMode::SteppaySelf.pg(), PgMode::SteppayManaged.pg());
    }
}
