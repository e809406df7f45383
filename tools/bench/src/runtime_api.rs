//! A minimal local Lambda Runtime API (the `2018-06-01` interface a custom runtime polls), enough
//! to start a release `bootstrap` the way Lambda does and time its cold start:
//!
//! - `GET  /2018-06-01/runtime/invocation/next` — the first call marks "init done"; it is answered
//!   with the queued event (and the Lambda headers), later calls wait for the next event;
//! - `POST /2018-06-01/runtime/invocation/{id}/response` and `…/{id}/error` — the answer;
//! - `POST /2018-06-01/runtime/init/error` — a failed init.
//!
//! One emulator serves one process at a time (a bench run starts a binary, hands it one event,
//! reads its answer, stops it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, mpsc};

/// What the runtime reported back for one invocation.
#[derive(Clone, Debug)]
pub enum Answer {
    Response(Vec<u8>),
    Error(Vec<u8>),
    InitError(Vec<u8>),
}

#[derive(Default)]
struct Inner {
    first_next_at: Option<Instant>,
    answer: Option<Answer>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: tokio::sync::Mutex<mpsc::Receiver<(String, Vec<u8>)>>,
    answered: Notify,
}

pub struct RuntimeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    queue: mpsc::Sender<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel(4);
        let shared =
            Arc::new(Shared { inner: Mutex::default(), events: tokio::sync::Mutex::new(rx), answered: Notify::new() });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, queue, task })
    }

    /// Forgets the previous process's marks (call before starting the next one).
    pub fn reset(&self) {
        *self.shared.inner.lock().expect("runtime api state") = Inner::default();
    }

    /// When the runtime first asked for an event (its init was over), if it has.
    pub fn first_next_at(&self) -> Option<Instant> {
        self.shared.inner.lock().expect("runtime api state").first_next_at
    }

    /// Queues one event for the runtime.
    pub async fn invoke(&self, request_id: &str, event: Vec<u8>) {
        let _ = self.queue.send((request_id.to_string(), event)).await;
    }

    /// Waits for the answer to the queued event (or an init error).
    pub async fn answer(&self, timeout: Duration) -> Option<Answer> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.answered.notified();
            if let Some(a) = self.shared.inner.lock().expect("runtime api state").answer.take() {
                return Some(a);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.inner.lock().expect("runtime api state").first_next_at.get_or_insert_with(Instant::now);
    let Some((id, body)) = shared.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline_ms = jiff::Timestamp::now().as_millisecond() + 60_000;
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", "arn:aws:lambda:ap-northeast-2:000000000000:function:bench".into());
    set("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0".into());
    set("content-type", "application/json".into());
    (headers, body).into_response()
}

fn record(shared: &Shared, answer: Answer) -> StatusCode {
    shared.inner.lock().expect("runtime api state").answer = Some(answer);
    shared.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn response(State(shared): State<Arc<Shared>>, Path(_id): Path<String>, body: Bytes) -> StatusCode {
    record(&shared, Answer::Response(body.to_vec()))
}

async fn error(State(shared): State<Arc<Shared>>, Path(_id): Path<String>, body: Bytes) -> StatusCode {
    record(&shared, Answer::Error(body.to_vec()))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    record(&shared, Answer::InitError(body.to_vec()))
}
