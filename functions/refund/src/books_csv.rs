//! The payments export as a spreadsheet reads it (issue #24 §4): UTF-8 with a byte-order mark (so
//! Excel shows Hangul), CRLF line ends, RFC 4180 quoting, one header row, KST date-times and
//! integer won. One row per payment, then one per succeeded refund of it (a negative amount), so
//! the `amount_krw` column sums to what was kept.
//!
//! Cells are text the partner's customers, the partner and the PGs chose (customer ids, refund
//! reasons, card company names): a text cell starting with `=`, `+`, `-`, `@`, a tab or a CR is
//! prefixed with `'` so a spreadsheet shows it instead of running it as a formula (OWASP "CSV
//! injection"). Amount cells are integers we write ourselves and are never prefixed. This module
//! must never write a billing key or an unmasked card number: it is given payments and refunds
//! only, and masks card numbers again on the way out.

use paycycle::calendar::in_seoul;
use paycycle::domain::payment::RefundStatus;
use paycycle::store::payments::{PaymentRecord, RefundRecord};

/// The UTF-8 byte-order mark every export starts with.
pub const BOM: &str = "\u{FEFF}";

/// The columns, in order (documented in `openapi.yaml`, `PaymentsExport`).
pub const HEADER: [&str; 19] = [
    "type",
    "date_kst",
    "occurred_at_kst",
    "payment_id",
    "refund_id",
    "customer_id",
    "subscription_id",
    "pg",
    "pg_transaction_id",
    "pg_order_code",
    "pg_refund_id",
    "amount_krw",
    "paid_krw",
    "refunded_krw",
    "refund_pending_krw",
    "net_krw",
    "card_company",
    "card_number_masked",
    "receipt_url",
];

/// One cell: text (guarded against formulas) or won (written as the integer it is).
enum Cell<'a> {
    Text(&'a str),
    Won(i64),
    Empty,
}

fn text(v: Option<&str>) -> Cell<'_> {
    v.map_or(Cell::Empty, Cell::Text)
}

/// `s` as one RFC 4180 field: quoted when it holds a comma, a quote or a line break.
fn field(s: &str, out: &mut String) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Text a spreadsheet would take for a formula gets a leading `'`.
fn defused(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}").into() } else { s.into() }
}

fn row(cells: &[Cell<'_>], out: &mut String) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match cell {
            Cell::Text(s) => field(&defused(s), out),
            Cell::Won(n) => out.push_str(&n.to_string()),
            Cell::Empty => {}
        }
    }
    out.push_str("\r\n");
}

/// A KST `(date, date-time)` of a UTC time: `2027-01-31`, `2027-01-31 09:00:00`.
fn kst(t: jiff::Timestamp) -> (String, String) {
    let z = in_seoul(t);
    (z.strftime("%Y-%m-%d").to_string(), z.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// The BOM and the header row: the start of every page.
pub fn start() -> String {
    let mut out = String::from(BOM);
    row(&HEADER.map(Cell::Text), &mut out);
    out
}

/// A payment's row, then a row per succeeded refund of it (`refunds`: the payment's refunds, in
/// any state; only succeeded ones moved money).
pub fn payment_rows(p: &PaymentRecord, refunds: &[RefundRecord], out: &mut String) {
    let a = &p.amounts;
    let card = p.card.as_ref();
    let masked = card.and_then(|c| c.number_masked.as_deref()).and_then(paycycle::pg::mask_card_number);
    let company = card.and_then(|c| c.name.as_deref());
    let subscription = p.subscription_id.as_ref().map(|s| s.as_str());
    let (date, at) = kst(p.paid_at);
    let net = a.paid.won() - a.refunded.won();
    row(
        &[
            Cell::Text("payment"),
            Cell::Text(&date),
            Cell::Text(&at),
            Cell::Text(&p.payment_id),
            Cell::Empty,
            Cell::Text(&p.customer_id),
            text(subscription),
            Cell::Text(p.pg.as_str()),
            Cell::Text(&p.pg_payment_id),
            text(p.pg_order.as_deref()),
            Cell::Empty,
            Cell::Won(a.paid.won()),
            Cell::Won(a.paid.won()),
            Cell::Won(a.refunded.won()),
            Cell::Won(a.refund_pending.won()),
            Cell::Won(net),
            text(company),
            text(masked.as_deref()),
            text(p.receipt_url.as_deref()),
        ],
        out,
    );
    for r in refunds.iter().filter(|r| r.status == RefundStatus::Succeeded) {
        let (date, at) = kst(r.requested_at);
        row(
            &[
                Cell::Text("refund"),
                Cell::Text(&date),
                Cell::Text(&at),
                Cell::Text(&p.payment_id),
                Cell::Text(&r.refund_id),
                Cell::Text(&p.customer_id),
                text(subscription),
                Cell::Text(p.pg.as_str()),
                Cell::Text(&p.pg_payment_id),
                text(p.pg_order.as_deref()),
                text(r.pg_refund_id.as_deref()),
                Cell::Won(-r.amount.won()),
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
                text(company),
                text(masked.as_deref()),
                Cell::Empty,
            ],
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paycycle::domain::gateway::{CardInfo, PaymentDetails};
    use paycycle::money::Krw;
    use paycycle::pg::PgMode;

    fn payment() -> PaymentRecord {
        let paid_at = "2027-01-31T15:30:00Z".parse().unwrap();
        PaymentRecord::paid(
            PgMode::Payple,
            "oid,\"1\"",
            "@SUM(A1)",
            Krw::new(9_900).unwrap(),
            paid_at,
            None,
            None,
            None,
        )
        .with_details(PaymentDetails {
            card: Some(CardInfo {
                name: Some("신한카드".into()),
                number_masked: Some("1234-5678-9012-3456".into()),
                trade_number: None,
            }),
            receipt_url: Some("https://pg.example/r?a=1,b=2".into()),
        })
    }

    fn refund(id: &str, won: i64, status: RefundStatus) -> RefundRecord {
        RefundRecord {
            refund_id: id.into(),
            payment_id: payment().payment_id,
            amount: Krw::new(won).unwrap(),
            reason: "=HYPERLINK(\"x\")".into(),
            status,
            requested_at: "2027-02-01T00:00:00Z".parse().unwrap(),
            pg_refund_id: Some("-tid".into()),
            failure_code: None,
            failure_message: None,
            request_hash: None,
            cancel_subscription: false,
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
        let refunds = [refund("ref_ok", 3_000, RefundStatus::Succeeded), refund("ref_no", 500, RefundStatus::Failed)];
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
}
