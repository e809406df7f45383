//! Idempotency records with Powertools semantics (STYLE.md): the first request with a key claims
//! it with a conditional put (`INPROGRESS`), runs, and saves its response (`COMPLETED`). A repeat
//! with the same body gets the saved response again; with a different body, a mismatch (422);
//! while the first is still running, in-progress (409). A claim whose runner crashed expires after
//! `in_progress_expiry`, so the client's retry can go through. Records expire (TTL) after `ttl`.
//!
//! Item: `pk = IDEM#{scope}#{sha256(key)}`, `sk = IDEM`. The key itself is never stored.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Cond, Op, Set, Store, StoreError, Write, from_item, keys, n, s, sha256_hex, to_item};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdempotencyStatus {
    Inprogress,
    Completed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub status: IdempotencyStatus,
    /// SHA-256 of the request body the key was first used with.
    pub request_hash: String,
    /// Epoch seconds (the table's TTL attribute).
    pub expires_at: i64,
    /// Epoch milliseconds after which an `INPROGRESS` claim may be taken over.
    pub in_progress_expires_at: i64,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
}

/// The outcome of [`Store::claim_idempotency`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; then [`Store::complete_idempotency`] (or release on a retryable failure).
    Claimed,
    /// Same key, same body, already done: answer this again.
    Replay { status: u16, body: String },
    /// Same key, still running (409).
    InProgress,
    /// Same key, different body (422).
    Mismatch,
}

/// Timing of the records.
#[derive(Clone, Copy, Debug)]
pub struct IdempotencyConfig {
    pub ttl: SignedDuration,
    pub in_progress_expiry: SignedDuration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        // Partners retry for a day at most; a Lambda runs 15 minutes at most.
        Self { ttl: SignedDuration::from_hours(24), in_progress_expiry: SignedDuration::from_mins(15) }
    }
}

const STATUS: &str = "status";
const REQUEST_HASH: &str = "request_hash";
const IN_PROGRESS_EXPIRES_AT: &str = "in_progress_expires_at";
const INPROGRESS: &str = "INPROGRESS";
const COMPLETED: &str = "COMPLETED";

fn pk(scope: &str, key: &str) -> String {
    format!("IDEM#{scope}#{}", sha256_hex(key.as_bytes()))
}

impl Store {
    /// Claims `key` in `scope` (e.g. `refund:pay_…`) for a request whose body hashes to
    /// `request_hash` (use [`super::sha256_hex`] of the canonical body).
    pub async fn claim_idempotency(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        config: IdempotencyConfig,
    ) -> Result<Claim, StoreError> {
        let pk = pk(scope, key);
        let record = IdempotencyRecord {
            status: IdempotencyStatus::Inprogress,
            request_hash: request_hash.to_string(),
            expires_at: now.saturating_add(config.ttl).unwrap_or(now).as_second(),
            in_progress_expires_at: now.saturating_add(config.in_progress_expiry).unwrap_or(now).as_millisecond(),
            response_status: None,
            response_body: None,
        };
        let item = to_item(&record, &pk, "IDEM", "idempotency");
        // Free, expired (TTL deletes lazily), or an abandoned claim: take it.
        let abandoned =
            Cond::eq(STATUS, s(INPROGRESS)).and(Cond::Cmp(IN_PROGRESS_EXPIRES_AT, Op::Lt, n(now.as_millisecond())));
        let takeable = Cond::Absent.or(Cond::Cmp(keys::EXPIRES_AT, Op::Lt, n(now.as_second()))).or(abandoned);
        let put = Write::put_if(item, takeable).failing_with(StoreError::AlreadyExists(pk.clone()));
        match self.write(put).await {
            Ok(()) => return Ok(Claim::Claimed),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let Some(item) = self.get(&pk, "IDEM").await? else {
            // Deleted between our put and get (released by its runner): the caller may retry.
            return Ok(Claim::InProgress);
        };
        let existing: IdempotencyRecord = from_item(item)?;
        if existing.request_hash != request_hash {
            return Ok(Claim::Mismatch);
        }
        Ok(match (existing.status, existing.response_status, existing.response_body) {
            (IdempotencyStatus::Completed, Some(status), Some(body)) => Claim::Replay { status, body },
            _ => Claim::InProgress,
        })
    }

    /// Saves the response of a claimed request.
    pub async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let pk = pk(scope, key);
        let sets = vec![
            Set::Value(STATUS, s(COMPLETED)),
            Set::Value("response_status", n(status)),
            Set::Value("response_body", s(body)),
        ];
        let ours = Cond::eq(STATUS, s(INPROGRESS)).and(Cond::eq(REQUEST_HASH, s(request_hash)));
        self.write(Write::update_if(&pk, "IDEM", sets, ours)).await?;
        Ok(())
    }

    /// Drops an in-progress claim so the client can retry (only for failures that changed
    /// nothing, e.g. a validation error before any PG call).
    pub async fn release_idempotency(&self, scope: &str, key: &str, request_hash: &str) -> Result<(), StoreError> {
        let pk = pk(scope, key);
        let ours = Cond::eq(STATUS, s(INPROGRESS)).and(Cond::eq(REQUEST_HASH, s(request_hash)));
        self.write(Write::delete_if(&pk, "IDEM", Some(ours))).await?;
        Ok(())
    }
}
