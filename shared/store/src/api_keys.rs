//! Partner API keys, stored only as SHA-256 hashes (DESIGN §2). The key itself is shown once,
//! when created, and never stored or logged. Lookup is by hash, so comparing is an exact-match
//! read; the handler still compares the stored hash in constant time.
//!
//! Item: `pk = KEY#{sha256(key)}`, `sk = KEY`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Cond, Store, StoreError, Write, from_item, sha256_hex, to_item};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_hash: String,
    /// The partner (tenant) the key acts for: it sees only that partner's payments and
    /// subscriptions.
    pub partner_id: String,
    /// A label for people ("partner backend", "ops").
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub version: u64,
}

impl ApiKeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A new API key: `pc_` + 40 base-32 characters from the operating system's CSPRNG (200 bits).
pub fn generate_api_key() -> String {
    format!("pc_{}", paycycle_domain::ids::random_base32(40))
}

fn pk(hash: &str) -> String {
    format!("KEY#{hash}")
}

impl Store {
    /// Stores the hash of `key` under `name` for `partner_id`.
    pub async fn create_api_key(
        &self,
        key: &str,
        name: &str,
        partner_id: &str,
        now: Timestamp,
    ) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            key_hash: sha256_hex(key.as_bytes()),
            partner_id: partner_id.to_string(),
            name: name.to_string(),
            created_at: now,
            revoked_at: None,
            version: 1,
        };
        let mut tx = self.tx();
        tx.put_new(to_item(&record, &pk(&record.key_hash), "KEY", "api_key"));
        self.commit(tx).await?;
        Ok(record)
    }

    /// The record for a presented key, if any (revoked ones included: the caller decides).
    pub async fn find_api_key(&self, presented: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self.get(&pk(&sha256_hex(presented.as_bytes())), "KEY").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    pub async fn revoke_api_key(&self, record: &ApiKeyRecord, now: Timestamp) -> Result<ApiKeyRecord, StoreError> {
        let next = ApiKeyRecord { revoked_at: Some(now), version: record.version + 1, ..record.clone() };
        let mut tx = self.tx();
        tx.push(Write::put_if(to_item(&next, &pk(&next.key_hash), "KEY", "api_key"), Cond::version(record.version)));
        self.commit(tx).await?;
        Ok(next)
    }
}
