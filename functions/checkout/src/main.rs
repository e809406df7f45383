use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = checkout::Deps::new(paycycle::boot::start("checkout").await?);
    let deps = &deps;
    run(service_fn(move |req| checkout::handler(deps, req))).await
}
