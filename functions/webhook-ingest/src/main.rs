use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = webhook_ingest::Deps::new(paycycle::boot::start("webhook-ingest").await?);
    let deps = &deps;
    paycycle::metrics::serve_http(move |req| webhook_ingest::handler(deps, req)).await
}
