//! The PG registry: the one place that knows which PGs exist and which adapter serves each mode
//! (Lago's provider registry and hyperswitch's connector list are the models).
//!
//! Everything outside `pg/` asks the registry for an [`Adapter`] and talks to it in PG-neutral
//! terms: no function matches on a PG (a test walks the sources and holds that). Adding a PG is a
//! module beside `payple/` and `steppay/`, a variant here and in [`Pg::ALL`], its config and its
//! sandbox simulator — README "Add a PG" lists the files.

use std::time::Duration;

use super::{
    Capabilities, ChargeRequest, Charged, Lookup, PaymentDetails, PaymentState, PgError, PgMode, RefundLookup,
    RefundRequest, Refunded, Timeouts, http_client, payple, steppay,
};
use crate::budget::Budget;
use crate::config::{PgSettings, Secrets};

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
    /// The longest one PG request takes before it is given up (`PG_TIMEOUT_MS`).
    pub request_timeout: Duration,
}

impl Registry {
    pub fn new(config: &PgSettings, secrets: &Secrets) -> Self {
        let http = http_client(Timeouts {
            connect: Duration::from_millis(config.pg_connect_timeout_ms),
            total: Duration::from_millis(config.pg_timeout_ms),
        });
        Self {
            steppay: steppay::SteppayClient::new(
                http.clone(),
                config.steppay_base_url.clone(),
                secrets.steppay_secret_token.clone(),
            )
            .with_budget(Budget::new("steppay", config.steppay_budget)),
            payple: payple::PaypleClient::new(
                http,
                config.payple_base_url.clone(),
                &config.payple_referer,
                secrets.payple_cst_id.clone(),
                secrets.payple_cust_key.clone(),
                secrets.payple_refund_key.clone(),
            )
            .with_budget(Budget::new("payple", config.payple_budget)),
            request_timeout: Duration::from_millis(config.pg_timeout_ms),
        }
    }

    /// The clients read their credentials from `credentials` at each request (a rotated PG secret
    /// takes effect without a redeploy), instead of the ones given to [`Self::new`].
    pub fn with_credentials(self, credentials: &crate::Credentials) -> Self {
        Self {
            steppay: self.steppay.with_credentials(credentials.clone()),
            payple: self.payple.with_credentials(credentials.clone()),
            ..self
        }
    }

    /// The fewest requests this process may have in flight to a PG whose budget limits them
    /// ([`crate::budget`]): renew starts no more renewals at once than that, so renewals of any
    /// one PG do not queue on its budget while their claims' leases run (a renewal that still
    /// cannot start its PG call in time sends nothing: [`crate::budget::sending_by`]).
    pub fn in_flight_share(&self) -> Option<usize> {
        let limits = [self.steppay.budget().in_flight_limit(), self.payple.budget().in_flight_limit()];
        limits.into_iter().flatten().map(|l| l as usize).min()
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

    /// Deletes billing key `key` at the PG ([`Capabilities::deletes_billing_keys`]; Payple
    /// `PUSERDEL`, PAYPLECORP/manual_card README "5. 등록카드 해지(정기결제)": `PCD_PAYER_ID`
    /// required, `PCD_PAYER_NO` optional); `Unsupported` where the PG has no such call.
    pub async fn delete_billing_key(&self, key: &str) -> Result<(), PgError> {
        match self {
            Adapter::Payple(c) => c.delete_billing_key(key, None).await,
            Adapter::SteppaySelf(_) | Adapter::SteppayManaged(_) => {
                Err(PgError::Unsupported("this PG publishes no billing key deletion"))
            }
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
