//! The HTTP side of a delivery (issue 23 §3): one POST that cannot stall or abuse the deliverer.
//!
//! - at most [`TIMEOUT`] in all (connect, send, answer), [`CONNECT_TIMEOUT`] to connect;
//! - redirects are not followed (a redirect is a failed attempt: it could aim anywhere);
//! - at most [`BODY_KEPT`] bytes of the answer are read and kept; the rest is never read, so a
//!   huge or endless body costs nothing;
//! - every address a name resolves to is checked again ([`paycycle::webhook_targets`]): a public
//!   name that resolves to a private, loopback or link-local address is refused before any
//!   connection, so DNS cannot turn an endpoint into a request to the deployer's own network.
//!   Only where time travel is allowed (the local stack) may a loopback address be called.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paycycle::store::partner_webhooks::DeliveryAttempt;
use paycycle::webhook_targets::{check_endpoint_url, public_address};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The whole attempt's limit.
pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an answer is read and kept in the attempt log.
pub const BODY_KEPT: usize = 1024;

#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    allow_loopback: bool,
}

/// Resolves with the system resolver, then refuses the name if any address is not public.
struct PublicOnly {
    allow_loopback: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let refused = addrs.iter().find(|a| !(public_address(a.ip()) || (allow_loopback && a.ip().is_loopback())));
            if let Some(bad) = refused {
                return Err(format!("{host} resolves to {}, not a public address", bad.ip()).into());
            }
            if addrs.is_empty() {
                return Err(format!("{host} does not resolve").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl Sender {
    /// `allow_loopback`: the local stack's receiver on 127.0.0.1 (time travel allowed) only.
    pub fn new(allow_loopback: bool) -> Self {
        Self::with_timeout(allow_loopback, TIMEOUT)
    }

    /// A sender with a shorter overall limit (tests of a hanging endpoint).
    pub fn with_timeout(allow_loopback: bool, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment (HTTPS_PROXY, ALL_PROXY) would be the address the
            // resolver checks, not the partner's: never use one.
            .no_proxy()
            .timeout(timeout.min(TIMEOUT))
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .dns_resolver(Arc::new(PublicOnly { allow_loopback }))
            .user_agent(concat!("paycycle-webhooks/", env!("CARGO_PKG_VERSION")))
            // Endpoints are many and mostly idle between events; no pooled connection to reuse
            // across a sweep would be worth holding a socket.
            .pool_max_idle_per_host(2)
            .build()
            .expect("the webhook HTTP client builds");
        Self { client, allow_loopback }
    }

    /// POSTs `body` with `headers` to `url`; the attempt as logged. `at` is the attempt's billing
    /// time (the sweep's `now`).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &str,
        at: jiff::Timestamp,
    ) -> DeliveryAttempt {
        let started = Instant::now();
        let result = self.exchange(url, headers, body).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok((status, response_body)) => {
                DeliveryAttempt { at, duration_ms, status_code: Some(status), error: None, response_body }
            }
            Err(error) => {
                DeliveryAttempt { at, duration_ms, status_code: None, error: Some(error), response_body: String::new() }
            }
        }
    }

    async fn exchange(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &str,
    ) -> Result<(u16, String), String> {
        // The URL was checked at registration; check again (the rules may have tightened, and an
        // address literal never reaches the resolver).
        let url = check_endpoint_url(url, self.allow_loopback).map_err(|e| e.to_string())?;
        let mut request = self.client.post(url).header("content-type", "application/json").body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut kept = Vec::new();
        while kept.len() < BODY_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(BODY_KEPT - kept.len())]),
                Ok(None) => break,
                // The status is the answer; a body cut short (or too slow) changes nothing.
                Err(_) => break,
            }
        }
        if (300..400).contains(&status) {
            let to = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
            return Ok((status, format!("redirect to {to} not followed")));
        }
        Ok((status, String::from_utf8_lossy(&kept).into_owned()))
    }
}

/// A transport error in a line fit for the partner's attempt log (no secrets are in it: the
/// request's URL is the partner's own).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_string() } else { format!("{kind}: {cause}") }
}
