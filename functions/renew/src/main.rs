use lambda_runtime::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = renew::Deps::new(paycycle::boot::start("renew").await?);
    let deps = &deps;
    run(service_fn(move |event| renew::handler(deps, event))).await
}
