use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = refund::Deps::new(&paycycle::boot::start("refund").await?);
    let deps = &deps;
    run(service_fn(move |req| refund::handler(deps, req))).await
}
