//! `admin` (DESIGN §13, issue #24 point 3): the operator's routes, behind AWS IAM authorization
//! on the HttpApi — the operator signs with their own AWS credentials (SigV4); there is no shared
//! admin secret, and a partner's API key opens none of these.
//!
//! - `POST /admin/partners {partner_id, name}` — registers a partner (409 if the id is taken);
//! - `GET /admin/partners?limit&cursor` — the registry, by id;
//! - `POST /admin/api-keys {partner_id, name}` — a new key for a registered partner (422
//!   `unknown_partner` otherwise); the key is in this answer only, never stored or logged;
//! - `GET /admin/api-keys?partner_id&limit&cursor` — a partner's keys (id, name, dates, who),
//!   never a key;
//! - `POST /admin/api-keys/{id}/revoke` — revokes a key by its id; revoking it again answers the
//!   revoked key unchanged.
//!
//! Every request must carry the IAM identity API Gateway verified ([`api::iam_caller`]): the
//! handler refuses one without (403), whatever the gateway in front did. The caller's ARN is
//! recorded on what it creates and revokes.

use http::{Method, StatusCode};
use jiff::Timestamp;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use paycycle::api::{self, ApiError};
use paycycle::store::api_keys::{API_KEY_PK_PREFIX, ApiKeyRecord, api_keys_lookup, generate_api_key, is_key_id};
use paycycle::store::partners::{PARTNER_PK_PREFIX, PARTNERS_LOOKUP, PartnerRecord, is_partner_id};
use paycycle::store::{Item, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Store,
}

impl Deps {
    pub fn new(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        Self { store: Store::new(sdk, table) }
    }
}

pub async fn handler(deps: &Deps, req: Request) -> Result<Response<Body>, Error> {
    let request_id = api::request_id(&req);
    let result = route(deps, &req).await;
    Ok(api::respond(result, &request_id, "admin"))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::unavailable()
}

async fn route(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = api::iam_caller(req)?;
    let path = req.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let id = api::path_param(req, "id");
    match (segments.as_slice(), req.method(), id) {
        (["admin", "partners"], &Method::POST, _) => create_partner(deps, &caller, req).await,
        (["admin", "partners"], &Method::GET, _) => list_partners(deps, req).await,
        (["admin", "api-keys"], &Method::POST, _) => create_key(deps, &caller, req).await,
        (["admin", "api-keys"], &Method::GET, _) => list_keys(deps, req).await,
        (["admin", "api-keys", _, "revoke"], &Method::POST, Some(id)) => revoke_key(deps, &caller, &id).await,
        (["admin", ..], _, _) => {
            Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here"))
        }
        _ => Err(ApiError::route_not_found()),
    }
}

/// What creates a partner or a key: a partner id and a label for people.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedForPartner {
    partner_id: String,
    name: String,
}

fn parse_named(req: &Request) -> Result<NamedForPartner, ApiError> {
    let body: NamedForPartner = api::parse_json(req)?;
    if !is_partner_id(&body.partner_id) {
        return Err(ApiError::bad_request(
            "invalid_partner_id",
            "partner_id must be 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
        ));
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_name", "name must be 1-100 printable characters"));
    }
    Ok(NamedForPartner { partner_id: body.partner_id, name: name.to_string() })
}

fn partner_json(p: &PartnerRecord) -> Value {
    json!({
        "partner_id": p.partner_id,
        "name": p.name,
        "created_at": p.created_at.to_string(),
        "created_by": p.created_by,
    })
}

fn key_json(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.key_id(),
        "partner_id": k.partner_id,
        "name": k.name,
        "active": k.is_active(),
        "created_at": k.created_at.to_string(),
        "created_by": k.created_by,
        "revoked_at": k.revoked_at.map(|t| t.to_string()),
        "revoked_by": k.revoked_by,
    })
}

async fn create_partner(deps: &Deps, caller: &str, req: &Request) -> Result<Response<Body>, ApiError> {
    let body = parse_named(req)?;
    let record = PartnerRecord {
        partner_id: body.partner_id,
        name: body.name,
        created_at: Timestamp::now(),
        created_by: Some(caller.to_string()),
        version: 1,
    };
    match deps.store.create_partner(&record).await {
        Ok(()) => {
            tracing::info!(partner = %record.partner_id, caller, "partner registered");
            Ok(api::json(StatusCode::CREATED, &partner_json(&record)))
        }
        Err(StoreError::AlreadyExists(_)) => Err(ApiError::conflict("partner_exists", "this partner_id is taken")),
        Err(e) => Err(store_error(e)),
    }
}

async fn create_key(deps: &Deps, caller: &str, req: &Request) -> Result<Response<Body>, ApiError> {
    let body = parse_named(req)?;
    if deps.store.get_partner(&body.partner_id).await.map_err(store_error)?.is_none() {
        return Err(ApiError::unprocessable(
            "unknown_partner",
            "no partner has this partner_id; register it first (POST /admin/partners)",
        ));
    }
    let key = generate_api_key();
    let record = deps
        .store
        .create_api_key_by(&key, &body.name, &body.partner_id, Timestamp::now(), Some(caller))
        .await
        .map_err(store_error)?;
    tracing::info!(key_id = %record.key_id(), partner = %record.partner_id, caller, "API key created");
    let mut answer = key_json(&record);
    answer["key"] = json!(key);
    Ok(api::json(StatusCode::CREATED, &answer))
}

async fn revoke_key(deps: &Deps, caller: &str, id: &str) -> Result<Response<Body>, ApiError> {
    if !is_key_id(id) {
        return Err(ApiError::not_found("API key"));
    }
    let record =
        deps.store.api_key_by_id(id).await.map_err(store_error)?.ok_or_else(|| ApiError::not_found("API key"))?;
    if !record.is_active() {
        return Ok(api::json(StatusCode::OK, &key_json(&record)));
    }
    let revoked = match deps.store.revoke_api_key_by(&record, Timestamp::now(), Some(caller)).await {
        Ok(r) => r,
        // Revoked (or changed) by someone else meanwhile: answer the key as it is now.
        Err(StoreError::Conflict(_)) => {
            deps.store.api_key_by_id(id).await.map_err(store_error)?.ok_or_else(|| ApiError::not_found("API key"))?
        }
        Err(e) => return Err(store_error(e)),
    };
    tracing::info!(key_id = id, partner = %revoked.partner_id, caller, "API key revoked");
    Ok(api::json(StatusCode::OK, &key_json(&revoked)))
}

/// The `cursor` query parameter, checked against the lookup partition the listing reads.
fn cursor(req: &Request, lookup: &str, pk_prefix: &str) -> Result<Option<Item>, ApiError> {
    req.query_string_parameters().first("cursor").map(|c| api::decode_cursor(c, lookup, pk_prefix)).transpose()
}

fn page(data: Vec<Value>, next: Option<Item>) -> Response<Body> {
    let next_cursor = next.as_ref().map(api::encode_cursor);
    api::json(StatusCode::OK, &json!({"data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor}))
}

async fn list_partners(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let limit = api::page_limit(req)?;
    let start = cursor(req, PARTNERS_LOOKUP, PARTNER_PK_PREFIX)?;
    let (partners, next) = deps.store.partners(limit, start).await.map_err(store_error)?;
    Ok(page(partners.iter().map(partner_json).collect(), next))
}

async fn list_keys(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let partner = req
        .query_string_parameters()
        .first("partner_id")
        .map(str::to_string)
        .filter(|p| is_partner_id(p))
        .ok_or_else(|| ApiError::bad_request("invalid_partner_id", "the partner_id query parameter is required"))?;
    let limit = api::page_limit(req)?;
    let start = cursor(req, &api_keys_lookup(&partner), API_KEY_PK_PREFIX)?;
    let (keys, next) = deps.store.api_keys_of_partner(&partner, limit, start).await.map_err(store_error)?;
    Ok(page(keys.iter().map(key_json).collect(), next))
}

#[cfg(test)]
mod in_memory_tests;
