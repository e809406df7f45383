use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, sdk) = paycycle::boot::start_webhooks("webhook-endpoints").await?;
    let deps = webhook_endpoints::Deps::new(&config, &sdk);
    let deps = &deps;
    run(service_fn(move |req| webhook_endpoints::handler(deps, req))).await
}
