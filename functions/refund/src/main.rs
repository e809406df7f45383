use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = refund::Deps::new(&paycycle::boot::start("refund").await?);
    let deps = &deps;
    paycycle::metrics::serve_http(move |req| refund::handler(deps, req)).await
}
