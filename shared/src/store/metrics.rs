//! Counts the DynamoDB requests a [`Store`](super::Store) sends (retries included) and the items
//! they write, per operation, through an SDK interceptor. Benchmarks read it to report requests
//! and writes per renewal, per webhook and per refund; nothing in the request path depends on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents, SharedInterceptor};
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Requests and written items, by operation name (`PutItem`, `TransactWriteItems`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: BTreeMap<String, u64>,
    pub written_items: u64,
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
        Counts { requests, written_items: self.written_items - earlier.written_items }
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
        let written = if let Some(tx) = input.downcast_ref::<TransactWriteItemsInput>() {
            tx.transact_items().len() as u64
        } else if let Some(batch) = input.downcast_ref::<BatchWriteItemInput>() {
            batch.request_items().map(|m| m.values().map(|v| v.len() as u64).sum()).unwrap_or(0)
        } else if input.downcast_ref::<PutItemInput>().is_some()
            || input.downcast_ref::<UpdateItemInput>().is_some()
            || input.downcast_ref::<DeleteItemInput>().is_some()
        {
            1
        } else {
            0
        };
        if let Ok(mut c) = self.counts.lock() {
            c.written_items += written;
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
        Ok(())
    }
}
