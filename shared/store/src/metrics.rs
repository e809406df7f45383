//! Counts the DynamoDB requests a [`Store`](super::Store) sends (retries included) and the items
//! they write, per operation, through an SDK interceptor. Benchmarks read it to report requests
//! and writes per renewal, per webhook and per refund; nothing in the request path depends on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents, SharedInterceptor};
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// Requests and written items, by operation name (`PutItem`, `TransactWriteItems`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: BTreeMap<String, u64>,
    pub written_items: u64,
    /// Write capacity units by DynamoDB's rules: per item, 1 per KB (rounded up) — the size of a
    /// Put's item; an Update, Delete or ConditionCheck counts as 1 KB (the item's size is not in
    /// the request; benchmarks check that such items stay under 1 KB) — doubled inside
    /// TransactWriteItems.
    pub write_units: u64,
    /// Time spent on the wire: from a request's transmission to its response's arrival, summed
    /// over requests (benchmarks subtract it from a handler's time to get the handler's own cost).
    pub wire_nanos: u64,
}

impl Counts {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn requests_of(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    /// Read requests (GetItem, Query, Scan, BatchGetItem, TransactGetItems).
    pub fn reads(&self) -> u64 {
        ["GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"].iter().map(|op| self.requests_of(op)).sum()
    }

    /// The difference `self - earlier`, for measuring one operation.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let requests = self
            .requests
            .iter()
            .map(|(op, n)| (op.clone(), n - earlier.requests.get(op).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Counts {
            requests,
            written_items: self.written_items - earlier.written_items,
            write_units: self.write_units - earlier.write_units,
            wire_nanos: self.wire_nanos - earlier.wire_nanos,
        }
    }
}

/// An item's size as DynamoDB counts it for capacity: attribute names plus values (strings in
/// UTF-8 bytes, numbers about one byte per two digits plus one, maps and lists 3 bytes plus one per
/// element plus their contents).
pub fn item_size(item: &std::collections::HashMap<String, AttributeValue>) -> u64 {
    item.iter().map(|(name, v)| name.len() as u64 + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> u64 {
    let number = |n: &str| (n.trim_start_matches('-').len() as u64).div_ceil(2) + 1;
    match v {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() as u64 + value_size(v)).sum::<u64>(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<u64>(),
        _ => 0,
    }
}

#[derive(Debug, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<Counts>>,
}

impl RequestCounter {
    pub fn snapshot(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub(crate) fn interceptor(&self) -> SharedInterceptor {
        SharedInterceptor::new(Counting { counts: self.counts.clone() })
    }
}

#[derive(Debug)]
struct Counting {
    counts: Arc<Mutex<Counts>>,
}

/// When the current attempt was handed to the HTTP client.
#[derive(Clone, Debug)]
struct SentAt(std::time::Instant);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_else(|| "unknown".into())
}

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "paycycle-request-counter"
    }

    fn read_before_execution(
        &self,
        ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = ctx.input();
        let units = |item: Option<&std::collections::HashMap<String, AttributeValue>>| {
            item.map_or(1, |i| item_size(i).div_ceil(1024).max(1))
        };
        let (written, write_units) = if let Some(tx) = input.downcast_ref::<TransactWriteItemsInput>() {
            let units: u64 = tx.transact_items().iter().map(|t| 2 * units(t.put().map(|p| p.item()))).sum();
            (tx.transact_items().len() as u64, units)
        } else if let Some(batch) = input.downcast_ref::<BatchWriteItemInput>() {
            let requests = || batch.request_items().into_iter().flat_map(|m| m.values().flatten());
            (requests().count() as u64, requests().map(|r| units(r.put_request().map(|p| p.item()))).sum())
        } else if let Some(put) = input.downcast_ref::<PutItemInput>() {
            (1, units(put.item()))
        } else if input.downcast_ref::<UpdateItemInput>().is_some() || input.downcast_ref::<DeleteItemInput>().is_some()
        {
            (1, 1)
        } else {
            (0, 0)
        };
        if let Ok(mut c) = self.counts.lock() {
            c.written_items += written;
            c.write_units += write_units;
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = operation(cfg);
        if let Ok(mut c) = self.counts.lock() {
            *c.requests.entry(op).or_default() += 1;
        }
        cfg.interceptor_state().store_put(SentAt(std::time::Instant::now()));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(SentAt(at)) = cfg.load::<SentAt>() {
            let nanos = at.elapsed().as_nanos() as u64;
            if let Ok(mut c) = self.counts.lock() {
                c.wire_nanos += nanos;
            }
        }
        Ok(())
    }
}
