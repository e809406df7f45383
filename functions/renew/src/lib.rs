//! `renew`: charges due subscriptions exactly once per period (DESIGN §5), triggered by the
//! EventBridge schedule.
//!
//! The behaviour is built by issue #9; until then a tick fails with a typed `NotImplemented`
//! error (a Lambda function error, visible in the function's error metric), and charges nothing.

use lambda_runtime::LambdaEvent;
use paycycle::boot::Boot;
use serde_json::Value;

/// Everything the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub boot: Boot,
}

impl Deps {
    pub fn new(boot: Boot) -> Self {
        Self { boot }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("renew is not implemented yet (tracked in issue #9); nothing was charged")]
    NotImplemented,
}

/// One scheduled tick. The event is EventBridge's scheduled event (`time` is the tick's `now`).
pub async fn handler(_deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, RenewError> {
    let time = event.payload.get("time").and_then(Value::as_str).unwrap_or("unknown");
    tracing::warn!(time, "renew tick received but renew is not implemented yet");
    Err(RenewError::NotImplemented)
}

/// How a failed tick is reported to Lambda (`errorType` is what alarms and logs match on).
impl From<RenewError> for lambda_runtime::Diagnostic {
    fn from(e: RenewError) -> Self {
        let error_type = match e {
            RenewError::NotImplemented => "RenewNotImplemented",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}
