//! The export's rows parsed back by an independent RFC 4180 reader (the `csv` crate): KST
//! times, won, quoting, the BOM, CRLF and no formulas.

use super::*;
use paycycle::domain::gateway::{CardInfo, PaymentDetails};
use paycycle::money::Krw;
use paycycle::pg::PgMode;

fn payment() -> PaymentRecord {
    let paid_at = "2027-01-31T15:30:00Z".parse().unwrap();
    PaymentRecord::paid(PgMode::Payple, "oid,\"1\"", "@SUM(A1)", Krw::new(9_900).unwrap(), paid_at, None, None, None)
        .with_details(PaymentDetails {
            card: Some(CardInfo {
                name: Some("신한카드".into()),
                number_masked: Some("1234-5678-9012-3456".into()),
                trade_number: None,
            }),
            receipt_url: Some("https://pg.example/r?a=1,b=2".into()),
        })
}

/// A refund of `won` of `payment_id`, asked for at `at`, known at the PG as `pg_refund_id`.
pub(crate) fn refund(payment_id: &str, id: &str, won: i64, status: RefundStatus, at: &str) -> RefundRecord {
    RefundRecord {
        refund_id: id.into(),
        payment_id: payment_id.into(),
        amount: Krw::new(won).unwrap(),
        reason: "=HYPERLINK(\"x\")".into(),
        status,
        requested_at: at.parse().unwrap(),
        pg_refund_id: Some("-tid".into()),
        failure_code: None,
        failure_message: None,
        request_hash: None,
        cancel_subscription: false,
        partner_id: paycycle::store::payments::DEFAULT_PARTNER.into(),
        resolution: None,
    }
}

/// Parsed back by an independent RFC 4180 reader (the `csv` crate), BOM stripped.
fn parse(text: &str) -> Vec<csv::StringRecord> {
    let body = text.strip_prefix(BOM).expect("starts with the BOM");
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(body.as_bytes());
    reader.records().map(Result::unwrap).collect()
}

#[test]
fn rows_parse_back_with_kst_times_won_and_no_formulas() {
    let mut p = payment();
    p.amounts.refunded = Krw::new(3_000).unwrap();
    let mut out = start();
    let at = "2027-02-01T00:00:00Z";
    let refunds = [
        refund(&p.payment_id, "ref_ok", 3_000, RefundStatus::Succeeded, at),
        refund(&p.payment_id, "ref_no", 500, RefundStatus::Failed, at),
    ];
    payment_rows(&p, &refunds, &mut out);
    assert!(out.starts_with('\u{FEFF}') && out.as_bytes()[..3] == [0xEF, 0xBB, 0xBF]);
    assert!(out.ends_with("\r\n") && !out.replace("\r\n", "").contains('\n'), "CRLF only");
    let rows = parse(&out);
    assert_eq!(rows.len(), 3, "header, payment, the one succeeded refund");
    assert_eq!(rows[0].iter().collect::<Vec<_>>(), HEADER);
    let col = |r: &csv::StringRecord, name: &str| r[HEADER.iter().position(|h| *h == name).unwrap()].to_string();
    let (pay, re) = (&rows[1], &rows[2]);
    assert_eq!(col(pay, "occurred_at_kst"), "2027-02-01 00:30:00", "15:30 UTC is the next day in Seoul");
    assert_eq!(col(pay, "date_kst"), "2027-02-01");
    assert_eq!(
        ["amount_krw", "paid_krw", "refunded_krw", "net_krw"].map(|c| col(pay, c)),
        ["9900", "9900", "3000", "6900"]
    );
    assert_eq!(col(pay, "pg_transaction_id"), "oid,\"1\"", "quoted and unquoted intact");
    assert_eq!(col(pay, "customer_id"), "'@SUM(A1)", "no formula");
    assert_eq!(col(pay, "card_company"), "신한카드");
    assert_eq!(col(pay, "card_number_masked"), "1234********3456");
    assert_eq!(col(pay, "receipt_url"), "https://pg.example/r?a=1,b=2");
    assert_eq!(
        (col(re, "type"), col(re, "amount_krw"), col(re, "refund_id")),
        ("refund".into(), "-3000".into(), "ref_ok".into())
    );
    assert_eq!(col(re, "pg_refund_id"), "'-tid");
    assert_eq!(col(re, "occurred_at_kst"), "2027-02-01 09:00:00");
    let sum: i64 = rows[1..].iter().map(|r| col(r, "amount_krw").parse::<i64>().unwrap()).sum();
    assert_eq!(sum, 6_900, "amounts sum to what was kept");
}

#[test]
fn formulas_are_defused_and_plain_text_is_not() {
    for s in ["=1+1", "+1", "-1", "@A1", "\tx", "\rx"] {
        assert!(defused(s).starts_with('\''), "{s:?}");
    }
    for s in ["cus_1", "1-2", "'x", "홍길동"] {
        assert_eq!(defused(s), s);
    }
    let mut out = String::new();
    field("a\nb", &mut out);
    assert_eq!(out, "\"a\nb\"");
}
