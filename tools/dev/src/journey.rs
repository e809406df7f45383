//! The customer journeys of `make demo` (and of the end-to-end test that runs the same code): three
//! customers, one per PG mode, from checkout to a year of renewals, driven only through the HTTP
//! API and the PG sandbox's customer pages — then reconciled against the sandbox's ledger.
//!
//! 1. Payple (PAY window) at 2027-01-31 10:00 KST: a month-end anchor (Feb 28, Mar 31, Apr 30 …);
//!    its third renewal is declined (soft) and retried by dunning a day later.
//! 2. StepPay self (SDK, `CARD_BILL`): completed by StepPay's webhook alone; renewed by paycycle.
//! 3. StepPay managed (order + pay page): renewed by StepPay itself (its scheduler is the sandbox's
//!    admin trigger), told by signed order webhooks; its sixth renewal fails at StepPay and
//!    StepPay's retry succeeds.
//!
//! After twelve months: partial refunds, cancels at period end, the last tick, and the
//! reconciliation: every charge the PG made is a payment here with the same amount and refunds,
//! and nothing here is missing at the PG.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use paycycle::pg::PgMode;
use paycycle::store::payments::payment_id_for;
use reqwest::Method;
use serde_json::{Value, json};

use crate::LocalStack;
use crate::clients::{Api, Checker, ClientResult, Sandbox};

/// When the journeys begin (KST): the last day of a 31-day month.
/// The demo's customers (id, name): the secrets test checks their data never reaches a log line.
pub const CUSTOMERS: [(&str, &str); 3] = [("cus_minjun", "김민준"), ("cus_seoyeon", "이서연"), ("cus_jiho", "박지호")];

pub const START: &str = "2027-01-31T10:00:00+09:00";
/// Renewals run through.
pub const MONTHS: u32 = 12;

/// One customer's subscription at the end.
#[derive(Debug, Clone)]
pub struct SubscriptionSummary {
    pub customer: String,
    pub pg: PgMode,
    pub subscription_id: String,
    pub state: String,
    pub periods_paid: u32,
    pub payments: usize,
    pub charged: i64,
    pub refunded: i64,
    pub anchor_days: Vec<String>,
}

/// The sandbox's ledger against our table.
#[derive(Debug, Clone, Default)]
pub struct Reconciliation {
    pub pg_charges: usize,
    pub our_payments: usize,
    pub pg_charged: i64,
    pub our_charged: i64,
    pub pg_refunded: i64,
    pub our_refunded: i64,
    pub differences: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub subscriptions: Vec<SubscriptionSummary>,
    pub reconciliation: Reconciliation,
    pub steps: usize,
}

/// Progress lines: `[n] what happened`.
pub struct Progress<'a> {
    step: usize,
    sink: &'a mut (dyn FnMut(String) + Send),
}

impl Progress<'_> {
    fn say(&mut self, line: impl Into<String>) {
        self.step += 1;
        (self.sink)(format!("[{:>2}] {}", self.step, line.into()));
    }
}

struct Customer {
    name: &'static str,
    id: &'static str,
    pg: PgMode,
    amount: i64,
    subscription: String,
}

fn ts(v: &Value, what: &str) -> ClientResult<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{what} is not a time: {v}"))
}

fn kst_day(t: Timestamp) -> String {
    paycycle::calendar::in_seoul(t).strftime("%Y-%m-%d").to_string()
}

fn won(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{}{out}원", if n < 0 { "-" } else { "" })
}

struct Journey<'a> {
    stack: &'a LocalStack,
    api: Api,
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl Journey<'_> {
    async fn subscription(&self, id: &str) -> ClientResult<Value> {
        self.api.expect(200, Method::GET, &format!("/subscriptions/{id}"), None, None).await
    }

    /// Waits (bounded) until the subscription exists and is in `state`: webhooks travel
    /// sandbox → API → table → stream → verify asynchronously.
    async fn until_state(&self, id: &str, state: &str) -> ClientResult<Value> {
        for _ in 0..200 {
            let (status, v) = self.api.get(&format!("/subscriptions/{id}")).await?;
            if status == 200 && v["state"] == state {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{id} did not become {state}"))
    }

    /// One renew tick at `at` (the local stack's `POST /__dev/tick`, EventBridge's scheduled event).
    async fn tick(&self, at: Timestamp) -> ClientResult<Value> {
        let r = self
            .http
            .post(format!("{}/__dev/tick", self.stack.api_url()))
            .json(&json!({"now": at.to_string()}))
            .send()
            .await
            .map_err(|e| format!("tick: {e}"))?;
        let v: Value = r.json().await.map_err(|e| format!("tick: {e}"))?;
        if v["ok"] != true {
            return Err(format!("tick at {at} failed: {v}"));
        }
        self.stack.drain_stream().await;
        Ok(v["report"].clone())
    }

    /// StepPay's status of the managed subscription its first order created.
    fn steppay_subscription(&self, order_code: &str) -> ClientResult<(u64, String)> {
        let state = self.stack.sandbox.shared.state.lock().map_err(|_| "sandbox state")?;
        let order = state.orders.iter().find(|o| o.order_code == order_code).ok_or("no such StepPay order")?;
        let id = order.subscription_id.ok_or("the StepPay order has no subscription")?;
        let sub = state.subscriptions.iter().find(|s| s.id == id).ok_or("no such StepPay subscription")?;
        Ok((id, sub.status.clone()))
    }

    /// StepPay's own renewal of a managed subscription (the sandbox's scheduler stand-in), with
    /// the webhooks StepPay documents for it (dev-docs `08-1-1_Webhook-Events.md`): a paid renewal
    /// order's `order.payment_completed`, and `subscription.updated` when the subscription's
    /// status changed (UNPAID after a decline, ACTIVE after a paid retry). Returns the order and
    /// the events sent.
    async fn steppay_renews(&self, order_code: &str) -> ClientResult<(Value, Vec<&'static str>)> {
        let (pg_sub, was) = self.steppay_subscription(order_code)?;
        let before = self.stack.sandbox.shared.state.lock().map_err(|_| "sandbox state")?.deliveries.len();
        let order = self.sandbox.admin(&format!("/__admin/steppay/subscriptions/{pg_sub}/renew"), json!({})).await?;
        let (_, now) = self.steppay_subscription(order_code)?;
        let mut events = Vec::new();
        if !order["paymentDate"].is_null() {
            events.push("order.payment_completed");
        }
        if now != was {
            events.push("subscription.updated");
        }
        self.stack.settle_webhooks(before + events.len()).await;
        Ok((order, events))
    }

    async fn billing_key_of_first_charge(&self, pg: &str, nth: usize) -> ClientResult<String> {
        let ledger = self.sandbox.ledger().await?;
        ledger["charges"]
            .as_array()
            .and_then(|c| c.iter().filter(|c| c["pg"] == pg).nth(nth))
            .and_then(|c| c["billing_key"].as_str().or_else(|| c["id"].as_str()))
            .map(str::to_string)
            .ok_or_else(|| format!("no {pg} charge in the ledger"))
    }
}

/// Runs the journeys on a started stack. `sink` receives one progress line per step.
/// `checker` sees every API answer (the end-to-end test passes the OpenAPI contract).
/// The demo customers' e-mail address (the secrets test looks for it in every log line).
pub fn customer_email(id: &str) -> String {
    format!("{id}@example.com")
}

/// The demo customers' phone number, one per customer.
pub fn customer_phone(id: &str) -> String {
    let n: u32 = id.bytes().map(u32::from).sum::<u32>() % 9_000 + 1_000;
    format!("010-{n}-5678")
}

pub async fn run(
    stack: &LocalStack,
    checker: Option<Checker>,
    sink: &mut (dyn FnMut(String) + Send),
) -> Result<Report, String> {
    let mut p = Progress { step: 0, sink };
    let key = stack.create_api_key("make demo", "default").await.map_err(|e| format!("API key: {e}"))?;
    let mut api = Api::new(stack.api_url(), key);
    api.checker = checker;
    let j = Journey { stack, api, sandbox: Sandbox::new(stack.sandbox.base_url()), http: reqwest::Client::new() };
    j.sandbox.admin("/__admin/clock", json!({"now": START})).await?;
    j.sandbox.steppay_price("prod_pro", "price_monthly", 19_900).await?;
    p.say(format!("the PGs' clock is at {START} (a 31-day month's last day)"));

    let mut customers: Vec<Customer> = CUSTOMERS
        .iter()
        .zip([(PgMode::Payple, 9_900), (PgMode::SteppaySelf, 12_000), (PgMode::SteppayManaged, 19_900)])
        .map(|(&(id, name), (pg, amount))| Customer { name, id, pg, amount, subscription: String::new() })
        .collect();
    let mut managed_order = String::new();

    // First payments.
    for c in customers.iter_mut() {
        let mut body = json!({"pg": c.pg, "customer": {"id": c.id, "name": c.name, "email": customer_email(c.id), "phone": customer_phone(c.id)},
            "plan": {"name": "Pro", "amount": c.amount, "interval": "month"}});
        if c.pg != PgMode::SteppaySelf {
            body["return_url"] = json!("https://shop.example.com/return");
        }
        if c.pg == PgMode::SteppayManaged {
            body["steppay"] = json!({"product_code": "prod_pro", "price_code": "price_monthly"});
        }
        let checkout = j.api.checkout(&body).await?;
        let checkout_id = checkout["id"].as_str().unwrap_or_default().to_string();
        c.subscription = checkout["subscription_id"].as_str().unwrap_or_default().to_string();
        p.say(format!("{} ({}): POST /checkouts → {checkout_id}", c.name, c.pg.as_str()));
        match c.pg {
            PgMode::Payple => {
                let mut result = j.sandbox.payple_window(&checkout["payple"], None).await?;
                p.say(format!("{}: Payple window PAY → {} {}", c.name, result["PCD_PAY_RST"], result["PCD_PAY_CODE"]));
                result.insert("checkout_id".into(), json!(checkout_id));
                let v = j.api.expect(200, Method::POST, "/payments/verify", Some(&Value::Object(result)), None).await?;
                p.say(format!(
                    "{}: POST /payments/verify → {} paid {}, subscription {}",
                    c.name,
                    v["payment"]["id"].as_str().unwrap_or("?"),
                    won(v["payment"]["amount"].as_i64().unwrap_or(0)),
                    v["subscription"]["state"]
                ));
            }
            PgMode::SteppaySelf => {
                let paid = j.sandbox.steppay_sdk_pay(&checkout["steppay"]["sdk"]).await?;
                p.say(format!(
                    "{}: StepPay SDK CARD_BILL → {} (idKey {})",
                    c.name,
                    paid["status"],
                    paid["idKey"].as_str().unwrap_or("?")
                ));
                let v = j.until_state(&c.subscription, "active").await?;
                p.say(format!(
                    "{}: StepPay's PAYMENT webhook → stored → verified by receipt → subscription {}",
                    c.name, v["state"]
                ));
            }
            PgMode::SteppayManaged => {
                let redirect =
                    j.sandbox.steppay_pay_page(checkout["steppay"]["pay_url"].as_str().unwrap_or_default()).await?;
                managed_order = redirect.get("order_code").cloned().unwrap_or_default();
                p.say(format!(
                    "{}: StepPay pay page → redirect status={} order_code={managed_order}",
                    c.name,
                    redirect.get("status").map(String::as_str).unwrap_or("?")
                ));
                let body = json!({"checkout_id": checkout_id, "order_code": managed_order});
                let v = j.api.expect(200, Method::POST, "/payments/verify", Some(&body), None).await?;
                p.say(format!(
                    "{}: POST /payments/verify (order lookup) → subscription {}, renewed by StepPay",
                    c.name, v["subscription"]["state"]
                ));
            }
        }
    }
    stack.drain_stream().await;

    // A year of renewals, month by month.
    let payple_key = j.billing_key_of_first_charge("payple", 0).await?;
    let managed_key = {
        let state = stack.sandbox.shared.state.lock().map_err(|_| "sandbox state")?;
        state.orders.iter().find(|o| o.order_code == managed_order).map(|o| o.id_key.clone()).unwrap_or_default()
    };
    let (payple, steppay_self, managed) =
        (customers[0].subscription.clone(), customers[1].subscription.clone(), customers[2].subscription.clone());
    for month in 1..=MONTHS {
        let s = j.subscription(&payple).await?;
        let due = ts(&s["next_charge"]["at"], "next charge")?;
        let at = due.checked_add(SignedDuration::from_hours(1)).map_err(|e| e.to_string())?;
        if month == 3 {
            j.sandbox
                .admin(
                    "/__admin/scenarios",
                    json!({"billing_key": payple_key, "count": 1, "fault": {"kind": "decline", "hard": false}}),
                )
                .await?;
        }
        let report = j.tick(at).await?;
        p.say(format!("{} tick: {} charged, {} declined", kst_day(at), report["charged"], report["declined"]));
        if month == 3 {
            let s = j.subscription(&payple).await?;
            p.say(format!(
                "  {}: soft decline → {} (retry {})",
                customers[0].name,
                s["state"],
                s["next_charge"]["at"].as_str().unwrap_or("?")
            ));
            let retry = ts(&s["next_charge"]["at"], "retry")?
                .checked_add(SignedDuration::from_hours(1))
                .map_err(|e| e.to_string())?;
            let report = j.tick(retry).await?;
            let s = j.subscription(&payple).await?;
            p.say(format!(
                "{} tick: dunning retry → {} charged; {} is {}",
                kst_day(retry),
                report["charged"],
                customers[0].name,
                s["state"]
            ));
        }
        // StepPay renews the managed subscription on its own schedule.
        if month == 6 {
            j.sandbox
                .admin(
                    "/__admin/scenarios",
                    json!({"billing_key": managed_key, "count": 1, "fault": {"kind": "decline", "hard": false}}),
                )
                .await?;
            let (_, events) = j.steppay_renews(&managed_order).await?;
            let s = j.subscription(&managed).await?;
            p.say(format!(
                "  {}: StepPay's renewal failed → {} webhook (UNPAID, confirmed by StepPay's subscription lookup) → {}",
                customers[2].name,
                events.join(" + "),
                s["state"]
            ));
        }
        let (_, events) = j.steppay_renews(&managed_order).await?;
        let s = j.subscription(&managed).await?;
        p.say(format!(
            "  {}: StepPay renewed → {} webhook → period {} {}",
            customers[2].name,
            events.join(" + "),
            s["current_period"]["index"],
            s["state"]
        ));
    }

    // Refunds and cancels.
    for (sub, amount, which) in [(&payple, 3_000, "latest"), (&steppay_self, 5_000, "first")] {
        let s = j.subscription(sub).await?;
        let payments = s["payments"].as_array().cloned().unwrap_or_default();
        let payment = if which == "first" { payments.first() } else { payments.last() }.ok_or("no payment")?;
        let id = payment["id"].as_str().unwrap_or_default();
        let key = format!("demo-refund-{id}");
        let body = json!({"amount": amount, "reason": "demo: partial refund"});
        let r = j.api.expect(201, Method::POST, &format!("/payments/{id}/refunds"), Some(&body), Some(&key)).await?;
        p.say(format!("partial refund of {} of {id} ({} payment) → {}", won(amount), which, r["status"]));
    }
    for sub in [&payple, &managed] {
        let v = j
            .api
            .expect(
                200,
                Method::POST,
                &format!("/subscriptions/{sub}/cancel"),
                Some(&json!({"at_period_end": true})),
                None,
            )
            .await?;
        p.say(format!(
            "cancel {sub} at period end ({}) → cancel_at_period_end={}",
            v["current_period"]["end"].as_str().unwrap_or("?"),
            v["cancel_at_period_end"]
        ));
    }
    let s = j.subscription(&payple).await?;
    let end = ts(&s["current_period"]["end"], "period end")?
        .checked_add(SignedDuration::from_hours(1))
        .map_err(|e| e.to_string())?;
    let report = j.tick(end).await?;
    p.say(format!("{} tick: {} charged; period-end cancels done", kst_day(end), report["charged"]));

    // Summary and reconciliation.
    let mut subscriptions = Vec::new();
    let mut ours: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for c in &customers {
        let s = j.subscription(&c.subscription).await?;
        let payments = s["payments"].as_array().cloned().unwrap_or_default();
        let mut anchor_days = Vec::new();
        for pay in &payments {
            ours.insert(
                pay["id"].as_str().unwrap_or_default().to_string(),
                (pay["amount"].as_i64().unwrap_or(0), pay["refunded"].as_i64().unwrap_or(0)),
            );
            if let Ok(t) = ts(&pay["paid_at"], "paid_at") {
                anchor_days.push(kst_day(t));
            }
        }
        subscriptions.push(SubscriptionSummary {
            customer: c.name.to_string(),
            pg: c.pg,
            subscription_id: c.subscription.clone(),
            state: s["state"].as_str().unwrap_or("?").to_string(),
            periods_paid: s["current_period"]["index"].as_u64().map(|i| i as u32 + 1).unwrap_or(0),
            payments: payments.len(),
            charged: payments.iter().filter_map(|p| p["amount"].as_i64()).sum(),
            refunded: payments.iter().filter_map(|p| p["refunded"].as_i64()).sum(),
            anchor_days,
        });
    }
    let reconciliation = reconcile(&j.sandbox.ledger().await?, &ours);
    p.say(format!(
        "reconciled the PG's ledger ({} charges) with paycycle's table ({} payments): {} differences",
        reconciliation.pg_charges,
        reconciliation.our_payments,
        reconciliation.differences.len()
    ));
    Ok(Report { subscriptions, reconciliation, steps: p.step })
}

/// Every charge at the PG must be a payment here with the same amount and refunded amount, and
/// every payment here a charge at the PG (0원 registrations are not payments): the sandbox's
/// ledger and our payments through the one comparison production's `reconcile` uses
/// ([`paycycle::reconcile::compare`]).
pub fn reconcile(ledger: &Value, ours: &BTreeMap<String, (i64, i64)>) -> Reconciliation {
    use paycycle::reconcile::{Seen, compare};
    let krw = |n: i64| paycycle::money::Krw::new(n).unwrap_or(paycycle::money::Krw::ZERO);
    let pg: Vec<Seen> = ledger["charges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|c| c["amount"].as_i64().unwrap_or(0) != 0)
        .map(|c| {
            let mode = if c["pg"] == "payple" { PgMode::Payple } else { PgMode::SteppaySelf };
            let id = c["id"].as_str().unwrap_or_default();
            Seen {
                payment_id: payment_id_for(mode, id),
                pg_payment_id: id.to_string(),
                amount: krw(c["amount"].as_i64().unwrap_or(0)),
                refunded: Some(krw(c["refunded"].as_i64().unwrap_or(0))),
            }
        })
        .collect();
    let ours: Vec<Seen> = ours
        .iter()
        .map(|(id, (amount, refunded))| Seen {
            payment_id: id.clone(),
            pg_payment_id: id.clone(),
            amount: krw(*amount),
            refunded: Some(krw(*refunded)),
        })
        .collect();
    let c = compare(&pg, &ours);
    Reconciliation {
        pg_charges: c.pg_charges as usize,
        our_payments: c.our_payments as usize,
        pg_charged: c.pg_charged,
        our_charged: c.our_charged,
        pg_refunded: c.pg_refunded,
        our_refunded: c.our_refunded,
        differences: c.differences.iter().map(ToString::to_string).collect(),
    }
}

/// Terminal columns of `s`: Hangul and other wide characters take two.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFF00..=0xFF60 => 2,
            _ => 1,
        })
        .sum()
}

fn pad(s: &str, cols: usize) -> String {
    format!("{s}{}", " ".repeat(cols.saturating_sub(width(s))))
}

/// The summary table `make demo` prints.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "  {:<8} {:<16} {:<34} {:<9} {:>7} {:>9} {:>12} {:>10}\n",
        "customer", "pg", "subscription", "state", "periods", "payments", "charged", "refunded"
    ));
    for s in &report.subscriptions {
        out.push_str(&format!(
            "  {} {:<16} {:<34} {:<9} {:>7} {:>9} {:>12} {:>10}\n",
            pad(&s.customer, 8),
            s.pg.as_str(),
            s.subscription_id,
            s.state,
            s.periods_paid,
            s.payments,
            won(s.charged),
            won(s.refunded)
        ));
    }
    if let Some(payple) = report.subscriptions.iter().find(|s| s.pg == PgMode::Payple) {
        out.push_str(&format!(
            "\n  {}'s payment days (anchor on a month's 31st): {}\n",
            payple.customer,
            payple.anchor_days.join(" ")
        ));
    }
    let r = &report.reconciliation;
    out.push_str(&format!(
        "\n  reconciliation: PG {} charges {} refunded {} | paycycle {} payments {} refunded {} | {} differences\n",
        r.pg_charges,
        won(r.pg_charged),
        won(r.pg_refunded),
        r.our_payments,
        won(r.our_charged),
        won(r.our_refunded),
        r.differences.len()
    ));
    for d in &r.differences {
        out.push_str(&format!("    ✗ {d}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn won_groups_thousands() {
        assert_eq!(
            (won(0), won(9_900), won(1_234_567), won(-3_000)),
            ("0원".into(), "9,900원".into(), "1,234,567원".into(), "-3,000원".into())
        );
    }

    #[test]
    fn reconciliation_names_every_kind_of_difference() {
        let ledger = json!({"charges": [
            {"pg": "payple", "id": "a", "amount": 100, "refunded": 0},
            {"pg": "payple", "id": "b", "amount": 200, "refunded": 50},
            {"pg": "steppay", "id": "c", "amount": 300, "refunded": 0},
            {"pg": "steppay", "id": "reg", "amount": 0, "refunded": 0}
        ]});
        let mut ours = BTreeMap::new();
        ours.insert(payment_id_for(PgMode::Payple, "a"), (100, 0));
        ours.insert(payment_id_for(PgMode::Payple, "b"), (200, 0));
        ours.insert("pay_extra".to_string(), (400, 0));
        let r = reconcile(&ledger, &ours);
        assert_eq!(r.differences.len(), 3, "{:?}", r.differences);
        assert_eq!((r.pg_charges, r.pg_charged, r.our_payments), (3, 600, 3));
        ours.remove("pay_extra");
        ours.insert(payment_id_for(PgMode::Payple, "b"), (200, 50));
        ours.insert(payment_id_for(PgMode::SteppaySelf, "c"), (300, 0));
        assert!(reconcile(&ledger, &ours).differences.is_empty());
    }
}
