//! The partner registry: the tenants API keys act for. An operator registers a partner before
//! making its first key (the admin routes refuse a key for a partner not registered here), so a
//! typo in a partner id cannot quietly create an empty tenant.
//!
//! Item: `pk = PARTNER#{partner_id}`, `sk = PARTNER`, in the lookup index under
//! `lookup_pk = PARTNERS`, `lookup_sk = {partner_id}` (every partner, by id). One index partition
//! holds them all: a registry of partners (tens to thousands), never a hot path.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Item, Store, StoreError, Write, from_item, keys, s, to_item};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRecord {
    pub partner_id: String,
    /// The partner's name, for people.
    pub name: String,
    pub created_at: Timestamp,
    /// The operator's IAM ARN.
    pub created_by: Option<String>,
    pub version: u64,
}

/// The lookup-index partition of the registry (page cursors are checked against it).
pub const PARTNERS_LOOKUP: &str = "PARTNERS";

/// What the `pk` of a partner item starts with (page cursors are checked against it).
pub const PARTNER_PK_PREFIX: &str = "PARTNER#";

fn pk(partner_id: &str) -> String {
    format!("{PARTNER_PK_PREFIX}{partner_id}")
}

/// Whether `id` is a valid partner id: 1-64 of `a-z 0-9 _ -`, starting with a letter or digit
/// (it becomes part of keys and index partitions, so it is plain ASCII).
pub fn is_partner_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    id.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A page of partners and the key to continue after.
pub type PartnerPage = (Vec<PartnerRecord>, Option<Item>);

impl Store {
    /// Registers a partner; [`StoreError::AlreadyExists`] when its id is taken.
    pub async fn create_partner(&self, record: &PartnerRecord) -> Result<(), StoreError> {
        let mut item = to_item(record, &pk(&record.partner_id), "PARTNER", "partner");
        item.insert(keys::LOOKUP_PK.into(), s(PARTNERS_LOOKUP));
        item.insert(keys::LOOKUP_SK.into(), s(&record.partner_id));
        self.write(Write::create(item)).await
    }

    pub async fn get_partner(&self, partner_id: &str) -> Result<Option<PartnerRecord>, StoreError> {
        match self.get(&pk(partner_id), "PARTNER").await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// One page of the registry, by partner id.
    pub async fn partners(&self, limit: i32, start: Option<Item>) -> Result<PartnerPage, StoreError> {
        self.lookup_page(PARTNERS_LOOKUP, None, Some(limit), start).await
    }
}
