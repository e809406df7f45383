use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, sdk) = paycycle::boot::start_webhooks("webhook-endpoints").await?;
    let deps = webhook_endpoints::Deps::new(&config, &sdk);
    let deps = &deps;
    paycycle::metrics::serve_http(move |req| webhook_endpoints::handler(deps, req)).await
}
