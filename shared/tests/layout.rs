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
