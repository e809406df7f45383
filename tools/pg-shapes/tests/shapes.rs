//! The shape files themselves: each names its source, fits the document's own examples, is
//! closed (a renamed field cannot pass), and is reachable from the index.

use pg_shapes::{Shapes, default_dir};
use serde_json::Value;

fn shapes() -> Shapes {
    Shapes::load_default().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shape_names_its_source_and_the_documents_examples_fit_it() {
    let shapes = shapes();
    let mut examples = 0;
    for (file, schema) in shapes.files() {
        let sources = schema["x-source"].as_array().unwrap_or_else(|| panic!("{file}: no x-source list"));
        assert!(
            !sources.is_empty() && sources.iter().all(|s| s.as_str().is_some_and(|s| !s.trim().is_empty())),
            "{file}"
        );
        for example in schema["examples"].as_array().into_iter().flatten() {
            let errors = shapes.errors(file, example);
            assert!(errors.is_empty(), "{file}: its document's example does not fit it: {errors:?}");
            examples += 1;
        }
    }
    assert!(examples > 0, "no document example was transcribed");
}

/// Every object that lists properties refuses others, at any depth: otherwise a renamed field
/// would pass as an unknown extra.
#[test]
fn every_object_in_a_shape_is_closed() {
    fn walk(file: &str, at: &str, v: &Value) {
        let Some(obj) = v.as_object() else { return };
        if obj.contains_key("properties") {
            let closed = obj.get("additionalProperties") == Some(&Value::Bool(false))
                || obj.get("unevaluatedProperties") == Some(&Value::Bool(false));
            assert!(closed, "{file} at {at}: an object shape must be closed (additionalProperties: false)");
        }
        for (k, sub) in obj {
            // An `if` is a condition on a body, and its `then`/`else` add constraints to the
            // (closed) object around them: neither is a shape of its own.
            if matches!(k.as_str(), "if" | "not" | "then" | "else") {
                continue;
            }
            match sub {
                Value::Object(_) => walk(file, &format!("{at}/{k}"), sub),
                Value::Array(items) => {
                    items.iter().enumerate().for_each(|(i, x)| walk(file, &format!("{at}/{k}/{i}"), x))
                }
                _ => {}
            }
        }
    }
    let shapes = shapes();
    for (file, schema) in shapes.files() {
        let mut schema = schema.clone();
        // Examples are bodies, not shapes.
        schema.as_object_mut().unwrap().remove("examples");
        walk(file, "", &schema);
    }
}

#[test]
fn a_renamed_field_fails_its_shape() {
    let shapes = shapes();
    let mut tried = 0;
    for (file, schema) in shapes.files() {
        for example in schema["examples"].as_array().into_iter().flatten() {
            let Some(fields) = example.as_object() else { continue };
            for key in fields.keys() {
                let mut renamed = fields.clone();
                let value = renamed.remove(key).unwrap();
                renamed.insert(format!("{key}_renamed"), value);
                let errors = shapes.errors(file, &Value::Object(renamed));
                assert!(!errors.is_empty(), "{file}: renaming {key} went unnoticed");
                tried += 1;
            }
        }
    }
    assert!(tried > 10, "only {tried} renames tried");
}

#[test]
fn every_shape_file_is_in_the_index() {
    let shapes = shapes();
    let indexed: Vec<&String> = shapes.files().map(|(f, _)| f).collect();
    for pg in std::fs::read_dir(default_dir()).unwrap() {
        let pg = pg.unwrap();
        if !pg.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(pg.path()).unwrap() {
            let name = format!("{}/{}", pg.file_name().to_string_lossy(), f.unwrap().file_name().to_string_lossy());
            assert!(indexed.contains(&&name), "{name} is not named by pg-shapes/index.json");
        }
    }
}

#[test]
fn forms_are_objects_of_strings_and_json_is_json() {
    let v = pg_shapes::decode(
        "application/x-www-form-urlencoded; charset=utf-8",
        b"PCD_PAY_TOTAL=1000&PCD_PAY_RST=success",
    )
    .unwrap();
    assert_eq!(v, serde_json::json!({"PCD_PAY_TOTAL": "1000", "PCD_PAY_RST": "success"}));
    assert_eq!(pg_shapes::decode("application/json", br#"{"a":1}"#).unwrap(), serde_json::json!({"a": 1}));
    assert!(pg_shapes::decode("application/json", b"not json").is_err());
}

#[test]
#[ignore = "a measurement: cargo nextest run -p pg-shapes --run-ignored only load_time"]
fn load_time() {
    let t = std::time::Instant::now();
    let _ = shapes();
    eprintln!("loaded in {:?}", t.elapsed());
}
