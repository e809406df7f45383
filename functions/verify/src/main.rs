use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = verify::Deps::new(paycycle::boot::start("verify").await?);
    let deps = &deps;
    run(service_fn(move |req| verify::handler(deps, req))).await
}
