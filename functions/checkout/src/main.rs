use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = checkout::Deps::new(paycycle::boot::start("checkout").await?);
    let deps = &deps;
    paycycle::metrics::serve_http(move |req| checkout::handler(deps, req)).await
}
