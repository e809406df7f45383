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
    let card = Card::of(p);
    payment_row(p, &card, out);
    for r in refunds.iter().filter(|r| r.status == RefundStatus::Succeeded) {
        refund_row(p, r, &card, out);
    }
}

/// The card columns of a payment's rows: the company, and the number masked again.
struct Card<'a> {
    company: Option<&'a str>,
    masked: Option<String>,
}

impl<'a> Card<'a> {
    fn of(p: &'a PaymentRecord) -> Self {
        let card = p.card.as_ref();
        Card {
            company: card.and_then(|c| c.name.as_deref()),
            masked: card.and_then(|c| c.number_masked.as_deref()).and_then(paycycle::pg::mask_card_number),
        }
    }
}

fn payment_row(p: &PaymentRecord, card: &Card<'_>, out: &mut String) {
    let a = &p.amounts;
    // A StepPay idKey may be a billing key (a self first payment's is): masked.
    let reference = p.pg.shown_reference(&p.pg_payment_id);
    let (date, at) = kst(p.paid_at);
    row(
        &[
            Cell::Text("payment"),
            Cell::Text(&date),
            Cell::Text(&at),
            Cell::Text(&p.payment_id),
            Cell::Empty,
            Cell::Text(&p.customer_id),
            text(p.subscription_id.as_ref().map(|s| s.as_str())),
            Cell::Text(p.pg.as_str()),
            Cell::Text(&reference),
            text(p.pg_order.as_deref()),
            Cell::Empty,
            Cell::Won(a.paid.won()),
            Cell::Won(a.paid.won()),
            Cell::Won(a.refunded.won()),
            Cell::Won(a.refund_pending.won()),
            Cell::Won(a.paid.won() - a.refunded.won()),
            text(card.company),
            text(card.masked.as_deref()),
            text(p.receipt_url.as_deref()),
        ],
        out,
    );
}

fn refund_row(p: &PaymentRecord, r: &RefundRecord, card: &Card<'_>, out: &mut String) {
    let (date, at) = kst(r.requested_at);
    let reference = p.pg.shown_reference(&p.pg_payment_id);
    row(
        &[
            Cell::Text("refund"),
            Cell::Text(&date),
            Cell::Text(&at),
            Cell::Text(&p.payment_id),
            Cell::Text(&r.refund_id),
            Cell::Text(&p.customer_id),
            text(p.subscription_id.as_ref().map(|s| s.as_str())),
            Cell::Text(p.pg.as_str()),
            Cell::Text(&reference),
            text(p.pg_order.as_deref()),
            text(r.pg_refund_id.as_deref()),
            Cell::Won(-r.amount.won()),
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
            text(card.company),
            text(card.masked.as_deref()),
            Cell::Empty,
        ],
        out,
    );
}

#[cfg(test)]
#[path = "books_csv_tests.rs"]
pub(crate) mod tests;
