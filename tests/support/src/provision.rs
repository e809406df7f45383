//! Creates the template's table (with its GSIs, stream and TTL), buses and queues in moto under
//! names unique to the caller, so tests sharing one moto server never see each other's data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};

use crate::KitError;
use crate::template::{KeyElement, TableDef, Template};

/// What was created, by real name.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub table: String,
    pub table_def: TableDef,
    /// The table's stream ARN (the template enables a stream).
    pub stream_arn: Option<String>,
    /// Logical id → bus name.
    pub buses: BTreeMap<String, String>,
    /// Logical id → queue URL.
    pub queues: BTreeMap<String, String>,
    /// Logical id → KMS key ARN.
    pub kms_keys: BTreeMap<String, String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name prefix unique to this process and call: `pc<pid>x<n><random>`. The pid alone is not
/// enough: nextest runs each test in its own process, and a long run reuses pids while an earlier
/// test's tables still live in the shared moto server (CI once failed with "Table already exists").
pub fn unique_prefix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    let salt: String = bytes.iter().map(|b| ALPHABET[usize::from(b & 31)] as char).collect();
    format!("pc{}x{}{salt}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn perr(what: &str, e: impl std::fmt::Display) -> KitError {
    KitError::Provision { what: what.to_string(), message: e.to_string() }
}

fn key(k: &KeyElement) -> Result<KeySchemaElement, KitError> {
    KeySchemaElement::builder()
        .attribute_name(&k.attribute)
        .key_type(KeyType::from(k.key_type.as_str()))
        .build()
        .map_err(|e| perr("key schema", e))
}

/// Creates the template's table (keys, GSIs, stream, TTL) as `{prefix}-table`; returns its name,
/// definition and stream ARN. Works against any DynamoDB-compatible endpoint.
pub async fn provision_table(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<(String, TableDef, Option<String>), KitError> {
    let def = template.table().map_err(|e| perr("table definition", e))?;
    provision_table_from(sdk, def, prefix).await
}

/// Creates a table from `def` as `{prefix}-table` (benchmarks drop the stream from the template's
/// definition where nothing reads it).
pub async fn provision_table_from(
    sdk: &aws_config::SdkConfig,
    def: TableDef,
    prefix: &str,
) -> Result<(String, TableDef, Option<String>), KitError> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let table = format!("{prefix}-table");

    let mut create = ddb.create_table().table_name(&table).billing_mode(BillingMode::PayPerRequest);
    for (name, ty) in &def.attribute_definitions {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(ty.as_str()))
                .build()
                .map_err(|e| perr("attribute definition", e))?,
        );
    }
    for k in &def.key_schema {
        create = create.key_schema(key(k)?);
    }
    for g in &def.gsis {
        let mut projection = Projection::builder().projection_type(ProjectionType::from(g.projection_type.as_str()));
        for attr in &g.non_key_attributes {
            projection = projection.non_key_attributes(attr);
        }
        let mut gsi = GlobalSecondaryIndex::builder().index_name(&g.name).projection(projection.build());
        for k in &g.key_schema {
            gsi = gsi.key_schema(key(k)?);
        }
        create = create.global_secondary_indexes(gsi.build().map_err(|e| perr("GSI", e))?);
    }
    if let Some(view) = &def.stream_view_type {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view.as_str()))
                .build()
                .map_err(|e| perr("stream", e))?,
        );
    }
    let created =
        create.send().await.map_err(|e| perr("CreateTable", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    let stream_arn = created.table_description().and_then(|d| d.latest_stream_arn()).map(str::to_string);

    if let Some(attr) = &def.ttl_attribute {
        ddb.update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(attr)
                    .build()
                    .map_err(|e| perr("TTL", e))?,
            )
            .send()
            .await
            .map_err(|e| perr("UpdateTimeToLive", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    }

    Ok((table, def, stream_arn))
}

/// Creates everything the template defines for storage and messaging, prefixed with `prefix`.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<Provisioned, KitError> {
    let (table, def, stream_arn) = provision_table(sdk, template, prefix).await?;
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let mut buses = BTreeMap::new();
    for logical in template.event_buses()? {
        let name = format!("{prefix}-{logical}");
        events
            .create_event_bus()
            .name(&name)
            .send()
            .await
            .map_err(|e| perr("CreateEventBus", aws_sdk_eventbridge::error::DisplayErrorContext(e)))?;
        buses.insert(logical, name);
    }

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut queues = BTreeMap::new();
    for logical in template.queues()? {
        let out = sqs
            .create_queue()
            .queue_name(format!("{prefix}-{logical}"))
            .send()
            .await
            .map_err(|e| perr("CreateQueue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        queues.insert(logical, out.queue_url().unwrap_or_default().to_string());
    }

    provision_rules(sdk, template, prefix, &buses, &queues).await?;
    let kms_keys = provision_kms_keys(sdk, template, prefix).await?;
    Ok(Provisioned { table, table_def: def, stream_arn, buses, queues, kms_keys })
}

/// Creates the template's KMS keys (symmetric, AES-256-GCM inside KMS, as `AWS::KMS::Key`'s
/// default): logical id → key ARN.
pub async fn provision_kms_keys(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<BTreeMap<String, String>, KitError> {
    let kms = aws_sdk_kms::Client::new(sdk);
    let mut keys = BTreeMap::new();
    for logical in template.kms_keys()? {
        let created = kms
            .create_key()
            .description(format!("{prefix}-{logical}"))
            .send()
            .await
            .map_err(|e| perr("CreateKey", aws_sdk_kms::error::DisplayErrorContext(e)))?;
        let arn = created.key_metadata().and_then(|m| m.arn()).unwrap_or_default().to_string();
        keys.insert(logical, arn);
    }
    Ok(keys)
}

/// Creates the template's rules on their buses with their queue targets (moto's EventBridge
/// sends matching events to SQS targets, as EventBridge does).
async fn provision_rules(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    prefix: &str,
    buses: &BTreeMap<String, String>,
    queues: &BTreeMap<String, String>,
) -> Result<(), KitError> {
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    for rule in template.event_rules()? {
        let bus =
            buses.get(&rule.bus).ok_or_else(|| perr("PutRule", format!("{}: no bus {}", rule.logical_id, rule.bus)))?;
        let name = format!("{prefix}-{}", rule.logical_id);
        events
            .put_rule()
            .name(&name)
            .event_bus_name(bus)
            .event_pattern(&rule.pattern)
            .send()
            .await
            .map_err(|e| perr("PutRule", aws_sdk_eventbridge::error::DisplayErrorContext(e)))?;
        let mut targets = Vec::new();
        for (i, queue) in rule.queues.iter().enumerate() {
            let url = queues.get(queue).ok_or_else(|| perr("PutTargets", format!("no queue {queue}")))?;
            let attrs = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| perr("GetQueueAttributes", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            let arn = attrs
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
                .cloned()
                .unwrap_or_default();
            let target = aws_sdk_eventbridge::types::Target::builder()
                .id(format!("t{i}"))
                .arn(arn)
                .build()
                .map_err(|e| perr("PutTargets", e))?;
            targets.push(target);
        }
        events
            .put_targets()
            .rule(&name)
            .event_bus_name(bus)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(|e| perr("PutTargets", aws_sdk_eventbridge::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}
