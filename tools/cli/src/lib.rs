//! The operator's client of paycycle's admin routes (DESIGN §13): requests signed with AWS
//! Signature Version 4 for `execute-api`, with the operator's own AWS credentials from the
//! standard chain (environment, profile, SSO, instance role — `aws-config`'s defaults). API
//! Gateway's IAM authorizer checks the signature and the caller's `execute-api:Invoke`
//! permission; there is no paycycle admin secret.
//!
//! [`signature`] is also what the local stack checks a signature with (it signs the request
//! again with the local operator's secret and compares), so the two cannot drift apart. It never
//! prints or logs a credential.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use serde_json::Value;

/// The service name API Gateway's IAM authorizer expects in the signature's scope.
pub const SERVICE: &str = "execute-api";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("AWS credentials: {0}")]
    Credentials(String),
    #[error("no AWS region: pass --region or set AWS_REGION (or a profile's region)")]
    NoRegion,
    #[error("not a usable API URL {0:?}")]
    BadUrl(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("the API did not answer: {0}")]
    Http(#[from] reqwest::Error),
}

/// The headers SigV4 adds (`authorization`, `x-amz-date`, `x-amz-security-token` when the
/// credentials are temporary) and the signature itself.
#[derive(Debug, Clone)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub signature: String,
}

/// Signs a request for `execute-api` in `region` at `time`: `url` absolute, `headers` the ones to
/// sign besides those SigV4 adds (at least `host`), `body` as sent.
pub fn signature(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Signed, CliError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| CliError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| CliError::Signing(e.to_string()))?;
    let (instructions, signature) = sign(signable, &params).map_err(|e| CliError::Signing(e.to_string()))?.into_parts();
    let headers = instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Ok(Signed { headers, signature })
}

/// Where the credentials come from: the standard chain, or fixed ones (tests, the local stack).
#[derive(Debug, Clone)]
enum Source {
    Chain(aws_credential_types::provider::SharedCredentialsProvider),
    Fixed(Credentials),
}

/// A signed client of one paycycle API.
#[derive(Debug, Clone)]
pub struct Operator {
    api: url::Url,
    region: String,
    source: Source,
    http: reqwest::Client,
}

impl Operator {
    /// The operator's credentials and region from `aws-config`'s default chain (`region`
    /// overrides the configured one).
    pub async fn from_environment(api: &str, region: Option<String>) -> Result<Self, CliError> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let region = region.or_else(|| sdk.region().map(ToString::to_string)).ok_or(CliError::NoRegion)?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| CliError::Credentials("none found (environment, profile, SSO or role)".into()))?;
        Self::new(api, region, Source::Chain(provider))
    }

    /// Fixed credentials (the local stack's operator, tests).
    pub fn with_credentials(api: &str, region: &str, credentials: Credentials) -> Result<Self, CliError> {
        Self::new(api, region.to_string(), Source::Fixed(credentials))
    }

    fn new(api: &str, region: String, source: Source) -> Result<Self, CliError> {
        // https, or http only to this machine (the local stack): a signed request (and the key a
        // create answers with) never crosses a network in the clear.
        let loopback = |u: &url::Url| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        let api = url::Url::parse(api.trim_end_matches('/'))
            .ok()
            .filter(|u| u.host_str().is_some() && (u.scheme() == "https" || (u.scheme() == "http" && loopback(u))))
            .ok_or_else(|| CliError::BadUrl(api.to_string()))?;
        // No redirects: a redirect would re-send the signed request (and its session token) elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError::BadUrl(format!("{api}: {e}")))?;
        Ok(Self { api, region, source, http })
    }

    async fn credentials(&self) -> Result<Credentials, CliError> {
        match &self.source {
            Source::Fixed(c) => Ok(c.clone()),
            Source::Chain(p) => p.provide_credentials().await.map_err(|e| CliError::Credentials(e.to_string())),
        }
    }

    /// Sends `method path_and_query` (with a JSON `body`), signed; the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CliError> {
        let url = format!("{}{path_and_query}", self.api.as_str().trim_end_matches('/'));
        let parsed = url::Url::parse(&url).map_err(|_| CliError::BadUrl(url.clone()))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(CliError::BadUrl(url)),
        };
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("host".to_string(), host)];
        if body.is_some() {
            headers.push(("content-type".to_string(), "application/json".to_string()));
        }
        let credentials = self.credentials().await?;
        let signed = signature(
            method.as_str(),
            parsed.as_str(),
            &headers,
            &bytes,
            &credentials,
            &self.region,
            SystemTime::now(),
        )?;
        let mut req = self.http.request(method, parsed);
        for (k, v) in headers.iter().chain(&signed.headers) {
            req = req.header(k, v);
        }
        let resp = req.body(bytes).send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}
