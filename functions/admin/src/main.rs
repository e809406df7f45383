use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (table, sdk) = paycycle::boot::start_admin("admin").await?;
    let deps = admin::Deps::new(&sdk, &table);
    let deps = &deps;
    paycycle::metrics::serve_http(move |req| admin::handler(deps, req)).await
}
