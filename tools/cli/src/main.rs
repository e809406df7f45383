//! `paycycle` — the operator's command line for the admin routes; see [`USAGE`].

use std::process::ExitCode;

use paycycle_cli::Operator;
use reqwest::Method;
use serde_json::{Value, json};

const USAGE: &str = "usage: paycycle [--api URL] [--region REGION] COMMAND
  partners create ID --name NAME          register a partner (ID: a-z 0-9 _ -)
  partners list [--limit N] [--cursor C]
  api-keys create --partner ID --name NAME
                                          a new API key for a registered partner; printed once, never stored
  api-keys list --partner ID [--limit N] [--cursor C]
                                          the partner's keys (id, name, dates, who made or revoked them)
  api-keys revoke KEY_ID                  revoke a key by its id (key_...), at once
options:
  --api URL        the paycycle API (default: $PAYCYCLE_API_URL), e.g. the stack's ApiUrl output
  --region REGION  the API's region (default: the AWS configuration's, e.g. $AWS_REGION)
Requests are signed (SigV4, execute-api) with your AWS credentials from the standard chain:
environment, AWS_PROFILE, SSO, or a role. You need execute-api:Invoke on the stack's AdminRoutesArn.
Exit status: 0 done, 1 refused by the API, 2 usage, 3 could not ask (credentials, network).";

/// One command line, parsed: what to send.
#[derive(Debug, PartialEq)]
struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// The words of `args` that are neither options nor their values.
fn positional(args: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a.starts_with("--") {
            skip = true;
        } else {
            out.push(a.as_str());
        }
    }
    out
}

/// `?limit=…&cursor=…&partner_id=…` from the options given.
fn query(args: &[String], partner: Option<String>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(p) = partner {
        q.append_pair("partner_id", &p);
    }
    for (flag, name) in [("--limit", "limit"), ("--cursor", "cursor")] {
        if let Some(v) = option(args, flag) {
            q.append_pair(name, &v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

fn parse(args: &[String]) -> Option<Request> {
    let words = positional(args);
    let req = |method, path: String, body| Some(Request { method, path, body });
    match words.as_slice() {
        ["partners", "create", id] => req(
            Method::POST,
            "/admin/partners".into(),
            Some(json!({"partner_id": id, "name": option(args, "--name")?})),
        ),
        ["partners", "list"] => req(Method::GET, format!("/admin/partners{}", query(args, None)), None),
        ["api-keys", "create"] => req(
            Method::POST,
            "/admin/api-keys".into(),
            Some(json!({"partner_id": option(args, "--partner")?, "name": option(args, "--name")?})),
        ),
        ["api-keys", "list"] => {
            req(Method::GET, format!("/admin/api-keys{}", query(args, Some(option(args, "--partner")?))), None)
        }
        // A key id is `key_` and 16 hex digits (the admin routes' answer): nothing else is sent.
        ["api-keys", "revoke", id]
            if id.strip_prefix("key_").is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            req(Method::POST, format!("/admin/api-keys/{id}/revoke"), None)
        }
        _ => None,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(request) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(api) = option(&args, "--api").or_else(|| std::env::var("PAYCYCLE_API_URL").ok()) else {
        eprintln!("no API: pass --api URL or set PAYCYCLE_API_URL\n\n{USAGE}");
        return ExitCode::from(2);
    };
    let answer = match Operator::from_environment(&api, option(&args, "--region")).await {
        Ok(operator) => operator.call(request.method, &request.path, request.body.as_ref()).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok((status, body)) => {
            println!("{}", serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string()));
            if (200..300).contains(&status) {
                if body.get("key").is_some() {
                    eprintln!("store the key now: it is not shown again (paycycle keeps only its hash)");
                }
                ExitCode::SUCCESS
            } else {
                eprintln!("refused: HTTP {status}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("paycycle: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn command_lines_become_admin_requests() {
        let r = parse(&args("--api http://x api-keys create --partner acme --name backend")).unwrap();
        assert_eq!((r.method, r.path.as_str()), (Method::POST, "/admin/api-keys"));
        assert_eq!(r.body, Some(json!({"partner_id": "acme", "name": "backend"})));
        let r = parse(&args("api-keys list --partner acme --limit 5")).unwrap();
        assert_eq!(r.path, "/admin/api-keys?partner_id=acme&limit=5");
        let r = parse(&args("api-keys revoke key_0123456789abcdef")).unwrap();
        assert_eq!(r.path, "/admin/api-keys/key_0123456789abcdef/revoke");
        let r = parse(&args("partners create acme --name Acme")).unwrap();
        assert_eq!(r.body, Some(json!({"partner_id": "acme", "name": "Acme"})));
        assert_eq!(parse(&args("partners list")).unwrap().path, "/admin/partners");
        for bad in ["api-keys create --partner acme", "api-keys revoke ../x", "keys list", "api-keys list"] {
            assert_eq!(parse(&args(bad)), None, "{bad}");
        }
    }
}
