use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = subscriptions::Deps::new(&paycycle::boot::start("subscriptions").await?);
    let deps = &deps;
    paycycle::metrics::serve_http(move |req| subscriptions::handler(deps, req)).await
}
