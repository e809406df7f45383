//! The AWS SDK configuration, built once per cold start and shared by every client.
//!
//! `aws-config` honours `AWS_ENDPOINT_URL` (and per-service variants), which is how the local stack
//! and the tests point the real SDK at moto on 127.0.0.1. Nothing here picks an endpoint itself.

pub use aws_config::SdkConfig;

/// Loads region, credentials and endpoint overrides from the standard chain, with one HTTP client
/// for every AWS client built from it: the SDK's own (hyper, rustls over aws-lc-rs) trusting
/// paycycle-tls's compiled-in roots instead of reading the file system's (see that crate for why).
pub async fn load() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client()).load().await
}

/// The SDK's HTTPS client with paycycle's trusted roots and no native ones.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust = paycycle_tls::root_pems()
        .fold(TrustStore::empty().with_native_roots(false), |t, pem| t.with_pem_certificate(pem));
    let context =
        TlsContext::builder().with_trust_store(trust).build().expect("a trust store of certificates only builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

/// Records which AWS calls a function makes, as IAM authorizes them (action + resource), through
/// an SDK interceptor on each client. Only when `PAYCYCLE_RECORD_AWS_CALLS` is set (the IAM test
/// sets it): the test compares what each function did with its policy in `template.yaml`, since
/// moto enforces no IAM. Nothing in the request path reads it.
pub mod calls {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use aws_sdk_dynamodb::operation::{
        batch_get_item::BatchGetItemInput, batch_write_item::BatchWriteItemInput, delete_item::DeleteItemInput,
        get_item::GetItemInput, put_item::PutItemInput, query::QueryInput, scan::ScanInput,
        transact_get_items::TransactGetItemsInput, transact_write_items::TransactWriteItemsInput,
        update_item::UpdateItemInput,
    };
    use aws_sdk_eventbridge::operation::put_events::PutEventsInput;
    use aws_sdk_kms::operation::decrypt::DecryptInput;
    use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyInput;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueInput;
    use aws_sdk_sqs::operation::send_message::SendMessageInput;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
    use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
    use aws_smithy_runtime_api::client::orchestrator::Metadata;
    use aws_smithy_types::config_bag::ConfigBag;

    /// The environment variable that turns recording on.
    pub const ENV: &str = "PAYCYCLE_RECORD_AWS_CALLS";

    /// What a call names, as IAM resources do.
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum AwsResource {
        Table(String),
        Index {
            table: String,
            index: String,
        },
        Bus(String),
        Secret(String),
        /// An SQS queue, by URL.
        Queue(String),
        /// A KMS key as the call named it, with the encryption context's `purpose` (IAM's
        /// `kms:EncryptionContext:purpose` condition key).
        KmsKey {
            key: String,
            purpose: Option<String>,
        },
        /// A call whose resource this recorder does not read (it fails the IAM test loudly).
        Unknown(String),
    }

    /// One call as IAM authorizes it: `dynamodb:Query` on `table/index/lookup`, … A
    /// TransactWriteItems is authorized item by item (`PutItem`, `UpdateItem`, `DeleteItem`,
    /// `ConditionCheckItem`), so it is recorded that way.
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct AwsCall {
        pub action: String,
        pub resource: AwsResource,
    }

    #[derive(Debug, Default)]
    pub struct CallLog {
        calls: Mutex<BTreeSet<AwsCall>>,
    }

    impl CallLog {
        /// A log if recording is on (`PAYCYCLE_RECORD_AWS_CALLS` set), else `None`.
        pub fn from_env() -> Option<Arc<CallLog>> {
            std::env::var_os(ENV).map(|_| Arc::new(CallLog::default()))
        }

        pub fn calls(&self) -> BTreeSet<AwsCall> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }

        pub fn interceptor(self: &Arc<Self>) -> SharedInterceptor {
            SharedInterceptor::new(Recording { log: self.clone() })
        }

        fn add(&self, calls: impl IntoIterator<Item = AwsCall>) {
            if let Ok(mut c) = self.calls.lock() {
                c.extend(calls);
            }
        }
    }

    #[derive(Debug)]
    struct Recording {
        log: Arc<CallLog>,
    }

    fn call(service: &str, action: &str, resource: AwsResource) -> AwsCall {
        AwsCall { action: format!("{service}:{action}"), resource }
    }

    fn table(name: Option<&str>) -> AwsResource {
        AwsResource::Table(name.unwrap_or_default().to_string())
    }

    fn on_table(name: Option<&str>, index: Option<&str>) -> AwsResource {
        match index {
            Some(index) => AwsResource::Index { table: name.unwrap_or_default().into(), index: index.into() },
            None => table(name),
        }
    }

    /// The IAM actions and resources of one DynamoDB request.
    fn dynamodb(input: &aws_smithy_runtime_api::client::interceptors::context::Input, op: &str) -> Vec<AwsCall> {
        let ddb = |action: &str, resource| call("dynamodb", action, resource);
        if let Some(tx) = input.downcast_ref::<TransactWriteItemsInput>() {
            return tx
                .transact_items()
                .iter()
                .filter_map(|t| {
                    if let Some(p) = t.put() {
                        Some(ddb("PutItem", table(Some(p.table_name()))))
                    } else if let Some(u) = t.update() {
                        Some(ddb("UpdateItem", table(Some(u.table_name()))))
                    } else if let Some(d) = t.delete() {
                        Some(ddb("DeleteItem", table(Some(d.table_name()))))
                    } else {
                        t.condition_check().map(|c| ddb("ConditionCheckItem", table(Some(c.table_name()))))
                    }
                })
                .collect();
        }
        if let Some(tx) = input.downcast_ref::<TransactGetItemsInput>() {
            return tx
                .transact_items()
                .iter()
                .filter_map(|t| t.get().map(|g| ddb("GetItem", table(Some(g.table_name())))))
                .collect();
        }
        if let Some(b) = input.downcast_ref::<BatchWriteItemInput>() {
            return b.request_items().into_iter().flat_map(|m| m.keys()).map(|t| ddb(op, table(Some(t)))).collect();
        }
        if let Some(b) = input.downcast_ref::<BatchGetItemInput>() {
            return b.request_items().into_iter().flat_map(|m| m.keys()).map(|t| ddb(op, table(Some(t)))).collect();
        }
        let resource = if let Some(q) = input.downcast_ref::<QueryInput>() {
            on_table(q.table_name(), q.index_name())
        } else if let Some(q) = input.downcast_ref::<ScanInput>() {
            on_table(q.table_name(), q.index_name())
        } else if let Some(i) = input.downcast_ref::<GetItemInput>() {
            table(i.table_name())
        } else if let Some(i) = input.downcast_ref::<PutItemInput>() {
            table(i.table_name())
        } else if let Some(i) = input.downcast_ref::<UpdateItemInput>() {
            table(i.table_name())
        } else if let Some(i) = input.downcast_ref::<DeleteItemInput>() {
            table(i.table_name())
        } else {
            AwsResource::Unknown(op.to_string())
        };
        vec![ddb(op, resource)]
    }

    fn kms_key(key: Option<&str>, context: Option<&std::collections::HashMap<String, String>>) -> AwsResource {
        let purpose = context.and_then(|c| c.get("purpose")).cloned();
        AwsResource::KmsKey { key: key.unwrap_or_default().to_string(), purpose }
    }

    impl Intercept for Recording {
        fn name(&self) -> &'static str {
            "paycycle-aws-call-recorder"
        }

        // Before serialization the operation's metadata is in the config bag and its input is
        // still typed.
        fn read_before_serialization(
            &self,
            ctx: &BeforeSerializationInterceptorContextRef<'_>,
            _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let Some(meta) = cfg.load::<Metadata>() else { return Ok(()) };
            let (service, op) = (meta.service().to_ascii_lowercase(), meta.name().to_string());
            let input = ctx.input();
            let calls = if service.contains("dynamodb") {
                dynamodb(input, &op)
            } else if let Some(p) = input.downcast_ref::<PutEventsInput>() {
                p.entries()
                    .iter()
                    .map(|e| call("events", &op, AwsResource::Bus(e.event_bus_name().unwrap_or("default").into())))
                    .collect()
            } else if let Some(m) = input.downcast_ref::<SendMessageBatchInput>() {
                // IAM authorizes SendMessageBatch as sqs:SendMessage.
                vec![call("sqs", "SendMessage", AwsResource::Queue(m.queue_url().unwrap_or_default().into()))]
            } else if let Some(m) = input.downcast_ref::<SendMessageInput>() {
                vec![call("sqs", "SendMessage", AwsResource::Queue(m.queue_url().unwrap_or_default().into()))]
            } else if let Some(k) = input.downcast_ref::<GenerateDataKeyInput>() {
                vec![call("kms", &op, kms_key(k.key_id(), k.encryption_context()))]
            } else if let Some(k) = input.downcast_ref::<DecryptInput>() {
                vec![call("kms", &op, kms_key(k.key_id(), k.encryption_context()))]
            } else if let Some(s) = input.downcast_ref::<GetSecretValueInput>() {
                vec![call("secretsmanager", &op, AwsResource::Secret(s.secret_id().unwrap_or_default().into()))]
            } else {
                vec![call(&service, &op, AwsResource::Unknown(op.clone()))]
            };
            self.log.add(calls);
            Ok(())
        }
    }
}
