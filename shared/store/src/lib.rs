//! The DynamoDB single table (DESIGN §7): one repository for every item — subscription, attempt,
//! payment, refund, checkout, webhook event, idempotency record, outbox, API key.
//!
//! Rules this module owns:
//! - every state change is a conditional write on the state it expects and a `version`;
//! - changes that belong together go in one `TransactWriteItems` ([`Tx`]);
//! - a failed condition comes back as [`StoreError::Conflict`] or [`StoreError::AlreadyExists`],
//!   never as a generic SDK error, so callers can tell a lost race from an outage;
//! - it knows nothing of PGs or HTTP.
//!
//! The physical table (keys, GSIs, stream, TTL) is defined only in `template.yaml`; the tests
//! provision moto from that file and check the names in [`keys`] against it.

pub mod api_keys;
pub mod aws;
pub mod checkouts;
pub mod days;
pub mod delivery_queue;
pub mod events;
pub mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod partner_webhooks;
pub mod partners;
pub mod payments;
pub mod pg_customers;
pub mod queue;
pub mod retired_keys;
pub mod reviews;
pub mod shard_queue;
pub mod stream;
pub mod subscriptions;
pub mod table;
pub mod vault;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use metrics::{Counts, RequestCounter, item_size};
use table::Backend;
pub use table::{Cond, Op, Query, Range, Set, Write};

/// Attribute names fixed by the template's table definition.
pub mod keys {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    /// What kind of item this is (`subscription`, `webhook_event`, …); the stream filter uses it.
    pub const ENTITY: &str = "entity";
    /// TTL attribute (epoch seconds).
    pub const EXPIRES_AT: &str = "expires_at";
    /// Sparse GSI of due subscriptions: shard key and due time (epoch seconds).
    pub const DUE_INDEX: &str = "due";
    pub const DUE_SHARD: &str = "due_shard";
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    /// Sparse GSI for lookups by PG ids and by customer.
    pub const LOOKUP_INDEX: &str = "lookup";
    pub const LOOKUP_PK: &str = "lookup_pk";
    pub const LOOKUP_SK: &str = "lookup_sk";
    /// Sparse GSI of payments by partner and time paid (the partner's books: `GET /payments`,
    /// `GET /payments/export`). Only payment items carry its keys; it projects the payment's own
    /// attributes (INCLUDE), nothing of any other item.
    pub const PAID_INDEX: &str = "paid";
    pub const PAID_PK: &str = "paid_pk";
    pub const PAID_SK: &str = "paid_sk";
    pub const VERSION: &str = "version";
}

/// Item = DynamoDB attribute map.
pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition on an existing item failed: someone else changed it first (lost race, stale
    /// version, state not as expected).
    #[error("conflict on {0}")]
    Conflict(String),
    /// A create-only write found the item already there.
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// An item that does not parse: never silently skipped.
    #[error("item {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    /// Throttling, network, service errors: the write may be retried by the caller's policy.
    #[error("DynamoDB request failed: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether a create-only write found a payment already recorded (one payment per PG
    /// transaction: the PG payment is another charge's or checkout's, or a repeat). The one place
    /// that knows a payment's key; handlers ask this instead of reading key prefixes.
    pub fn payment_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists(key) if payments::is_payment_key(key))
    }
}

/// A handle on the table: the SDK client (built once per cold start) and the table name.
#[derive(Clone, Debug)]
pub struct Table {
    pub client: Client,
    pub name: String,
}

impl Table {
    pub fn new(sdk: &aws_config::SdkConfig, name: impl Into<String>) -> Self {
        Self { client: Client::new(sdk), name: name.into() }
    }

    pub fn from_client(client: Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }
}

/// The repository: the table (DynamoDB, or in memory for fast tests: [`table`]) plus a counter of
/// the requests it made to DynamoDB.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    pub counter: Arc<RequestCounter>,
    /// The calls this store made, when `PAYCYCLE_RECORD_AWS_CALLS` is set (the IAM test).
    pub calls: Option<Arc<crate::aws::calls::CallLog>>,
}

impl Store {
    /// Builds the DynamoDB client with the request-counting interceptor (and the call recorder
    /// when recording is on).
    pub fn new(sdk: &aws_config::SdkConfig, table_name: impl Into<String>) -> Self {
        let counter = Arc::new(RequestCounter::default());
        let calls = crate::aws::calls::CallLog::from_env();
        let mut config = aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(counter.interceptor());
        if let Some(log) = &calls {
            config = config.interceptor(log.interceptor());
        }
        let table = Table::from_client(Client::from_conf(config.build()), table_name);
        Self { backend: Backend::Dynamo(table), counter, calls }
    }

    /// A store whose table lives in this process's memory: the same repository, for orchestration
    /// tests that need no DynamoDB (conditions and transactions hold as they do there).
    pub fn in_memory() -> Self {
        Self { backend: Backend::Memory(table::Memory::default()), counter: Arc::default(), calls: None }
    }

    /// The DynamoDB table, for tests that read it with the SDK (`None` in memory).
    pub fn dynamo(&self) -> Option<&Table> {
        match &self.backend {
            Backend::Dynamo(t) => Some(t),
            Backend::Memory(_) => None,
        }
    }

    /// Every item of an in-memory store (`None` on DynamoDB: scan it with the SDK).
    pub fn memory_items(&self) -> Option<Vec<Item>> {
        match &self.backend {
            Backend::Dynamo(_) => None,
            Backend::Memory(m) => Some(m.all()),
        }
    }

    /// A consistent read of one item.
    pub(crate) async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        match &self.backend {
            Backend::Dynamo(t) => table::dynamo::get(t, pk, sk).await,
            Backend::Memory(m) => Ok(m.get(pk, sk)),
        }
    }

    /// Consistent reads of `wanted` (table keys), at most 100 per BatchGetItem; keys DynamoDB
    /// leaves unprocessed are asked again a few times. The items found, in no particular order;
    /// a key still unprocessed after the retries fails the read (`Unavailable`).
    pub(crate) async fn get_many(&self, wanted: &[(String, String)]) -> Result<Vec<Item>, StoreError> {
        match &self.backend {
            Backend::Memory(m) => Ok(wanted.iter().filter_map(|(pk, sk)| m.get(pk, sk)).collect()),
            Backend::Dynamo(t) => {
                let mut found = Vec::with_capacity(wanted.len());
                for chunk in wanted.chunks(100) {
                    found.extend(batch_get(t, chunk).await?);
                }
                Ok(found)
            }
        }
    }

    /// One page of `q` (consistent on the table; a GSI lags writes briefly on DynamoDB).
    pub(crate) async fn query(&self, q: &Query) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        match &self.backend {
            Backend::Dynamo(t) => table::dynamo::query(t, q).await,
            Backend::Memory(m) => m.query(q),
        }
    }

    /// One page of `q`, parsed.
    pub(crate) async fn query_records<T: DeserializeOwned>(
        &self,
        q: &Query,
    ) -> Result<(Vec<T>, Option<Item>), StoreError> {
        let (items, next) = self.query(q).await?;
        Ok((items.into_iter().map(from_item).collect::<Result<_, _>>()?, next))
    }

    /// Every item of partition `pk` whose sort key starts with `prefix` (consistent, all pages).
    pub(crate) async fn items_with_prefix<T: DeserializeOwned>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let q = Query::partition(pk).range(keys::SK, Range::BeginsWith(prefix.to_string())).start(start);
            let (items, next) = self.query_records(&q).await?;
            out.extend(items);
            match next {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// One page of the lookup index under `lookup_pk` (sort keys starting with `prefix`, if given).
    pub(crate) async fn lookup_page<T: DeserializeOwned>(
        &self,
        lookup_pk: &str,
        prefix: Option<&str>,
        limit: Option<i32>,
        start: Option<Item>,
    ) -> Result<(Vec<T>, Option<Item>), StoreError> {
        let mut q = Query::index(keys::LOOKUP_INDEX, keys::LOOKUP_PK, lookup_pk).limit(limit).start(start);
        if let Some(prefix) = prefix {
            q = q.range(keys::LOOKUP_SK, Range::BeginsWith(prefix.to_string()));
        }
        self.query_records(&q).await
    }

    /// One page of shard `shard` of the due index at or before `now`, earliest first: the items'
    /// `pk`s (subscriptions renew charges, partner webhook deliveries to retry).
    pub(crate) async fn due_page(
        &self,
        shard: &str,
        now: jiff::Timestamp,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<String>, Option<Item>), StoreError> {
        let (keys, next) = self.due_keys(shard, now, limit, start).await?;
        Ok((keys.into_iter().map(|(pk, _)| pk).collect(), next))
    }

    /// [`Store::due_page`] with each entry's table key (pk, sk).
    pub(crate) async fn due_keys(
        &self,
        shard: &str,
        now: jiff::Timestamp,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<(String, String)>, Option<Item>), StoreError> {
        let q = Query::index(keys::DUE_INDEX, keys::DUE_SHARD, shard)
            .range(keys::NEXT_ATTEMPT_AT, Range::AtMost(n(epoch(now))))
            .limit(Some(limit))
            .start(start);
        let (found, next) = self.query(&q).await?;
        Ok((found.iter().map(table::key_of).collect(), next))
    }

    /// One conditional write on its own; its condition failing is the write's `failure`.
    pub(crate) async fn write(&self, w: Write) -> Result<(), StoreError> {
        self.write_returning_old(w, false).await.map(|_| ())
    }

    /// [`Store::write`], answering the item as it was before (when `return_old`).
    pub(crate) async fn write_returning_old(&self, w: Write, return_old: bool) -> Result<Option<Item>, StoreError> {
        match &self.backend {
            Backend::Dynamo(t) => table::dynamo::write(t, &w, return_old).await,
            Backend::Memory(m) => Ok(m.apply(std::slice::from_ref(&w))?.pop().flatten().filter(|_| return_old)),
        }
    }

    /// Deletes items by key, no condition (a missing one is fine): one DeleteItem for a single
    /// key, else BatchWriteItem in chunks of 25. Items DynamoDB leaves unprocessed are retried a
    /// few times; the number still left is returned.
    pub(crate) async fn delete_keys(&self, keys_to_delete: &[(String, String)]) -> Result<usize, StoreError> {
        let table = match &self.backend {
            Backend::Memory(m) => {
                let writes: Vec<Write> = keys_to_delete.iter().map(|(pk, sk)| Write::delete_if(pk, sk, None)).collect();
                m.apply(&writes)?;
                return Ok(0);
            }
            Backend::Dynamo(t) => t,
        };
        if let [(pk, sk)] = keys_to_delete {
            self.write(Write::delete_if(pk, sk, None)).await?;
            return Ok(0);
        }
        let mut left = 0;
        for chunk in keys_to_delete.chunks(25) {
            left += batch_delete(table, chunk).await?;
        }
        Ok(left)
    }

    /// A new transaction on this table.
    pub fn tx(&self) -> Tx {
        Tx { writes: Vec::new() }
    }

    /// Commits `tx` atomically: all of it or none of it.
    pub async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        if tx.writes.is_empty() {
            return Ok(());
        }
        let table = match &self.backend {
            Backend::Memory(m) => return m.apply(&tx.writes).map(|_| ()),
            Backend::Dynamo(t) => t,
        };
        let items = tx.writes.iter().map(|w| table::dynamo::transact_item(table, w)).collect();
        let result = table.client.transact_write_items().set_transact_items(Some(items)).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => Err(transaction_error(err, &tx.writes)),
        }
    }
}

/// One BatchGetItem (consistent), asked again while DynamoDB leaves keys unprocessed.
async fn batch_get(table: &Table, chunk: &[(String, String)]) -> Result<Vec<Item>, StoreError> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let keys: Vec<Item> = chunk
        .iter()
        .map(|(pk, sk)| HashMap::from([(keys::PK.to_string(), s(pk)), (keys::SK.to_string(), s(sk))]))
        .collect();
    let mut asking = Some(
        KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|err| StoreError::Unavailable(err.to_string()))?,
    );
    let mut found = Vec::with_capacity(chunk.len());
    for attempt in 0..5u32 {
        let Some(request) = asking.take().filter(|k| !k.keys().is_empty()) else { return Ok(found) };
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
        }
        let out =
            table.client.batch_get_item().request_items(&table.name, request).send().await.map_err(unavailable)?;
        found.extend(out.responses().and_then(|r| r.get(&table.name)).cloned().unwrap_or_default());
        asking = out.unprocessed_keys().and_then(|m| m.get(&table.name)).cloned();
    }
    match asking.filter(|k| !k.keys().is_empty()) {
        None => Ok(found),
        Some(left) => {
            Err(StoreError::Unavailable(format!("{} keys left unprocessed by BatchGetItem", left.keys().len())))
        }
    }
}

/// One BatchWriteItem of deletes, retried while DynamoDB leaves some unprocessed; the number left.
async fn batch_delete(table: &Table, chunk: &[(String, String)]) -> Result<usize, StoreError> {
    use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
    let mut requests: Vec<WriteRequest> = chunk
        .iter()
        .map(|(pk, sk)| {
            let delete = DeleteRequest::builder()
                .key(keys::PK, s(pk))
                .key(keys::SK, s(sk))
                .build()
                .map_err(|err| StoreError::Corrupt { key: format!("{pk}|{sk}"), message: err.to_string() })?;
            Ok(WriteRequest::builder().delete_request(delete).build())
        })
        .collect::<Result<_, StoreError>>()?;
    for attempt in 0..4u32 {
        if requests.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
        }
        let out = table
            .client
            .batch_write_item()
            .request_items(&table.name, std::mem::take(&mut requests))
            .send()
            .await
            .map_err(unavailable)?;
        requests = out.unprocessed_items().and_then(|m| m.get(&table.name)).cloned().unwrap_or_default();
    }
    Ok(requests.len())
}

/// A transaction under construction: conditional writes, committed all or none.
#[derive(Debug, Default)]
pub struct Tx {
    writes: Vec<Write>,
}

impl Tx {
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Adds one conditional write.
    pub(crate) fn push(&mut self, w: Write) -> &mut Self {
        self.writes.push(w);
        self
    }

    /// Creates an item that must not exist yet.
    pub(crate) fn put_new(&mut self, item: Item) -> &mut Self {
        self.push(Write::create(item))
    }
}

fn transaction_error(
    err: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
    writes: &[Write],
) -> StoreError {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    if let SdkError::ServiceError(service) = &err {
        if let E::TransactionCanceledException(canceled) = service.err() {
            let reasons = canceled.cancellation_reasons();
            // The first item whose condition failed names the error; without reasons (some
            // emulators), the first create-only item is the most likely culprit.
            for (i, reason) in reasons.iter().enumerate() {
                if reason.code() == Some("ConditionalCheckFailed") {
                    return writes.get(i).map_or(StoreError::Conflict("transaction".into()), |w| w.failure.clone());
                }
            }
            if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                return StoreError::Conflict("concurrent transaction".into());
            }
            if reasons.is_empty() {
                return StoreError::Conflict("transaction".into());
            }
            return StoreError::Unavailable(format!("transaction canceled: {}", DisplayErrorContext(&err)));
        }
    }
    unavailable(err)
}

/// Maps an SDK error that is not a condition failure.
pub(crate) fn unavailable<E: std::error::Error + Send + Sync + 'static>(err: SdkError<E>) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(err).to_string())
}

/// Maps a single-item conditional write's error: condition failure → `on_condition`.
pub(crate) fn conditional<E>(err: SdkError<E>, on_condition: StoreError) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    if let SdkError::ServiceError(service) = &err {
        if service.err().code() == Some("ConditionalCheckFailedException") {
            return on_condition;
        }
    }
    unavailable(err)
}

pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Serializes a record and adds the key attributes.
pub(crate) fn to_item<T: Serialize>(record: &T, pk: &str, sk: &str, entity: &str) -> Item {
    let mut item: Item = serde_dynamo::to_item(record).expect("paycycle records serialize to DynamoDB items");
    item.insert(keys::PK.into(), s(pk));
    item.insert(keys::SK.into(), s(sk));
    item.insert(keys::ENTITY.into(), s(entity));
    item
}

/// `pk|sk` of an item, to name it in errors.
fn label(item: &Item) -> String {
    let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("?");
    format!("{}|{}", get(keys::PK), get(keys::SK))
}

/// Parses a record, naming the item if it does not parse.
pub(crate) fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    let key = label(&item);
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { key, message: e.to_string() })
}

pub use paycycle_domain::ids::sha256_hex;

/// Epoch seconds of a timestamp.
pub(crate) fn epoch(t: jiff::Timestamp) -> i64 {
    t.as_second()
}

/// Epoch seconds as a lookup-index sort key that orders as text (open first charges, unsettled
/// webhooks: "due at or before" is a `<=` on it).
pub(crate) fn sort_seconds(t: jiff::Timestamp) -> String {
    format!("{:012}", t.as_second().max(0))
}
