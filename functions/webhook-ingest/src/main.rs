use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = webhook_ingest::Deps::new(paycycle::boot::start("webhook-ingest").await?);
    let deps = &deps;
    run(service_fn(move |req| webhook_ingest::handler(deps, req))).await
}
