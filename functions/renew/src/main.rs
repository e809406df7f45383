use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = renew::Deps::new(paycycle::boot::start("renew").await?);
    let deps = &deps;
    paycycle::metrics::serve_events(move |event| renew::handler(deps, event)).await
}
