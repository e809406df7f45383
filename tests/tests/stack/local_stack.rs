//! The local stack end to end over HTTP: every route of the template reaches its function's real
//! handler and answers with the JSON error shape (partner routes demand an API key first; webhook
//! routes refuse a body without a content type; admin routes refuse an unsigned request, as API
//! Gateway's IAM authorizer does), unknown routes are JSON 404s, and a renew tick
//! reaches renew.

use paycycle_dev::{LocalStack, Options};
use serde_json::Value;

#[tokio::test]
async fn every_template_route_reaches_its_function_and_answers_json() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let client = reqwest::Client::new();
    let api = stack.api_url();
    assert!(api.starts_with("http://127.0.0.1:"));
    assert_eq!(stack.routes.len(), 33);
    assert_eq!(stack.routes.iter().filter(|r| r.iam).count(), 5, "the admin routes, and only they, take AWS_IAM");
    assert!(stack.routes.iter().all(|r| r.iam == (r.function == "AdminFunction")));
    // HEAD on the webhook routes (Payple checks the URL): 200, no body.
    let heads: Vec<_> = stack.routes.iter().filter(|r| r.method == "HEAD").collect();
    assert_eq!(heads.len(), paycycle::pg::Pg::ALL.len());
    for route in &heads {
        assert_eq!(route.function, "WebhookIngestFunction");
        let resp = client.head(format!("{api}{}", route.path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "HEAD {}", route.path);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    // A PG the registry does not have: no route, a JSON 404.
    let resp = client
        .post(format!("{api}/webhooks/toss"))
        .header("content-type", "application/json")
        .body(r#"{"paymentKey":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "route_not_found");

    let mut request_ids = std::collections::BTreeSet::new();
    for route in stack.routes.iter().filter(|r| r.method != "HEAD") {
        let url = format!("{api}{}?customer_id=c1", route.path.replace("{id}", "x_1"));
        let method = reqwest::Method::from_bytes(route.method.as_bytes()).unwrap();
        let req = if route.method == "GET" { client.get(url) } else { client.request(method, url).body("{}") };
        let resp = req.send().await.unwrap();
        // Partner routes demand an API key first; webhooks (no key) want JSON or a form; admin
        // routes a SigV4 signature.
        let (status, code) = if route.function == "WebhookIngestFunction" {
            (415, "unsupported_media_type")
        } else if route.iam {
            (403, "forbidden")
        } else {
            (401, "unauthorized")
        };
        assert_eq!(resp.status(), status, "{} {}", route.method, route.path);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        let id = body["error"]["request_id"].as_str().unwrap().to_string();
        assert!(id.starts_with("local-"), "{id}");
        request_ids.insert(id);
    }
    assert_eq!(request_ids.len(), stack.routes.len() - heads.len(), "each request gets its own id");

    let resp = client.get(format!("{api}/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");

    // A method the route does not have is not routed to the function.
    let resp = client.delete(format!("{api}/checkouts")).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    let tick: Value = client
        .post(format!("{api}/__dev/tick"))
        .body(r#"{"now":"2027-02-28T00:00:00+09:00"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tick["ok"], true, "{tick}");
    assert_eq!(tick["report"]["due"], 0, "nothing is due in an empty table");
}
