//! The paying customer.

use std::fmt;

use serde::{Deserialize, Serialize};

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
}
