use lambda_runtime::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = reconcile::Deps::new(paycycle::boot::start("reconcile").await?);
    let deps = &deps;
    run(service_fn(move |event| reconcile::handler(deps, event))).await
}
