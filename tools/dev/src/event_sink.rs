//! A local EventBridge PutEvents endpoint that accepts and counts entries, for runs where moto's
//! EventBridge would be the bottleneck (the benchmarks, the chaos suite on Dynoxide). The
//! moto-backed tests check the events themselves; this only has to answer like EventBridge.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

/// A PutEvents endpoint (EventBridge's JSON protocol) that accepts and counts entries.
pub struct EventSink {
    pub url: String,
    pub entries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EventSink {
    pub async fn start() -> std::io::Result<Self> {
        let entries = Arc::new(AtomicU64::new(0));
        let app = Router::new().route("/", post(put_events)).with_state(entries.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, entries, task })
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn put_events(State(entries): State<Arc<AtomicU64>>, body: Bytes) -> ([(&'static str, &'static str); 1], String) {
    let n =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["Entries"].as_array().map(Vec::len)).unwrap_or(0);
    let first = entries.fetch_add(n as u64, Ordering::Relaxed);
    let ids: Vec<Value> = (0..n as u64).map(|i| json!({"EventId": format!("bench-{}", first + i)})).collect();
    ([("content-type", "application/x-amz-json-1.1")], json!({"FailedEntryCount": 0, "Entries": ids}).to_string())
}
