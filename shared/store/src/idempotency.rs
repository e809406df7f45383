//! Idempotency records with Powertools semantics (STYLE.md): the first request with a key claims
//! it with a conditional put (`INPROGRESS`), runs, and saves its response (`COMPLETED`). A repeat
//! with the same body gets the saved response again; with a different body, a mismatch (422);
//! while the first is still running, in-progress (409). A claim whose runner crashed expires after
//! `in_progress_expiry`, so the client's retry can go through. Records expire (TTL) after `ttl`.
//!
//! Item: `pk = IDEM#{scope}#{sha256(key)}`, `sk = IDEM`. The key itself is never stored.

use aws_sdk_dynamodb::types::AttributeValue;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, from_item, keys, n, s, sha256_hex, to_item};

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
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            // Free, expired (TTL deletes lazily), or an abandoned claim: take it.
            .condition_expression(
                "attribute_not_exists(#pk) OR #exp < :now_s OR (#status = :inprogress AND in_progress_expires_at < :now_ms)",
            )
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#exp", keys::EXPIRES_AT)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now_s", n(now.as_second()))
            .expression_attribute_values(":now_ms", n(now.as_millisecond()))
            .expression_attribute_values(":inprogress", s("INPROGRESS"))
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Claim::Claimed),
            Err(e) => {
                let err = super::conditional(e, StoreError::AlreadyExists(pk.clone()));
                if !matches!(err, StoreError::AlreadyExists(_)) {
                    return Err(err);
                }
            }
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
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s("IDEM"))
            .update_expression("SET #status = :completed, response_status = :rs, response_body = :rb")
            .condition_expression("#status = :inprogress AND request_hash = :hash")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", s("COMPLETED"))
            .expression_attribute_values(":inprogress", s("INPROGRESS"))
            .expression_attribute_values(":rs", n(status))
            .expression_attribute_values(":rb", AttributeValue::S(body.to_string()))
            .expression_attribute_values(":hash", s(request_hash))
            .send()
            .await
            .map_err(|e| super::conditional(e, StoreError::Conflict(pk.clone())))?;
        Ok(())
    }

    /// Drops an in-progress claim so the client can retry (only for failures that changed
    /// nothing, e.g. a validation error before any PG call).
    pub async fn release_idempotency(&self, scope: &str, key: &str, request_hash: &str) -> Result<(), StoreError> {
        let pk = pk(scope, key);
        self.table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s("IDEM"))
            .condition_expression("#status = :inprogress AND request_hash = :hash")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":inprogress", s("INPROGRESS"))
            .expression_attribute_values(":hash", s(request_hash))
            .send()
            .await
            .map_err(|e| super::conditional(e, StoreError::Conflict(pk.clone())))?;
        Ok(())
    }
}
