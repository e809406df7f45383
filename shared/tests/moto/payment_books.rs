//! A partner's payments by time paid (the `paid` index; issue #24 §4), on moto and in memory:
//! oldest first, a window `[from, to)`, filters, pages that continue exactly where they stopped,
//! and nothing of another partner. Read from the index, a payment is the one the table holds (the
//! index's INCLUDE projection carries every field of it).

use jiff::Timestamp;
use paycycle::domain::attempt::SubscriptionId;
use paycycle::domain::gateway::{CardInfo, PaymentDetails};
use paycycle::money::Krw;
use paycycle::pg::PgMode;
use paycycle::store::payments::{PaidWindow, PaymentFilter, PaymentRecord};

use super::store::{Env, env, in_memory, on_both};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A payment of `won` by `customer` on subscription `sub`, paid at `at`, for `partner`.
fn paid(partner: &str, pg_id: &str, customer: &str, sub: &str, won: i64, at: &str) -> PaymentRecord {
    let sub = SubscriptionId::parse(sub).unwrap();
    PaymentRecord::paid(PgMode::Payple, pg_id, customer, Krw::new(won).unwrap(), t(at), Some(sub), None, None)
        .for_partner(partner)
        .with_details(PaymentDetails {
            card: Some(CardInfo {
                name: Some("신한카드".into()),
                number_masked: Some("1234********5678".into()),
                trade_number: Some("T-1".into()),
            }),
            receipt_url: Some("https://pg.example/receipt/1".into()),
        })
}

/// Every page of a list, following `next`, `limit` at a time.
async fn all_pages(e: &Env, partner: &str, window: PaidWindow, filter: &PaymentFilter, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut start = None;
    for _ in 0..100 {
        let page = e.store.payments_of_partner(partner, window, filter, limit, start).await.unwrap();
        assert!(page.payments.len() <= limit);
        for p in &page.payments {
            // The index's copy is the table's: every field projected.
            assert_eq!(Some(p), e.store.get_payment(&p.payment_id).await.unwrap().as_ref());
            ids.push(p.pg_payment_id.clone());
        }
        match page.next {
            Some(next) => {
                assert!(window.admits(&next), "a page's next key lies in its window");
                start = Some(next);
            }
            None => return ids,
        }
    }
    panic!("more than 100 pages");
}

pub(crate) async fn a_partners_payments_page_oldest_first_in_a_window(e: Env) {
    // Written out of order; two in the same second (the fraction orders them) and one exactly at
    // the window's end.
    let payments = [
        paid("partner_a", "oid-3", "cus_1", "sub_a1", 9_900, "2027-03-31T15:00:00Z"),
        paid("partner_a", "oid-1", "cus_1", "sub_a1", 9_900, "2027-01-31T00:00:00Z"),
        paid("partner_a", "oid-2b", "cus_2", "sub_a2", 12_000, "2027-02-28T00:00:00.5Z"),
        paid("partner_a", "oid-2a", "cus_2", "sub_a2", 12_000, "2027-02-28T00:00:00Z"),
        paid("partner_a", "oid-4", "=cus_3", "sub_a3", 1_000, "2027-04-30T15:00:00Z"),
        paid("partner_b", "oid-b1", "cus_1", "sub_b1", 50_000, "2027-02-01T00:00:00Z"),
    ];
    for p in &payments {
        e.store.create_payment(p).await.unwrap();
    }
    let all = PaidWindow::default();
    let none = PaymentFilter::default();
    for limit in [1, 2, 5, 100] {
        assert_eq!(
            all_pages(&e, "partner_a", all, &none, limit).await,
            ["oid-1", "oid-2a", "oid-2b", "oid-3", "oid-4"],
            "limit {limit}"
        );
    }
    assert_eq!(all_pages(&e, "partner_b", all, &none, 2).await, ["oid-b1"]);
    assert!(all_pages(&e, "partner_c", all, &none, 2).await.is_empty());

    // [from, to): a payment at `from` is in, one at `to` is out.
    let march_kst = PaidWindow { from: Some(t("2027-02-28T00:00:00.5Z")), to: Some(t("2027-04-30T15:00:00Z")) };
    assert_eq!(all_pages(&e, "partner_a", march_kst, &none, 1).await, ["oid-2b", "oid-3"]);
    let since = PaidWindow { from: Some(t("2027-03-01T00:00:00Z")), to: None };
    assert_eq!(all_pages(&e, "partner_a", since, &none, 10).await, ["oid-3", "oid-4"]);
    let until = PaidWindow { from: None, to: Some(t("2027-02-28T00:00:00.5Z")) };
    assert_eq!(all_pages(&e, "partner_a", until, &none, 10).await, ["oid-1", "oid-2a"]);

    // Filters: pages of one still reach every match, however many others are read between.
    let cus_1 = PaymentFilter { customer_id: Some("cus_1".into()), ..PaymentFilter::default() };
    assert_eq!(all_pages(&e, "partner_a", all, &cus_1, 1).await, ["oid-1", "oid-3"]);
    let sub_a2 = PaymentFilter { subscription_id: Some(SubscriptionId::parse("sub_a2").unwrap()), ..cus_1.clone() };
    assert!(all_pages(&e, "partner_a", all, &sub_a2, 1).await.is_empty(), "both filters hold");
    let sub_a2 = PaymentFilter { customer_id: None, ..sub_a2 };
    assert_eq!(all_pages(&e, "partner_a", all, &sub_a2, 1).await, ["oid-2a", "oid-2b"]);
    // Another partner's customer of the same id is not partner_a's.
    assert_eq!(all_pages(&e, "partner_b", all, &cus_1, 1).await, ["oid-b1"]);

    // A cursor of one window is not one of another.
    let page = e.store.payments_of_partner("partner_a", all, &none, 1, None).await.unwrap();
    let first = page.next.unwrap();
    assert!(!since.admits(&first), "oid-1's key is before March");
}

on_both!(a_partners_payments_page_oldest_first_in_a_window);
