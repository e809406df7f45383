//! Local StepPay and Payple simulators (DESIGN §10). An outside party written from the PG
//! documents: it never imports the `paycycle` crate, so a field our clients misread cannot be
//! mirrored here and pass unnoticed.
//!
//! The PG endpoints, ledger and fault injection are built by issue #5. Until then the sandbox
//! answers its health check and a StepPay-shaped 501 error on every PG route, so nothing that
//! talks to it can mistake it for an approving PG.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The sandbox's HTTP routes.
pub fn router() -> Router {
    Router::new()
        .route("/__admin/health", get(|| async { Json(json!({"status": "ok", "pg_endpoints": "not_implemented"})) }))
        .fallback(not_implemented)
}

async fn not_implemented() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({
            "traceId": "sandbox",
            "errorCode": "NOT_IMPLEMENTED",
            "errorMessage": "pg-sandbox PG endpoints are not implemented yet (issue #5)",
            "details": null
        })),
    )
}

/// A running sandbox: its address and the task serving it (aborted on drop).
pub struct Sandbox {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Serves on 127.0.0.1:`port` (0 = a free port) inside the current tokio runtime.
    pub async fn start(port: u16) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router()).await;
        });
        Ok(Self { addr, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
