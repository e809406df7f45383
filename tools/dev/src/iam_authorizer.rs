//! API Gateway's IAM authorizer, for the routes `template.yaml` marks `Authorizer: AWS_IAM` (the
//! admin routes): a request must carry a valid AWS Signature Version 4 for `execute-api` in the
//! stack's region, by the local operator's access key, made within five minutes; anything else
//! is refused with a JSON 403 before the function runs. A verified request reaches the function
//! with the caller in `requestContext.authorizer.iam`, as API Gateway hands it on.
//!
//! The local stack knows one principal, [`LOCAL_OPERATOR`]: its credentials are printed by
//! `make dev`. They open nothing in AWS. The signature is checked by signing the request again
//! with the operator's secret ([`paycycle_cli::signature`]) and comparing in constant time.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

/// The region the local stack stands for (the template's, `ap-northeast-2`).
pub const REGION: &str = "ap-northeast-2";

/// The one IAM principal of the local stack.
pub struct LocalOperator {
    pub access_key_id: &'static str,
    pub secret_access_key: &'static str,
    pub user_arn: &'static str,
    pub account_id: &'static str,
}

pub const LOCAL_OPERATOR: LocalOperator = LocalOperator {
    access_key_id: "AKIAPAYCYCLELOCALOPS",
    secret_access_key: "paycycle-local-operator-secret-not-an-aws-key",
    user_arn: "arn:aws:iam::000000000000:user/local-operator",
    account_id: "000000000000",
};

impl LocalOperator {
    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.access_key_id, self.secret_access_key, None, None, "paycycle-local-stack")
    }
}

/// How far a signature's time may be from the clock (SigV4's own window).
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct Authorization<'a> {
    access_key_id: &'a str,
    scope: Vec<&'a str>,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let fields = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let field = |name: &str| fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name));
    let mut credential = field("Credential=")?.split('/');
    let access_key_id = credential.next()?;
    Some(Authorization {
        access_key_id,
        scope: credential.collect(),
        signed_headers: field("SignedHeaders=")?.split(';').collect(),
        signature: field("Signature=")?,
    })
}

/// `x-amz-date` (`20270201T000000Z`) as a time.
fn signing_time(value: &str) -> Option<SystemTime> {
    let at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", value).ok()?;
    let at = at.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(SystemTime::from(at))
}

/// Whether the request (`parts` and the `body` as received) is signed by the local operator, as
/// API Gateway's IAM authorizer would decide it.
pub fn verify(parts: &http::request::Parts, body: &[u8], now: SystemTime) -> bool {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(auth), Some(date), Some(host)) =
        (header("authorization").and_then(parse_authorization), header("x-amz-date"), header("host"))
    else {
        return false;
    };
    let Some(time) = signing_time(date) else { return false };
    let skew = now.duration_since(time).or_else(|_| time.duration_since(now)).unwrap_or(Duration::MAX);
    let scope_ok = auth.scope == [date.get(..8).unwrap_or_default(), REGION, paycycle_cli::SERVICE, "aws4_request"];
    if auth.access_key_id != LOCAL_OPERATOR.access_key_id || !scope_ok || skew > MAX_SKEW {
        return false;
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{host}{path}");
    if url.parse::<http::Uri>().is_err() || !auth.signed_headers.contains(&"host") {
        return false;
    }
    // The headers the client signed, minus those signing adds itself.
    let mut signed = Vec::new();
    for name in auth.signed_headers.iter().filter(|n| !matches!(**n, "x-amz-date" | "x-amz-security-token")) {
        match header(name) {
            Some(value) => signed.push((name.to_string(), value.to_string())),
            None => return false,
        }
    }
    let credentials = LOCAL_OPERATOR.credentials();
    match paycycle_cli::signature(parts.method.as_str(), &url, &signed, body, &credentials, REGION, time) {
        Ok(expected) => paycycle::secret::Secret::new(expected.signature).ct_eq(auth.signature.as_bytes()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_parts(secret: &str, time: SystemTime, body: &[u8]) -> http::request::Parts {
        let url = "http://127.0.0.1:3000/admin/api-keys?partner_id=acme";
        let headers = vec![("host".to_string(), "127.0.0.1:3000".to_string())];
        let credentials = Credentials::new(LOCAL_OPERATOR.access_key_id, secret, None, None, "test");
        let signed = paycycle_cli::signature("GET", url, &headers, body, &credentials, REGION, time).unwrap();
        let mut req = http::Request::get("/admin/api-keys?partner_id=acme").body(()).unwrap();
        for (k, v) in headers.iter().chain(&signed.headers) {
            req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        req.into_parts().0
    }

    #[test]
    fn only_the_operators_fresh_signature_over_this_very_request_passes() {
        let now = SystemTime::now();
        assert!(verify(&signed_parts(LOCAL_OPERATOR.secret_access_key, now, b""), b"", now));
        assert!(!verify(&signed_parts("wrong-secret", now, b""), b"", now), "another secret");
        assert!(!verify(&signed_parts(LOCAL_OPERATOR.secret_access_key, now, b""), b"{}", now), "another body");
        let stale = now - Duration::from_secs(6 * 60);
        assert!(!verify(&signed_parts(LOCAL_OPERATOR.secret_access_key, stale, b""), b"", now), "too old");
        let mut moved = signed_parts(LOCAL_OPERATOR.secret_access_key, now, b"");
        moved.uri = "/admin/api-keys?partner_id=other".parse().unwrap();
        assert!(!verify(&moved, b"", now), "another query");
        let mut bearer = signed_parts(LOCAL_OPERATOR.secret_access_key, now, b"");
        bearer.headers.insert("authorization", "Bearer pc_x".parse().unwrap());
        assert!(!verify(&bearer, b"", now), "a partner key");
        let unsigned = http::Request::get("/admin/partners").body(()).unwrap().into_parts().0;
        assert!(!verify(&unsigned, b"", now));
    }
}
