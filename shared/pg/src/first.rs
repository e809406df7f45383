//! A checkout's first payment, checked with its PG (DESIGN §4): what evidence each PG's redirect,
//! window or webhook brings, whether it is about the checkout, and what the PG says was paid —
//! including the payments paycycle itself sends for a checkout (Payple AUTH's first charge on the
//! new billing key, CERT's confirm). The caller (verify) holds the checkout, records what this
//! sends through [`HeldCheckout::mark_sent`], and commits what comes back; nothing here writes.

use std::future::Future;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use super::payple::{KeyHolder, WindowCheck, WindowWork};
use super::{Adapter, ChargeRequest, Charged, FirstPayment, Payer, PaymentDetails, PaymentState, PgError};
use paycycle_domain::attempt::{ChargeId, SubscriptionId};
use paycycle_domain::customer::Customer;
use paycycle_domain::money::Krw;

/// Who brought the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The partner's server (`POST /payments/verify`, authenticated), with what the PG's redirect
    /// or window handed the browser.
    Partner,
    /// A PG webhook: only a pointer. Everything is looked up at the PG.
    Webhook,
}

/// A first payment's evidence, as received. Opaque outside `pg/`: made by
/// [`Adapter::evidence_from_partner`] or a webhook's [`super::Notice`], checked by the adapter.
#[derive(Clone, Debug)]
pub enum Evidence {
    /// Payple `PCD_*` fields (window result or webhook).
    Payple(Map<String, Value>),
    /// StepPay managed: the order code of the redirect or order webhook.
    SteppayOrder { order_code: String },
    /// StepPay self: the payment's idKey.
    SteppayPayment { id_key: String },
    /// The first payment paycycle itself sent for the checkout (Payple AUTH's charge
    /// `{sub}-p0-a1`, CERT's confirm of the checkout's OID), looked up under the reference that
    /// payment charged — named by its webhook or found by the sweep. Carries nothing to trust.
    OwnSend,
}

/// What the adapter needs to know of a checkout: its terms as the partner created it and the
/// sends of its own payment. PG-neutral; verify builds it from the stored checkout.
#[derive(Clone, Debug)]
pub struct CheckoutTerms {
    pub checkout_id: String,
    pub subscription_id: SubscriptionId,
    /// The checkout's reference at the PG (Payple OID = the checkout id; StepPay managed: the
    /// order code).
    pub reference: String,
    /// The PG-specific kind of window the checkout opened (Payple `PAY`/`CERT`/`AUTH`).
    pub work: Option<String>,
    pub amount: Krw,
    pub goods: String,
    pub customer: Customer,
    /// Payple `PCD_PAYER_NO` set for this checkout's payer.
    pub payer_no: Option<String>,
    pub created_at: Timestamp,
    /// When the checkout's own payment was first sent, and last re-sent.
    pub first_sent_at: Option<Timestamp>,
    pub last_sent_at: Option<Timestamp>,
    /// A card change: the window registers a card and nothing is charged (Payple AUTH sends no
    /// first charge).
    pub registers_only: bool,
}

impl CheckoutTerms {
    fn latest_send(&self) -> Option<Timestamp> {
        self.last_sent_at.or(self.first_sent_at)
    }

    fn payer(&self) -> Payer {
        Payer {
            customer_id: self.customer.id.clone(),
            name: self.customer.name.clone(),
            phone: self.customer.phone.clone(),
            email: self.customer.email.clone(),
            payer_no: self.payer_no.clone(),
        }
    }
}

/// A checkout held by one verify: its terms, and the record that its own payment is about to be
/// sent (again), written before it goes out.
pub trait HeldCheckout: Send {
    fn terms(&self) -> &CheckoutTerms;
    /// Records the send (first, or a re-send) at `now` and updates [`Self::terms`]. Fails
    /// without sending anything.
    fn mark_sent(&mut self, now: Timestamp) -> impl Future<Output = Result<(), PgError>> + Send;
}

/// A verified first payment with what the PG said about it for the customer (card, receipt).
pub type Paid = (FirstPayment, PaymentDetails);

/// A non-empty (trimmed) string or number field of a PG result or request body.
pub fn field(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The first of `names` that [`field`] finds.
pub fn text(fields: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| field(fields, n))
}

impl Adapter<'_> {
    /// The evidence in what the partner's redirect handler forwarded (`POST /payments/verify`):
    /// the PG's own fields. `Err`: what is missing, for a 400.
    pub fn evidence_from_partner(&self, fields: &Map<String, Value>) -> Result<Evidence, String> {
        match self {
            Adapter::Payple(_) => {
                let mut pcd = fields.clone();
                pcd.retain(|k, _| k.starts_with("PCD_"));
                if pcd.is_empty() {
                    return Err("send the PCD_* fields Payple returned".into());
                }
                Ok(Evidence::Payple(pcd))
            }
            Adapter::SteppayManaged(_) => Ok(Evidence::SteppayOrder {
                order_code: text(fields, &["order_code", "orderCode"]).ok_or("order_code is required")?,
            }),
            Adapter::SteppaySelf(_) => Ok(Evidence::SteppayPayment {
                id_key: text(fields, &["idKey", "id_key"]).filter(|k| k.len() <= 64).ok_or("idKey is required")?,
            }),
        }
    }

    /// Whether `evidence` is about this checkout (its mode, its reference): `Mismatch` if not.
    pub fn check_evidence(&self, c: &CheckoutTerms, evidence: &Evidence, source: Source) -> Result<(), PgError> {
        match (self, evidence) {
            (Adapter::Payple(_), Evidence::Payple(fields)) => {
                match field(fields, "PCD_PAY_OID") {
                    Some(oid) if oid != c.reference => {
                        return Err(PgError::Mismatch(format!("PCD_PAY_OID {oid} is not this checkout's")));
                    }
                    None if source == Source::Webhook => {
                        return Err(PgError::Mismatch("webhook without PCD_PAY_OID".into()));
                    }
                    _ => {}
                }
                if let Some(sub) = field(fields, "PCD_USER_DEFINE1") {
                    if sub != c.subscription_id.as_str() {
                        return Err(PgError::Mismatch("PCD_USER_DEFINE1 is not this checkout's subscription".into()));
                    }
                }
                // A webhook's total decides nothing either way: it only points at our OID, and
                // Payple's lookup says what was charged (a tampered body is harmless; money a
                // tampered window really charged is recorded, never dropped with the webhook).
                Ok(())
            }
            (Adapter::SteppayManaged(_), Evidence::SteppayOrder { order_code }) if *order_code == c.reference => Ok(()),
            (Adapter::SteppayManaged(_), Evidence::SteppayOrder { order_code }) => {
                Err(PgError::Mismatch(format!("order {order_code} is not this checkout's")))
            }
            (Adapter::SteppaySelf(_), Evidence::SteppayPayment { .. }) => Ok(()),
            // Only work that sent a payment itself (AUTH's first charge, CERT's confirm) has one.
            (Adapter::Payple(_), Evidence::OwnSend)
                if c.first_sent_at.is_some()
                    && WindowWork::stored(c.work.as_deref()).is_ok_and(WindowWork::sends_its_own_payment) =>
            {
                Ok(())
            }
            (_, Evidence::OwnSend) => Err(PgError::Mismatch("this checkout sent no first charge".into())),
            (adapter, _) => {
                Err(PgError::Mismatch(format!("this checkout is {}; the evidence is not", adapter.mode().as_str())))
            }
        }
    }

    /// Asks the PG what the evidence proves was paid for the held checkout, sending the
    /// checkout's own payment where its work says paycycle sends one (recorded through
    /// [`HeldCheckout::mark_sent`] before it goes out). `VerificationFailed`: failed for good;
    /// `NotPaid`/`NotFound`: nothing paid (yet); `PaidOtherAmount`: money of another amount moved.
    pub async fn first_payment(
        &self,
        held: &mut impl HeldCheckout,
        evidence: &Evidence,
        source: Source,
        now: Timestamp,
    ) -> Result<Paid, PgError> {
        let expected = held.terms().amount;
        match (self, evidence) {
            (Adapter::Payple(client), evidence) => payple::first_payment(client, held, evidence, source, now).await,
            (Adapter::SteppayManaged(c), Evidence::SteppayOrder { order_code }) if held.terms().registers_only => {
                c.verify_payment_method_order(order_code).await.map(|fp| (fp, PaymentDetails::default()))
            }
            (Adapter::SteppayManaged(c), Evidence::SteppayOrder { order_code }) => {
                c.verify_order(order_code, expected).await.map(|fp| (fp, PaymentDetails::default()))
            }
            (Adapter::SteppaySelf(c), Evidence::SteppayPayment { id_key }) => {
                let checkout_id = held.terms().checkout_id.clone();
                c.verify_payment(id_key, Some(&checkout_id), expected).await.map(|fp| (fp, PaymentDetails::default()))
            }
            _ => Err(PgError::Mismatch("the evidence is not of this checkout's PG".into())),
        }
    }

    /// A failed checkout's PG says `reference` (the checkout's own, or the first charge it
    /// sent) was paid after all: what the PG's lookup confirms was charged, of any amount.
    /// `NotPaid`: the PG shows no payment; `Mismatch`: `reference` is not this checkout's;
    /// `Unsupported`: this PG's payments never arrive after a checkout failed.
    pub async fn charged_after_failure(
        &self,
        c: &CheckoutTerms,
        reference: &str,
        hint: Option<String>,
        now: Timestamp,
    ) -> Result<(Charged, PaymentDetails), PgError> {
        match self {
            Adapter::Payple(client) => {
                let hints: Vec<String> = hint.into_iter().chain(payple::send_dates(c)).collect();
                match client.find_payment(reference, hints, c.created_at).await? {
                    Some(super::payple::Found {
                        state: PaymentState::Paid { amount, paid_at, .. }, details, ..
                    }) => {
                        let approved_at = paid_at.unwrap_or(now);
                        Ok((Charged { pg_payment_id: reference.to_string(), amount, approved_at }, details))
                    }
                    Some(super::payple::Found { state: other, .. }) => {
                        Err(PgError::NotPaid(format!("Payple's record of {reference}: {other:?}")))
                    }
                    None => Err(PgError::NotPaid(format!("Payple has no payment {reference}"))),
                }
            }
            // The customer can pay the same order again on StepPay's pay page.
            Adapter::SteppayManaged(client) => {
                if c.reference != reference {
                    return Err(PgError::Mismatch(format!("order {reference} is not checkout {}'s", c.checkout_id)));
                }
                if c.registers_only {
                    // A card registration charges nothing; money StepPay shows on it is recorded.
                    return match client.verify_payment_method_order(reference).await {
                        Ok(FirstPayment { charged: Some(charged), .. }) => Ok((charged, PaymentDetails::default())),
                        Ok(_) => Err(PgError::NotPaid(format!("card registration {reference} charged nothing"))),
                        Err(PgError::NotFound) => Err(PgError::NotPaid(format!("StepPay has no order {reference}"))),
                        Err(e) => Err(e),
                    };
                }
                match client.verify_order(reference, c.amount).await {
                    Ok(FirstPayment { charged: Some(charged), .. }) | Err(PgError::PaidOtherAmount { charged, .. }) => {
                        Ok((charged, PaymentDetails::default()))
                    }
                    Ok(FirstPayment { charged: None, .. }) => {
                        Err(PgError::NotPaid(format!("order {reference} is not paid")))
                    }
                    Err(PgError::NotFound) => Err(PgError::NotPaid(format!("StepPay has no order {reference}"))),
                    Err(e) => Err(e),
                }
            }
            Adapter::SteppaySelf(_) => {
                Err(PgError::Unsupported("a StepPay self checkout is paid only through its SDK"))
            }
        }
    }

    /// The PG reference of the payment the checkout sent itself, for an alarm a person acts on.
    pub fn own_send_reference(&self, c: &CheckoutTerms) -> String {
        payple::charged_oid(c).unwrap_or_else(|e| format!("unknown ({e})"))
    }
}

/// Payple's window work (PAY, CERT, AUTH): the checks and the sends of the checkout's own payment.
mod payple {
    use super::*;
    use crate::payple::PaypleClient;

    /// What the checkout stored about its Payple window: the work, our OID, the amount and the
    /// payer number. The browser's `PCD_PAY_WORK` chooses nothing.
    pub(super) fn window_check(c: &CheckoutTerms) -> Result<WindowCheck, PgError> {
        Ok(WindowCheck {
            work: WindowWork::stored(c.work.as_deref())?,
            oid: c.reference.clone(),
            expected: c.amount,
            payer_no: c.payer_no.clone(),
            holder: KeyHolder { name: c.customer.name.clone(), phone: c.customer.phone.clone() },
            opened_at: c.created_at,
        })
    }

    fn first_charge_id(c: &CheckoutTerms) -> Result<ChargeId, PgError> {
        ChargeId::new(c.subscription_id.clone(), 0, 1).map_err(|e| PgError::Invalid(e.to_string()))
    }

    /// The OID the checkout's own work charged at Payple: an AUTH checkout's first charge is
    /// paycycle's re-pay under `{sub}-p0-a1`; a CERT confirm (and a PAY window) charges the OID
    /// the window was opened with — the checkout's.
    pub(super) fn charged_oid(c: &CheckoutTerms) -> Result<String, PgError> {
        match window_check(c)?.work {
            WindowWork::Auth => Ok(first_charge_id(c)?.to_string()),
            WindowWork::Cert | WindowWork::Pay => Ok(c.reference.clone()),
        }
    }

    /// The KST dates the checkout's own payment was sent on, for Payple's lookup: the first
    /// send's, the latest re-send's, and the minute after the latest (a send that crossed
    /// midnight).
    pub(super) fn send_dates(c: &CheckoutTerms) -> Vec<String> {
        let latest = c.latest_send();
        let after = latest.and_then(|t| t.checked_add(SignedDuration::from_mins(1)).ok());
        let mut dates: Vec<String> = Vec::new();
        for d in [c.first_sent_at, latest, after].into_iter().flatten().map(paycycle_domain::calendar::kst_yyyymmdd) {
            if !dates.contains(&d) {
                dates.push(d);
            }
        }
        dates
    }

    /// The checkout's own payment (AUTH first charge, CERT confirm) as Payple recorded it, under
    /// the OID that work charged and the dates it was sent on. `NotPaid`: Payple shows none (yet).
    async fn sent_payment(client: &PaypleClient, c: &CheckoutTerms) -> Result<Paid, PgError> {
        let first = c.first_sent_at.ok_or_else(|| PgError::Invalid("no payment was sent".into()))?;
        let mut check = window_check(c)?;
        check.opened_at = first;
        client.paid_window(&charged_oid(c)?, send_dates(c), &check).await
    }

    /// The first payment a checkout sent (an AUTH first charge or a CERT confirm), as Payple
    /// recorded it. Not found is not paid (yet). An AUTH charge still not found an hour after it
    /// was last sent never reached Payple: failed for good (a re-send restarts the hour, and a
    /// lookup that fails for any other reason is no "not found"). A CERT confirm is never failed
    /// on "not found" alone — the money may be at Payple: it stays open (the sweep raises the
    /// needs-review alarm if it stays unresolved).
    async fn own_send_outcome(client: &PaypleClient, c: &CheckoutTerms, now: Timestamp) -> Result<Paid, PgError> {
        let latest = c.latest_send().ok_or_else(|| PgError::Invalid("no first charge was sent".into()))?;
        match sent_payment(client, c).await {
            Err(PgError::NotPaid(why))
                if window_check(c)?.work == WindowWork::Auth
                    && now.duration_since(latest) > SignedDuration::from_hours(1) =>
            {
                Err(PgError::VerificationFailed(format!("{why}, an hour after the first charge was last sent")))
            }
            other => other,
        }
    }

    /// Payple AUTH registered a card without paying: paycycle charges period 0 on the new
    /// billing key, under charge id `{sub}-p0-a1` (its OID). A retry looks that charge up before
    /// charging.
    async fn first_charge(
        client: &PaypleClient,
        held: &mut impl HeldCheckout,
        billing_key: String,
        now: Timestamp,
    ) -> Result<Paid, PgError> {
        let charge_id = first_charge_id(held.terms())?;
        if held.terms().first_sent_at.is_some() {
            // Sent before: Payple's record decides; only "nothing there" sends it again (under
            // the same OID, which Payple refuses to charge twice).
            match sent_payment(client, held.terms()).await {
                Ok((fp, details)) => {
                    return Ok((FirstPayment { charged: fp.charged, billing_key: Some(billing_key) }, details));
                }
                Err(PgError::NotPaid(_)) => {}
                Err(e) => return Err(e),
            }
        }
        held.mark_sent(now).await?;
        let c = held.terms();
        let req = ChargeRequest {
            billing_key: billing_key.clone(),
            charge_id,
            amount: c.amount,
            goods: c.goods.clone(),
            payer: c.payer(),
        };
        match client.repay_detailed(&req).await {
            Ok((charged, details)) => {
                Ok((FirstPayment { charged: Some(charged), billing_key: Some(billing_key) }, details))
            }
            Err(PgError::Declined { code, message, .. }) => {
                Err(PgError::VerificationFailed(format!("the first charge was declined ({code}): {message}")))
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn first_payment(
        client: &PaypleClient,
        held: &mut impl HeldCheckout,
        evidence: &Evidence,
        source: Source,
        now: Timestamp,
    ) -> Result<Paid, PgError> {
        let fields = match evidence {
            Evidence::Payple(fields) => fields,
            Evidence::OwnSend => return own_send_outcome(client, held.terms(), now).await,
            _ => return Err(PgError::Mismatch("the evidence is not of this checkout's PG".into())),
        };
        let check = window_check(held.terms())?;
        if source == Source::Webhook {
            // A webhook only points at our OID: Payple's lookup says what happened.
            let hint = field(fields, "PCD_PAY_TIME").as_deref().and_then(crate::payple::pay_date);
            return client.paid_window(&check.oid, hint.into_iter().collect(), &check).await;
        }
        if check.work == WindowWork::Cert {
            // A confirm may have gone through before an earlier verify lost its answer.
            if held.terms().first_sent_at.is_some() {
                match sent_payment(client, held.terms()).await {
                    Ok(fp) => return Ok(fp),
                    Err(PgError::NotPaid(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            // Checked before anything is sent: a result that is not this checkout's marks
            // nothing (and keeps the checkout's TTL).
            let confirm = client.cert_confirm(fields, &check)?;
            held.mark_sent(now).await?;
            return match client.send_cert_confirm(&confirm).await {
                // The confirm's decline, confirmed by Payple's lookup: Payple's word that nothing
                // was charged. Failed, so the sweep does not look for it forever.
                Err(PgError::Declined { code, message, .. }) => {
                    Err(PgError::VerificationFailed(format!("the CERT confirm was declined ({code}): {message}")))
                }
                other => other,
            };
        }
        let (fp, details) = client.verify_window_result(fields, &check).await?;
        match (check.work, fp.billing_key.clone()) {
            (WindowWork::Auth, Some(key)) if !held.terms().registers_only => first_charge(client, held, key, now).await,
            _ => Ok((fp, details)),
        }
    }
}
