//! The template is the one definition of the table, bus and queues; moto is provisioned from it.
//! These tests fail if the template loses what DESIGN §7 needs, or if provisioning drops any part
//! of the definition (keys, GSIs, projections, stream, TTL).

use std::collections::BTreeSet;

use paycycle_testkit::{MotoServer, Template, provision};

#[test]
fn template_defines_the_design_table_routes_and_functions() {
    let t = Template::load().unwrap();
    let table = t.table().unwrap();
    let keys: Vec<_> = table.key_schema.iter().map(|k| (k.attribute.as_str(), k.key_type.as_str())).collect();
    assert_eq!(keys, [("pk", "HASH"), ("sk", "RANGE")]);
    assert_eq!(table.billing_mode.as_deref(), Some("PAY_PER_REQUEST"));
    assert_eq!(table.stream_view_type.as_deref(), Some("NEW_IMAGE"));
    assert_eq!(table.ttl_attribute.as_deref(), Some("expires_at"));
    let gsis: BTreeSet<_> = table.gsis.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(gsis, BTreeSet::from(["due", "lookup", "paid"]));
    // The partner's books index projects a payment's own fields, never a billing key.
    let paid = table.gsis.iter().find(|g| g.name == "paid").unwrap();
    assert_eq!(paid.projection_type, "INCLUDE");
    assert!(paid.non_key_attributes.iter().all(|a| !a.contains("billing") && a != "payer_id"), "{paid:?}");

    let routes: BTreeSet<(String, String)> = t.http_routes().unwrap().into_iter().map(|r| (r.method, r.path)).collect();
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/checkouts"),
        ("POST", "/payments/verify"),
        ("GET", "/payments/{id}"),
        ("POST", "/payments/{id}/refunds"),
        // The partner's books (issue 24 §4).
        ("GET", "/payments"),
        ("GET", "/payments/export"),
        // What needs a person (DESIGN §13).
        ("POST", "/payments/{id}/refunds/{refund_id}/resolve"),
        ("POST", "/subscriptions/{id}/resolve"),
        ("GET", "/reviews"),
        ("GET", "/subscriptions/{id}"),
        ("GET", "/subscriptions"),
        ("POST", "/subscriptions/{id}/cancel"),
        ("POST", "/subscriptions/{id}/pause"),
        ("POST", "/subscriptions/{id}/resume"),
        ("POST", "/subscriptions/{id}/plan"),
        // The customer's new card: a checkout in registration mode (issue 24 §5).
        ("POST", "/subscriptions/{id}/payment-method"),
        ("POST", "/webhooks/steppay"),
        ("POST", "/webhooks/payple"),
        // Payple checks a webhook URL with HEAD before it uses it.
        ("HEAD", "/webhooks/steppay"),
        ("HEAD", "/webhooks/payple"),
        // Webhooks to the partner (issue 23).
        ("POST", "/webhook-endpoints"),
        ("GET", "/webhook-endpoints"),
        ("GET", "/webhook-endpoints/{id}"),
        ("DELETE", "/webhook-endpoints/{id}"),
        ("POST", "/webhook-endpoints/{id}/rotate"),
        ("GET", "/webhook-endpoints/{id}/deliveries"),
        ("GET", "/events"),
        ("POST", "/events/{id}/redeliver"),
        // The operator's routes, IAM-authorized (issue 24 §3).
        ("POST", "/admin/partners"),
        ("GET", "/admin/partners"),
        ("POST", "/admin/api-keys"),
        ("GET", "/admin/api-keys"),
        ("POST", "/admin/api-keys/{id}/revoke"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(routes, expected, "the HttpApi routes of DESIGN §2");

    let binaries: BTreeSet<_> = t.functions().unwrap().into_iter().map(|f| f.binary).collect();
    assert_eq!(
        binaries,
        [
            "admin",
            "checkout",
            "deliver",
            "reconcile",
            "refund",
            "renew",
            "subscriptions",
            "verify",
            "webhook-endpoints",
            "webhook-ingest"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    assert_eq!(t.event_buses().unwrap(), ["PaycycleBus"]);
    for queue in ["VerifyDeadLetterQueue", "WebhookEventsQueue", "WebhookDeliveriesQueue", "WebhookDeadLetterQueue"] {
        assert!(t.queues().unwrap().contains(&queue.to_string()), "{queue}");
    }
    let rules = t.event_rules().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (rules[0].bus.as_str(), rules[0].queues.clone()),
        ("PaycycleBus", vec!["WebhookEventsQueue".to_string()])
    );
    assert_eq!(rules[0].pattern, r#"{"source":["paycycle"]}"#);
}

/// The `alarm = "…"` names a crate's source logs (the functions' tracing lines that hand
/// something to a person).
fn alarm_names(dir: &std::path::Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            names.extend(alarm_names(&path));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (i, _) in text.match_indices("alarm = \"") {
            let rest = &text[i + "alarm = \"".len()..];
            if let Some(end) = rest.find('"') {
                names.insert(rest[..end].to_string());
            }
        }
    }
    names
}

/// An alarm line in a log pages nobody by itself: every `alarm = "X"` a function logs has a
/// metric filter on that function's log group and an alarm on the metric (found when the
/// unknown-refund and kept-money lines of refund and verify had neither).
#[test]
fn every_alarm_line_a_function_logs_raises_a_cloudwatch_alarm() {
    let t = Template::load().unwrap();
    let filters = t.metric_filters().unwrap();
    let alarmed = t.alarmed_metrics().unwrap();
    let mut missing = Vec::new();
    let mut seen = 0;
    for f in t.functions().unwrap() {
        let group = format!("{}LogGroup", f.logical_id.trim_end_matches("Function"));
        let src = paycycle_testkit::repo_root().join("functions").join(&f.binary).join("src");
        for name in alarm_names(&src) {
            seen += 1;
            let pattern = format!("$.alarm = \"{name}\"");
            let filter = filters.iter().find(|(g, p, _)| *g == group && p.contains(&pattern));
            match filter {
                Some((_, _, metric)) if alarmed.contains(metric) => {}
                Some((_, _, metric)) => missing.push(format!("{}: no alarm on metric {metric}", f.logical_id)),
                None => missing.push(format!("{}: no metric filter on {group} for {name}", f.logical_id)),
            }
        }
    }
    assert!(seen >= 3, "the scan found the alarm lines ({seen})");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn a_template_without_a_table_is_an_error_not_a_panic() {
    let t = Template::parse("Resources:\n  Bus:\n    Type: AWS::Events::EventBus\n").unwrap();
    assert!(t.table().unwrap_err().to_string().contains("exactly one"));
    assert!(Template::parse("Resources: [unclosed").is_err());
}

#[tokio::test]
async fn moto_is_provisioned_exactly_as_the_template_says() {
    let moto = MotoServer::shared_or_start().unwrap();
    let sdk = moto.sdk_config().await;
    let template = Template::load().unwrap();
    let p = provision(&sdk, &template, &paycycle_testkit::provision::unique_prefix()).await.unwrap();
    let def = template.table().unwrap();

    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let described = ddb.describe_table().table_name(&p.table).send().await.unwrap();
    let d = described.table().unwrap();

    let keys: Vec<(String, String)> =
        d.key_schema().iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect();
    let want: Vec<(String, String)> =
        def.key_schema.iter().map(|k| (k.attribute.clone(), k.key_type.clone())).collect();
    assert_eq!(keys, want);

    let attrs: BTreeSet<(String, String)> = d
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name().to_string(), a.attribute_type().as_str().to_string()))
        .collect();
    assert_eq!(attrs, def.attribute_definitions.iter().cloned().collect());

    assert_eq!(d.global_secondary_indexes().len(), def.gsis.len());
    for g in &def.gsis {
        let got = d.global_secondary_indexes().iter().find(|x| x.index_name() == Some(g.name.as_str())).unwrap();
        let got_keys: Vec<(String, String)> = got
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string()))
            .collect();
        let want_keys: Vec<(String, String)> =
            g.key_schema.iter().map(|k| (k.attribute.clone(), k.key_type.clone())).collect();
        assert_eq!(got_keys, want_keys, "GSI {}", g.name);
        assert_eq!(
            got.projection().and_then(|p| p.projection_type()).map(|t| t.as_str().to_string()),
            Some(g.projection_type.clone()),
            "GSI {} projection",
            g.name
        );
    }

    let stream = d.stream_specification().unwrap();
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type().map(|v| v.as_str()), def.stream_view_type.as_deref());
    assert!(p.stream_arn.is_some());

    let ttl = ddb.describe_time_to_live().table_name(&p.table).send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), def.ttl_attribute.as_deref());

    let events = aws_sdk_eventbridge::Client::new(&sdk);
    for bus in p.buses.values() {
        events.describe_event_bus().name(bus).send().await.unwrap();
    }
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    assert_eq!(p.queues.len(), template.queues().unwrap().len());
    for url in p.queues.values() {
        sqs.get_queue_attributes().queue_url(url).send().await.unwrap();
    }
}

#[test]
fn a_started_server_is_stopped_by_its_pid_on_drop() {
    let moto = MotoServer::start().unwrap();
    let pid = moto.pid().expect("started, not shared");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let endpoint = moto.endpoint().to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"));
    drop(moto);
    // The process is gone (reaped), and the port no longer answers.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)).is_err());
}
