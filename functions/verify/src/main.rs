use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = verify::Deps::new(&paycycle::boot::start("verify").await?);
    let deps = &deps;
    // One function, two triggers: the HTTP API route and the table's stream.
    paycycle::metrics::serve_events(move |event| verify::dispatch(deps, event)).await
}
