//! Issue #15: secrets never reach a log line or an error body. The year of journeys `make demo`
//! runs (three PG modes, checkouts, webhooks, renewals, declines, refunds, cancels) runs with every
//! log line captured — our crates at DEBUG, stricter than production's INFO — and every API answer
//! inspected. None may contain a PG credential, the partner's API key, a billing key, or a
//! customer's e-mail address or phone number; error bodies may not contain them either.

use std::sync::{Arc, Mutex};

use paycycle_dev::journey::{self, CUSTOMERS, customer_email, customer_phone};
use paycycle_dev::{LocalStack, Options};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The forms a phone number can take in text.
fn phone_forms(phone: &str) -> Vec<String> {
    vec![phone.to_string(), phone.replace('-', "")]
}

/// `pc_` + 40 base32 characters: a partner API key.
fn contains_api_key(text: &str) -> bool {
    text.match_indices("pc_").any(|(i, _)| {
        let rest = &text[i + 3..];
        rest.len() >= 40 && rest[..40].bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_or_customer_contact_reaches_a_log_line_or_an_error_body() {
    let lines = Lines::default();
    let writer = lines.clone();
    let filter = tracing_subscriber::EnvFilter::new(
        "info,paycycle=debug,webhook_ingest=debug,verify=debug,renew=debug,refund=debug,checkout=debug,subscriptions=debug,paycycle_dev=debug,pg_sandbox=off",
    );
    tracing::subscriber::set_global_default(paycycle::telemetry::subscriber(move || writer.clone(), filter))
        .expect("the only subscriber in this test binary");

    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let secrets = paycycle_dev::local_secrets();
    let mut forbidden: Vec<(String, &str)> = vec![
        (secrets.steppay_secret_token.expose().to_string(), "StepPay secret token"),
        (secrets.payple_cust_key.expose().to_string(), "Payple custKey"),
        (secrets.payple_refund_key.expose().to_string(), "Payple refund key"),
        (paycycle_dev::LOCAL_STEPPAY_SIGNING_SECRET.to_string(), "StepPay webhook signing secret"),
    ];
    for (id, _) in CUSTOMERS {
        forbidden.push((customer_email(id), "customer e-mail"));
        for form in phone_forms(&customer_phone(id)) {
            forbidden.push((form, "customer phone"));
        }
    }

    // Every answer the journeys get: secrets in none, customer contact data in no error body.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (checked, found) = (Arc::new(Mutex::new(0usize)), seen.clone());
    let counter = checked.clone();
    let body_forbidden = forbidden.clone();
    let checker: paycycle_dev::clients::Checker = Box::new(move |method, path, status, body| {
        let text = body.to_string();
        *counter.lock().unwrap() += 1;
        for (value, what) in &body_forbidden {
            let is_secret = !what.starts_with("customer");
            if text.contains(value.as_str()) && (is_secret || status >= 400) {
                found.lock().unwrap().push(format!("{what} in the {status} answer to {method} {path}"));
            }
        }
        if contains_api_key(&text) {
            found.lock().unwrap().push(format!("an API key in the {status} answer to {method} {path}"));
        }
        Ok(())
    });
    let mut progress = Vec::new();
    let mut sink = |line: String| progress.push(line);
    let report = journey::run(&stack, Some(checker), &mut sink).await.unwrap();
    assert!(report.reconciliation.differences.is_empty());

    // Billing keys are known only now (the sandbox issued them during the journeys).
    {
        let state = stack.sandbox.shared.state.lock().unwrap();
        for key in state.steppay_billing_keys.keys() {
            forbidden.push((key.clone(), "StepPay billing key (idKey)"));
        }
        for payer in state.payers.keys() {
            forbidden.push((payer.clone(), "Payple billing key (PCD_PAYER_ID)"));
        }
    }
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let log_lines: Vec<&str> = text.lines().collect();
    assert!(log_lines.len() > 100, "the capture works: {} lines", log_lines.len());
    let answers = *checked.lock().unwrap();
    assert!(answers > 20, "the answers were inspected: {answers}");
    let mut leaks: Vec<String> = seen.lock().unwrap().clone();
    for line in &log_lines {
        for (value, what) in &forbidden {
            if line.contains(value.as_str()) {
                leaks.push(format!("{what} in a log line: {line}"));
            }
        }
        if contains_api_key(line) {
            leaks.push(format!("an API key in a log line: {line}"));
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
}

#[test]
fn the_scanners_see_what_they_look_for() {
    assert!(contains_api_key(&format!("key pc_{}", "a".repeat(40))));
    assert!(!contains_api_key("pc_short"));
    assert_eq!(phone_forms("010-1234-5678"), ["010-1234-5678", "01012345678"]);
}
