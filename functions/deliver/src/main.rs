// The deliver future nests deeply (SDK clients, HTTP, retries): its layout needs a deeper query
// limit than the default on some builds ("queries overflow the depth limit").
#![recursion_limit = "256"]

use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, sdk) = paycycle::boot::start_webhooks("deliver").await?;
    let deps = deliver::Deps::new(&config, &sdk);
    let deps = &deps;
    paycycle::metrics::serve_events(move |event| deliver::handler(deps, event)).await
}
