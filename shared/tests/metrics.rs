//! The EMF lines every function writes (`paycycle::metrics`): captured from the writer the
//! recorder is installed with, parsed as CloudWatch reads them. One recorder per process, so all
//! of it is one test (nextest runs each test in its own process; `cargo test` runs this file's
//! one test alone in its binary).

use std::sync::{Arc, Mutex};

use lambda_http::{Body, Response};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Every line written since the last take, each one checked to be an EMF document.
    fn take(&self) -> Vec<Value> {
        let text = String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap();
        text.lines().map(|l| emf(serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))).collect()
    }
}

/// Checks `doc` is EMF as CloudWatch requires it: namespace, one dimension set whose every
/// dimension and metric has a value at the top level. Returns it.
fn emf(doc: Value) -> Value {
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert!(doc["_aws"]["Timestamp"].as_u64().is_some(), "{doc}");
    assert_eq!(directive["Namespace"], "paycycle", "{doc}");
    for dimension in directive["Dimensions"][0].as_array().unwrap() {
        assert!(doc[dimension.as_str().unwrap()].is_string(), "dimension {dimension} has no value: {doc}");
    }
    for metric in directive["Metrics"].as_array().unwrap() {
        assert!(!doc[metric["Name"].as_str().unwrap()].is_null(), "metric {metric} has no value: {doc}");
    }
    doc
}

fn dimensions(doc: &Value) -> Vec<&str> {
    doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect()
}

fn unit_of<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    let metrics = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap();
    metrics.iter().find(|m| m["Name"] == name).and_then(|m| m["Unit"].as_str())
}

/// An API Gateway HTTP API (payload 2.0) request as Lambda delivers it, with a customer's phone
/// and e-mail in its body and a bearer key in its headers: none of it may reach a metric.
fn verify_request() -> lambda_http::Request {
    let event = json!({
        "version": "2.0", "routeKey": "POST /payments/verify", "rawPath": "/payments/verify", "rawQueryString": "",
        "headers": {"authorization": "Bearer pk_live_SECRETKEY", "content-type": "application/json"},
        "requestContext": {
            "accountId": "1", "apiId": "api", "domainName": "x.example", "domainPrefix": "x",
            "http": {"method": "POST", "path": "/payments/verify", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
            "requestId": "r-1", "routeKey": "POST /payments/verify", "stage": "$default", "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 0
        },
        "body": "{\"phone\":\"01012345678\",\"email\":\"kim@example.com\",\"billing_key\":\"bk_SECRET\"}",
        "isBase64Encoded": false
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

fn answer(status: u16) -> Result<Response<Body>, std::convert::Infallible> {
    Ok(Response::builder().status(status).body(Body::Empty).unwrap())
}

#[tokio::test]
async fn every_invocation_writes_emf_with_the_cold_start_once_and_the_routes_count_and_latency() {
    let capture = Capture::default();
    paycycle::metrics::install_to("verify", capture.clone());
    paycycle::metrics::install_to("verify", capture.clone());

    let response = paycycle::metrics::metered_http(verify_request(), |_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        answer(200)
    })
    .await
    .unwrap();
    assert_eq!(response.status(), 200, "the handler's answer is passed on");
    let lines = capture.take();
    let text = serde_json::to_string(&lines).unwrap();
    for private in ["SECRETKEY", "01012345678", "kim@example.com", "bk_SECRET"] {
        assert!(!text.contains(private), "{private} in a metric line: {text}");
    }
    let cold: Vec<_> = lines.iter().filter(|d| !d["ColdStart"].is_null()).collect();
    assert_eq!(cold.len(), 1, "{text}");
    assert_eq!((cold[0]["ColdStart"].as_u64(), &cold[0]["Function"]), (Some(1), &json!("verify")));
    assert_eq!(dimensions(cold[0]), ["Function"]);
    let request = lines.iter().find(|d| !d["Requests"].is_null()).unwrap_or_else(|| panic!("no request: {text}"));
    assert_eq!(dimensions(request), ["Function", "Route", "StatusClass"]);
    assert_eq!((&request["Route"], &request["StatusClass"]), (&json!("POST /payments/verify"), &json!("2xx")));
    assert_eq!(request["Requests"].as_u64(), Some(1));
    let latency = request["Latency"].as_array().unwrap();
    assert!(latency.len() == 1 && latency[0].as_f64().unwrap() >= 20.0, "{request}");
    assert_eq!((unit_of(request, "Latency"), unit_of(request, "Requests")), (Some("Milliseconds"), Some("Count")));

    // Warm: no second cold start; a 4xx is its own class.
    paycycle::metrics::metered_http(verify_request(), |_req| async { answer(422) }).await.unwrap();
    let lines = capture.take();
    assert!(lines.iter().all(|d| d["ColdStart"].is_null()), "{lines:?}");
    assert!(lines.iter().any(|d| d["StatusClass"] == "4xx" && d["Requests"] == 1), "{lines:?}");

    // An event function: a DynamoDB stream batch, counted by trigger and outcome.
    let stream = json!({"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT"}]});
    let event = lambda_runtime::LambdaEvent::new(stream, lambda_runtime::Context::default());
    let out: Result<Value, String> = paycycle::metrics::metered_event(event, |_e| async { Err("boom".into()) }).await;
    assert!(out.is_err());
    let lines = capture.take();
    let invocation = lines.iter().find(|d| !d["Invocations"].is_null()).unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(dimensions(invocation), ["Function", "Trigger", "Outcome"]);
    assert_eq!((&invocation["Trigger"], &invocation["Outcome"]), (&json!("dynamodb"), &json!("error")));
    assert_eq!(invocation["Latency"].as_array().map(Vec::len), Some(1));

    // A function's own counts (renew's report) carry `Function` alone, as the alarms read them;
    // a zero is not written.
    paycycle::metrics::count("renew", "NeedsReview", 2);
    paycycle::metrics::count("renew", "Declined", 0);
    paycycle::metrics::flush();
    let lines = capture.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((dimensions(&lines[0]), &lines[0]["Function"]), (vec!["Function"], &json!("renew")));
    assert_eq!((lines[0]["NeedsReview"].as_u64(), lines[0]["Declined"].is_null()), (Some(2), true));
    // In the unit the alarms' metrics have always had: a metric published in two units leaves
    // CloudWatch's alarms on it undefined.
    let declared = &lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"];
    let unit =
        declared.as_array().and_then(|m| m.iter().find(|m| m["Name"] == "NeedsReview")).map(|m| m["Unit"].clone());
    assert_eq!(unit, Some(json!("Count")), "{declared}");
}
