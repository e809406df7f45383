//! `openapi.yaml`, the contract, as a checker: partner API answers against their route's schema,
//! and events against their entry in the `webhooks` catalog. The end-to-end suite checks every
//! answer with it, and the local stack checks every event it delivers to partners (so every event
//! any test produces on the stack is checked).

use serde_json::{Value, json};

/// `openapi.yaml`, the contract: every response the partner API gives in the end-to-end tests is
/// checked against the schema of its route, method and status.
pub struct OpenApi {
    doc: Value,
    /// Validators by schema pointer (building one compiles the whole document).
    validators: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

impl OpenApi {
    /// The repository's `openapi.yaml`, loaded once.
    pub fn get() -> &'static OpenApi {
        static SPEC: std::sync::OnceLock<OpenApi> = std::sync::OnceLock::new();
        SPEC.get_or_init(|| {
            let path = paycycle_testkit::repo_root().join("openapi.yaml");
            let text = std::fs::read_to_string(&path).expect("openapi.yaml is readable");
            let doc: Value = serde_norway::from_str(&text).expect("openapi.yaml is YAML");
            OpenApi { doc, validators: Default::default() }
        })
    }

    /// The spec's path template that `path` (no query) matches; literal segments win.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for template in self.doc["paths"].as_object()?.keys() {
            let t: Vec<&str> = template.split('/').collect();
            if t.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let matches = t.iter().zip(&segments).all(|(a, b)| {
                if a.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    a == b
                }
            });
            if matches && best.as_ref().is_none_or(|(l, _)| literal > *l) {
                best = Some((literal, template.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    /// Checks a JSON response against the spec.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or(path);
        let template = self.template(path).ok_or_else(|| format!("{path} is not in openapi.yaml"))?;
        let op = &self.doc["paths"][&template][method.to_ascii_lowercase()];
        if op.is_null() {
            return Err(format!("{method} {template} is not in openapi.yaml"));
        }
        let status_key = status.to_string();
        if op["responses"].get(&status_key).is_none() {
            return Err(format!("{method} {template} does not document {status}"));
        }
        // JSON pointer escaping, then URI fragment escaping of the template's braces.
        let escape = |s: &str| s.replace('~', "~0").replace('/', "~1").replace('{', "%7B").replace('}', "%7D");
        let mut pointer =
            format!("#/paths/{}/{}/responses/{status_key}", escape(&template), method.to_ascii_lowercase());
        // Follow a response $ref to the reusable response.
        if let Some(r) = op["responses"][&status_key]["$ref"].as_str() {
            pointer = r.to_string();
        }
        pointer.push_str("/content/application~1json/schema");
        self.validate(&pointer, body, &format!("{method} {template} {status}"))
    }

    /// Validates `instance` against the schema at `pointer` (a `#/…` reference into the spec, so
    /// the schema's own `$ref`s resolve); errors start with `what`.
    fn validate(&self, pointer: &str, instance: &Value, what: &str) -> Result<(), String> {
        let cached = self.validators.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(pointer).cloned();
        let validator = match cached {
            Some(v) => v,
            None => {
                let mut root = self.doc.clone();
                root["$ref"] = json!(pointer);
                root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
                let built = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&root)
                    .map_err(|e| format!("schema for {what}: {e}"))?;
                let built = std::sync::Arc::new(built);
                self.validators
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(pointer.to_string(), built.clone());
                built
            }
        };
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        if errors.is_empty() { Ok(()) } else { Err(format!("{what}: {}", errors.join("; "))) }
    }

    /// Checks an event as published on the bus (the EventBridge envelope: `detail-type` and the
    /// `detail` paycycle wrote) against the schema `openapi.yaml` publishes for its type under
    /// `webhooks` (OpenAPI 3.1's catalog of what paycycle sends).
    pub fn check_event(&self, envelope: &Value) -> Result<(), String> {
        let kind = envelope["detail-type"].as_str().ok_or("an event without detail-type")?;
        if envelope["detail"]["type"].as_str() != Some(kind) {
            return Err(format!("{kind}: detail.type is {}", envelope["detail"]["type"]));
        }
        if self.doc["webhooks"].get(kind).is_none() {
            return Err(format!("{kind} is not in openapi.yaml's webhooks"));
        }
        let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
        let pointer = format!("#/webhooks/{}/post/requestBody/content/application~1json/schema", escape(kind));
        self.validate(&pointer, &envelope["detail"], &format!("event {kind}"))
    }
}
