//! Reads `template.yaml`: the table's keys, GSIs, stream and TTL; the buses and queues; the
//! HttpApi routes and the function each one reaches. CloudFormation intrinsics (`!Ref`, `!Sub`,
//! `!GetAtt`) are parsed as tagged values and only read where a literal is expected.

use std::path::Path;

use serde_norway::{Mapping, Value};

use crate::KitError;

#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElement {
    pub attribute: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsiDef {
    pub name: String,
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub logical_id: String,
    /// (attribute name, `S` | `N` | `B`)
    pub attribute_definitions: Vec<(String, String)>,
    pub key_schema: Vec<KeyElement>,
    pub gsis: Vec<GsiDef>,
    pub stream_view_type: Option<String>,
    pub ttl_attribute: Option<String>,
    pub billing_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upper-case HTTP method, e.g. `POST`.
    pub method: String,
    /// API Gateway path with `{name}` parameters, e.g. `/payments/{id}/refunds`.
    pub path: String,
    /// Logical id of the function.
    pub function: String,
    /// `Auth: {Authorizer: AWS_IAM}`: API Gateway lets only SigV4-signed requests of an IAM
    /// principal allowed `execute-api:Invoke` through (the admin routes).
    pub iam: bool,
}

/// Where an IAM statement's resource points, read from the template's intrinsics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyResource {
    /// `!GetAtt <table>.Arn`, or `!Sub "${<table>.Arn}/index/<name>"` (`index` may be `*`).
    Table { logical_id: String, index: Option<String> },
    /// `!GetAtt <bus>.Arn`.
    Bus(String),
    /// `!Ref <secret>`.
    Secret(String),
    /// `!GetAtt <queue>.Arn`.
    Queue(String),
    /// `!GetAtt <key>.Arn` of an `AWS::KMS::Key` (logical ids ending in `KmsKey`).
    KmsKey(String),
    /// Anything else, as written (a literal ARN, `*`).
    Other(String),
}

/// One `Effect: Allow` statement of a function's inline policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatement {
    /// `service:Action`, possibly with `*`.
    pub actions: Vec<String>,
    pub resources: Vec<PolicyResource>,
    /// `Condition: {StringEquals: {key: value}}`, as (key, value) pairs: the statement allows a
    /// call only if the call carries each.
    pub string_equals: Vec<(String, String)>,
}

impl PolicyStatement {
    /// Whether `action` is one of this statement's actions (`*` wildcards allowed).
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| wildcard_match(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
    }
}

/// IAM's `*` matching (any run of characters).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| wildcard_match(rest, &text[head.len() + i..]))
        }
    }
}

fn policy_resource(v: &Value) -> PolicyResource {
    let Value::Tagged(t) = v else {
        return PolicyResource::Other(v.as_str().unwrap_or_default().to_string());
    };
    let tag = t.tag.to_string();
    let text = t.value.as_str().unwrap_or_default();
    match tag.trim_start_matches('!') {
        "GetAtt" => match text.strip_suffix(".Arn") {
            Some(id) if id.ends_with("Table") => PolicyResource::Table { logical_id: id.into(), index: None },
            Some(id) if id.ends_with("Bus") => PolicyResource::Bus(id.into()),
            Some(id) if id.ends_with("Queue") => PolicyResource::Queue(id.into()),
            Some(id) if id.ends_with("KmsKey") => PolicyResource::KmsKey(id.into()),
            _ => PolicyResource::Other(format!("{tag} {text}")),
        },
        "Ref" => PolicyResource::Secret(text.into()),
        "Sub" => match text.strip_prefix("${").and_then(|t| t.split_once(".Arn}/index/")) {
            Some((id, index)) => PolicyResource::Table { logical_id: id.into(), index: Some(index.into()) },
            None => PolicyResource::Other(format!("{tag} {text}")),
        },
        _ => PolicyResource::Other(format!("{tag} {text}")),
    }
}

/// A statement's `Condition.StringEquals` pairs (one value each).
fn string_equals(statement: &Mapping) -> Vec<(String, String)> {
    let pairs = get(statement, "Condition").and_then(Value::as_mapping).and_then(|c| get(c, "StringEquals"));
    let pairs = pairs.and_then(Value::as_mapping).cloned().unwrap_or_default();
    pairs.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), untag(v).as_str()?.to_string()))).collect()
}

fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Sequence(seq)) => seq.iter().collect(),
        Some(other) => vec![other],
        None => vec![],
    }
}

/// An EventBridge rule routing a bus's events to queues (logical ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRule {
    pub logical_id: String,
    pub bus: String,
    /// The event pattern, as JSON.
    pub pattern: String,
    pub queues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDef {
    pub logical_id: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`).
    pub binary: String,
}

fn err(msg: impl Into<String>) -> KitError {
    KitError::Template(msg.into())
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(Value::String(key.to_string())).map(untag)
}

fn str_at(map: &Mapping, key: &str) -> Option<String> {
    get(map, key).and_then(|v| v.as_str()).map(str::to_string)
}

fn key_schema(v: Option<&Value>, context: &str) -> Result<Vec<KeyElement>, KitError> {
    let seq = v.and_then(Value::as_sequence).ok_or_else(|| err(format!("{context}: KeySchema missing")))?;
    seq.iter()
        .map(|e| {
            let m = e.as_mapping().ok_or_else(|| err(format!("{context}: KeySchema entry is not a mapping")))?;
            Ok(KeyElement {
                attribute: str_at(m, "AttributeName").ok_or_else(|| err(format!("{context}: AttributeName")))?,
                key_type: str_at(m, "KeyType").ok_or_else(|| err(format!("{context}: KeyType")))?,
            })
        })
        .collect()
}

impl Template {
    /// `template.yaml` at the repository root.
    pub fn load() -> Result<Self, KitError> {
        Self::load_from(&crate::repo_root().join("template.yaml"))
    }

    pub fn load_from(path: &Path) -> Result<Self, KitError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, KitError> {
        let root: Value = serde_norway::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
        Ok(Self { root })
    }

    fn resources(&self) -> Result<&Mapping, KitError> {
        self.root
            .as_mapping()
            .and_then(|m| get(m, "Resources"))
            .and_then(Value::as_mapping)
            .ok_or_else(|| err("no Resources"))
    }

    /// (logical id, properties) of every resource of type `ty`, in template order.
    pub fn resources_of_type(&self, ty: &str) -> Result<Vec<(String, Mapping)>, KitError> {
        let mut out = Vec::new();
        for (id, resource) in self.resources()? {
            let Some(resource) = resource.as_mapping() else {
                continue;
            };
            if str_at(resource, "Type").as_deref() == Some(ty) {
                let props = get(resource, "Properties").and_then(Value::as_mapping).cloned().unwrap_or_default();
                out.push((id.as_str().unwrap_or_default().to_string(), props));
            }
        }
        Ok(out)
    }

    /// Every log metric filter: (its log group's logical id, its pattern, the metric it counts).
    pub fn metric_filters(&self) -> Result<Vec<(String, String, String)>, KitError> {
        let mut out = Vec::new();
        for (id, props) in self.resources_of_type("AWS::Logs::MetricFilter")? {
            let metric = get(&props, "MetricTransformations")
                .and_then(Value::as_sequence)
                .and_then(|s| s.first())
                .and_then(Value::as_mapping)
                .and_then(|m| str_at(m, "MetricName"));
            match (str_at(&props, "LogGroupName"), str_at(&props, "FilterPattern"), metric) {
                (Some(group), Some(pattern), Some(metric)) => out.push((group, pattern, metric)),
                _ => return Err(err(format!("{id}: LogGroupName, FilterPattern and a MetricName are needed"))),
            }
        }
        Ok(out)
    }

    /// The metrics some CloudWatch alarm watches.
    pub fn alarmed_metrics(&self) -> Result<Vec<String>, KitError> {
        Ok(self
            .resources_of_type("AWS::CloudWatch::Alarm")?
            .into_iter()
            .filter_map(|(_, props)| str_at(&props, "MetricName"))
            .collect())
    }

    fn resource(&self, logical_id: &str) -> Result<&Mapping, KitError> {
        get(self.resources()?, logical_id)
            .and_then(Value::as_mapping)
            .ok_or_else(|| err(format!("no resource {logical_id}")))
    }

    /// The one DynamoDB table.
    pub fn table(&self) -> Result<TableDef, KitError> {
        let tables = self.resources_of_type("AWS::DynamoDB::Table")?;
        let [(logical_id, props)] = tables.as_slice() else {
            return Err(err(format!("expected exactly one AWS::DynamoDB::Table, found {}", tables.len())));
        };
        let attribute_definitions = get(props, "AttributeDefinitions")
            .and_then(Value::as_sequence)
            .ok_or_else(|| err("table: AttributeDefinitions missing"))?
            .iter()
            .map(|a| {
                let m = a.as_mapping().ok_or_else(|| err("table: AttributeDefinitions entry"))?;
                Ok((
                    str_at(m, "AttributeName").ok_or_else(|| err("table: AttributeName"))?,
                    str_at(m, "AttributeType").ok_or_else(|| err("table: AttributeType"))?,
                ))
            })
            .collect::<Result<Vec<_>, KitError>>()?;
        let gsis = match get(props, "GlobalSecondaryIndexes").and_then(Value::as_sequence) {
            None => Vec::new(),
            Some(seq) => seq
                .iter()
                .map(|g| {
                    let m = g.as_mapping().ok_or_else(|| err("table: GSI entry"))?;
                    let name = str_at(m, "IndexName").ok_or_else(|| err("table: GSI IndexName"))?;
                    let projection = get(m, "Projection")
                        .and_then(Value::as_mapping)
                        .ok_or_else(|| err(format!("GSI {name}: Projection")))?;
                    Ok(GsiDef {
                        key_schema: key_schema(get(m, "KeySchema"), &format!("GSI {name}"))?,
                        projection_type: str_at(projection, "ProjectionType").unwrap_or_else(|| "ALL".into()),
                        non_key_attributes: get(projection, "NonKeyAttributes")
                            .and_then(Value::as_sequence)
                            .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                            .unwrap_or_default(),
                        name,
                    })
                })
                .collect::<Result<Vec<_>, KitError>>()?,
        };
        let stream_view_type =
            get(props, "StreamSpecification").and_then(Value::as_mapping).and_then(|m| str_at(m, "StreamViewType"));
        let ttl_attribute = get(props, "TimeToLiveSpecification")
            .and_then(Value::as_mapping)
            .filter(|m| get(m, "Enabled").and_then(Value::as_bool).unwrap_or(false))
            .and_then(|m| str_at(m, "AttributeName"));
        Ok(TableDef {
            logical_id: logical_id.clone(),
            attribute_definitions,
            key_schema: key_schema(get(props, "KeySchema"), "table")?,
            gsis,
            stream_view_type,
            ttl_attribute,
            billing_mode: str_at(props, "BillingMode"),
        })
    }

    /// Logical ids of the EventBridge buses.
    pub fn event_buses(&self) -> Result<Vec<String>, KitError> {
        Ok(self.resources_of_type("AWS::Events::EventBus")?.into_iter().map(|(id, _)| id).collect())
    }

    /// Logical ids of the KMS keys (the billing keys' key).
    pub fn kms_keys(&self) -> Result<Vec<String>, KitError> {
        Ok(self.resources_of_type("AWS::KMS::Key")?.into_iter().map(|(id, _)| id).collect())
    }

    /// Logical ids of the SQS queues.
    pub fn queues(&self) -> Result<Vec<String>, KitError> {
        Ok(self.resources_of_type("AWS::SQS::Queue")?.into_iter().map(|(id, _)| id).collect())
    }

    /// Every `AWS::Events::Rule` on a bus of the template with SQS queues of the template as
    /// targets (the partner-webhook rule): what the local stack creates in moto.
    pub fn event_rules(&self) -> Result<Vec<EventRule>, KitError> {
        let mut out = Vec::new();
        for (id, props) in self.resources_of_type("AWS::Events::Rule")? {
            let Some(bus) = str_at(&props, "EventBusName") else { continue };
            let pattern = get(&props, "EventPattern").ok_or_else(|| err(format!("{id}: EventPattern missing")))?;
            let pattern = serde_json::to_string(pattern).map_err(|e| err(format!("{id}: EventPattern: {e}")))?;
            let queues = one_or_many(get(&props, "Targets"))
                .into_iter()
                .filter_map(|target| target.as_mapping().and_then(|m| str_at(m, "Arn")))
                .filter_map(|arn| arn.strip_suffix(".Arn").map(str::to_string))
                .collect();
            out.push(EventRule { logical_id: id, bus, pattern, queues });
        }
        Ok(out)
    }

    /// Every `AWS::Serverless::Function` with its cargo binary.
    pub fn functions(&self) -> Result<Vec<FunctionDef>, KitError> {
        let mut out = Vec::new();
        for (logical_id, _) in self.resources_of_type("AWS::Serverless::Function")? {
            let resource = self.resource(&logical_id)?;
            let binary = get(resource, "Metadata")
                .and_then(Value::as_mapping)
                .and_then(|m| get(m, "BuildProperties"))
                .and_then(Value::as_mapping)
                .and_then(|m| str_at(m, "Binary"))
                .ok_or_else(|| err(format!("{logical_id}: Metadata.BuildProperties.Binary missing")))?;
            out.push(FunctionDef { logical_id, binary });
        }
        Ok(out)
    }

    /// The `Effect: Allow` statements of the inline policies (`Properties.Policies`) of the
    /// function `logical_id`. A SAM policy template or managed policy name is an error: the IAM
    /// test reads only what it can check.
    pub fn function_policy(&self, logical_id: &str) -> Result<Vec<PolicyStatement>, KitError> {
        let resource = self.resource(logical_id)?;
        let props = get(resource, "Properties").and_then(Value::as_mapping).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for doc in one_or_many(get(&props, "Policies")) {
            let doc = doc
                .as_mapping()
                .and_then(|d| get(d, "Statement"))
                .ok_or_else(|| err(format!("{logical_id}: a policy that is not an inline document")))?;
            for statement in one_or_many(Some(doc)) {
                let st = statement.as_mapping().ok_or_else(|| err(format!("{logical_id}: statement")))?;
                if str_at(st, "Effect").as_deref() != Some("Allow") {
                    continue;
                }
                out.push(PolicyStatement {
                    actions: one_or_many(get(st, "Action"))
                        .iter()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect(),
                    // Read with its tag: the intrinsic (`!GetAtt`, `!Sub`, `!Ref`) says what it is.
                    resources: one_or_many(st.get(Value::String("Resource".into())))
                        .into_iter()
                        .map(policy_resource)
                        .collect(),
                    string_equals: string_equals(st),
                });
            }
        }
        Ok(out)
    }

    /// Every HttpApi route: method, path and the function it reaches.
    pub fn http_routes(&self) -> Result<Vec<Route>, KitError> {
        let mut out = Vec::new();
        for (function, props) in self.resources_of_type("AWS::Serverless::Function")? {
            let Some(events) = get(&props, "Events").and_then(Value::as_mapping) else {
                continue;
            };
            for (_, event) in events {
                let Some(event) = event.as_mapping() else {
                    continue;
                };
                if str_at(event, "Type").as_deref() != Some("HttpApi") {
                    continue;
                }
                let p = get(event, "Properties")
                    .and_then(Value::as_mapping)
                    .ok_or_else(|| err(format!("{function}: HttpApi event without Properties")))?;
                out.push(Route {
                    method: str_at(p, "Method").ok_or_else(|| err(format!("{function}: route Method")))?.to_uppercase(),
                    path: str_at(p, "Path").ok_or_else(|| err(format!("{function}: route Path")))?,
                    function: function.clone(),
                    iam: get(p, "Auth")
                        .and_then(Value::as_mapping)
                        .and_then(|auth| str_at(auth, "Authorizer"))
                        .is_some_and(|a| a == "AWS_IAM"),
                });
            }
        }
        Ok(out)
    }
}
