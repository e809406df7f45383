use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = subscriptions::Deps::new(&paycycle::boot::start("subscriptions").await?);
    let deps = &deps;
    run(service_fn(move |req| subscriptions::handler(deps, req))).await
}
