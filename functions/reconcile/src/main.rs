use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = reconcile::Deps::new(paycycle::boot::start("reconcile").await?);
    let deps = &deps;
    paycycle::metrics::serve_events(move |event| reconcile::handler(deps, event)).await
}
