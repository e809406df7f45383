//! The admin routes on an in-memory store, through the Lambda handler, with the request context
//! API Gateway's IAM authorizer would pass on (or none). The IAM check at the gateway itself is
//! the local stack's and the CLI's end-to-end tests (`tools/cli/tests`).

use crate::Deps;
use paycycle::store::api_keys::is_key_id;
use paycycle_fixtures::{Fresh, RequestBuilder, json_body, request};
use serde_json::{Value, json};

const OPERATOR: &str = "arn:aws:iam::123456789012:user/ops-kim";

async fn call(deps: &Deps, req: RequestBuilder) -> (u16, Value) {
    let res = crate::handler(deps, req.build()).await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    (res.status().as_u16(), json_body(&res))
}

fn signed(method: &str, path: &str) -> RequestBuilder {
    let mut req = request(method, path).iam(OPERATOR);
    if let Some(id) = path.strip_prefix("/admin/api-keys/").and_then(|p| p.strip_suffix("/revoke")) {
        req = req.path_param("id", id);
    }
    req
}

fn deps(fresh: &Fresh) -> Deps {
    Deps { store: fresh.store.clone() }
}

#[tokio::test]
async fn a_request_without_an_iam_identity_or_with_a_partner_key_is_refused() {
    let fresh = Fresh::in_memory();
    let deps = deps(&fresh);
    let partner_key = fresh.api_key("partner_a").await;
    let body = json!({"partner_id": "partner_a", "name": "x"});
    for req in [
        request("GET", "/admin/partners"),
        request("POST", "/admin/api-keys").json(&body),
        request("POST", "/admin/api-keys").bearer(&partner_key).json(&body),
        // A partner key next to an identity is still a partner key.
        signed("GET", "/admin/partners").bearer(&partner_key),
        request("GET", "/admin/api-keys?partner_id=partner_a").bearer(&partner_key),
    ] {
        let (status, body) = call(&deps, req).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    }
    let (_, keys) = call(&deps, signed("GET", "/admin/api-keys?partner_id=partner_a")).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "no key was made: {keys}");
}

#[tokio::test]
async fn an_operator_registers_a_partner_creates_lists_and_revokes_its_key() {
    let fresh = Fresh::in_memory();
    let deps = deps(&fresh);
    let partner = json!({"partner_id": "acme", "name": "Acme Corp"});
    let (status, created) = call(&deps, signed("POST", "/admin/partners").json(&partner)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], OPERATOR);
    assert_eq!(call(&deps, signed("POST", "/admin/partners").json(&partner)).await.0, 409);
    let (_, partners) = call(&deps, signed("GET", "/admin/partners")).await;
    assert_eq!(partners["data"][0]["partner_id"], "acme", "{partners}");

    let (status, key) =
        call(&deps, signed("POST", "/admin/api-keys").json(&json!({"partner_id": "acme", "name": "backend"}))).await;
    assert_eq!(status, 201, "{key}");
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    assert!(is_key_id(id) && secret.starts_with("pc_"), "{key}");
    assert!(fresh.store.find_api_key(secret).await.unwrap().unwrap().is_active());

    let (status, list) = call(&deps, signed("GET", "/admin/api-keys?partner_id=acme")).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(list["data"][0]["created_by"], OPERATOR);
    assert!(!list.to_string().contains(secret), "a listing never shows a key");

    let (status, revoked) = call(&deps, signed("POST", &format!("/admin/api-keys/{id}/revoke"))).await;
    assert_eq!((status, revoked["active"].as_bool()), (200, Some(false)), "{revoked}");
    assert_eq!(revoked["revoked_by"], OPERATOR);
    assert!(!fresh.store.find_api_key(secret).await.unwrap().unwrap().is_active());
    let (status, again) = call(&deps, signed("POST", &format!("/admin/api-keys/{id}/revoke"))).await;
    assert_eq!((status, &again["revoked_at"]), (200, &revoked["revoked_at"]), "revoking again changes nothing");
}

#[tokio::test]
async fn bad_admin_input_gets_a_json_4xx() {
    let fresh = Fresh::in_memory();
    let deps = deps(&fresh);
    let key = |body: Value| signed("POST", "/admin/api-keys").json(&body);
    for (req, status, code) in [
        (key(json!({"partner_id": "nobody", "name": "x"})), 422, "unknown_partner"),
        (key(json!({"partner_id": "Bad Id!", "name": "x"})), 400, "invalid_partner_id"),
        (key(json!({"partner_id": "acme", "name": " "})), 400, "invalid_name"),
        (key(json!({"partner_id": "acme"})), 400, "invalid_request"),
        (signed("POST", "/admin/partners").text("application/json", "{"), 400, "invalid_json"),
        (signed("GET", "/admin/api-keys"), 400, "invalid_partner_id"),
        (signed("GET", "/admin/api-keys?partner_id=acme&cursor=nope"), 400, "invalid_cursor"),
        (signed("GET", "/admin/partners?limit=0"), 400, "invalid_request"),
        (signed("POST", "/admin/api-keys/key_0123456789abcdef/revoke"), 404, "not_found"),
        (signed("POST", "/admin/api-keys/pc_notanid/revoke"), 404, "not_found"),
        (signed("DELETE", "/admin/partners"), 405, "method_not_allowed"),
    ] {
        let (got, body) = call(&deps, req).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
}

#[tokio::test]
async fn listings_page_with_cursors() {
    let fresh = Fresh::in_memory();
    let deps = deps(&fresh);
    for p in ["p1", "p2", "p3"] {
        let body = json!({"partner_id": p, "name": p});
        assert_eq!(call(&deps, signed("POST", "/admin/partners").json(&body)).await.0, 201);
    }
    let (_, first) = call(&deps, signed("GET", "/admin/partners?limit=2")).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = call(&deps, signed("GET", &format!("/admin/partners?limit=2&cursor={cursor}"))).await;
    assert_eq!(rest["data"][0]["partner_id"], "p3", "{rest}");
    // A partners cursor does not page a partner's keys.
    let (status, _) = call(&deps, signed("GET", &format!("/admin/api-keys?partner_id=p1&cursor={cursor}"))).await;
    assert_eq!(status, 400);
}
