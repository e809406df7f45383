//! The PG registry: the one place that knows which PGs exist and which adapter serves each mode
//! (Lago's provider registry and hyperswitch's connector list are the models).
//!
//! Everything outside `pg/` asks the registry for an [`Adapter`] and talks to it in PG-neutral
//! terms: no function matches on a PG (a test walks the sources and holds that). Adding a PG is a
//! module beside `payple/` and `steppay/`, a variant here and in [`Pg::ALL`], its config and its
//! sandbox simulator — README "Add a PG" lists the files.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ChargeRequest, Charged, Lookup, PaymentDetails, PaymentState, PgError, RefundLookup, RefundLookupCapability,
    RefundRequest, Refunded, Timeouts, http_client, payple, steppay,
};
use crate::domain::subscription::Renewer;

/// A payment gateway paycycle speaks to. The one spelling of a PG: its [`Pg::as_str`] names its
/// webhook route (`/webhooks/{pg}`), its stored webhook events and the keys of its PG
/// transactions (both StepPay modes share StepPay's ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pg {
    Steppay,
    Payple,
}

impl Pg {
    /// Every PG in the registry: the webhook routes, their config and the sandbox follow this list.
    pub const ALL: [Pg; 2] = [Pg::Steppay, Pg::Payple];

    pub fn as_str(self) -> &'static str {
        match self {
            Pg::Steppay => "steppay",
            Pg::Payple => "payple",
        }
    }

    pub fn parse(name: &str) -> Option<Pg> {
        Pg::ALL.into_iter().find(|pg| pg.as_str() == name)
    }

    /// The route the PG delivers its webhooks to.
    pub fn webhook_path(self) -> String {
        format!("/webhooks/{}", self.as_str())
    }

    /// The PG whose webhook route `path` is (a stage prefix and a trailing `/` allowed).
    pub fn of_webhook_path(path: &str) -> Option<Pg> {
        let path = path.trim_end_matches('/');
        Pg::ALL.into_iter().find(|pg| path.ends_with(&pg.webhook_path()))
    }

    /// What this PG needs configured: the environment variables every function reads (in the
    /// template's `Globals`), and the keys of the PG-credentials secret (`PAYCYCLE_SECRETS`; the
    /// same names upper-cased as variables for local runs). `config.rs` reads them.
    pub fn config(self) -> PgConfig {
        match self {
            Pg::Steppay => PgConfig {
                variables: &[("STEPPAY_BASE_URL", "StepPay's API base URL, e.g. https://api.steppay.kr")],
                secret_keys: &["steppay_secret_token", "steppay_webhook_secrets"],
            },
            Pg::Payple => PgConfig {
                variables: &[
                    ("PAYPLE_BASE_URL", "Payple's API base URL, e.g. https://cpay.payple.kr"),
                    ("PAYPLE_REFERER", "the Referer registered with Payple, e.g. https://shop.example.com"),
                ],
                secret_keys: &["payple_cst_id", "payple_cust_key", "payple_refund_key"],
            },
        }
    }

    /// The modes this PG runs subscriptions in.
    pub fn modes(self) -> Vec<PgMode> {
        PgMode::ALL.into_iter().filter(|m| m.pg() == self).collect()
    }
}

impl fmt::Display for Pg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PG's configuration ([`Pg::config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgConfig {
    /// Environment variables, with what each is for (named in error messages).
    pub variables: &'static [(&'static str, &'static str)],
    /// Keys of the PG-credentials secret.
    pub secret_keys: &'static [&'static str],
}

/// The three PG modes of the source documents: a PG and who renews on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgMode {
    /// Payple recurring: we schedule and re-pay with `PCD_PAYER_ID`.
    Payple,
    /// StepPay self (비관리형): we schedule and charge the billing idKey.
    SteppaySelf,
    /// StepPay managed (관리형): StepPay renews; we verify its order webhooks.
    SteppayManaged,
}

impl PgMode {
    pub const ALL: [PgMode; 3] = [PgMode::Payple, PgMode::SteppaySelf, PgMode::SteppayManaged];

    pub fn as_str(self) -> &'static str {
        match self {
            PgMode::Payple => "payple",
            PgMode::SteppaySelf => "steppay_self",
            PgMode::SteppayManaged => "steppay_managed",
        }
    }

    pub fn parse(name: &str) -> Option<PgMode> {
        PgMode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Who renews subscriptions in this mode.
    pub fn renewer(self) -> Renewer {
        self.capabilities().renewer
    }

    /// The PG of this mode.
    pub fn pg(self) -> Pg {
        match self {
            PgMode::Payple => Pg::Payple,
            PgMode::SteppaySelf | PgMode::SteppayManaged => Pg::Steppay,
        }
    }

    /// What the PG can do in this mode; callers branch on these, never on the PG.
    pub fn capabilities(self) -> Capabilities {
        match self {
            PgMode::Payple => Capabilities {
                renewer: Renewer::Paycycle,
                refund_lookup: RefundLookupCapability::None,
                lookup_by_date: true,
                lifecycle_at_pg: false,
                references_are_ours: true,
                refunds_through_order: false,
                late_payments: true,
            },
            PgMode::SteppaySelf => Capabilities {
                renewer: Renewer::Paycycle,
                refund_lookup: RefundLookupCapability::Receipt,
                lookup_by_date: false,
                lifecycle_at_pg: false,
                references_are_ours: false,
                refunds_through_order: false,
                late_payments: false,
            },
            PgMode::SteppayManaged => Capabilities {
                renewer: Renewer::Pg,
                refund_lookup: RefundLookupCapability::Receipt,
                lookup_by_date: false,
                lifecycle_at_pg: true,
                references_are_ours: false,
                refunds_through_order: true,
                late_payments: true,
            },
        }
    }
}

impl From<PgMode> for Pg {
    fn from(mode: PgMode) -> Pg {
        mode.pg()
    }
}

impl fmt::Display for PgMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a PG mode can do, for the callers that must behave differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Who charges renewals: paycycle (on a billing key) or the PG itself.
    pub renewer: Renewer,
    /// Whether the PG can show what was refunded of a payment.
    pub refund_lookup: RefundLookupCapability,
    /// The PG's lookup takes the KST date a charge was sent on (Payple `PCD_PAY_DATE`): a charge
    /// re-sent on another day is asked under each of its dates.
    pub lookup_by_date: bool,
    /// Cancel, pause and resume are made at the PG first and recorded here on its yes (StepPay
    /// managed: StepPay renews, so the subscription's state is StepPay's).
    pub lifecycle_at_pg: bool,
    /// The PG's payment references are ids paycycle chose (Payple's OID = our checkout or charge
    /// id) and may be shown; otherwise they may be billing keys (a StepPay idKey) and are masked.
    pub references_are_ours: bool,
    /// A payment is refunded through the PG order it paid (StepPay managed: `PATCH
    /// /api/v1/orders/{id}/cancel`), so the order is recorded with it: a checkout's first payment
    /// keeps the checkout's PG reference (its order code).
    pub refunds_through_order: bool,
    /// The PG can report a checkout's payment after the checkout failed (Payple: a window
    /// result's or the first charge's webhook; StepPay managed: the order can be paid again on
    /// StepPay's pay page). What it confirms then is recorded on the failed checkout for a refund.
    pub late_payments: bool,
}

/// A change to a subscription made at the PG before it is recorded here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgChange {
    Cancel { at_period_end: bool },
    Pause { at_period_end: bool },
    Resume,
}

/// Every PG's client, built once per cold start over one HTTP client.
#[derive(Clone, Debug)]
pub struct Registry {
    pub steppay: steppay::SteppayClient,
    pub payple: payple::PaypleClient,
}

impl Registry {
    pub fn new(config: &crate::config::Config, secrets: &crate::config::Secrets) -> Self {
        let http = http_client(Timeouts {
            connect: Duration::from_millis(config.pg_connect_timeout_ms),
            total: Duration::from_millis(config.pg_timeout_ms),
        });
        Self {
            steppay: steppay::SteppayClient::new(
                http.clone(),
                config.steppay_base_url.clone(),
                secrets.steppay_secret_token.clone(),
            ),
            payple: payple::PaypleClient::new(
                http,
                config.payple_base_url.clone(),
                &config.payple_referer,
                secrets.payple_cst_id.clone(),
                secrets.payple_cust_key.clone(),
                secrets.payple_refund_key.clone(),
            ),
        }
    }

    /// The adapter that serves `mode`.
    pub fn adapter(&self, mode: PgMode) -> Adapter<'_> {
        match mode {
            PgMode::Payple => Adapter::Payple(&self.payple),
            PgMode::SteppaySelf => Adapter::SteppaySelf(&self.steppay),
            PgMode::SteppayManaged => Adapter::SteppayManaged(&self.steppay),
        }
    }
}

/// One PG mode's operations, in PG-neutral terms.
#[derive(Clone, Copy, Debug)]
pub enum Adapter<'a> {
    Payple(&'a payple::PaypleClient),
    SteppaySelf(&'a steppay::SteppayClient),
    SteppayManaged(&'a steppay::SteppayClient),
}

impl<'a> Adapter<'a> {
    pub fn mode(&self) -> PgMode {
        match self {
            Adapter::Payple(_) => PgMode::Payple,
            Adapter::SteppaySelf(_) => PgMode::SteppaySelf,
            Adapter::SteppayManaged(_) => PgMode::SteppayManaged,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        self.mode().capabilities()
    }

    /// Charges a billing key, with what the PG's approval says for the customer's records (never
    /// StepPay managed: StepPay renews those).
    pub async fn charge(&self, req: &ChargeRequest) -> Result<(Charged, PaymentDetails), PgError> {
        use super::PaymentGateway;
        match self {
            Adapter::Payple(c) => c.repay_detailed(req).await,
            Adapter::SteppaySelf(c) => c.charge(req).await.map(|c| (c, PaymentDetails::default())),
            Adapter::SteppayManaged(_) => Err(PgError::Unsupported("StepPay renews managed subscriptions itself")),
        }
    }

    /// Asks the PG what happened to a payment, with what its answer says for the customer's
    /// records (card, receipt; Payple's result lookup carries them, StepPay's answers give none).
    pub async fn lookup(&self, q: &Lookup) -> Result<(PaymentState, PaymentDetails), PgError> {
        use super::PaymentGateway;
        match self {
            Adapter::Payple(c) => c.lookup_with_details(q).await,
            Adapter::SteppaySelf(c) | Adapter::SteppayManaged(c) => {
                c.lookup(q).await.map(|s| (s, PaymentDetails::default()))
            }
        }
    }

    /// Refunds part or all of a payment.
    pub async fn refund(&self, req: &RefundRequest) -> Result<Refunded, PgError> {
        use super::PaymentGateway;
        match self {
            Adapter::Payple(c) => c.refund(req).await,
            Adapter::SteppaySelf(c) => c.refund(req).await,
            // StepPay managed payments are refunded through their order (merge/v1.json
            // `v1_cancelOrder`). A payment recorded without its order is not guessed at: refused
            // here, nothing sent — it is refunded in StepPay's portal.
            Adapter::SteppayManaged(c) => match &req.pg_order {
                Some(order) => c.cancel_order(order, req).await,
                None => Err(PgError::Invalid("no StepPay order is recorded for this managed payment".into())),
            },
        }
    }

    /// What the PG says was refunded of payment `pg_payment_id`; `Unsupported` where it cannot
    /// show refunds ([`Capabilities::refund_lookup`]).
    pub async fn look_up_refunds(&self, pg_payment_id: &str) -> Result<RefundLookup, PgError> {
        match self {
            Adapter::SteppaySelf(c) | Adapter::SteppayManaged(c) => c.refund_state(pg_payment_id).await,
            Adapter::Payple(_) => Err(PgError::Unsupported("this PG's lookup shows no refunds")),
        }
    }

    /// Makes `change` at the PG where the PG owns the subscription's lifecycle
    /// ([`Capabilities::lifecycle_at_pg`]); elsewhere there is nothing to change there.
    /// `pg_subscription`: the PG's subscription (the record's billing key), `None` when the PG
    /// never created one (no first payment yet): a cancel then needs nothing at the PG, a pause
    /// or resume is `Unsupported`.
    ///
    /// StepPay managed (merge/v1.json `/api/v1/subscriptions/{id}/cancel`, `/pause`, `/active`):
    /// only StepPay's yes (a 2xx) is a change. When StepPay refuses, its own status is asked: an
    /// earlier try of this same change may have been made there and then lost its write here (a
    /// concurrent change, a crash), and a retry then only records it — it converges.
    pub async fn change_at_pg(&self, pg_subscription: Option<&str>, change: PgChange) -> Result<(), PgError> {
        let Adapter::SteppayManaged(c) = self else { return Ok(()) };
        let Some(id) = pg_subscription else {
            return match change {
                PgChange::Cancel { .. } => Ok(()),
                _ => Err(PgError::Unsupported("StepPay has no subscription for this one yet")),
            };
        };
        let result = match change {
            PgChange::Cancel { at_period_end } => c.cancel_subscription(id, at_period_end).await,
            PgChange::Pause { at_period_end } => c.pause_subscription(id, at_period_end).await,
            PgChange::Resume => c.resume_subscription(id).await,
        };
        let Err(e) = result else { return Ok(()) };
        if let Ok(status) = c.subscription(id).await {
            if steppay::already_changed(change, status) {
                tracing::info!(?change, ?status, "StepPay is already where this change asks: recorded here");
                return Ok(());
            }
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_pg_and_mode() {
        for pg in Pg::ALL {
            assert_eq!(Pg::parse(pg.as_str()), Some(pg));
            assert_eq!(serde_json::to_value(pg).unwrap(), pg.as_str());
            assert_eq!(Pg::of_webhook_path(&format!("/prod{}/", pg.webhook_path())), Some(pg));
            assert!(!pg.modes().is_empty(), "{pg} serves no mode");
        }
        for mode in PgMode::ALL {
            assert_eq!(PgMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
            assert!(mode.pg().modes().contains(&mode));
        }
        assert_eq!(Pg::of_webhook_path("/webhooks/toss"), None);
        assert_eq!(PgMode::SteppayManaged.renewer(), Renewer::Pg);
        assert_eq!(PgMode::SteppaySelf.pg(), PgMode::SteppayManaged.pg());
    }
}
