//! The cold-start baseline of `make bench`: a hello-world function on `lambda_runtime`, as
//! maxday/lambda-perf deploys one per runtime. No config, no SDK, no clients — its init is what any
//! Rust function on this runtime pays; each paycycle function's init is reported as a multiple of it.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

async fn hello(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(hello)).await
}
