use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (table, sdk) = paycycle::boot::start_admin("admin").await?;
    let deps = admin::Deps::new(&sdk, &table);
    let deps = &deps;
    run(service_fn(move |req| admin::handler(deps, req))).await
}
