//! Masking of customer data for logs. Phone numbers and email addresses are personal data under
//! Korea's PIPA; a log line may show enough to correlate (`010-****-5678`, `h***@example.com`),
//! never the whole value. Use these in every `tracing` field that carries customer data.

/// `01012345678` → `010****5678`; anything shorter than 8 digits is fully masked.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 8 {
        return "*".repeat(digits.len().max(3));
    }
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(digits.len() - 7))
}

/// `hong.gildong@example.com` → `h***@example.com`; a value without `@` is fully masked.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        _ => "***".to_string(),
    }
}

/// A PG reference for a log line, e.g. a webhook's dedupe key `PAYMENT:{idKey}`. A StepPay idKey
/// can be a billing key (the first `*_BILL` payment's idKey is the card's key) and a Payple
/// `PCD_PAYER_ID` is one: each `:`-separated part longer than 12 characters keeps its first and
/// last 4 (`PAYMENT:1801…62ht`), enough to correlate, never enough to charge.
pub fn mask_reference(reference: &str) -> String {
    reference
        .split(':')
        .map(|part| {
            let chars: Vec<char> = part.chars().collect();
            if chars.len() > 12 {
                let head: String = chars[..4].iter().collect();
                let tail: String = chars[chars.len() - 4..].iter().collect();
                format!("{head}…{tail}")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// A card number as paycycle keeps and shows it: at most the first four and the last four digits
/// visible, every other position `*`, no separators. Payple sends it masked, but not always as
/// tightly (PAYPLECORP/manual_card README: `1111********4444` in the payment responses,
/// `12345678 ** ** 1234` — eight leading digits — in "결제결과 조회"), and nothing guarantees a
/// future answer is masked at all: so it is masked again here, whatever came. Digits stay digits
/// only where allowed; any other non-separator character counts as a masked position. The first
/// four show only on numbers of 12 positions or more, the last four on 8 or more; `None` when
/// nothing number-like is left (or more than 32 positions).
pub fn mask_card_number(raw: &str) -> Option<String> {
    let positions: Vec<char> = raw
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '.'))
        .map(|c| if c.is_ascii_digit() { c } else { '*' })
        .collect();
    let n = positions.len();
    if !(4..=32).contains(&n) {
        return None;
    }
    let head = if n >= 12 { 4 } else { 0 };
    let tail = if n >= 8 { 4 } else { 0 };
    Some(positions.iter().enumerate().map(|(i, c)| if i < head || i >= n - tail { *c } else { '*' }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn masks_long_reference_parts() {
        assert_eq!(mask_reference("PAYMENT:1801357200189mE7lYJu1ssgy62ht"), "PAYMENT:1801…62ht");
        assert_eq!(mask_reference("oid123:success:0000"), "oid123:success:0000");
        assert_eq!(mask_reference("가나다라마바사아자차카타파하"), "가나다라…카타파하");
    }

    #[test]
    fn masks_korean_mobile_numbers() {
        assert_eq!(mask_phone("01012345678"), "010****5678");
        assert_eq!(mask_phone("010-1234-5678"), "010****5678");
        assert_eq!(mask_phone("12"), "***");
    }

    #[test]
    fn masks_email_local_part() {
        assert_eq!(mask_email("hong.gildong@example.com"), "h***@example.com");
        assert_eq!(mask_email("not-an-email"), "***");
        assert_eq!(mask_email("@x"), "***");
    }

    proptest! {
        #[test]
        fn a_masked_phone_never_contains_the_middle_digits(mid in "[0-9]{4}") {
            let phone = format!("010{mid}9999");
            let masked = mask_phone(&phone);
            let tail = format!("{mid}9999");
            prop_assert!(!masked.contains(&tail));
            prop_assert_eq!(masked.len(), phone.len());
        }

        #[test]
        fn a_masked_email_never_contains_the_local_part(local in "[a-z]{2,20}") {
            let masked = mask_email(&format!("{local}@example.com"));
            let (masked_local, domain) = masked.split_once('@').unwrap();
            prop_assert_eq!(domain, "example.com");
            prop_assert!(!masked_local.contains(&local), "{} shows {}", masked, local);
        }
    }
}
