//! Partner API keys, stored only as SHA-256 hashes (DESIGN §2). The key itself is shown once,
//! when created, and never stored or logged. Lookup is by hash, so comparing is an exact-match
//! read; the handler still compares the stored hash in constant time.
//!
//! Items:
//! - the key: `pk = KEY#{sha256(key)}`, `sk = KEY`, in the lookup index under
//!   `lookup_pk = APIKEYS#{partner}`, `lookup_sk = {created epoch s:012}#{key_id}` (a partner's
//!   keys, oldest first);
//! - its id: `pk = KEYID#{key_id}`, `sk = KEYID`, naming the hash, written in the same
//!   transaction. The id (`key_` + the hash's first 16 hex digits) is what operators see, list and
//!   revoke by: it is not the key, and the hash it is cut from is one-way.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Cond, Item, Store, StoreError, Write, from_item, keys, s, sha256_hex, sort_seconds, to_item};

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
    /// Who created it: the operator's IAM ARN (admin routes); none for keys made by tools.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Who revoked it (the operator's IAM ARN), when revoked through the admin routes.
    #[serde(default)]
    pub revoked_by: Option<String>,
    pub version: u64,
}

impl ApiKeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// The key's public id: `key_` + the first 16 hex digits of its hash.
    pub fn key_id(&self) -> String {
        key_id_of_hash(&self.key_hash)
    }
}

fn key_id_of_hash(hash: &str) -> String {
    format!("key_{}", hash.get(..16).unwrap_or(hash))
}

/// Whether `id` has the shape of a key id (`key_` + 16 lower-case hex digits).
pub fn is_key_id(id: &str) -> bool {
    id.strip_prefix("key_").is_some_and(|h| h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A new API key: `pc_` + 40 base-32 characters from the operating system's CSPRNG (200 bits).
pub fn generate_api_key() -> String {
    format!("pc_{}", paycycle_domain::ids::random_base32(40))
}

fn pk(hash: &str) -> String {
    format!("KEY#{hash}")
}

fn id_pk(key_id: &str) -> String {
    format!("KEYID#{key_id}")
}

/// The lookup-index partition of a partner's keys (page cursors are checked against it).
pub fn api_keys_lookup(partner_id: &str) -> String {
    format!("APIKEYS#{partner_id}")
}

/// What the `pk` of a key item starts with (page cursors are checked against it).
pub const API_KEY_PK_PREFIX: &str = "KEY#";

fn key_item(record: &ApiKeyRecord) -> Item {
    let mut item = to_item(record, &pk(&record.key_hash), "KEY", "api_key");
    item.insert(keys::LOOKUP_PK.into(), s(&api_keys_lookup(&record.partner_id)));
    item.insert(keys::LOOKUP_SK.into(), s(&format!("{}#{}", sort_seconds(record.created_at), record.key_id())));
    item
}

#[derive(Serialize, Deserialize)]
struct KeyIdRecord {
    key_hash: String,
}

/// A page of a partner's keys and the key to continue after.
pub type ApiKeyPage = (Vec<ApiKeyRecord>, Option<Item>);

impl Store {
    /// Stores the hash of `key` under `name` for `partner_id` (made by a tool: no operator named).
    pub async fn create_api_key(
        &self,
        key: &str,
        name: &str,
        partner_id: &str,
        now: Timestamp,
    ) -> Result<ApiKeyRecord, StoreError> {
        self.create_api_key_by(key, name, partner_id, now, None).await
    }

    /// Stores the hash of `key` and its id item, recording who created it.
    pub async fn create_api_key_by(
        &self,
        key: &str,
        name: &str,
        partner_id: &str,
        now: Timestamp,
        created_by: Option<&str>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            key_hash: sha256_hex(key.as_bytes()),
            partner_id: partner_id.to_string(),
            name: name.to_string(),
            created_at: now,
            revoked_at: None,
            created_by: created_by.map(str::to_string),
            revoked_by: None,
            version: 1,
        };
        let id_item = to_item(
            &KeyIdRecord { key_hash: record.key_hash.clone() },
            &id_pk(&record.key_id()),
            "KEYID",
            "api_key_id",
        );
        let mut tx = self.tx();
        tx.put_new(key_item(&record));
        tx.put_new(id_item);
        self.commit(tx).await?;
        Ok(record)
    }

    /// The record for a presented key, if any (revoked ones included: the caller decides).
    pub async fn find_api_key(&self, presented: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.api_key_by_hash(&sha256_hex(presented.as_bytes())).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self.get(&pk(hash), "KEY").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// The record of the key with public id `key_id`, if any (revoked ones included).
    pub async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(item) = self.get(&id_pk(key_id), "KEYID").await? else {
            return Ok(None);
        };
        let pointer: KeyIdRecord = from_item(item)?;
        self.api_key_by_hash(&pointer.key_hash).await
    }

    /// One page of a partner's keys (revoked ones included), oldest first.
    pub async fn api_keys_of_partner(
        &self,
        partner_id: &str,
        limit: i32,
        start: Option<Item>,
    ) -> Result<ApiKeyPage, StoreError> {
        self.lookup_page(&api_keys_lookup(partner_id), None, Some(limit), start).await
    }

    pub async fn revoke_api_key(&self, record: &ApiKeyRecord, now: Timestamp) -> Result<ApiKeyRecord, StoreError> {
        self.revoke_api_key_by(record, now, None).await
    }

    /// Revokes the key as read (its version), recording who did.
    pub async fn revoke_api_key_by(
        &self,
        record: &ApiKeyRecord,
        now: Timestamp,
        revoked_by: Option<&str>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let next = ApiKeyRecord {
            revoked_at: Some(now),
            revoked_by: revoked_by.map(str::to_string),
            version: record.version + 1,
            ..record.clone()
        };
        self.write(Write::put_if(key_item(&next), Cond::version(record.version))).await?;
        Ok(next)
    }
}
