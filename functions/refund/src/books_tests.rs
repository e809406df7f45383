//! The partner's books through refund's Lambda handler on an in-memory store: `GET /payments` and
//! `GET /payments/export` — windows in KST, filters, cursors bound to the partner and the window,
//! the CSV parsed back, and a clear 4xx for every bad input. The DynamoDB side (the `paid` index
//! on moto) is `shared/tests/moto/payment_books.rs`; over HTTP after a demo year,
//! `tests/tests/payments_export.rs`.

use crate::Deps;
use crate::books_csv::{BOM, HEADER};
use paycycle::domain::attempt::SubscriptionId;
use paycycle::money::Krw;
use paycycle::pg::PgMode;
use paycycle::store::payments::{PaymentRecord, RefundOutcome};
use paycycle_fixtures::{Fresh, Pgs, json_body, request};
use serde_json::Value;

struct Env {
    fresh: Fresh,
    _pgs: Pgs,
    deps: Deps,
    key_a: String,
    key_b: String,
}

async fn env() -> Env {
    let fresh = Fresh::in_memory();
    let pgs = Pgs::start().await;
    let deps = fresh.services(&pgs);
    let (key_a, key_b) = (fresh.api_key("partner_a").await, fresh.api_key("partner_b").await);
    Env { fresh, _pgs: pgs, deps, key_a, key_b }
}

/// partner_a: four Payple payments of `cus_1`/`cus_2` across three KST months (one paid at 23:30
/// KST on Jan 31st, which is still January in Seoul), the second refunded 3,000원; partner_b: one.
async fn seeded() -> Env {
    let e = env().await;
    let pay = |partner: &str, oid: &str, customer: &str, sub: &str, won: i64, at: &str| {
        let sub = SubscriptionId::parse(sub).unwrap();
        let at = at.parse().unwrap();
        PaymentRecord::paid(PgMode::Payple, oid, customer, Krw::new(won).unwrap(), at, Some(sub), None, None)
            .for_partner(partner)
    };
    let payments = [
        pay("partner_a", "oid-1", "cus_1", "sub_1", 9_900, "2027-01-31T14:30:00Z"),
        pay("partner_a", "oid-2", "cus_1", "sub_1", 9_900, "2027-02-28T01:00:00Z"),
        pay("partner_a", "oid-3", "cus_2", "sub_2", 12_000, "2027-02-28T02:00:00Z"),
        pay("partner_a", "oid-4", "cus_1", "sub_1", 9_900, "2027-03-31T01:00:00Z"),
        pay("partner_b", "oid-b", "cus_1", "sub_9", 50_000, "2027-02-01T00:00:00Z"),
    ];
    for p in &payments {
        e.fresh.store.create_payment(p).await.unwrap();
    }
    let refund = crate::books_csv::tests::refund(
        &payments[1].payment_id,
        "ref_1",
        3_000,
        paycycle::domain::payment::RefundStatus::Reserved,
        "2027-03-02T00:00:00Z",
    );
    e.fresh.store.reserve_refund(&refund).await.unwrap();
    let done = RefundOutcome::Succeeded { pg_refund_id: Some("tid-9".into()) };
    e.fresh.store.settle_refund(&refund, &done, &[]).await.unwrap();
    e
}

impl Env {
    async fn get(&self, key: &str, path_and_query: &str) -> lambda_http::Response<lambda_http::Body> {
        let req = request("GET", path_and_query).bearer(key).build();
        crate::handler(&self.deps, req).await.unwrap()
    }

    async fn json(&self, key: &str, path_and_query: &str) -> (u16, Value) {
        let res = self.get(key, path_and_query).await;
        (res.status().as_u16(), json_body(&res))
    }

    /// Every page of `GET /payments?{query}`: the payments' PG ids.
    async fn listed(&self, key: &str, query: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let c = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let (status, v) = self.json(key, &format!("/payments?{query}{c}")).await;
            assert_eq!(status, 200, "{v}");
            for p in v["data"].as_array().unwrap() {
                out.push(p["id"].as_str().unwrap().to_string());
            }
            match v["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return out,
            }
        }
    }
}

/// The payment ids of Payple OIDs.
fn ids(oids: &[&str]) -> Vec<String> {
    oids.iter().map(|o| paycycle::store::payments::payment_id_for(PgMode::Payple, o)).collect()
}

fn text(res: &lambda_http::Response<lambda_http::Body>) -> String {
    match res.body() {
        lambda_http::Body::Text(t) => t.clone(),
        other => panic!("a text body, got {other:?}"),
    }
}

#[tokio::test]
async fn the_list_pages_oldest_first_in_kst_windows_and_filters() {
    let e = seeded().await;
    let all = ids(&["oid-1", "oid-2", "oid-3", "oid-4"]);
    assert_eq!(e.listed(&e.key_a, "limit=1").await, all);
    // KST days: 14:30 UTC on Jan 31st is 23:30 in Seoul, still January.
    assert_eq!(e.listed(&e.key_a, "from=2027-01-31&to=2027-01-31").await, all[..1]);
    assert_eq!(e.listed(&e.key_a, "from=2027-02-01&to=2027-02-28&limit=1").await, all[1..3]);
    // Instants: `to` exclusive.
    assert_eq!(e.listed(&e.key_a, "from=2027-02-28T01:00:00Z&to=2027-02-28T02:00:00Z").await, all[1..2]);
    assert_eq!(e.listed(&e.key_a, "customer_id=cus_1&limit=1").await, [&all[..2], &all[3..]].concat());
    assert_eq!(e.listed(&e.key_a, "subscription_id=sub_2").await, all[2..3]);

    let (_, v) = e.json(&e.key_a, "/payments?from=2027-02-28&to=2027-02-28").await;
    let refunded = &v["data"][0];
    assert_eq!((refunded["amount"].as_i64(), refunded["refunded"].as_i64()), (Some(9_900), Some(3_000)));
    assert_eq!(refunded["refunds"][0]["id"], "ref_1");
    assert_eq!(refunded["status"], "partially_refunded");
    assert_eq!(v["has_more"], false);
}

#[tokio::test]
async fn another_partner_sees_nothing_of_partner_a_and_cannot_use_its_cursors() {
    let e = seeded().await;
    let b = e.listed(&e.key_b, "").await;
    assert_eq!(b, ids(&["oid-b"]));
    let (_, v) = e.json(&e.key_b, "/payments?customer_id=cus_1").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "partner_b's own cus_1 only");
    let csv = text(&e.get(&e.key_b, "/payments/export").await);
    assert!(!csv.contains("oid-1") && csv.contains("oid-b"));

    let (_, v) = e.json(&e.key_a, "/payments?limit=1").await;
    let cursor = v["next_cursor"].as_str().unwrap();
    let (status, v) = e.json(&e.key_b, &format!("/payments?cursor={cursor}")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_cursor")));
}

#[tokio::test]
async fn bad_input_is_a_json_400_never_a_500() {
    let e = seeded().await;
    let (_, v) = e.json(&e.key_a, "/payments?limit=1").await;
    let january_cursor = v["next_cursor"].as_str().unwrap().to_string();
    let cases = [
        ("/payments?from=2027-13-01", "invalid_date"),
        ("/payments?from=2027-02-30", "invalid_date"),
        ("/payments?to=yesterday", "invalid_date"),
        ("/payments?from=2027-01-01T00:00:00", "invalid_date"),
        ("/payments/export?to=9999-12-31", "invalid_date"),
        ("/payments?from=2027-03-01&to=2027-02-01", "invalid_range"),
        ("/payments/export?from=2027-03-01T00:00:00Z&to=2027-02-28T23:59:59Z", "invalid_range"),
        ("/payments?limit=0", "invalid_request"),
        ("/payments?limit=101", "invalid_request"),
        ("/payments/export?limit=1001", "invalid_request"),
        ("/payments?subscription_id=nope", "invalid_request"),
        ("/payments?customer_id=", "invalid_request"),
        ("/payments?cursor=%21%21", "invalid_cursor"),
        ("/payments?cursor=eyJhIjoxfQ", "invalid_cursor"),
    ];
    for (path, code) in cases {
        let (status, v) = e.json(&e.key_a, path).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{path}: {v}");
    }
    // A cursor is good only in the window it was made in.
    let (status, v) = e.json(&e.key_a, &format!("/payments?from=2027-03-01&cursor={january_cursor}")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_cursor")));
    // No key: 401; another method: 405.
    let res = crate::handler(&e.deps, request("GET", "/payments").build()).await.unwrap();
    assert_eq!(res.status(), 401);
    let res = crate::handler(&e.deps, request("DELETE", "/payments/export").bearer(&e.key_a).build()).await.unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn the_export_pages_by_link_and_parses_back_with_kst_dates_and_won() {
    let e = seeded().await;
    let mut path = "/payments/export?from=2027-01-01&to=2027-12-31&limit=3".to_string();
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let res = e.get(&e.key_a, &path).await;
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["content-type"], "text/csv; charset=utf-8");
        assert_eq!(h["content-disposition"], "attachment; filename=\"paycycle-payments_20270101-20271231.csv\"");
        let body = text(&res);
        assert!(body.as_bytes().starts_with(&[0xEF, 0xBB, 0xBF]), "UTF-8 BOM");
        let mut reader = csv::Reader::from_reader(body.strip_prefix(BOM).unwrap().as_bytes());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), HEADER);
        rows.extend(reader.records().map(Result::unwrap));
        pages += 1;
        let Some(link) = h.get("link") else {
            assert!(h.get("next-cursor").is_none());
            break;
        };
        let link = link.to_str().unwrap();
        let next = link.strip_prefix('<').and_then(|l| l.strip_suffix(">; rel=\"next\"")).unwrap();
        assert!(next.contains(h["next-cursor"].to_str().unwrap()));
        path = next.to_string();
    }
    assert_eq!(pages, 2, "3 payments, then 1");
    let col = |r: &csv::StringRecord, name: &str| r[HEADER.iter().position(|h| *h == name).unwrap()].to_string();
    let kinds: Vec<String> = rows.iter().map(|r| col(r, "type")).collect();
    assert_eq!(kinds, ["payment", "payment", "refund", "payment", "payment"]);
    let first = &rows[0];
    assert_eq!(
        (col(first, "date_kst"), col(first, "occurred_at_kst")),
        ("2027-01-31".into(), "2027-01-31 23:30:00".into())
    );
    assert_eq!(col(&rows[1], "net_krw"), "6900");
    assert_eq!((col(&rows[2], "amount_krw"), col(&rows[2], "pg_refund_id")), ("-3000".into(), "tid-9".into()));
    assert_eq!(col(&rows[2], "refund_id"), "ref_1");
    assert_eq!(col(&rows[2], "occurred_at_kst"), "2027-03-02 09:00:00");
    let total: i64 = rows.iter().map(|r| col(r, "amount_krw").parse::<i64>().unwrap()).sum();
    assert_eq!(total, 9_900 * 3 + 12_000 - 3_000);

    // A window with nothing in it is still a file: the BOM and the header.
    let res = e.get(&e.key_a, "/payments/export?from=2030-01-01").await;
    assert_eq!(text(&res), format!("{BOM}{}\r\n", HEADER.join(",")));
    assert_eq!(res.headers()["content-disposition"], "attachment; filename=\"paycycle-payments_20300101-now.csv\"");
}
