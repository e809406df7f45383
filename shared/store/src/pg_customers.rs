//! The PG's own customer for a partner's customer: StepPay managed creates its customer with
//! `POST /api/v1/customers`, which takes no code of ours and answers StepPay's own `id` and `code`
//! (step-api-spec `service/account.json` at 3ec8ceb9, `CustomerCreateDTO`, `CustomerV1DTO`). Those
//! are kept here so one partner customer is one PG customer.
//!
//! Concurrent checkouts of one customer: the first claims the item with a conditional put
//! (`CREATING`, a short lease) and creates the customer at the PG; the others see the claim and wait
//! for it (or answer busy). Whoever records first wins and a recorded mapping is never overwritten,
//! so a mapping is never lost; a PG customer is created twice only if a claim's lease runs out
//! before its creation is recorded (a crash, a PG slower than the lease).
//!
//! Item: `pk = PGCUS#{pg}#{partner}#{sha256(customer)}`, `sk = PGCUS`.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Cond, Op, Store, StoreError, Write, from_item, n, s, sha256_hex, to_item};
use paycycle_domain::gateway::Pg;
pub use paycycle_domain::gateway::PgCustomer;

const SK: &str = "PGCUS";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PgCustomerStatus {
    Creating,
    Created,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgCustomerRecord {
    pub status: PgCustomerStatus,
    /// The PG's customer id (StepPay `CustomerV1DTO.id`).
    pub pg_customer_id: Option<String>,
    /// The PG's customer code (StepPay `CustomerV1DTO.code`).
    pub pg_customer_code: Option<String>,
    /// Epoch milliseconds after which a `CREATING` claim may be taken over. Absent (an item an
    /// older `record_pg_customer` wrote by update) reads as 0: no lease, nothing lost.
    #[serde(default)]
    pub lease_until: i64,
    /// The claimant's token while `CREATING`: only it records over or releases its claim.
    #[serde(default)]
    pub owner: Option<String>,
}

/// The outcome of [`Store::claim_pg_customer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgCustomerClaim {
    /// Already created at the PG: use it.
    Known(PgCustomer),
    /// Ours to create at the PG, then [`Store::record_pg_customer`] (or
    /// [`Store::release_pg_customer`]) with this claim's token.
    Claimed(ClaimToken),
    /// Another request is creating it right now.
    Busy,
}

/// Who holds a `CREATING` claim: a claim taken over (its lease ran out) is no longer the first
/// claimant's to record over or release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimToken(String);

const STATUS: &str = "status";
const OWNER: &str = "owner";
const LEASE_UNTIL: &str = "lease_until";
const CREATING: &str = "CREATING";

fn pk(pg: Pg, partner_id: &str, customer_id: &str) -> String {
    format!("PGCUS#{pg}#{partner_id}#{}", sha256_hex(customer_id.as_bytes()))
}

fn known(record: PgCustomerRecord) -> Option<PgCustomer> {
    match (record.status, record.pg_customer_id, record.pg_customer_code) {
        (PgCustomerStatus::Created, Some(id), Some(code)) => Some(PgCustomer { id, code }),
        _ => None,
    }
}

impl Store {
    /// The PG customer of `customer_id`, or the claim to create it (for `lease`, wall clock).
    pub async fn claim_pg_customer(
        &self,
        pg: Pg,
        partner_id: &str,
        customer_id: &str,
        now: Timestamp,
        lease: SignedDuration,
    ) -> Result<PgCustomerClaim, StoreError> {
        let pk = pk(pg, partner_id, customer_id);
        if let Some(found) = self.pg_customer(&pk).await? {
            return Ok(PgCustomerClaim::Known(found));
        }
        let token = ClaimToken(paycycle_domain::ids::random_base32(26));
        let record = PgCustomerRecord {
            status: PgCustomerStatus::Creating,
            pg_customer_id: None,
            pg_customer_code: None,
            lease_until: now.saturating_add(lease).unwrap_or(now).as_millisecond(),
            owner: Some(token.0.clone()),
        };
        // Free, or a claim whose creator is gone: never a recorded mapping.
        let gone = Cond::eq(STATUS, s(CREATING)).and(Cond::Cmp(LEASE_UNTIL, Op::Lt, n(now.as_millisecond())));
        let put = Write::put_if(to_item(&record, &pk, SK, "pg_customer"), Cond::Absent.or(gone))
            .failing_with(StoreError::AlreadyExists(pk.clone()));
        match self.write(put).await {
            Ok(()) => Ok(PgCustomerClaim::Claimed(token)),
            Err(StoreError::AlreadyExists(_)) => {
                Ok(self.pg_customer(&pk).await?.map_or(PgCustomerClaim::Busy, PgCustomerClaim::Known))
            }
            Err(other) => Err(other),
        }
    }

    /// Records the PG's ids of a customer this request claimed (`claim`): over its own claim, or
    /// where no item is left (the claim was released meanwhile). If another request recorded
    /// first, its mapping stands and is returned (ours is then a duplicate at the PG, never a lost
    /// one); a claim another request took over is `Conflict` (that request records its own).
    pub async fn record_pg_customer(
        &self,
        pg: Pg,
        partner_id: &str,
        customer_id: &str,
        claim: &ClaimToken,
        created: &PgCustomer,
    ) -> Result<PgCustomer, StoreError> {
        let pk = pk(pg, partner_id, customer_id);
        // The whole record, never a partial update: the claim may be gone (released, or taken
        // over and released) by the time a slow creation is recorded, and an item written field
        // by field would then miss what every read decodes.
        let record = PgCustomerRecord {
            status: PgCustomerStatus::Created,
            pg_customer_id: Some(created.id.clone()),
            pg_customer_code: Some(created.code.clone()),
            lease_until: 0,
            owner: None,
        };
        let ours = Cond::eq(STATUS, s(CREATING)).and(Cond::eq(OWNER, s(&claim.0)));
        let update = Write::put_if(to_item(&record, &pk, SK, "pg_customer"), Cond::Absent.or(ours))
            .failing_with(StoreError::Conflict(pk.clone()));
        match self.write(update).await {
            Ok(()) => Ok(created.clone()),
            Err(StoreError::Conflict(_)) => self.pg_customer(&pk).await?.ok_or(StoreError::Conflict(pk)),
            Err(other) => Err(other),
        }
    }

    /// Gives this request's claim up after a PG answer that created nothing, so the next request
    /// may try. A claim another request took over is not ours to release (a no-op).
    pub async fn release_pg_customer(
        &self,
        pg: Pg,
        partner_id: &str,
        customer_id: &str,
        claim: &ClaimToken,
    ) -> Result<(), StoreError> {
        let pk = pk(pg, partner_id, customer_id);
        let ours = Cond::eq(STATUS, s(CREATING)).and(Cond::eq(OWNER, s(&claim.0)));
        match self.write(Write::delete_if(&pk, SK, Some(ours))).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// The recorded PG customer under `pk`, if created.
    async fn pg_customer(&self, pk: &str) -> Result<Option<PgCustomer>, StoreError> {
        let Some(item) = self.get(pk, SK).await? else { return Ok(None) };
        Ok(known(from_item(item)?))
    }
}
