//! The table under the repository, behind one seam with two implementations (issue 22 §2):
//!
//! - **DynamoDB** (`Backend::Dynamo`): what runs in AWS, and against moto or Dynoxide in tests;
//! - **in memory** (`Backend::Memory`): a `BTreeMap` of items, for the orchestration tests of
//!   renew, verify, refund and subscriptions that run in milliseconds.
//!
//! Every repository method (`subscriptions.rs`, `payments.rs`, …) is written once, over these
//! primitives: a consistent read ([`Query`], `get`), a conditional write ([`Write`]) and a
//! transaction of them. Conditions and updates are typed ([`Cond`], [`Set`]): DynamoDB gets them
//! rendered as expressions with placeholders, the in-memory table evaluates the same values, so
//! the two cannot drift apart by a hand-copied string. `shared/tests/moto/store.rs` runs its cases
//! against both.
//!
//! What only a real DynamoDB shows — the SDK's error shapes, transaction cancellation reasons, GSI
//! lag, streams, TTL, request counts, IAM actions — stays with moto and Dynoxide.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, StoreError, keys};

/// A condition on one item, as DynamoDB's condition expressions state it. A comparison with an
/// attribute the item lacks (or of another type) is false, except `<>`, which is true (DynamoDB's
/// rule).
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// The item exists (its partition key is there).
    Exists,
    /// The item does not exist.
    Absent,
    /// `attribute_exists(attr)`.
    Has(&'static str),
    /// `attribute_not_exists(attr) OR attribute_type(attr, NULL)`: never set, or set to null.
    Unset(&'static str),
    /// `attr <op> value`.
    Cmp(&'static str, Op, AttributeValue),
    /// `attr IN (values…)`.
    In(&'static str, Vec<AttributeValue>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
        }
    }
}

impl Cond {
    pub fn eq(attr: &'static str, value: AttributeValue) -> Cond {
        Cond::Cmp(attr, Op::Eq, value)
    }

    /// `attribute_not_exists(attr)`.
    pub fn missing(attr: &'static str) -> Cond {
        Cond::Not(Box::new(Cond::Has(attr)))
    }

    /// The item's `version` is `expected`.
    pub fn version(expected: u64) -> Cond {
        Cond::eq(keys::VERSION, num(expected))
    }

    pub fn and(self, other: Cond) -> Cond {
        match self {
            Cond::And(mut all) => {
                all.push(other);
                Cond::And(all)
            }
            first => Cond::And(vec![first, other]),
        }
    }

    pub fn or(self, other: Cond) -> Cond {
        match self {
            Cond::Or(mut any) => {
                any.push(other);
                Cond::Or(any)
            }
            first => Cond::Or(vec![first, other]),
        }
    }

    /// Whether the condition holds on `item` (`None`: no item there).
    pub fn holds(&self, item: Option<&Item>) -> bool {
        let attr = |name: &str| item.and_then(|i| i.get(name));
        match self {
            Cond::Exists => item.is_some(),
            Cond::Absent => item.is_none(),
            Cond::Has(a) => attr(a).is_some(),
            Cond::Unset(a) => matches!(attr(a), None | Some(AttributeValue::Null(_))),
            // `<>` holds on a missing attribute or another type (DynamoDB's rule); every other
            // comparison needs the attribute, of the same type.
            Cond::Cmp(a, Op::Ne, value) => attr(a).and_then(|v| compare(v, value)) != Some(Ordering::Equal),
            Cond::Cmp(a, op, value) => attr(a).and_then(|v| compare(v, value)).is_some_and(|o| op.holds(o)),
            Cond::In(a, values) => {
                attr(a).is_some_and(|v| values.iter().any(|x| compare(v, x) == Some(Ordering::Equal)))
            }
            Cond::And(all) => all.iter().all(|c| c.holds(item)),
            Cond::Or(any) => any.iter().any(|c| c.holds(item)),
            Cond::Not(c) => !c.holds(item),
        }
    }

    fn render(&self, p: &mut Placeholders) -> String {
        match self {
            Cond::Exists => format!("attribute_exists({})", p.name(keys::PK)),
            Cond::Absent => format!("attribute_not_exists({})", p.name(keys::PK)),
            Cond::Has(a) => format!("attribute_exists({})", p.name(a)),
            Cond::Unset(a) => {
                let name = p.name(a);
                format!("(attribute_not_exists({name}) OR attribute_type({name}, {}))", p.value(str_value("NULL")))
            }
            Cond::Cmp(a, op, v) => format!("{} {} {}", p.name(a), op.symbol(), p.value(v.clone())),
            Cond::In(a, values) => {
                let list: Vec<String> = values.iter().map(|v| p.value(v.clone())).collect();
                format!("{} IN ({})", p.name(a), list.join(", "))
            }
            Cond::And(all) => format!("({})", all.iter().map(|c| c.render(p)).collect::<Vec<_>>().join(" AND ")),
            Cond::Or(any) => format!("({})", any.iter().map(|c| c.render(p)).collect::<Vec<_>>().join(" OR ")),
            Cond::Not(c) => format!("(NOT {})", c.render(p)),
        }
    }
}

/// How DynamoDB orders two values of one type: numbers by value, strings by their bytes. Values of
/// different types do not compare.
fn compare(a: &AttributeValue, b: &AttributeValue) -> Option<Ordering> {
    match (a, b) {
        (AttributeValue::N(x), AttributeValue::N(y)) => decimal_cmp(x, y),
        (AttributeValue::S(x), AttributeValue::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (AttributeValue::Bool(x), AttributeValue::Bool(y)) => (x == y).then_some(Ordering::Equal),
        (AttributeValue::Null(_), AttributeValue::Null(_)) => Some(Ordering::Equal),
        _ => None,
    }
}

/// Orders two DynamoDB numbers. The table holds integers only (won, seconds, versions): parsed as
/// `i128`; anything else does not compare.
fn decimal_cmp(x: &str, y: &str) -> Option<Ordering> {
    Some(x.parse::<i128>().ok()?.cmp(&y.parse::<i128>().ok()?))
}

/// One change of an update: `SET attr = value`, `SET attr = attr + delta`, `REMOVE attr`.
#[derive(Clone, Debug, PartialEq)]
pub enum Set {
    Value(&'static str, AttributeValue),
    Add(&'static str, i64),
    Remove(&'static str),
}

impl Set {
    fn apply(&self, item: &mut Item) {
        match self {
            Set::Value(a, v) => {
                item.insert((*a).to_string(), v.clone());
            }
            Set::Add(a, delta) => {
                let current =
                    item.get(*a).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<i128>().ok()).unwrap_or(0);
                item.insert((*a).to_string(), AttributeValue::N((current + i128::from(*delta)).to_string()));
            }
            Set::Remove(a) => {
                item.remove(*a);
            }
        }
    }
}

fn render_update(sets: &[Set], p: &mut Placeholders) -> String {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for change in sets {
        match change {
            Set::Value(a, v) => set.push(format!("{} = {}", p.name(a), p.value(v.clone()))),
            Set::Add(a, delta) => {
                let name = p.name(a);
                let (op, magnitude) =
                    if *delta < 0 { ("-", delta.unsigned_abs()) } else { ("+", delta.unsigned_abs()) };
                set.push(format!("{name} = {name} {op} {}", p.value(num(magnitude))));
            }
            Set::Remove(a) => remove.push(p.name(a)),
        }
    }
    let mut out = Vec::new();
    if !set.is_empty() {
        out.push(format!("SET {}", set.join(", ")));
    }
    if !remove.is_empty() {
        out.push(format!("REMOVE {}", remove.join(", ")));
    }
    out.join(" ")
}

/// Placeholders of one request: `#n0…` for names, `:v0…` for values.
#[derive(Default)]
struct Placeholders {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Placeholders {
    fn name(&mut self, attr: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| a.as_str() == attr) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }
}

/// What a write does to its item.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Replaces (or creates) the whole item.
    Put(Item),
    Update(Vec<Set>),
    Delete,
    /// Writes nothing; the transaction depends on the condition.
    Check,
}

/// One conditional write, alone or in a transaction. `failure` is what a condition that does not
/// hold means to the caller (`AlreadyExists` for a create, `Conflict` for a lost race, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub pk: String,
    pub sk: String,
    pub action: Action,
    pub condition: Option<Cond>,
    pub failure: StoreError,
}

impl Write {
    /// Puts `item`; it must not exist yet.
    pub fn create(item: Item) -> Write {
        let (pk, sk) = key_of(&item);
        let failure = StoreError::AlreadyExists(format!("{pk}|{sk}"));
        Write { pk, sk, action: Action::Put(item), condition: Some(Cond::Absent), failure }
    }

    /// Writes `item` whatever is stored: only for what no state hangs on (a report a later run
    /// replaces).
    pub fn replace(item: Item) -> Write {
        let (pk, sk) = key_of(&item);
        let failure = StoreError::Conflict(format!("{pk}|{sk}"));
        Write { pk, sk, action: Action::Put(item), condition: None, failure }
    }

    /// Replaces `item` where `condition` holds.
    pub fn put_if(item: Item, condition: Cond) -> Write {
        let (pk, sk) = key_of(&item);
        let failure = StoreError::Conflict(format!("{pk}|{sk}"));
        Write { pk, sk, action: Action::Put(item), condition: Some(condition), failure }
    }

    pub fn update_if(pk: &str, sk: &str, sets: Vec<Set>, condition: Cond) -> Write {
        Write::keyed(pk, sk, Action::Update(sets), Some(condition))
    }

    pub fn delete_if(pk: &str, sk: &str, condition: Option<Cond>) -> Write {
        Write::keyed(pk, sk, Action::Delete, condition)
    }

    pub fn check(pk: &str, sk: &str, condition: Cond) -> Write {
        Write::keyed(pk, sk, Action::Check, Some(condition))
    }

    /// What the caller is told when the condition does not hold.
    pub fn failing_with(self, failure: StoreError) -> Write {
        Write { failure, ..self }
    }

    fn keyed(pk: &str, sk: &str, action: Action, condition: Option<Cond>) -> Write {
        let failure = StoreError::Conflict(format!("{pk}|{sk}"));
        Write { pk: pk.to_string(), sk: sk.to_string(), action, condition, failure }
    }

    /// The DynamoDB rendering: condition and update expressions with their placeholders.
    fn expressions(&self) -> (Option<String>, Option<String>, Placeholders) {
        let mut p = Placeholders::default();
        let update = match &self.action {
            Action::Update(sets) => Some(render_update(sets, &mut p)),
            _ => None,
        };
        let condition = self.condition.as_ref().map(|c| c.render(&mut p));
        (condition, update, p)
    }
}

/// An item's (or an index entry's) `pk` and `sk`.
pub(crate) fn key_of(item: &Item) -> (String, String) {
    let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    (get(keys::PK), get(keys::SK))
}

/// The sort-key part of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Range {
    BeginsWith(String),
    AtMost(AttributeValue),
    AtLeast(AttributeValue),
    /// `BETWEEN low AND high`, both inclusive.
    Between(AttributeValue, AttributeValue),
}

impl Range {
    /// Whether a sort-key value is in the range, as DynamoDB's key condition decides.
    pub(crate) fn holds(&self, v: Option<&AttributeValue>) -> bool {
        let Some(v) = v else { return false };
        match self {
            Range::BeginsWith(prefix) => v.as_s().is_ok_and(|s| s.starts_with(prefix.as_str())),
            Range::AtMost(max) => compare(v, max).is_some_and(|o| o != Ordering::Greater),
            Range::AtLeast(min) => compare(v, min).is_some_and(|o| o != Ordering::Less),
            Range::Between(low, high) => {
                compare(v, low).is_some_and(|o| o != Ordering::Less)
                    && compare(v, high).is_some_and(|o| o != Ordering::Greater)
            }
        }
    }
}

/// One page of a query, on the table or a GSI, in sort-key order.
#[derive(Clone, Debug)]
pub struct Query {
    pub index: Option<&'static str>,
    pub partition: (&'static str, AttributeValue),
    pub range: Option<(&'static str, Range)>,
    pub limit: Option<i32>,
    pub start: Option<Item>,
    /// Highest sort key first (DynamoDB's `ScanIndexForward = false`).
    pub backward: bool,
    /// DynamoDB's `FilterExpression`: applied after `limit` items were read, so a page may hold
    /// fewer (even none) and still say where to go on.
    pub filter: Option<Cond>,
}

impl Query {
    /// Items of partition `pk` on the table.
    pub fn partition(pk: &str) -> Query {
        Query {
            index: None,
            partition: (keys::PK, str_value(pk)),
            range: None,
            limit: None,
            start: None,
            backward: false,
            filter: None,
        }
    }

    /// Items of the GSI `index` whose `attr` is `value`.
    pub fn index(index: &'static str, attr: &'static str, value: &str) -> Query {
        Query {
            index: Some(index),
            partition: (attr, str_value(value)),
            range: None,
            limit: None,
            start: None,
            backward: false,
            filter: None,
        }
    }

    pub fn range(self, attr: &'static str, range: Range) -> Query {
        Query { range: Some((attr, range)), ..self }
    }

    pub fn limit(self, limit: Option<i32>) -> Query {
        Query { limit, ..self }
    }

    pub fn start(self, start: Option<Item>) -> Query {
        Query { start, ..self }
    }

    /// Highest sort key first.
    pub fn backward(self) -> Query {
        Query { backward: true, ..self }
    }

    /// Only the items `filter` holds on (read, counted against `limit`, then dropped).
    pub fn filter(self, filter: Option<Cond>) -> Query {
        Query { filter, ..self }
    }
}

/// The two implementations of the table.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Dynamo(super::Table),
    Memory(Memory),
}

/// The in-memory table: items by (pk, sk), one lock for everything, so a transaction is atomic.
#[derive(Clone, Debug, Default)]
pub(crate) struct Memory {
    items: Arc<Mutex<BTreeMap<(String, String), Item>>>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Item>> {
        // A test that panicked while holding the lock leaves consistent data (writes are applied
        // only after every condition held): keep going.
        self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, pk: &str, sk: &str) -> Option<Item> {
        self.lock().get(&(pk.to_string(), sk.to_string())).cloned()
    }

    /// One page of `q`, in the order DynamoDB gives: by the table's or the index's sort key (an
    /// index holds only the items that carry its keys), pages continuing after `start` wherever it
    /// would sort.
    pub(crate) fn query(&self, q: &Query) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let limit = match q.limit {
            None => usize::MAX,
            Some(l) => usize::try_from(l).ok().filter(|l| *l > 0).ok_or_else(|| {
                StoreError::Unavailable(format!("ValidationException: Limit must be at least 1, got {l}"))
            })?,
        };
        let items = self.lock();
        let (part_attr, part_value) = &q.partition;
        let sort_attr = match q.index {
            None => keys::SK,
            Some(index) => index_sort_key(index)?,
        };
        let in_range = |i: &Item| q.range.as_ref().is_none_or(|(attr, range)| range.holds(i.get(*attr)));
        let order = |a: &Item, b: &Item| {
            let by_sort = match (a.get(sort_attr), b.get(sort_attr)) {
                (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
                _ => Ordering::Equal,
            };
            let forward = by_sort.then_with(|| key_of(a).cmp(&key_of(b)));
            if q.backward { forward.reverse() } else { forward }
        };
        let mut found: Vec<&Item> = items
            .values()
            .filter(|i| i.get(*part_attr).is_some_and(|v| compare(v, part_value) == Some(Ordering::Equal)))
            .filter(|i| i.contains_key(sort_attr) && in_range(i))
            .filter(|i| q.start.as_ref().is_none_or(|start| order(i, start) == Ordering::Greater))
            .collect();
        found.sort_by(|a, b| order(a, b));
        // Like DynamoDB, a page that reaches the limit says where to go on (the next page may be
        // empty).
        let next = (found.len() >= limit).then(|| {
            let last = found[limit - 1];
            [keys::PK, keys::SK, part_attr, sort_attr]
                .into_iter()
                .filter_map(|attr| last.get(attr).map(|v| (attr.to_string(), v.clone())))
                .collect::<Item>()
        });
        let kept = found.into_iter().take(limit).filter(|i| q.filter.as_ref().is_none_or(|f| f.holds(Some(i))));
        Ok((kept.cloned().collect(), next))
    }

    /// Applies `writes` all or none: every condition is checked first, on the items as they are.
    /// Returns what each write's item was before.
    pub(crate) fn apply(&self, writes: &[Write]) -> Result<Vec<Option<Item>>, StoreError> {
        let mut items = self.lock();
        let invalid = |why: String| StoreError::Unavailable(format!("ValidationException: {why}"));
        let mut keys_written = std::collections::BTreeSet::new();
        for w in writes {
            if !keys_written.insert((w.pk.as_str(), w.sk.as_str())) {
                return Err(invalid(format!("two operations on {}|{} in one transaction", w.pk, w.sk)));
            }
            let current = items.get(&(w.pk.clone(), w.sk.clone()));
            if w.condition.as_ref().is_some_and(|c| !c.holds(current)) {
                return Err(w.failure.clone());
            }
            // `SET a = a + :n` needs `a` there and a number.
            if let Action::Update(sets) = &w.action {
                for set in sets {
                    if let Set::Add(a, _) = set {
                        if current.and_then(|i| i.get(*a)).is_none_or(|v| v.as_n().is_err()) {
                            return Err(invalid(format!("{a} of {}|{} is not a number to add to", w.pk, w.sk)));
                        }
                    }
                }
            }
        }
        let mut before = Vec::with_capacity(writes.len());
        for w in writes {
            let key = (w.pk.clone(), w.sk.clone());
            before.push(items.get(&key).cloned());
            match &w.action {
                Action::Put(item) => {
                    items.insert(key, item.clone());
                }
                Action::Update(sets) => {
                    let item = items.entry(key).or_insert_with(|| {
                        Item::from([(keys::PK.to_string(), str_value(&w.pk)), (keys::SK.to_string(), str_value(&w.sk))])
                    });
                    for set in sets {
                        set.apply(item);
                    }
                }
                Action::Delete => {
                    items.remove(&key);
                }
                Action::Check => {}
            }
        }
        Ok(before)
    }

    /// Every item, for tests that look at the whole table.
    pub(crate) fn all(&self) -> Vec<Item> {
        self.lock().values().cloned().collect()
    }
}

/// The sort key of a GSI, as `template.yaml` defines it (the moto-backed tests provision from it
/// and hold `keys` to it).
fn index_sort_key(index: &str) -> Result<&'static str, StoreError> {
    match index {
        keys::LOOKUP_INDEX => Ok(keys::LOOKUP_SK),
        keys::DUE_INDEX => Ok(keys::NEXT_ATTEMPT_AT),
        keys::PAID_INDEX => Ok(keys::PAID_SK),
        other => Err(StoreError::Unavailable(format!("ValidationException: no index {other}"))),
    }
}

/// The DynamoDB side of the primitives.
pub(crate) mod dynamo {
    use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, ReturnValue, TransactWriteItem, Update};

    use super::super::{Table, unavailable};
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_string())
    }

    fn some<T>(m: HashMap<String, T>) -> Option<HashMap<String, T>> {
        Some(m).filter(|m| !m.is_empty())
    }

    pub(crate) async fn get(table: &Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = table
            .client
            .get_item()
            .table_name(&table.name)
            .key(keys::PK, s(pk))
            .key(keys::SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    pub(crate) async fn query(table: &Table, q: &Query) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut p = Placeholders::default();
        let (attr, value) = &q.partition;
        let mut expression = format!("{} = {}", p.name(attr), p.value(value.clone()));
        match &q.range {
            Some((attr, Range::BeginsWith(prefix))) => {
                expression.push_str(&format!(" AND begins_with({}, {})", p.name(attr), p.value(s(prefix))));
            }
            Some((attr, Range::AtMost(max))) => {
                expression.push_str(&format!(" AND {} <= {}", p.name(attr), p.value(max.clone())));
            }
            Some((attr, Range::AtLeast(min))) => {
                expression.push_str(&format!(" AND {} >= {}", p.name(attr), p.value(min.clone())));
            }
            Some((attr, Range::Between(low, high))) => {
                let (name, low, high) = (p.name(attr), p.value(low.clone()), p.value(high.clone()));
                expression.push_str(&format!(" AND {name} BETWEEN {low} AND {high}"));
            }
            None => {}
        }
        let filter = q.filter.as_ref().map(|f| f.render(&mut p));
        let out = table
            .client
            .query()
            .table_name(&table.name)
            .set_index_name(q.index.map(str::to_string))
            .key_condition_expression(expression)
            .set_filter_expression(filter)
            .set_expression_attribute_names(some(p.names))
            .set_expression_attribute_values(some(p.values))
            // A GSI cannot be read consistently; the table always is.
            .set_consistent_read(q.index.is_none().then_some(true))
            .set_limit(q.limit)
            .set_scan_index_forward(q.backward.then_some(false))
            .set_exclusive_start_key(q.start.clone())
            .send()
            .await
            .map_err(unavailable)?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// The setters every conditional request of a [`Write`] shares: the SDK's builders all have
    /// them, but no common trait.
    macro_rules! conditioned {
        ($builder:expr, $table:expr, $condition:expr, $p:expr) => {
            $builder
                .table_name(&$table.name)
                .set_condition_expression($condition)
                .set_expression_attribute_names(some($p.names))
                .set_expression_attribute_values(some($p.values))
        };
    }

    /// [`conditioned!`] on the write's key.
    macro_rules! keyed {
        ($builder:expr, $table:expr, $w:expr, $condition:expr, $p:expr) => {
            conditioned!($builder, $table, $condition, $p).key(keys::PK, s(&$w.pk)).key(keys::SK, s(&$w.sk))
        };
    }

    /// One write alone, with the single-item API its action calls for (what IAM authorizes and
    /// the request counter counts). Returns the item as it was when `return_old`.
    pub(crate) async fn write(table: &Table, w: &Write, return_old: bool) -> Result<Option<Item>, StoreError> {
        let (condition, update, p) = w.expressions();
        let old = return_old.then_some(ReturnValue::AllOld);
        let c = &table.client;
        match &w.action {
            Action::Put(item) => conditioned!(c.put_item(), table, condition, p)
                .set_item(Some(item.clone()))
                .set_return_values(old)
                .send()
                .await
                .map(|o| o.attributes)
                .map_err(|e| super::super::conditional(e, w.failure.clone())),
            Action::Update(_) => keyed!(c.update_item(), table, w, condition, p)
                .set_update_expression(update)
                .set_return_values(old)
                .send()
                .await
                .map(|o| o.attributes)
                .map_err(|e| super::super::conditional(e, w.failure.clone())),
            Action::Delete => keyed!(c.delete_item(), table, w, condition, p)
                .set_return_values(old)
                .send()
                .await
                .map(|o| o.attributes)
                .map_err(|e| super::super::conditional(e, w.failure.clone())),
            Action::Check => {
                Err(StoreError::Conflict(format!("{}|{}: a check is only part of a transaction", w.pk, w.sk)))
            }
        }
    }

    /// The transaction item of a write.
    pub(crate) fn transact_item(table: &Table, w: &Write) -> TransactWriteItem {
        let (condition, update, p) = w.expressions();
        let built = "table, key and condition are set";
        let item = TransactWriteItem::builder();
        match &w.action {
            Action::Put(put) => item.put(
                conditioned!(Put::builder(), table, condition, p).set_item(Some(put.clone())).build().expect(built),
            ),
            Action::Update(_) => item.update(
                keyed!(Update::builder(), table, w, condition, p).set_update_expression(update).build().expect(built),
            ),
            Action::Delete => item.delete(keyed!(Delete::builder(), table, w, condition, p).build().expect(built)),
            Action::Check => {
                item.condition_check(keyed!(ConditionCheck::builder(), table, w, condition, p).build().expect(built))
            }
        }
        .build()
    }
}

/// A DynamoDB number.
pub fn num(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A DynamoDB string.
pub fn str_value(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn conditions_render_with_placeholders_and_hold_as_dynamodb_says() {
        let c = Cond::version(3).and(Cond::Unset("lease_owner").or(Cond::Cmp("lease_until", Op::Le, num(100))));
        let mut p = Placeholders::default();
        assert_eq!(
            c.render(&mut p),
            "(#n0 = :v0 AND ((attribute_not_exists(#n1) OR attribute_type(#n1, :v1)) OR #n2 <= :v2))"
        );
        assert_eq!(p.names["#n2"], "lease_until");
        let held = item(&[("version", num(3)), ("lease_owner", str_value("w")), ("lease_until", num(99))]);
        assert!(c.holds(Some(&held)));
        let live = item(&[("version", num(3)), ("lease_owner", str_value("w")), ("lease_until", num(101))]);
        assert!(!c.holds(Some(&live)));
        assert!(!c.holds(None), "a comparison on a missing item is false");
        assert!(Cond::Absent.holds(None) && !Cond::Exists.holds(None));
        // A comparison with a missing attribute is false, except `<>`.
        assert!(Cond::Cmp("status", Op::Ne, str_value("x")).holds(Some(&item(&[]))));
        assert!(!Cond::Cmp("status", Op::Eq, str_value("x")).holds(Some(&item(&[]))));
        assert!(!Cond::Cmp("n", Op::Le, num(1)).holds(Some(&item(&[]))));
        // Numbers compare by value, not as text.
        assert!(Cond::Cmp("n", Op::Lt, num(10)).holds(Some(&item(&[("n", num(9))]))));
        assert!(Cond::In("s", vec![str_value("a"), str_value("b")]).holds(Some(&item(&[("s", str_value("b"))]))));
    }

    #[test]
    fn updates_render_and_apply_the_same_change() {
        let sets = vec![Set::Add("refund_pending", -500), Set::Add("refunded", 500), Set::Remove("lookup_pk")];
        let mut p = Placeholders::default();
        assert_eq!(render_update(&sets, &mut p), "SET #n0 = #n0 - :v0, #n1 = #n1 + :v1 REMOVE #n2");
        let mut i = item(&[("refund_pending", num(500)), ("refunded", num(0)), ("lookup_pk", str_value("x"))]);
        for s in &sets {
            s.apply(&mut i);
        }
        assert_eq!(i, item(&[("refund_pending", num(0)), ("refunded", num(500))]));
    }

    #[test]
    fn a_memory_transaction_applies_all_or_nothing_and_names_the_failure() {
        let m = Memory::default();
        let a = item(&[(keys::PK, str_value("A")), (keys::SK, str_value("1")), ("version", num(1))]);
        m.apply(&[Write::create(a.clone())]).unwrap();
        let b = item(&[(keys::PK, str_value("B")), (keys::SK, str_value("1"))]);
        let err = m.apply(&[Write::create(b.clone()), Write::create(a.clone())]).unwrap_err();
        assert_eq!(err, StoreError::AlreadyExists("A|1".into()));
        assert!(m.get("B", "1").is_none(), "nothing of a failed transaction is written");
        let stale = Write::put_if(a.clone(), Cond::version(2));
        assert_eq!(m.apply(&[stale]).unwrap_err(), StoreError::Conflict("A|1".into()));
        // What DynamoDB refuses as invalid, memory refuses too (and writes nothing).
        let twice = [
            Write::check("A", "1", Cond::Exists),
            Write::update_if("A", "1", vec![Set::Add("version", 1)], Cond::Exists),
        ];
        assert!(matches!(m.apply(&twice), Err(StoreError::Unavailable(_))), "two operations on one item");
        let add_to_nothing = Write::update_if("A", "1", vec![Set::Add("refunded", 5)], Cond::Exists);
        assert!(matches!(m.apply(&[add_to_nothing]), Err(StoreError::Unavailable(_))), "adding to a missing attribute");
        assert_eq!(m.get("A", "1").unwrap(), a, "untouched");
    }

    #[test]
    fn memory_queries_page_in_sort_key_order() {
        let m = Memory::default();
        for (sk, due) in [("a", 30), ("b", 10), ("c", 20), ("d", 99)] {
            let i = item(&[
                (keys::PK, str_value(&format!("SUB#{sk}"))),
                (keys::SK, str_value("SUB")),
                (keys::DUE_SHARD, str_value("due#00")),
                (keys::NEXT_ATTEMPT_AT, num(due)),
            ]);
            m.apply(&[Write::create(i)]).unwrap();
        }
        let q = Query::index(keys::DUE_INDEX, keys::DUE_SHARD, "due#00")
            .range(keys::NEXT_ATTEMPT_AT, Range::AtMost(num(30)))
            .limit(Some(2));
        let (first, next) = m.query(&q).unwrap();
        let pks = |items: &[Item]| items.iter().map(|i| key_of(i).0).collect::<Vec<_>>();
        assert_eq!(pks(&first), ["SUB#b", "SUB#c"]);
        let (second, last) = m.query(&q.clone().start(next)).unwrap();
        assert_eq!((pks(&second), last), (vec!["SUB#a".to_string()], None));
        // A start key that is no longer there (a deleted item, a cursor from elsewhere) goes on
        // from where it would sort.
        let gone =
            item(&[(keys::PK, str_value("SUB#bb")), (keys::SK, str_value("SUB")), (keys::NEXT_ATTEMPT_AT, num(15))]);
        assert_eq!(pks(&m.query(&q.clone().start(Some(gone))).unwrap().0), ["SUB#c", "SUB#a"]);
        assert!(m.query(&q.clone().limit(Some(0))).is_err(), "DynamoDB refuses a limit of 0");
    }

    #[test]
    fn memory_between_is_inclusive_and_a_filter_applies_after_the_limit() {
        let m = Memory::default();
        for (id, at, customer) in [("a", "1", "x"), ("b", "2", "y"), ("c", "3", "x"), ("d", "4", "x")] {
            let i = item(&[
                (keys::PK, str_value(&format!("PAY#{id}"))),
                (keys::SK, str_value("PAY")),
                (keys::PAID_PK, str_value("p")),
                (keys::PAID_SK, str_value(at)),
                ("customer_id", str_value(customer)),
            ]);
            m.apply(&[Write::create(i)]).unwrap();
        }
        let pks = |items: &[Item]| items.iter().map(|i| key_of(i).0).collect::<Vec<_>>();
        let q = Query::index(keys::PAID_INDEX, keys::PAID_PK, "p")
            .range(keys::PAID_SK, Range::Between(str_value("2"), str_value("4")))
            .filter(Some(Cond::eq("customer_id", str_value("x"))))
            .limit(Some(1));
        // The first item read (b) is filtered out: an empty page that still says where to go on,
        // as DynamoDB's Limit counts items read, not items returned.
        let (first, next) = m.query(&q).unwrap();
        assert!(first.is_empty() && next.is_some());
        let (second, next) = m.query(&q.clone().start(next)).unwrap();
        assert_eq!(pks(&second), ["PAY#c"]);
        let (third, next) = m.query(&q.clone().start(next)).unwrap();
        assert_eq!(pks(&third), ["PAY#d"]);
        assert_eq!(m.query(&q.clone().start(next)).unwrap(), (vec![], None));
        let mut p = Placeholders::default();
        assert_eq!(q.filter.unwrap().render(&mut p), "#n0 = :v0");
    }
}
