//! The AWS SDK configuration, built once per cold start and shared by every client.
//!
//! `aws-config` honours `AWS_ENDPOINT_URL` (and per-service variants), which is how the local stack
//! and the tests point the real SDK at moto on 127.0.0.1. Nothing here picks an endpoint itself.

pub use aws_config::SdkConfig;

/// Loads region, credentials and endpoint overrides from the standard chain.
pub async fn load() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}
