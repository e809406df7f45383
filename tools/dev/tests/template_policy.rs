//! What template.yaml promises about the deployment, checked where the local stack mirrors it:
//! the stream mapping the feeder imitates, and least privilege (no managed CRUD policies, no
//! wildcard actions, every DynamoDB grant on this table or its named indexes).

use paycycle_dev::stream_feeder::{BATCH_SIZE, MAX_RETRY_ATTEMPTS};
use paycycle_testkit::Template;
use serde_norway::Value;

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| v.get(*k).unwrap_or(&Value::Null))
}

#[test]
fn the_feeder_mirrors_the_stream_mapping_and_every_role_is_least_privilege() {
    let template = Template::load().unwrap();
    let functions = template.resources_of_type("AWS::Serverless::Function").unwrap();
    assert_eq!(functions.len(), 11);
    let mut saw_mapping = false;
    let mut sqs_sources = 0;
    for (name, props) in &functions {
        let resource = Value::Mapping(props.clone());
        let props = match resource.get("Properties") {
            Some(p) => p,
            None => &resource,
        };
        for (_, event) in get(props, &["Events"]).as_mapping().into_iter().flatten() {
            if get(event, &["Type"]).as_str() == Some("DynamoDB") {
                saw_mapping = true;
                assert_eq!(name, "VerifyFunction");
                let p = get(event, &["Properties"]);
                assert_eq!(get(p, &["BatchSize"]).as_u64(), Some(BATCH_SIZE as u64));
                assert_eq!(get(p, &["MaximumRetryAttempts"]).as_u64(), Some(u64::from(MAX_RETRY_ATTEMPTS)));
                assert_eq!(get(p, &["BisectBatchOnFunctionError"]).as_bool(), Some(true));
                let filter =
                    get(p, &["FilterCriteria", "Filters"]).as_sequence().unwrap()[0]["Pattern"].as_str().unwrap();
                assert!(filter.contains("webhook_event") && filter.contains("INSERT"), "{filter}");
            }
            // The renew workers take one shard message at a time and report failures per message
            // (the fan-out's test hands them moto's messages as the Lambda SQS event).
            if get(event, &["Type"]).as_str() == Some("SQS") && name == "RenewWorkerFunction" {
                let p = get(event, &["Properties"]);
                assert_eq!(get(p, &["BatchSize"]).as_u64(), Some(1));
                assert!(format!("{:?}", get(p, &["FunctionResponseTypes"])).contains("ReportBatchItemFailures"));
                let max = get(p, &["ScalingConfig", "MaximumConcurrency"]);
                assert!(format!("{max:?}").contains("RenewWorkerMaxConcurrency"), "a parameter: {max:?}");
                continue;
            }
            // The SQS feeder hands deliver batches as the SQS event sources do.
            if get(event, &["Type"]).as_str() == Some("SQS") {
                sqs_sources += 1;
                assert_eq!(name, "DeliverFunction");
                let p = get(event, &["Properties"]);
                assert_eq!(get(p, &["BatchSize"]).as_u64(), Some(paycycle_dev::sqs_feeder::BATCH_SIZE as u64));
                let types = format!("{:?}", get(p, &["FunctionResponseTypes"]));
                assert!(types.contains("ReportBatchItemFailures"), "{types}");
            }
        }
        let policies = get(props, &["Policies"]).as_sequence().unwrap_or_else(|| panic!("{name} has policies"));
        for policy in policies {
            assert!(policy.get("Statement").is_some(), "{name}: only inline statements, got {policy:?}");
            for statement in get(policy, &["Statement"]).as_sequence().unwrap() {
                let actions: Vec<&str> =
                    get(statement, &["Action"]).as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
                for a in &actions {
                    assert!(!a.contains('*'), "{name}: wildcard action {a}");
                }
                let resource = format!("{:?}", get(statement, &["Resource"]));
                assert!(!resource.contains("\"*\""), "{name}: wildcard resource");
                if actions.iter().any(|a| a.starts_with("dynamodb:")) {
                    assert!(resource.contains("PaycycleTable"), "{name}: DynamoDB on another resource: {resource}");
                }
            }
        }
    }
    assert!(saw_mapping, "verify has a stream mapping");
    assert_eq!(sqs_sources, 2, "deliver reads the events and the deliveries queues");
    // webhook-ingest writes one item per webhook and does nothing else with the table.
    let ingest = functions.iter().find(|(n, _)| n == "WebhookIngestFunction").unwrap();
    let text = format!("{:?}", ingest.1);
    assert!(
        text.contains("dynamodb:PutItem") && !text.contains("dynamodb:UpdateItem") && !text.contains("dynamodb:Query")
    );
}

/// Issue 25 §2: the renew workers, and only they, take a share of each PG's budget: the totals are
/// parameters, shared by `RenewWorkerMaxConcurrency` workers; with the template's defaults (and
/// at the workers' largest default count) every share is at least one request, so they boot.
#[test]
fn the_renew_workers_share_the_pg_budgets_and_boot_with_the_template_defaults() {
    let text = std::fs::read_to_string(paycycle_testkit::repo_root().join("template.yaml")).unwrap();
    let template: Value = serde_norway::from_str(&text).unwrap();
    let default = |p: &str| get(&template, &["Parameters", p, "Default"]).as_u64().unwrap_or_else(|| panic!("{p}"));
    let workers = get(&template, &["Resources", "RenewWorkerFunction", "Properties", "Environment", "Variables"]);
    let referenced = |var: &str| {
        let v = get(workers, &[var]);
        let Value::Tagged(tagged) = v else { panic!("{var} is a !Ref, got {v:?}") };
        assert_eq!(tagged.tag.to_string(), "!Ref", "{var}");
        tagged.value.as_str().unwrap().to_string()
    };
    assert_eq!(referenced("PAYCYCLE_PG_BUDGET_SHARERS"), "RenewWorkerMaxConcurrency");
    let sharers = default("RenewWorkerMaxConcurrency") as u32;
    for (var, parameter) in [
        ("STEPPAY_MAX_IN_FLIGHT", "SteppayMaxInFlight"),
        ("STEPPAY_REQUESTS_PER_SECOND", "SteppayRequestsPerSecond"),
        ("PAYPLE_MAX_IN_FLIGHT", "PaypleMaxInFlight"),
        ("PAYPLE_REQUESTS_PER_SECOND", "PaypleRequestsPerSecond"),
    ] {
        assert_eq!(referenced(var), parameter);
        let total = default(parameter) as u32;
        let limits = paycycle::pg::budget::BudgetLimits { in_flight: Some(total), per_second: Some(total) };
        let share = limits.share(sharers).unwrap_or_else(|| panic!("{parameter} {total} shared by {sharers}"));
        assert!(share.in_flight.unwrap() * sharers <= total);
    }
    // The scheduled tick only dispatches (no budget of its own); no other function is limited.
    let tick = format!("{:?}", get(&template, &["Resources", "RenewFunction", "Properties", "Environment"]));
    assert!(!tick.contains("MAX_IN_FLIGHT"), "{tick}");
}
