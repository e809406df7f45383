//! The PGs' documented wire shapes, written down once as data (`pg-shapes/` at the repository
//! root: one JSON Schema per body, each naming the StepPay or Payple document it was transcribed
//! from, and `index.json` binding each route and webhook to its shapes), and the one checker both
//! sides of the wire are tested with: every body the sandbox sends and every body our client sends
//! is checked against the shape the PG published, so neither can drift into agreeing only with
//! the other (issue #21 §2).
//!
//! Objects are closed (`additionalProperties: false`): a renamed or invented field is a
//! violation, not a silently ignored extra. A field our code needs that no document shows carries
//! `x-unconfirmed` with what the code does when it is absent; [`Shapes::unconfirmed`] lists them
//! for the README's table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where the shape files live: `pg-shapes/` at the repository root.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pg-shapes")
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path} is not a usable JSON Schema: {message}")]
    Schema { path: String, message: String },
    #[error("index.json: {0}")]
    Index(String),
}

/// Which way a body travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Our client → the PG.
    Request,
    /// The PG → our client.
    Response,
    /// The PG → our webhook URL.
    Webhook,
}

/// One `index.json` entry: a PG route (method + path template) or a webhook kind.
#[derive(Clone, Debug, Deserialize)]
struct Entry {
    pg: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    request: Option<String>,
    /// Status (`"200"`) or class (`"2xx"`, `"4xx"`) → schema file.
    #[serde(default)]
    responses: BTreeMap<String, String>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    schema: Option<String>,
}

/// A body that does not have its documented shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub pg: String,
    /// `POST /api/internal/payment/cancel`, or `webhook v2`.
    pub what: String,
    pub direction: Direction,
    /// The shape file it was checked against (none: the route itself is undocumented).
    pub shape: Option<String>,
    pub errors: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?}", self.pg, self.what, self.direction)?;
        if let Some(shape) = &self.shape {
            write!(f, " (against {shape})")?;
        }
        write!(f, ": {}", self.errors.join("; "))
    }
}

/// A field no document shows, as the shape files mark it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unconfirmed {
    pub shape: String,
    /// JSON pointer-ish path of the field (`response/cancelPayment/canceledAmount`).
    pub field: String,
    /// What the code does when it is absent.
    pub fallback: String,
}

struct Compiled {
    file: String,
    validator: jsonschema::Validator,
}

/// All shapes, compiled.
pub struct Shapes {
    entries: Vec<Entry>,
    compiled: BTreeMap<String, Compiled>,
    raw: BTreeMap<String, Value>,
}

impl Shapes {
    /// Loads `index.json` and every schema it names from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ShapeError> {
        let index_path = dir.join("index.json");
        let entries: Vec<Entry> =
            serde_json::from_value(read_json(&index_path)?).map_err(|e| ShapeError::Index(e.to_string()))?;
        let mut files: Vec<&String> = Vec::new();
        for e in &entries {
            match (&e.method, &e.route, &e.webhook, &e.schema) {
                (Some(_), Some(_), None, None) => {}
                (None, None, Some(_), Some(_)) => {}
                _ => return Err(ShapeError::Index(format!("{e:?}: give method+route or webhook+schema"))),
            }
            files.extend(e.request.iter().chain(e.responses.values()).chain(e.schema.iter()));
        }
        let mut compiled = BTreeMap::new();
        let mut raw = BTreeMap::new();
        for file in files {
            if compiled.contains_key(file) {
                continue;
            }
            let schema = read_json(&dir.join(file))?;
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&schema)
                .map_err(|e| ShapeError::Schema { path: file.clone(), message: e.to_string() })?;
            compiled.insert(file.clone(), Compiled { file: file.clone(), validator });
            raw.insert(file.clone(), schema);
        }
        Ok(Self { entries, compiled, raw })
    }

    /// [`Shapes::load`] from [`default_dir`].
    pub fn load_default() -> Result<Self, ShapeError> {
        Self::load(&default_dir())
    }

    /// The documented routes, `(pg, "METHOD /route")`.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter_map(|e| Some((e.pg.clone(), format!("{} {}", e.method.as_ref()?, e.route.as_ref()?))))
            .collect()
    }

    /// The documented webhook kinds, `(pg, kind)`.
    pub fn webhooks(&self) -> Vec<(String, String)> {
        self.entries.iter().filter_map(|e| Some((e.pg.clone(), e.webhook.clone()?))).collect()
    }

    /// The schema files by name, as loaded (for their `examples`).
    pub fn schema(&self, file: &str) -> Option<&Value> {
        self.raw.get(file)
    }

    /// Every indexed schema file, by name.
    pub fn files(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.raw.iter()
    }

    /// What is wrong with `value` as a body of shape `file` (empty: nothing).
    pub fn errors(&self, file: &str, value: &Value) -> Vec<String> {
        match self.compiled.get(file) {
            Some(c) => c.validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path)).collect(),
            None => vec![format!("{file} is not an indexed shape")],
        }
    }

    /// Checks a request our client sent to `method route` (the route's template, e.g.
    /// `/api/v1/orders/{id}`). A body-less request (GET) checks only that the route is documented.
    pub fn check_request(
        &self,
        pg: &str,
        method: &str,
        route: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), Violation> {
        let what = format!("{method} {route}");
        let entry = self.route(pg, method, route).ok_or_else(|| undocumented(pg, &what, Direction::Request))?;
        match &entry.request {
            Some(file) => self.check_body(pg, &what, Direction::Request, file, content_type, body),
            None if body.is_empty() => Ok(()),
            None => Err(Violation {
                pg: pg.into(),
                what,
                direction: Direction::Request,
                shape: None,
                errors: vec!["the document shows no request body for this route".into()],
            }),
        }
    }

    /// Checks the PG's answer to `method route` with HTTP `status`. A status the document shows
    /// no body for (a sandbox fault's 5xx, say) is not checked: no document says what it is.
    pub fn check_response(
        &self,
        pg: &str,
        method: &str,
        route: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), Violation> {
        let what = format!("{method} {route} → {status}");
        let entry = self.route(pg, method, route).ok_or_else(|| undocumented(pg, &what, Direction::Response))?;
        let class = format!("{}xx", status / 100);
        let Some(file) = entry.responses.get(&status.to_string()).or_else(|| entry.responses.get(&class)) else {
            return Ok(());
        };
        self.check_body(pg, &what, Direction::Response, file, content_type, body)
    }

    /// Checks a webhook body the PG sends, of documented kind `kind` (`v2`, `self`, `result`).
    pub fn check_webhook(&self, pg: &str, kind: &str, content_type: &str, body: &[u8]) -> Result<(), Violation> {
        let what = format!("webhook {kind}");
        let file = self
            .entries
            .iter()
            .find(|e| e.pg == pg && e.webhook.as_deref() == Some(kind))
            .and_then(|e| e.schema.as_ref())
            .ok_or_else(|| undocumented(pg, &what, Direction::Webhook))?;
        self.check_body(pg, &what, Direction::Webhook, file, content_type, body)
    }

    /// Every field marked `x-unconfirmed`, by shape file.
    pub fn unconfirmed(&self) -> Vec<Unconfirmed> {
        let mut out = Vec::new();
        for (file, schema) in &self.raw {
            collect_unconfirmed(file, "", schema, &mut out);
        }
        out
    }

    fn route(&self, pg: &str, method: &str, route: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.pg == pg
                && e.method.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(method))
                && e.route.as_deref() == Some(route)
        })
    }

    fn check_body(
        &self,
        pg: &str,
        what: &str,
        direction: Direction,
        file: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), Violation> {
        let compiled = self.compiled.get(file).expect("every indexed shape is compiled at load");
        let violation = |errors: Vec<String>| Violation {
            pg: pg.into(),
            what: what.into(),
            direction,
            shape: Some(compiled.file.clone()),
            errors,
        };
        let value = decode(content_type, body).map_err(|e| violation(vec![e]))?;
        let errors: Vec<String> = compiled
            .validator
            .iter_errors(&value)
            .map(|e| {
                format!("{e} at {}", if e.instance_path.as_str().is_empty() { "/" } else { e.instance_path.as_str() })
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(violation(errors)) }
    }
}

fn undocumented(pg: &str, what: &str, direction: Direction) -> Violation {
    Violation {
        pg: pg.into(),
        what: what.into(),
        direction,
        shape: None,
        errors: vec!["no document shows this route or webhook (pg-shapes/index.json has no entry)".into()],
    }
}

/// A body as JSON: JSON as it is; a form as an object of strings (a PG form has no types).
pub fn decode(content_type: &str, body: &[u8]) -> Result<Value, String> {
    if content_type.to_ascii_lowercase().contains("application/x-www-form-urlencoded") {
        let mut map = Map::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        return Ok(Value::Object(map));
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({content_type}): {e}"))
}

fn read_json(path: &Path) -> Result<Value, ShapeError> {
    let text = std::fs::read(path).map_err(|source| ShapeError::Read { path: path.into(), source })?;
    serde_json::from_slice(&text).map_err(|source| ShapeError::Json { path: path.into(), source })
}

fn collect_unconfirmed(file: &str, at: &str, schema: &Value, out: &mut Vec<Unconfirmed>) {
    let Some(obj) = schema.as_object() else { return };
    if let Some(why) = obj.get("x-unconfirmed") {
        out.push(Unconfirmed {
            shape: file.into(),
            field: if at.is_empty() { "/".into() } else { at.into() },
            fallback: why.as_str().map(str::to_owned).unwrap_or_else(|| why.to_string()),
        });
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let path = if at.is_empty() { name.clone() } else { format!("{at}/{name}") };
            collect_unconfirmed(file, &path, sub, out);
        }
    }
    for key in ["items", "then", "else", "if"] {
        if let Some(sub) = obj.get(key) {
            collect_unconfirmed(file, at, sub, out);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for sub in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            collect_unconfirmed(file, at, sub, out);
        }
    }
    for sub in obj.get("$defs").and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
        collect_unconfirmed(file, at, sub, out);
    }
}
