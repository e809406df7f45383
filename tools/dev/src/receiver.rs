//! A partner's webhook receiver on 127.0.0.1, for `make dev`, `make demo` and the tests: it
//! verifies each delivery's Standard Webhooks signature against the secrets it was given, keeps
//! every delivery it got (and prints it, when asked), and can misbehave on purpose — answer 500,
//! hang past the deliverer's timeout, redirect, answer an endless body, or be down (connections
//! refused) — so retries and dedupe can be shown end to end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use paycycle::standard_webhooks::{SigningSecret, verify};

/// How the receiver answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 204 after a good signature, 400 after a bad one.
    Accept,
    /// This status, whatever arrives.
    Fail(u16),
    /// No answer for this long.
    Hang(Duration),
    /// 302 to this URL.
    Redirect(String),
    /// 200 with a body that never ends.
    Endless,
}

/// One delivery as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// Whether the signature verified against the receiver's secrets (our verifier; the tests
    /// check again with the PyPI one).
    pub verified: bool,
    /// How the receiver answered.
    pub answered: u16,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    secrets: Mutex<Vec<SigningSecret>>,
    received: Mutex<Vec<Received>>,
    print: bool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Receiver {
    /// Starts on a free port (or `port`); `print` writes one line per delivery to stdout.
    pub async fn start(port: u16, print: bool) -> std::io::Result<Receiver> {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Accept),
            secrets: Mutex::default(),
            received: Mutex::default(),
            print,
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let receiver = Receiver { addr, shared, task: Mutex::new(None) };
        receiver.serve(listener);
        Ok(receiver)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new().route("/webhooks", post(receive)).with_state(self.shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *lock(&self.task) = Some(task);
    }

    /// The endpoint URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.addr)
    }

    /// The secrets a signature may be by (the endpoint's, and during a rotation both).
    pub fn trust(&self, secrets: Vec<SigningSecret>) {
        *lock(&self.shared.secrets) = secrets;
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Every delivery so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Stops listening: deliveries find the port closed (connection refused).
    pub fn go_down(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&self) -> std::io::Result<()> {
        self.go_down();
        // The aborted server's socket closes as its task unwinds: try for a moment.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries >= 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.go_down();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = String::from_utf8_lossy(&body).into_owned();
    let verified = {
        let secrets = lock(&shared.secrets);
        let (id, ts, sig) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
        verify(&secrets, id.as_deref(), ts.as_deref(), sig.as_deref(), &body, jiff::Timestamp::now().as_second())
            .is_ok()
    };
    let mode = lock(&shared.mode).clone();
    let answered = match &mode {
        Mode::Accept if verified => 204,
        Mode::Accept => 400,
        Mode::Fail(status) => *status,
        Mode::Hang(_) | Mode::Endless => 200,
        Mode::Redirect(_) => 302,
    };
    let received = Received {
        id: header("webhook-id").unwrap_or_default(),
        timestamp: header("webhook-timestamp").unwrap_or_default(),
        signature: header("webhook-signature").unwrap_or_default(),
        body,
        verified,
        answered,
    };
    if shared.print {
        let kind = serde_json::from_str::<serde_json::Value>(&received.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_default();
        let check = if verified { "signature ok" } else { "BAD SIGNATURE" };
        println!("  webhook {} {kind:<26} {check} -> {answered}", received.id);
    }
    lock(&shared.received).push(received);
    match mode {
        Mode::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Mode::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Mode::Endless => {
            let chunks = futures_stream();
            Response::new(Body::from_stream(chunks))
        }
        _ => StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// An endless stream of 64 KiB chunks.
fn futures_stream() -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct Endless;
    impl futures_core::Stream for Endless {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(Some(Ok(Bytes::from_static(&[b'x'; 65536]))))
        }
    }
    Endless
}

/// Registers `receiver` as a webhook endpoint of the API key's partner (every event type) through
/// the HTTP API, and has it trust the endpoint's secret. Returns the endpoint id.
pub async fn register(api: &str, key: &str, receiver: &Receiver) -> Result<String, String> {
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{api}/webhook-endpoints"))
        .bearer_auth(key)
        .json(&serde_json::json!({"url": receiver.url(), "description": "the local receiver"}))
        .send()
        .await
        .map_err(|e| format!("POST /webhook-endpoints: {e}"))?;
    let status = response.status();
    let v: serde_json::Value = response.json().await.map_err(|e| format!("POST /webhook-endpoints: {e}"))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(format!("POST /webhook-endpoints answered {status}: {v}"));
    }
    let secret = v["secret"].as_str().and_then(|s| SigningSecret::parse(s).ok()).ok_or("no secret in the answer")?;
    receiver.trust(vec![secret]);
    Ok(v["id"].as_str().unwrap_or_default().to_string())
}

/// What the receiver got, against the partner's event log (`GET /events`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events in the partner's log.
    pub events: usize,
    /// Deliveries that arrived (repeats included).
    pub deliveries: usize,
    /// Distinct events received (after dedupe on `webhook-id`).
    pub distinct: usize,
    /// Logged events that never arrived.
    pub missing: Vec<String>,
    /// Deliveries whose signature did not verify.
    pub bad_signatures: usize,
}

impl Tally {
    /// Every logged event arrived, with good signatures.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.bad_signatures == 0 && self.distinct == self.events
    }
}

/// Compares what `receiver` got with every event in the partner's log.
pub async fn tally(api: &str, key: &str, receiver: &Receiver) -> Result<Tally, String> {
    let http = reqwest::Client::new();
    let mut logged = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api}/events?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = http
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| format!("GET /events: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET /events: {e}"))?;
        let data = page["data"].as_array().ok_or_else(|| format!("GET /events answered {page}"))?;
        logged.extend(data.iter().filter_map(|e| e["id"].as_str().map(str::to_string)));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let received = receiver.received();
    let distinct: std::collections::BTreeSet<String> = received.iter().map(|r| r.id.clone()).collect();
    Ok(Tally {
        events: logged.len(),
        deliveries: received.len(),
        distinct: distinct.len(),
        missing: logged.difference(&distinct).cloned().collect(),
        bad_signatures: received.iter().filter(|r| !r.verified).count(),
    })
}
