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
pub mod events;
pub mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod payments;
pub mod pg_customers;
pub mod stream;
pub mod subscriptions;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use metrics::{Counts, RequestCounter, item_size};

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

/// The repository: the table plus a counter of the requests it made.
#[derive(Clone, Debug)]
pub struct Store {
    pub table: Table,
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
        Self { table: Table::from_client(Client::from_conf(config.build()), table_name), counter, calls }
    }

    fn client(&self) -> &Client {
        &self.table.client
    }

    fn name(&self) -> &str {
        &self.table.name
    }

    /// A consistent read of one item.
    pub(crate) async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.name())
            .key(keys::PK, s(pk))
            .key(keys::SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
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
            let page = self
                .client()
                .query()
                .table_name(self.name())
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#sk", keys::SK)
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                out.push(from_item(item.clone())?);
            }
            match page.last_evaluated_key {
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
        let mut q = self
            .client()
            .query()
            .table_name(self.name())
            .index_name(keys::LOOKUP_INDEX)
            .expression_attribute_names("#lpk", keys::LOOKUP_PK)
            .expression_attribute_values(":lpk", s(lookup_pk))
            .set_limit(limit)
            .set_exclusive_start_key(start);
        q = match prefix {
            Some(prefix) => q
                .key_condition_expression("#lpk = :lpk AND begins_with(#lsk, :prefix)")
                .expression_attribute_names("#lsk", keys::LOOKUP_SK)
                .expression_attribute_values(":prefix", s(prefix)),
            None => q.key_condition_expression("#lpk = :lpk"),
        };
        let out = q.send().await.map_err(unavailable)?;
        let items = out.items().iter().cloned().map(from_item).collect::<Result<Vec<T>, _>>()?;
        Ok((items, out.last_evaluated_key))
    }

    /// A new transaction on this table.
    pub fn tx(&self) -> Tx {
        Tx { table: self.name().to_string(), items: Vec::new(), labels: Vec::new() }
    }

    /// Commits `tx` atomically: all of it or none of it.
    pub async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        if tx.items.is_empty() {
            return Ok(());
        }
        let Tx { items, labels, .. } = tx;
        let result = self.client().transact_write_items().set_transact_items(Some(items)).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => Err(transaction_error(err, &labels)),
        }
    }
}

/// What a transaction item expects, to name the failure when its condition does not hold.
#[derive(Debug, Clone)]
enum Expect {
    New(String),
    Existing(String),
}

/// A `TransactWriteItems` under construction. Every item carries a condition.
#[derive(Debug)]
pub struct Tx {
    table: String,
    items: Vec<TransactWriteItem>,
    labels: Vec<Expect>,
}

/// A condition with its placeholders.
#[derive(Debug, Clone, Default)]
pub struct Condition {
    pub expression: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Condition {
    pub fn new(expression: impl Into<String>) -> Self {
        Self { expression: expression.into(), ..Default::default() }
    }

    pub fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.into(), attribute.into());
        self
    }

    pub fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), value);
        self
    }

    /// `version = expected`.
    pub fn version(expected: u64) -> Self {
        Self::new("#version = :expected_version")
            .name("#version", keys::VERSION)
            .value(":expected_version", n(expected))
    }
}

fn label(item: &Item) -> String {
    let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("?");
    format!("{}|{}", get(keys::PK), get(keys::SK))
}

/// One transaction item on an existing key under a condition: the SDK's ConditionCheck, Delete
/// and Update builders have the same setters but no common trait.
macro_rules! keyed_conditional {
    ($builder:expr, $table:expr, $pk:expr, $sk:expr, $condition:expr) => {
        $builder
            .table_name($table)
            .key(keys::PK, s($pk))
            .key(keys::SK, s($sk))
            .condition_expression($condition.expression)
            .set_expression_attribute_names(Some($condition.names).filter(|m| !m.is_empty()))
            .set_expression_attribute_values(Some($condition.values).filter(|m| !m.is_empty()))
            .build()
            .expect("table, key and condition are set")
    };
}

impl Tx {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Creates an item that must not exist yet.
    pub fn put_new(&mut self, item: Item) -> &mut Self {
        let l = label(&item);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .build()
            .expect("table, item and condition are set");
        self.items.push(TransactWriteItem::builder().put(put).build());
        self.labels.push(Expect::New(l));
        self
    }

    /// Replaces an item whose current value satisfies `condition`.
    pub fn put_if(&mut self, item: Item, condition: Condition) -> &mut Self {
        let l = label(&item);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names).filter(|m| !m.is_empty()))
            .set_expression_attribute_values(Some(condition.values).filter(|m| !m.is_empty()))
            .build()
            .expect("table, item and condition are set");
        self.items.push(TransactWriteItem::builder().put(put).build());
        self.labels.push(Expect::Existing(l));
        self
    }

    /// Writes nothing to the item at (`pk`, `sk`) but makes the transaction depend on `condition`
    /// holding there (a missing item has no attributes).
    pub fn check_if(&mut self, pk: &str, sk: &str, condition: Condition) -> &mut Self {
        let check = keyed_conditional!(ConditionCheck::builder(), &self.table, pk, sk, condition);
        self.push_keyed(TransactWriteItem::builder().condition_check(check).build(), pk, sk)
    }

    /// Deletes the item at (`pk`, `sk`) if `condition` holds.
    pub fn delete_if(&mut self, pk: &str, sk: &str, condition: Condition) -> &mut Self {
        let delete = keyed_conditional!(Delete::builder(), &self.table, pk, sk, condition);
        self.push_keyed(TransactWriteItem::builder().delete(delete).build(), pk, sk)
    }

    /// Updates the item at (`pk`, `sk`) with `set` (placeholders in `condition`) if `condition` holds.
    pub fn update_if(&mut self, pk: &str, sk: &str, update_expression: &str, condition: Condition) -> &mut Self {
        let update =
            keyed_conditional!(Update::builder().update_expression(update_expression), &self.table, pk, sk, condition);
        self.push_keyed(TransactWriteItem::builder().update(update).build(), pk, sk)
    }

    fn push_keyed(&mut self, item: TransactWriteItem, pk: &str, sk: &str) -> &mut Self {
        self.items.push(item);
        self.labels.push(Expect::Existing(format!("{pk}|{sk}")));
        self
    }
}

fn transaction_error(
    err: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
    labels: &[Expect],
) -> StoreError {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    if let SdkError::ServiceError(service) = &err {
        if let E::TransactionCanceledException(canceled) = service.err() {
            let reasons = canceled.cancellation_reasons();
            // The first item whose condition failed names the error; without reasons (some
            // emulators), the first create-only item is the most likely culprit.
            for (i, reason) in reasons.iter().enumerate() {
                if reason.code() == Some("ConditionalCheckFailed") {
                    return match labels.get(i) {
                        Some(Expect::New(l)) => StoreError::AlreadyExists(l.clone()),
                        Some(Expect::Existing(l)) => StoreError::Conflict(l.clone()),
                        None => StoreError::Conflict("transaction".into()),
                    };
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
