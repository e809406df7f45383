//! Issue #24 §4, done when: the CSV export of the demo's year opens in a spreadsheet with correct
//! won amounts and KST dates. The journeys `make demo` runs (a year on all three PG modes, with a
//! decline, its retry and partial refunds) run on the local stack; then the partner fetches
//! `GET /payments/export` over HTTP, page by page through its `Link` header, and every page is
//! parsed back as a spreadsheet would (BOM stripped, RFC 4180) by the `csv` crate. Every payment
//! row is checked against our table and the PG sandbox's ledger — won amounts, refunds, KST date
//! and time — each refund row against the stored refund, and another partner's key exports an
//! empty file.

use std::collections::BTreeMap;

use paycycle::store::payments::payment_id_for;
use paycycle_dev::{LocalStack, Options, journey};
use serde_json::Value;

const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// One page of the export: its rows (by header name) and the next page's path, if any.
struct Page {
    rows: Vec<BTreeMap<String, String>>,
    next: Option<String>,
}

async fn export_page(http: &reqwest::Client, base: &str, key: &str, path: &str) -> Page {
    let res = http.get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("content-type").as_deref(), Some("text/csv; charset=utf-8"));
    assert!(header("content-disposition").unwrap().starts_with("attachment; filename=\"paycycle-payments_"));
    let next = header("link").map(|l| {
        let next = l.strip_prefix('<').and_then(|l| l.strip_suffix(">; rel=\"next\"")).expect("a next link");
        assert!(next.ends_with(&format!("cursor={}", header("next-cursor").unwrap())), "{next}");
        next.to_string()
    });
    let bytes = res.bytes().await.unwrap();
    let body = bytes.strip_prefix(BOM).expect("the export starts with a UTF-8 BOM");
    assert!(!String::from_utf8_lossy(body).replace("\r\n", "").contains('\n'), "CRLF line ends only");
    let mut reader = csv::Reader::from_reader(body);
    let names: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    let rows =
        reader.records().map(|r| names.iter().cloned().zip(r.unwrap().iter().map(str::to_string)).collect()).collect();
    Page { rows, next }
}

async fn export_all(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    first: &str,
) -> (Vec<BTreeMap<String, String>>, usize) {
    let (mut rows, mut pages, mut path) = (Vec::new(), 0, Some(first.to_string()));
    while let Some(p) = path {
        let page = export_page(http, base, key, &p).await;
        rows.extend(page.rows);
        pages += 1;
        path = page.next;
    }
    (rows, pages)
}

fn won(row: &BTreeMap<String, String>, column: &str) -> i64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column} is not integer won: {row:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_years_csv_export_has_every_payment_in_won_and_kst_as_the_pg_and_the_table_say() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let mut sink = |_: String| {};
    let report = journey::run(&stack, None, &mut sink).await.unwrap();
    assert!(report.reconciliation.differences.is_empty(), "{}", journey::render(&report));
    let key = stack.create_api_key("books", "default").await.unwrap();
    let http = reqwest::Client::new();
    let base = stack.api_url();

    // Pages of 7 payments (and their refund rows), followed through `Link`.
    let (rows, pages) = export_all(&http, &base, &key, "/payments/export?from=2027-01-01&to=2028-12-31&limit=7").await;
    let payments: Vec<_> = rows.iter().filter(|r| r["type"] == "payment").collect();
    let refunds: Vec<_> = rows.iter().filter(|r| r["type"] == "refund").collect();
    assert_eq!(payments.len(), report.reconciliation.our_payments, "every payment of the year");
    assert_eq!(pages, payments.len().div_ceil(7) + usize::from(payments.len() % 7 == 0));
    assert_eq!(payments.iter().map(|r| won(r, "paid_krw")).sum::<i64>(), report.reconciliation.pg_charged);
    assert_eq!(refunds.iter().map(|r| -won(r, "amount_krw")).sum::<i64>(), report.reconciliation.pg_refunded);
    let kept: i64 = rows.iter().map(|r| won(r, "amount_krw")).sum();
    assert_eq!(kept, report.reconciliation.pg_charged - report.reconciliation.pg_refunded);
    eprintln!("the demo year: {} payment rows, {} refund rows, {pages} pages of 7", payments.len(), refunds.len());
    let times: Vec<&str> = payments.iter().map(|r| r["occurred_at_kst"].as_str()).collect();
    assert!(times.is_sorted(), "oldest first: {times:?}");

    // Each payment row against the table and the PG's ledger.
    let store = stack.store().await;
    let ledger: Value = stack_ledger(&http, &stack).await;
    let charges: BTreeMap<String, &Value> = ledger["charges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["amount"].as_i64() != Some(0))
        .map(|c| {
            let pg = if c["pg"] == "payple" { paycycle::pg::PgMode::Payple } else { paycycle::pg::PgMode::SteppaySelf };
            (payment_id_for(pg, c["id"].as_str().unwrap()), c)
        })
        .collect();
    for row in &payments {
        let id = &row["payment_id"];
        let ours = store.get_payment(id).await.unwrap().unwrap_or_else(|| panic!("{id} is not in the table"));
        let kst = paycycle::calendar::in_seoul(ours.paid_at);
        assert_eq!(row["occurred_at_kst"], kst.strftime("%Y-%m-%d %H:%M:%S").to_string(), "{row:?}");
        assert_eq!(row["date_kst"], kst.strftime("%Y-%m-%d").to_string());
        assert_eq!(row["date_kst"].replace('-', ""), ours.pay_date_kst);
        assert_eq!(
            [won(row, "paid_krw"), won(row, "refunded_krw"), won(row, "net_krw"), won(row, "amount_krw")],
            [
                ours.amounts.paid.won(),
                ours.amounts.refunded.won(),
                (ours.amounts.paid.won() - ours.amounts.refunded.won()),
                ours.amounts.paid.won()
            ]
        );
        // Payple's OID in full (it is ours); a StepPay idKey masked: it may be a billing key.
        assert_eq!(
            (row["pg"].as_str(), row["pg_transaction_id"].clone()),
            (ours.pg.as_str(), ours.pg.shown_reference(&ours.pg_payment_id))
        );
        if ours.pg != paycycle::pg::PgMode::Payple {
            assert_ne!(row["pg_transaction_id"], ours.pg_payment_id, "{row:?}");
        }
        let pg = charges.get(id.as_str()).unwrap_or_else(|| panic!("the PG never charged {id}"));
        assert_eq!(
            (won(row, "paid_krw"), won(row, "refunded_krw")),
            (pg["amount"].as_i64().unwrap(), pg["refunded"].as_i64().unwrap())
        );
        assert_eq!(row["date_kst"].replace('-', ""), pg["pay_date"].as_str().unwrap(), "the PG's KST pay date");
        let refunded: i64 = refunds.iter().filter(|r| &r["payment_id"] == id).map(|r| -won(r, "amount_krw")).sum();
        assert_eq!(refunded, won(row, "refunded_krw"), "refund rows add up to the payment's refunded");
        if ours.pg == paycycle::pg::PgMode::Payple {
            assert!(!row["card_company"].is_empty() && row["card_number_masked"].contains('*'), "{row:?}");
            let digits = row["card_number_masked"].chars().filter(char::is_ascii_digit).count();
            assert!(digits <= 8, "at most the first and last four digits: {row:?}");
        }
    }
    assert_eq!(charges.len(), payments.len(), "no PG charge left out");
    // Each refund row is a succeeded refund as stored, dated when it was asked for (KST).
    for row in &refunds {
        let ours = store.get_refund(&row["payment_id"], &row["refund_id"]).await.unwrap().unwrap();
        assert_eq!(ours.status, paycycle::domain::payment::RefundStatus::Succeeded);
        assert_eq!(-won(row, "amount_krw"), ours.amount.won());
        let kst = paycycle::calendar::in_seoul(ours.requested_at);
        assert_eq!(row["occurred_at_kst"], kst.strftime("%Y-%m-%d %H:%M:%S").to_string(), "{row:?}");
        assert_eq!(row["pg_refund_id"], ours.pg_refund_id.unwrap_or_default());
    }

    // The JSON list agrees, and another partner sees nothing.
    let partner = paycycle_e2e::Partner::new(base.clone(), key);
    let (status, v) = partner.get("/payments?from=2027-01-01&to=2028-12-31&limit=100").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), payments.len());
    let other = stack.create_api_key("other books", "partner_other").await.unwrap();
    let (rows, pages) = export_all(&http, &base, &other, "/payments/export").await;
    assert_eq!((rows.len(), pages), (0, 1));
    let (_, v) = paycycle_e2e::Partner::new(base, other).get("/payments").await;
    assert_eq!(v["data"], serde_json::json!([]));
}

async fn stack_ledger(http: &reqwest::Client, stack: &LocalStack) -> Value {
    let url = format!("{}/__admin/ledger", stack.sandbox.base_url());
    http.get(url).send().await.unwrap().json().await.unwrap()
}
