//! `make deploy` (tools/scripts/deploy.sh + deploy_plan.py) and infra/samconfig.toml: the
//! architecture deployed is the one `make package` built, and a stack's first deploy starts the
//! PG schedules off until the PG secret is filled. The script runs for real (its dry run prints
//! the `sam deploy` command it would run); SAM's own code says what a later deploy keeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use paycycle_testkit::{Template, repo_root};
use serde_norway::Value;

/// The first 20 bytes of a 64-bit little-endian ELF executable for `machine` (e_machine at 18):
/// all the plan reads of a bootstrap.
fn elf_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0];
    h.extend(machine.to_le_bytes());
    h.extend([0u8; 44]);
    h
}

const X86_64: u16 = 0x3E;
const AARCH64: u16 = 0xB7;

/// A build directory as `make package` leaves it: functions' bootstraps and the record.
fn build_dir(recorded: Option<&str>, machines: &[(&str, u16)]) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("paycycle-deploy-{}-{n}", std::process::id()));
    for (function, machine) in machines {
        std::fs::create_dir_all(dir.join(function)).unwrap();
        std::fs::write(dir.join(function).join("bootstrap"), elf_header(*machine)).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(arch) = recorded {
        let record = format!(r#"{{"architecture": "{arch}", "built_at": "2026-12-01T00:00:00Z"}}"#);
        std::fs::write(dir.join("paycycle-build.json"), record).unwrap();
    }
    dir
}

/// infra/samconfig.toml as an operator leaves it after README "Deploying": its placeholder
/// domains replaced.
fn filled_in_samconfig(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(repo_root().join("infra/samconfig.toml")).unwrap();
    let path = dir.join("filled-in-samconfig.toml");
    std::fs::write(&path, shipped.replace("example.com", "shop-test.co.kr")).unwrap();
    path
}

fn deploy_to(env: &str, build: &Path, samconfig: Option<&Path>, stack_exists: bool, params: &[&str]) -> Output {
    let root = repo_root();
    let config = samconfig.map(Path::to_path_buf).unwrap_or_else(|| filled_in_samconfig(build));
    Command::new("bash")
        .current_dir(&root)
        .arg(root.join("tools/scripts/deploy.sh"))
        .arg(env)
        .args(params)
        .env("DRY_RUN", "1")
        .env("PAYCYCLE_DEPLOY_SKIP_CHECKS", "1")
        .env("PAYCYCLE_BUILD_DIR", build)
        .env("PAYCYCLE_SAMCONFIG", config)
        .env("PAYCYCLE_STACK_EXISTS", if stack_exists { "yes" } else { "no" })
        .output()
        .expect("bash runs deploy.sh")
}

/// A deploy to an existing stack.
fn deploy(env: &str, build: &Path, samconfig: Option<&Path>, params: &[&str]) -> Output {
    deploy_to(env, build, samconfig, true, params)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert!(text(out).contains(why), "expected {why:?} in:\n{}", text(out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sam deploy"), "{}", text(out));
}

#[test]
fn the_deploy_architecture_is_the_one_the_package_step_built() {
    let functions = ["RenewFunction", "VerifyFunction", "RefundFunction"];
    for (arch, machine) in [("arm64", AARCH64), ("x86_64", X86_64)] {
        let build = build_dir(Some(arch), &functions.map(|f| (f, machine)));
        let out = deploy("dev", &build, None, &[]);
        assert!(out.status.success(), "{}", text(&out));
        let command = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(command.contains("sam deploy") && command.contains("--config-env dev"), "{command}");
        assert!(command.contains(&format!("Architecture={arch}")), "{command}");
        let other = if arch == "arm64" { "x86_64" } else { "arm64" };
        assert!(!command.contains(&format!("Architecture={other}")), "{command}");
        // The environment's own overrides go along.
        assert!(command.contains("PaypleReferer="), "{command}");
        std::fs::remove_dir_all(build).unwrap();
    }

    // One binary of the other architecture among them (a stale build dir): refused.
    let mixed = build_dir(Some("arm64"), &[("RenewFunction", AARCH64), ("VerifyFunction", X86_64)]);
    refused(
        &deploy("dev", &mixed, None, &[]),
        "VerifyFunction/bootstrap is built for x86_64, the build record says arm64",
    );
    std::fs::remove_dir_all(mixed).unwrap();

    // No record of what was built: refused, pointing at `make package`.
    let unrecorded = build_dir(None, &[("RenewFunction", X86_64)]);
    refused(&deploy("dev", &unrecorded, None, &[]), "run `make package`");
    std::fs::remove_dir_all(unrecorded).unwrap();

    // The architecture can be set only by building: not from the command line, not in samconfig.
    let build = build_dir(Some("x86_64"), &[("RenewFunction", X86_64)]);
    refused(&deploy("dev", &build, None, &["Architecture=arm64"]), "Architecture comes from the build");
    let config = build.join("samconfig.toml");
    std::fs::write(
        &config,
        "version = 0.1\n[dev.deploy.parameters]\nstack_name = \"x\"\nparameter_overrides = \"Architecture=arm64\"\n",
    )
    .unwrap();
    refused(&deploy("dev", &build, Some(&config), &[]), "names Architecture");
    refused(&deploy("qa", &build, None, &[]), "environment 'qa' is not in");
    // The shipped samconfig's placeholder domain is never deployed.
    let shipped = repo_root().join("infra/samconfig.toml");
    refused(&deploy("prod", &build, Some(&shipped), &[]), "is the placeholder");
    // A build of another template: refused.
    let record = r#"{"architecture": "x86_64", "template_sha256": "0000"}"#;
    std::fs::write(build.join("paycycle-build.json"), record).unwrap();
    refused(&deploy("dev", &build, None, &[]), "template.yaml changed since `make package`");
    std::fs::remove_dir_all(build).unwrap();
}

/// Before the PG secret is filled every function that reads it fails its start; a schedule that
/// ran it would fail every run and alarm. So `make deploy` creates a stack with those schedules
/// off (`PgSchedulesState=DISABLED`), and only then: the template's defaults stay ENABLED, so no
/// deploy of an existing stack, by any tool, switches billing off.
#[test]
fn the_first_deploy_leaves_the_pg_schedules_off_until_the_secret_is_set() {
    let template = Template::load().unwrap();
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let root: Value = serde_norway::from_str(&text).unwrap();
    for p in ["PgSchedulesState", "RenewScheduleState"] {
        assert_eq!(root["Parameters"][p]["Default"].as_str(), Some("ENABLED"), "{p}");
    }

    let mut gated = Vec::new();
    for (name, resource) in template.resources_of_type("AWS::Serverless::Function").unwrap() {
        let reads_secret =
            template.function_policy(&name).unwrap().iter().any(|s| s.allows_action("secretsmanager:GetSecretValue"));
        let resource = Value::Mapping(resource);
        let props = resource.get("Properties").cloned().unwrap_or(resource);
        for (event, spec) in props.get("Events").and_then(Value::as_mapping).into_iter().flatten() {
            if spec.get("Type").and_then(Value::as_str) != Some("Schedule") || !reads_secret {
                continue;
            }
            let state = format!("{:?}", spec["Properties"].get("State"));
            let renew_tick = name == "RenewFunction";
            let expected = if renew_tick { "RenewTickOn" } else { "PgSchedulesState" };
            assert!(state.contains(expected), "{name}.{event:?}: {state}");
            gated.push(name.clone());
        }
    }
    gated.sort();
    assert_eq!(gated, ["ReconcileFunction", "RenewFunction", "VerifyFunction"]);
    let conditions = format!("{:?}", root["Conditions"]["RenewTickOn"]);
    assert!(conditions.contains("PgSchedulesOn") && conditions.contains("RenewScheduleState"), "{conditions}");
    // While the tick is on, a renew that stopped running alarms.
    let heartbeat = &root["Resources"]["RenewHeartbeatAlarm"];
    assert_eq!(heartbeat["Condition"].as_str(), Some("RenewTickOn"));
    assert_eq!(heartbeat["Properties"]["TreatMissingData"].as_str(), Some("breaching"));

    let build = build_dir(Some("x86_64"), &[("RenewFunction", X86_64)]);
    for env in ["dev", "staging", "prod"] {
        // A new stack: the schedules start off.
        let created = deploy_to(env, &build, None, false, &[]);
        assert!(created.status.success(), "{env}: {}", self::text(&created));
        assert!(String::from_utf8_lossy(&created.stdout).contains("PgSchedulesState=DISABLED"), "{env}");
        // An existing stack: nothing about them is sent, so they stay as they are.
        let updated = deploy(env, &build, None, &[]);
        assert!(updated.status.success(), "{env}: {}", self::text(&updated));
        assert!(!String::from_utf8_lossy(&updated.stdout).contains("PgSchedulesState"), "{env}");
        assert!(!String::from_utf8_lossy(&updated.stdout).contains("RenewScheduleState"), "{env}");
    }
    // README step 4 turns them on with PARAMS.
    let enabled = deploy("prod", &build, None, &["PgSchedulesState=ENABLED"]);
    assert!(String::from_utf8_lossy(&enabled.stdout).contains("PgSchedulesState=ENABLED"), "{}", self::text(&enabled));
    // samconfig may not name them.
    let config = build.join("named.toml");
    let named = "version = 0.1\n[dev.deploy.parameters]\nstack_name = \"x\"\nparameter_overrides = \"PgSchedulesState=DISABLED\"\n";
    std::fs::write(&config, named).unwrap();
    refused(&deploy("dev", &build, Some(&config), &[]), "names PgSchedulesState");
    std::fs::remove_dir_all(build).unwrap();

    // What "stay as they are" rests on: SAM sends UsePreviousValue for a parameter a deploy does
    // not name — asked of SAM's own code with this template.
    let merged = Command::new(repo_root().join(".venv/bin/python"))
        .current_dir(repo_root())
        .args([
            "-c",
            "import json\n\
             from samcli.commands.deploy.deploy_context import DeployContext\n\
             from samcli.yamlhelper import yaml_parse\n\
             t = yaml_parse(open('template.yaml').read())\n\
             print(json.dumps(DeployContext.merge_parameters(t, {'PaypleReferer': 'https://x'})))",
        ])
        .output()
        .expect("the SAM CLI's python runs");
    assert!(merged.status.success(), "{}", self::text(&merged));
    let parameters: Vec<serde_json::Value> = serde_json::from_slice(&merged.stdout).unwrap();
    for p in ["PgSchedulesState", "RenewScheduleState"] {
        let state = parameters.iter().find(|x| x["ParameterKey"] == p).unwrap();
        assert_eq!(state["UsePreviousValue"], true, "{parameters:?}");
    }
}
