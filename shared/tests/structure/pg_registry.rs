//! One adapter per PG behind one registry (issue 21 §3): what varies by PG lives in
//! `shared/pg/` (the `paycycle-pg` crate), and everything else reaches it through `paycycle::pg::Registry` — the
//! functions name no PG, their webhook route and their config come from the registry's list.

use std::path::{Path, PathBuf};

use paycycle::pg::{Pg, PgMode};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") && !is_test_file(&path) {
            out.push(path);
        }
    }
}

/// A test module kept in `src/` (`tests.rs`, `*_tests.rs`): tests may name the PGs they run on.
pub(crate) fn is_test_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
}

/// What names a particular PG or mode in code: a variant of the registry's enums or an adapter,
/// a PG module, a PG's name as a string. Built from the registry's own lists, so a third PG is
/// covered the day it is added.
fn pg_names() -> Vec<String> {
    let mut names = Vec::new();
    for pg in Pg::ALL {
        let variant = format!("{pg:?}");
        names.push(format!("Pg::{variant}"));
        names.push(format!("pg::{}", pg.as_str()));
        names.push(format!("\"{}\"", pg.as_str()));
        // A PG's client reached past the registry's adapters (`deps.pgs.payple.…`).
        names.push(format!(".{}", pg.as_str()));
    }
    for mode in PgMode::ALL {
        let variant = format!("{mode:?}");
        names.push(format!("PgMode::{variant}"));
        names.push(format!("Adapter::{variant}"));
        names.push(format!("\"{}\"", mode.as_str()));
    }
    names.sort();
    names.dedup();
    names
}

/// Every line of `source` that names a particular PG: `(line number, name, line)`.
fn naming_a_pg(source: &str) -> Vec<(usize, String, String)> {
    let names = pg_names();
    let mut found = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue; // documentation may name the PGs it explains
        }
        for name in &names {
            // `Pg::Payple` must not match inside `PgMode::Payple`'s check twice, nor in
            // `SomePg::Payple`: the character before a name must not continue an identifier.
            let mut from = 0;
            while let Some(at) = line[from..].find(name.as_str()) {
                let start = from + at;
                let before = line[..start].chars().next_back();
                let after = line[start + name.len()..].chars().next();
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                // A field (`.payple`) ends where the identifier does; a path or a name starts
                // where one does.
                let whole = if name.starts_with('.') { !ident(after) } else { !ident(before) };
                if whole {
                    found.push((i + 1, name.clone(), line.trim().to_string()));
                    break;
                }
                from = start + name.len();
            }
        }
    }
    found
}

/// The code outside the `pg` crate (`shared/pg/`) that must not branch on a PG: every function,
/// the facade, the store and the domain — except the domain's `gateway.rs`, which declares the
/// PGs and modes themselves (their names, and what each mode can do).
fn guarded_sources() -> Vec<PathBuf> {
    let root = repo();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    for krate in ["shared/src", "shared/domain/src", "shared/store/src"] {
        rust_files(&root.join(krate), &mut files);
    }
    let identity = root.join("shared/domain/src/gateway.rs");
    files.retain(|f| *f != identity);
    files.sort();
    files
}

#[test]
fn the_guard_finds_a_match_on_a_pg() {
    let matched = "    let x = match mode {\n        PgMode::Payple => 1,\n        _ => 2,\n    };";
    assert_eq!(naming_a_pg(matched).len(), 1, "{:?}", naming_a_pg(matched));
    let compared = r#"if event.pg == "steppay" { Adapter::SteppayManaged(c) } else { paycycle::pg::payple::x() }"#;
    assert_eq!(naming_a_pg(compared).len(), 3, "{:?}", naming_a_pg(compared));
    let bypassed = "let found = deps.pgs.payple.find_payment(oid).await;\nlet s = &deps.pgs.steppay;";
    assert_eq!(naming_a_pg(bypassed).len(), 2, "{:?}", naming_a_pg(bypassed));
    let neutral = "let adapter = deps.pgs.adapter(c.pg);\n// Payple's lookup: PgMode::Payple\nlet p = SomePg::Payple;\nx.payple_no";
    assert!(naming_a_pg(neutral).is_empty(), "{:?}", naming_a_pg(neutral));
}

#[test]
fn no_code_outside_the_pg_module_names_a_pg() {
    let files = guarded_sources();
    assert!(files.len() > 20, "the guard reads the sources: {files:?}");
    let mut offenders = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for (line, name, text) in naming_a_pg(&source) {
            let path = file.strip_prefix(repo()).unwrap().display().to_string();
            offenders.push(format!("{path}:{line}: {name} in `{text}`"));
        }
    }
    assert!(
        offenders.is_empty(),
        "code outside shared/pg names a PG; dispatch through paycycle::pg::Registry and its \
         adapters (capabilities, notices) instead:\n{}",
        offenders.join("\n")
    );
}

/// The HttpApi routes of webhook-ingest in `template.yaml`: `(method, path)`.
fn template_webhook_routes() -> Vec<(String, String)> {
    let template = std::fs::read_to_string(repo().join("template.yaml")).unwrap();
    let mut routes = Vec::new();
    let mut method = None;
    for line in template.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("Method: ") {
            method = Some(m.to_string());
        } else if let Some(p) = line.strip_prefix("Path: ") {
            if p.starts_with("/webhooks") {
                routes.push((method.clone().unwrap_or_default(), p.to_string()));
            }
        }
    }
    routes.sort();
    routes
}

#[test]
fn the_webhook_routes_are_the_registrys_in_the_template_and_the_api_document() {
    let mut expected: Vec<(String, String)> =
        Pg::ALL.into_iter().flat_map(|pg| ["POST", "HEAD"].map(|m| (m.to_string(), pg.webhook_path()))).collect();
    expected.sort();
    assert_eq!(template_webhook_routes(), expected, "template.yaml routes exactly the registry's webhook paths");
    let openapi = std::fs::read_to_string(repo().join("openapi.yaml")).unwrap();
    for pg in Pg::ALL {
        let path = pg.webhook_path();
        assert_eq!(Pg::of_webhook_path(&path), Some(pg));
        assert!(openapi.contains(&format!("\n  {path}:")), "openapi.yaml documents {path}");
        assert!(!pg.modes().is_empty());
    }
}

#[test]
fn every_pg_config_is_deployed_and_documented() {
    let template = std::fs::read_to_string(repo().join("template.yaml")).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for (var, _) in paycycle::config::variables() {
        assert!(template.contains(&format!("{var}: ")), "template.yaml sets {var} for the functions");
        assert!(readme.contains(&format!("`{var}`")), "README lists {var}");
    }
    for key in paycycle::config::secret_keys() {
        assert!(readme.contains(&format!("\"{key}\"")), "README's secret document shows {key}");
        assert!(readme.contains(&format!("`{}`", key.to_uppercase())), "README names the local variable of {key}");
    }
}
