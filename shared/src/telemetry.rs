//! Structured JSON logs for CloudWatch. One line per event, with the current span's fields: the
//! Lambda runtime opens a span per invocation carrying `requestId`, so every line a handler writes
//! is tied to its request. Level from `RUST_LOG` (default `info`). Never log a `Secret`'s exposed
//! value or unmasked customer data (see `pii`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the JSON subscriber on stdout once; later calls (tests, several handlers in the local
/// stack) are no-ops.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stdout, filter));
}

/// The subscriber `init` installs, writing to `writer`.
pub fn subscriber<W>(writer: W, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_writer(writer)
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_ansi(false)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_json_and_carry_the_invocation_request_id() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let sub = subscriber(move || writer.clone(), EnvFilter::new("info"));
        tracing::subscriber::with_default(sub, || {
            // The span lambda_runtime opens around each invocation.
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
            let _guard = span.enter();
            tracing::info!(subscription_id = "sub_1", "renewed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["message"], "renewed");
        assert_eq!(line["subscription_id"], "sub_1");
        assert_eq!(line["span"]["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
        assert_eq!(line["level"], "INFO");
    }
}
