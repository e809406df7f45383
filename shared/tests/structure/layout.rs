//! The crate boundaries (issue 22 §1, README "Layout"): what each of paycycle's crates may depend
//! on, checked on the dependency tree cargo resolves — so an AWS SDK added to the domain's
//! `Cargo.toml`, or a store that starts calling a PG client, fails here even before any code
//! imports it (and the code cannot import what the manifest does not list).

use std::path::Path;
use std::process::Command;

/// Every package in `krate`'s normal (non-dev) dependency tree, by name.
fn dependency_tree(krate: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--format", "{p}", "--package", krate])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {krate}: {}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The packages of `tree` whose name is or starts with one of `forbidden` (`aws-sdk-` covers every
/// AWS service crate).
fn offenders(tree: &[String], forbidden: &[&str]) -> Vec<String> {
    tree.iter()
        .filter(|name| forbidden.iter().any(|f| *name == f || (f.ends_with('-') && name.starts_with(f))))
        .cloned()
        .collect()
}

const AWS: &[&str] = &["aws-config", "aws-sdk-", "aws-smithy-", "aws-types", "serde_dynamo"];
const HTTP: &[&str] = &["reqwest", "hyper", "http", "axum", "lambda_http", "lambda_runtime", "url", "tokio"];

#[test]
fn the_domain_depends_on_no_aws_http_or_pg_crate() {
    let tree = dependency_tree("paycycle-domain");
    assert!(tree.iter().any(|p| p == "jiff"), "the tree was read: {tree:?}");
    let forbidden: Vec<&str> =
        AWS.iter().chain(HTTP).copied().chain(["paycycle-pg", "paycycle-store", "paycycle"]).collect();
    assert_eq!(offenders(&tree, &forbidden), Vec::<String>::new(), "paycycle-domain must stay pure");
}

#[test]
fn the_pg_adapters_depend_on_the_domain_and_no_aws_crate() {
    let tree = dependency_tree("paycycle-pg");
    assert!(tree.iter().any(|p| p == "paycycle-domain") && tree.iter().any(|p| p == "reqwest"), "{tree:?}");
    let forbidden: Vec<&str> =
        AWS.iter().copied().chain(["lambda_http", "lambda_runtime", "paycycle-store", "paycycle"]).collect();
    assert_eq!(offenders(&tree, &forbidden), Vec::<String>::new(), "paycycle-pg must not reach the store or AWS");
}

#[test]
fn the_store_depends_on_the_domain_and_no_pg_or_http_client() {
    let tree = dependency_tree("paycycle-store");
    assert!(tree.iter().any(|p| p == "paycycle-domain") && tree.iter().any(|p| p == "aws-sdk-dynamodb"), "{tree:?}");
    let forbidden = ["reqwest", "lambda_http", "lambda_runtime", "paycycle-pg", "paycycle"];
    assert_eq!(offenders(&tree, &forbidden), Vec::<String>::new(), "paycycle-store must not reach a PG");
}

#[test]
fn the_offender_check_matches_prefixes_and_whole_names_only() {
    let tree: Vec<String> = ["aws-sdk-dynamodb", "httparse", "http", "paycycle-domain"].map(String::from).to_vec();
    assert_eq!(offenders(&tree, &["aws-sdk-", "http", "paycycle"]), ["aws-sdk-dynamodb", "http"]);
}

/// The production sources: every function's and every shared crate's `src`, without test modules
/// (`#[cfg(test)] mod … { … }` up to its closing brace at column 0) and `tests.rs` files.
fn production_sources() -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let mut dirs: Vec<_> =
        ["shared/src", "shared/domain/src", "shared/pg/src", "shared/store/src"].iter().map(|d| root.join(d)).collect();
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        dirs.push(entry.unwrap().path().join("src"));
    }
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") && !super::pg_registry::is_test_file(&path) {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines = Vec::new();
            let mut in_tests = false;
            let mut previous = "";
            for line in text.lines() {
                if previous == "#[cfg(test)]" && line.starts_with("mod ") && line.ends_with('{') {
                    in_tests = true;
                }
                if !in_tests {
                    lines.push(line.to_string());
                }
                if in_tests && line == "}" {
                    in_tests = false;
                }
                previous = line;
            }
            (path.strip_prefix(&root).unwrap().display().to_string(), lines)
        })
        .collect()
}

/// Every function in `lines` with its length, from its `fn` line to its closing brace at the same
/// indentation, both counted.
fn function_lengths(lines: &[String]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let signature = ["fn ", "pub fn ", "async fn ", "pub async fn ", "pub(crate) fn ", "pub(crate) async fn "]
            .iter()
            .find_map(|prefix| code.strip_prefix(prefix));
        let Some(rest) = signature else { continue };
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // A declaration without a body (a trait's) reaches its `;` before any `{`.
        let opens = lines[i..].iter().find(|l| l.contains('{') || l.trim_end().ends_with(';'));
        if opens.is_none_or(|l| !l.contains('{')) {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            found.push((name, i + 1, end + 1));
        }
    }
    found
}

/// Under 60 lines, signature and closing brace included (issue 22): a longer function is split
/// into named steps.
#[test]
fn no_production_function_is_60_lines_or_longer() {
    let mut long = Vec::new();
    let mut counted = 0;
    for (path, lines) in production_sources() {
        for (name, line, length) in function_lengths(&lines) {
            counted += 1;
            if length >= 60 {
                long.push(format!("{path}:{line} {name}: {length} lines"));
            }
        }
    }
    assert!(counted > 300, "the functions were read: {counted}");
    assert!(long.is_empty(), "split these into named steps:\n{}", long.join("\n"));
}

#[test]
fn function_lengths_count_from_the_signature_to_the_closing_brace() {
    let source = "fn a() {\n    x();\n}\n\ntrait D {\n    fn d(\n        self,\n    ) -> u8;\n}\n\nimpl T {\n    pub async fn b(\n        y: u8,\n    ) {\n        y;\n    }\n}\n";
    let lines: Vec<String> = source.lines().map(String::from).collect();
    assert_eq!(function_lengths(&lines), [("a".to_string(), 1, 3), ("b".to_string(), 12, 5)]);
}
