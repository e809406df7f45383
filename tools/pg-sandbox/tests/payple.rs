//! Contract tests for the Payple simulator: partner auth, the registration window (AUTH, PAY,
//! CERT), re-pay, lookup, refund, billing key deletion, webhooks and every fault class, with
//! seed 003's example requests.

mod common;

use std::time::Duration;

use common::{REFERER, Receiver, env};
use serde_json::{Value, json};

#[tokio::test]
async fn partner_auth_needs_referer_and_credentials_and_returns_one_time_tokens() {
    let e = env().await;
    let url = format!("{}/php/auth.php", e.base);
    let seed_body = json!({"cst_id": "test", "custKey": "abcd1234567890"});
    let v: Value = e.http.post(&url).json(&seed_body).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"], "error");
    assert!(v["result_msg"].as_str().unwrap().contains("AUTH0004"), "{v}");

    let v: Value =
        e.http.post(&url).header("Referer", REFERER).json(&seed_body).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"], "success", "{v}");
    for k in ["server_name", "result_msg", "cst_id", "custKey", "AuthKey", "PCD_PAY_HOST", "PCD_PAY_URL", "return_url"]
    {
        assert!(v[k].is_string(), "{k} in {v}");
    }
    assert_ne!(v["cst_id"], "test", "the returned cst_id is a token, not the partner id");
    assert_eq!(
        v["return_url"].as_str().unwrap(),
        format!("{}{}", v["PCD_PAY_HOST"].as_str().unwrap(), v["PCD_PAY_URL"].as_str().unwrap())
    );

    let bad = json!({"cst_id": "test", "custKey": "wrong"});
    let v: Value = e.http.post(&url).header("Referer", REFERER).json(&bad).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"], "error");

    e.admin("/__admin/config", json!({"payple_referer": "https://shop.example.com"})).await;
    let v: Value = e
        .http
        .post(&url)
        .header("Referer", "https://evil.example.com")
        .json(&seed_body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["result_msg"].as_str().unwrap().contains("AUTH0007"), "{v}");

    // The re-pay flags (seed 4-2) route the AuthKey to the re-pay URL.
    let (_, _, _, return_url) = e.payple_auth(json!({"PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"})).await;
    assert!(return_url.ends_with("/php/SimplePayCardAct.php?ACT_=PAYM"), "{return_url}");
}

#[tokio::test]
async fn register_then_repay_with_the_seed_body() {
    let e = env().await;
    let payer = e.payple_payer().await;
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"})).await;
    // Seed 003 4-3's body, placeholders filled.
    let body = json!({
        "PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
        "PCD_PAY_TYPE": "card", "PCD_PAYER_ID": payer, "PCD_PAY_GOODS": "테스트 상품명",
        "PCD_PAY_TOTAL": "100", "PCD_SIMPLE_FLAG": "Y"
    });
    let v = e.payple_post(&url, &body).await;
    assert_eq!(v["PCD_PAY_RST"], "success", "{v}");
    assert_eq!(v["PCD_PAY_CODE"], "SPCD0000");
    assert!(v["PCD_PAY_MSG"].as_str().unwrap().starts_with("[test]"));
    assert_eq!(v["PCD_PAY_TOTAL"], 100, "a JSON number (manual_card \"3. 이후결제 - 정기결제\")");
    assert!(v["PCD_PAY_OID"].is_string(), "an OID is generated when none is given");
    for k in [
        "PCD_PAY_TIME",
        "PCD_PAY_CARDNAME",
        "PCD_PAY_CARDNUM",
        "PCD_PAY_CARDTRADENUM",
        "PCD_PAY_CARDAUTHNO",
        "PCD_PAYER_NO",
    ] {
        assert!(v[k].is_string(), "{k}");
    }
    // An AuthKey serves one request only.
    let again = e.payple_post(&url, &body).await;
    assert_eq!(again["PCD_PAY_RST"], "error");

    // Numbers as numbers, OID given, payer fields echoed.
    let v = e.payple_repay(&payer, "sub_x-p1-a1", json!(9900)).await;
    assert_eq!((v["PCD_PAY_RST"].as_str(), v["PCD_PAY_OID"].as_str()), (Some("success"), Some("sub_x-p1-a1")));
    assert_eq!(v["PCD_PAYER_EMAIL"], "test@payple.kr");
    // The same OID again: already processed.
    let dup = e.payple_repay(&payer, "sub_x-p1-a1", json!(9900)).await;
    assert_eq!((dup["PCD_PAY_RST"].as_str(), dup["PCD_PAY_CODE"].as_str()), (Some("error"), Some("SPCD0014")));
    assert!(dup["PCD_PAY_MSG"].as_str().unwrap().contains("이미 처리된 거래입니다"));
    // Card minimum 100원.
    let small = e.payple_repay(&payer, "sub_x-p2-a1", json!(99)).await;
    assert_eq!(small["PCD_PAY_RST"], "error");
    let unknown = e.payple_repay("no-such-payer", "sub_x-p3-a1", json!(100)).await;
    assert_eq!(unknown["PCD_PAY_RST"], "error");

    let ledger = e.ledger().await;
    assert_eq!(ledger["totals"]["charges"], 2);
    assert_eq!(ledger["totals"]["charged"], 10000);
}

#[tokio::test]
async fn window_pay_charges_and_posts_the_result_to_the_rst_url() {
    let e = env().await;
    let hooks = Receiver::start().await;
    e.admin("/__admin/config", json!({"payple_webhook_url": hooks.url, "payple_webhook_format": "form"})).await;
    let v = e
        .payple_window(
            json!({"PCD_PAY_WORK": "PAY", "PCD_PAY_TYPE": "card", "PCD_CARD_VER": "01", "PCD_PAY_GOODS": "Pro",
            "PCD_PAY_TOTAL": 9900, "PCD_PAY_OID": "sub_w-p0-a1", "PCD_RST_URL": "https://shop.example.com/r", "PCD_USER_DEFINE1": "sub_w"}),
        )
        .await;
    assert_eq!(v["PCD_PAY_RST"], "success", "{v}");
    assert!(v["PCD_PAY_CODE"].as_str().unwrap().ends_with("0000"));
    assert_eq!(v["PCD_PAY_TOTAL"], "9900");
    assert_eq!(v["PCD_USER_DEFINE1"], "sub_w", "user-define fields come back unchanged");
    assert!(v["PCD_PAYER_ID"].is_string());
    let got = hooks.wait_for(1).await;
    assert_eq!(got[0].content_type, "application/x-www-form-urlencoded");
    assert!(got[0].body.contains("PCD_PAY_OID=sub_w-p0-a1"));

    // Without ?format=json the window answers the browser with a form posting to PCD_RST_URL.
    let (_, _, auth_key, _) = e.payple_auth(json!({})).await;
    let html = e
        .http
        .post(format!("{}/__sandbox/payple/window", e.base))
        .form(&[
            ("PCD_AUTH_KEY", auth_key.as_str()),
            ("PCD_PAY_WORK", "AUTH"),
            ("PCD_RST_URL", "https://shop.example.com/r?x=\"1\""),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<form method="post" action="https://shop.example.com/r?x=&quot;1&quot;">"#), "{html}");
    assert!(html.contains(r#"name="PCD_PAY_RST" value="success""#));

    // Closing the window or a card error.
    let closed = e.payple_window(json!({"PCD_PAY_WORK": "PAY", "PCD_PAY_TOTAL": 100, "SANDBOX_ACTION": "close"})).await;
    assert_eq!(closed["PCD_PAY_RST"], "close");
    let failed = e.payple_window(json!({"PCD_PAY_WORK": "PAY", "PCD_PAY_TOTAL": 100, "SANDBOX_ACTION": "error"})).await;
    assert_eq!(failed["PCD_PAY_RST"], "error");
    assert_eq!(e.ledger().await["totals"]["charges"], 1);
}

#[tokio::test]
async fn cert_is_charged_only_when_confirmed() {
    let e = env().await;
    let v = e
        .payple_window(
            json!({"PCD_PAY_WORK": "CERT", "PCD_PAY_TYPE": "card", "PCD_CARD_VER": "01", "PCD_PAY_GOODS": "Pro", "PCD_PAY_TOTAL": "100",
            "PCD_PAY_OID": "test123456789", "PCD_RST_URL": "https://shop.example.com/r"}),
        )
        .await;
    assert_eq!(v["PCD_PAY_RST"], "success", "{v}");
    assert_eq!(e.ledger().await["totals"]["charges"], 0, "not charged before the confirm");
    let cofurl = v["PCD_PAY_COFURL"].as_str().unwrap();
    assert!(cofurl.ends_with("/php/PayCardConfirmAct.php?ACT_=PAYM"));
    // Seed 003 3-7's confirm body.
    let body = json!({
        "PCD_CST_ID": "test", "PCD_CUST_KEY": "abcd1234567890",
        "PCD_AUTH_KEY": v["PCD_AUTH_KEY"], "PCD_PAY_REQKEY": v["PCD_PAY_REQKEY"], "PCD_PAYER_ID": v["PCD_PAYER_ID"]
    });
    let c = e.payple_post(cofurl, &body).await;
    assert_eq!((c["PCD_PAY_RST"].as_str(), c["PCD_PAY_CODE"].as_str()), (Some("success"), Some("PCCF0000")), "{c}");
    for k in ["PCD_PAY_REQKEY", "PCD_PAY_OID", "PCD_PAYER_ID", "PCD_PAY_TOTAL", "PCD_PAY_CARDTRADENUM", "PCD_PAY_TIME"]
    {
        assert!(c[k].is_string(), "{k} in the seed's response sample");
    }
    assert_eq!(c["PCD_PAY_OID"], "test123456789");
    assert_eq!(e.ledger().await["totals"]["charges"], 1);
    let again = e.payple_post(cofurl, &body).await;
    assert_eq!(again["PCD_PAY_RST"], "error", "a confirm is used once");
    assert_eq!(e.ledger().await["totals"]["charges"], 1);
}

#[tokio::test]
async fn lookup_by_oid_and_request_date() {
    let e = env().await;
    e.admin("/__admin/clock", json!({"now": "2027-02-28T23:30:00+09:00"})).await;
    let payer = e.payple_payer().await;
    let paid = e.payple_repay(&payer, "sub_l-p1-a1", json!(9900)).await;
    assert_eq!(paid["PCD_PAY_TIME"].as_str().unwrap()[..8], *"20270228", "the sandbox clock travels");
    let e = &e;
    let lookup = |date: &'static str| async move {
        let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAYCHK_FLAG": "Y"})).await;
        e.payple_post(
            &url,
            &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
            "PCD_PAYCHK_FLAG": "Y", "PCD_PAY_TYPE": "card", "PCD_PAY_OID": "sub_l-p1-a1", "PCD_PAY_DATE": date}),
        )
        .await
    };
    let found = lookup("20270228").await;
    assert_eq!(found["PCD_PAY_RST"], "success", "{found}");
    assert_eq!(found["PCD_PAY_TOTAL"], 9900);
    assert_eq!(found["PCD_PAY_OID"], "sub_l-p1-a1");
    let wrong_day = lookup("20270301").await;
    assert_eq!(wrong_day["PCD_PAY_RST"], "error");
}

#[tokio::test]
async fn refunds_full_partial_and_never_more_than_paid() {
    let e = env().await;
    let payer = e.payple_payer().await;
    let paid = e.payple_repay(&payer, "sub_r-p1-a1", json!(10000)).await;
    let date = paid["PCD_PAY_TIME"].as_str().unwrap()[..8].to_string();
    let refund = |total: Value, refund_key: &'static str| {
        let date = date.clone();
        let e = &e;
        async move {
            let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAYCANCEL_FLAG": "Y"})).await;
            e.payple_post(
                &url,
                &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
                "PCD_REFUND_KEY": refund_key, "PCD_PAYCANCEL_FLAG": "Y", "PCD_PAY_OID": "sub_r-p1-a1",
                "PCD_PAY_DATE": date, "PCD_REFUND_TOTAL": total}),
            )
            .await
        }
    };
    assert_eq!(refund(json!(1000), "wrong-key").await["PCD_PAY_RST"], "error");
    let r = refund(json!("3000"), "local-payple-refund-key").await;
    assert_eq!((r["PCD_PAY_RST"].as_str(), r["PCD_PAY_CODE"].as_str()), (Some("success"), Some("PAYC0000")), "{r}");
    assert_eq!(r["PCD_REFUND_TOTAL"], 3000);
    assert_eq!(refund(json!(7001), "local-payple-refund-key").await["PCD_PAY_RST"], "error");

    // Payple's test account cannot partially cancel card payments.
    e.admin("/__admin/config", json!({"payple_partial_refunds": false})).await;
    let partial = refund(json!(1000), "local-payple-refund-key").await;
    assert_eq!(partial["PCD_PAY_CODE"], "PAYC0005");
    e.admin("/__admin/config", json!({"payple_partial_refunds": true})).await;
    assert_eq!(refund(json!(7000), "local-payple-refund-key").await["PCD_PAY_RST"], "success");
    assert_eq!(refund(json!(1), "local-payple-refund-key").await["PCD_PAY_RST"], "error");
    assert_eq!(e.ledger().await["totals"]["refunded"], 10000);
}

#[tokio::test]
async fn a_deleted_billing_key_cannot_be_charged() {
    let e = env().await;
    let payer = e.payple_payer().await;
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAY_WORK": "PUSERDEL"})).await;
    let v = e
        .payple_post(
            &url,
            &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
            "PCD_PAY_WORK": "PUSERDEL", "PCD_PAYER_ID": payer, "PCD_PAYER_NO": "1"}),
        )
        .await;
    assert_eq!(v["PCD_PAY_RST"], "success", "{v}");
    assert!(v["PCD_PAY_MSG"].as_str().unwrap().contains("해지완료"));
    let r = e.payple_repay(&payer, "sub_d-p1-a1", json!(100)).await;
    assert_eq!(r["PCD_PAY_RST"], "error");
    assert_eq!(e.ledger().await["billing_keys"]["payple"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn faults_per_payer_and_for_the_next_requests() {
    let e = env().await;
    let payer = e.payple_payer().await;

    e.scenario(json!({"billing_key": payer, "fault": {"kind": "decline", "hard": false}})).await;
    let v = e.payple_repay(&payer, "f-1", json!(100)).await;
    assert_eq!((v["PCD_PAY_RST"].as_str(), v["PCD_PAY_CODE"].as_str()), (Some("error"), Some("SPCD0003")));
    e.http.delete(format!("{}/__admin/scenarios", e.base)).send().await.unwrap();
    e.scenario(json!({"billing_key": payer, "fault": {"kind": "decline", "hard": true}})).await;
    assert_eq!(e.payple_repay(&payer, "f-2", json!(100)).await["PCD_PAY_CODE"], "SPCD0005");
    e.http.delete(format!("{}/__admin/scenarios", e.base)).send().await.unwrap();

    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "server_error"}})).await;
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"})).await;
    let r = e
        .http
        .post(&url)
        .header("Referer", REFERER)
        .json(&json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key, "PCD_PAY_TYPE": "card",
            "PCD_PAYER_ID": payer, "PCD_PAY_GOODS": "x", "PCD_PAY_TOTAL": 100, "PCD_SIMPLE_FLAG": "Y", "PCD_PAY_OID": "f-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(e.ledger().await["totals"]["charges"], 0);

    // Timeout after charge: the client sees nothing, the PG charged; the same OID is then
    // "already processed" and the lookup finds the payment.
    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 3000})).await;
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "timeout_after_charge"}})).await;
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"})).await;
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let err = quick
        .post(&url)
        .header("Referer", REFERER)
        .json(&json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key, "PCD_PAY_TYPE": "card",
            "PCD_PAYER_ID": payer, "PCD_PAY_GOODS": "x", "PCD_PAY_TOTAL": 100, "PCD_SIMPLE_FLAG": "Y", "PCD_PAY_OID": "f-4"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(e.ledger().await["totals"]["charges"], 1, "charged despite the timeout");
    assert_eq!(e.payple_repay(&payer, "f-4", json!(100)).await["PCD_PAY_CODE"], "SPCD0014");

    let t = std::time::Instant::now();
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "delay", "ms": 400}})).await;
    assert_eq!(e.payple_repay(&payer, "f-5", json!(100)).await["PCD_PAY_RST"], "success");
    assert!(t.elapsed() >= Duration::from_millis(400));

    e.scenario(json!({"operation": "auth", "count": 1, "fault": {"kind": "server_error"}})).await;
    let r = e
        .http
        .post(format!("{}/php/auth.php", e.base))
        .header("Referer", REFERER)
        .json(&json!({"cst_id": "test", "custKey": "abcd1234567890"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}

#[tokio::test]
async fn payple_webhooks_twice_and_as_json() {
    let e = env().await;
    let hooks = Receiver::start().await;
    e.admin("/__admin/config", json!({"payple_webhook_url": hooks.url})).await;
    let payer = e.payple_payer().await;
    e.scenario(json!({"operation": "charge", "count": 1, "fault": {"kind": "webhook_twice"}})).await;
    e.payple_repay(&payer, "h-1", json!(100)).await;
    let got = hooks.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].content_type, "application/json");
    let v: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!((v["PCD_PAY_OID"].as_str(), v["PCD_PAY_RST"].as_str()), (Some("h-1"), Some("success")));
    assert_eq!(got[0].body, got[1].body);

    // A webhook re-sent by hand from the admin API (a PG portal's "re-send").
    e.admin(
        "/__admin/webhooks/send",
        json!({"pg": "payple", "body": {"PCD_PAY_OID": "h-1", "PCD_PAY_RST": "success"}, "format": "form"}),
    )
    .await;
    let got = hooks.wait_for(3).await;
    assert_eq!(got[2].body, "PCD_PAY_OID=h-1&PCD_PAY_RST=success");
    e.http.post(format!("{}/__admin/reset", e.base)).send().await.unwrap();
    assert_eq!(e.ledger().await["totals"]["charges"], 0);
}

#[tokio::test]
async fn an_auth_key_expires_after_30_minutes() {
    let e = env().await;
    let payer = e.payple_payer().await;
    e.admin("/__admin/clock", json!({"now": "2027-03-01T10:00:00+09:00"})).await;
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAY_TYPE": "card", "PCD_SIMPLE_FLAG": "Y"})).await;
    e.admin("/__admin/clock", json!({"now": "2027-03-01T10:31:00+09:00"})).await;
    let v = e
        .payple_post(&url, &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key, "PCD_PAY_TYPE": "card",
            "PCD_PAYER_ID": payer, "PCD_PAY_GOODS": "x", "PCD_PAY_TOTAL": 100, "PCD_SIMPLE_FLAG": "Y", "PCD_PAY_OID": "exp-1"}))
        .await;
    assert_eq!(v["PCD_PAY_RST"], "error", "{v}");
    // An AuthKey issued for another call does not work here either.
    let (cst, key, auth_key, _) = e.payple_auth(json!({"PCD_PAYCHK_FLAG": "Y"})).await;
    let v = e
        .payple_post(&url, &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key, "PCD_PAY_TYPE": "card",
            "PCD_PAYER_ID": payer, "PCD_PAY_GOODS": "x", "PCD_PAY_TOTAL": 100, "PCD_SIMPLE_FLAG": "Y", "PCD_PAY_OID": "exp-2"}))
        .await;
    assert_eq!(v["PCD_PAY_RST"], "error", "{v}");
    assert_eq!(e.ledger().await["totals"]["charges"], 0);
}

#[tokio::test]
async fn refund_faults_decline_5xx_and_timeout_after_refund() {
    let e = env().await;
    let payer = e.payple_payer().await;
    let paid = e.payple_repay(&payer, "rf-1", json!(5000)).await;
    let date = paid["PCD_PAY_TIME"].as_str().unwrap()[..8].to_string();
    let refund = |client: reqwest::Client, total: i64| {
        let date = date.clone();
        let e = &e;
        async move {
            let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAYCANCEL_FLAG": "Y"})).await;
            client
                .post(url)
                .header("Referer", REFERER)
                .json(&json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
                    "PCD_REFUND_KEY": "local-payple-refund-key", "PCD_PAYCANCEL_FLAG": "Y", "PCD_PAY_OID": "rf-1",
                    "PCD_PAY_DATE": date, "PCD_REFUND_TOTAL": total}))
                .send()
                .await
        }
    };
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "decline", "hard": false}})).await;
    let v: Value = refund(e.http.clone(), 1000).await.unwrap().json().await.unwrap();
    assert_eq!((v["PCD_PAY_RST"].as_str(), v["PCD_PAY_CODE"].as_str()), (Some("error"), Some("PAYC0009")));
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "server_error"}})).await;
    assert_eq!(refund(e.http.clone(), 1000).await.unwrap().status(), 500);
    assert_eq!(e.ledger().await["totals"]["refunded"], 0);

    e.admin("/__admin/config", json!({"timeout_after_charge_ms": 3000})).await;
    e.scenario(json!({"operation": "refund", "count": 1, "fault": {"kind": "timeout_after_charge"}})).await;
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    assert!(refund(quick, 1000).await.unwrap_err().is_timeout());
    assert_eq!(e.ledger().await["totals"]["refunded"], 1000);
    // The lookup answers with the payment's fields only: Payple's manual lists no refund field
    // in it (PAYPLECORP/manual_card README, "결제결과 조회"), so a refund cannot be seen there.
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAYCHK_FLAG": "Y"})).await;
    let found = e
        .payple_post(
            &url,
            &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
            "PCD_PAYCHK_FLAG": "Y", "PCD_PAY_TYPE": "card", "PCD_PAY_OID": "rf-1", "PCD_PAY_DATE": date}),
        )
        .await;
    assert_eq!(found["PCD_PAY_RST"], "success", "{found}");
    assert!(found.get("PCD_REFUND_TOTAL").is_none() && found.get("PCD_PAY_STATUS").is_none(), "{found}");
}

/// PAYPLECORP/manual_card README "결제결과 조회": the lookup's answer carries the payment's fields
/// only — no refund field — and numbers as JSON numbers (`"PCD_PAY_TOTAL" => 1000`,
/// `"PCD_PAY_TAXTOTAL" => 91`); the card fields (`PCD_PAY_CARDNAME`, `PCD_PAY_CARDNUM` masked,
/// `PCD_PAY_CARDTRADENUM`, `PCD_PAY_CARDRECEIPT`) are there.
#[tokio::test]
async fn the_result_lookup_answers_numbers_as_json_numbers_and_no_refund_fields() {
    let e = env().await;
    let payer = e.payple_payer().await;
    let paid = e.payple_repay(&payer, "sub_n-p1-a1", json!(9900)).await;
    let date = paid["PCD_PAY_TIME"].as_str().unwrap()[..8].to_string();
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAYCHK_FLAG": "Y"})).await;
    let found = e
        .payple_post(
            &url,
            &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key,
            "PCD_PAYCHK_FLAG": "Y", "PCD_PAY_TYPE": "card", "PCD_PAY_OID": "sub_n-p1-a1", "PCD_PAY_DATE": date}),
        )
        .await;
    assert_eq!(found["PCD_PAY_RST"], "success", "{found}");
    assert_eq!(found["PCD_PAY_TOTAL"], json!(9900), "a JSON number: {found}");
    assert!(found["PCD_PAY_TAXTOTAL"].is_number(), "{found}");
    for k in ["PCD_REFUND_TOTAL", "PCD_REMAIN_TOTAL", "PCD_PAY_STATUS"] {
        assert!(found.get(k).is_none(), "{k} is not in the documented answer: {found}");
    }
    for k in ["PCD_PAY_CARDNAME", "PCD_PAY_CARDNUM", "PCD_PAY_CARDTRADENUM", "PCD_PAY_CARDRECEIPT", "PCD_PAY_TIME"] {
        assert!(found[k].as_str().is_some_and(|v| !v.is_empty()), "{k} in {found}");
    }
    // Exactly the documented fields (+ PCD_PAY_CODE, read by sample_php payInfo.php).
    let documented = [
        "PCD_PAY_RST",
        "PCD_PAY_CODE",
        "PCD_PAY_MSG",
        "PCD_PAY_OID",
        "PCD_PAY_TYPE",
        "PCD_PAYER_NO",
        "PCD_PAYER_ID",
        "PCD_PAY_YEAR",
        "PCD_PAY_MONTH",
        "PCD_PAY_GOODS",
        "PCD_PAY_TOTAL",
        "PCD_PAY_ISTAX",
        "PCD_PAY_TAXTOTAL",
        "PCD_PAY_TIME",
        "PCD_REGULER_FLAG",
        "PCD_PAYER_EMAIL",
        "PCD_PAY_CARDNUM",
        "PCD_PAY_CARDNAME",
        "PCD_PAY_CARDTRADENUM",
        "PCD_PAY_CARDAUTHNO",
        "PCD_PAY_CARDRECEIPT",
    ];
    let keys: std::collections::BTreeSet<&str> = found.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, documented.into_iter().collect(), "{found}");
    let num = found["PCD_PAY_CARDNUM"].as_str().unwrap();
    assert!(num.contains('*') && num.chars().filter(char::is_ascii_digit).count() < 16, "masked: {num}");
}

/// Payple's developer site reports `SPCD0001` as "the billing key does not exist" (PG-FACTS;
/// reported, not in the repos): the sandbox answers a re-pay on an unknown or deleted
/// `PCD_PAYER_ID` with it.
#[tokio::test]
async fn a_re_pay_on_a_billing_key_payple_does_not_have_is_answered_spcd0001() {
    let e = env().await;
    let unknown = e.payple_repay("no-such-payer", "sub_k-p1-a1", json!(1000)).await;
    assert_eq!((unknown["PCD_PAY_RST"].as_str(), unknown["PCD_PAY_CODE"].as_str()), (Some("error"), Some("SPCD0001")));
    let payer = e.payple_payer().await;
    let (cst, key, auth_key, url) = e.payple_auth(json!({"PCD_PAY_WORK": "PUSERDEL"})).await;
    let del = e
        .payple_post(
            &url,
            &json!({"PCD_CST_ID": cst, "PCD_CUST_KEY": key, "PCD_AUTH_KEY": auth_key, "PCD_PAY_WORK": "PUSERDEL",
            "PCD_PAYER_ID": payer}),
        )
        .await;
    assert_eq!(del["PCD_PAY_RST"], "success", "{del}");
    let deleted = e.payple_repay(&payer, "sub_k-p1-a2", json!(1000)).await;
    assert_eq!((deleted["PCD_PAY_RST"].as_str(), deleted["PCD_PAY_CODE"].as_str()), (Some("error"), Some("SPCD0001")));
    // The 100원 minimum is another answer (sandbox code), not "no such key".
    let small = e.payple_repay(&payer, "sub_k-p1-a3", json!(99)).await;
    assert_eq!(small["PCD_PAY_RST"], "error");
    assert_ne!(small["PCD_PAY_CODE"], "SPCD0001");
    assert_eq!(e.ledger().await["totals"]["charges"], 0);
}

/// `PCD_CARD_VER` is required for card windows (PAYPLECORP/manual_card README "1. 최초결제 - 공통":
/// `PCD_CARD_VER | 일반/정기결제 | O | 01 : 정기, 02 : 일반`; PAYPLECORP/sample_php
/// `order_confirm.php`: `if (pay_type == "card") obj.PCD_CARD_VER = card_ver; // Default: 01`).
#[tokio::test]
async fn a_card_window_needs_pcd_card_ver() {
    let e = env().await;
    let base = json!({"PCD_PAY_WORK": "PAY", "PCD_PAY_TYPE": "card", "PCD_PAY_GOODS": "Pro", "PCD_PAY_TOTAL": 9900,
        "PCD_PAY_OID": "sub_v-p0-a1", "PCD_RST_URL": "https://shop.example.com/r"});
    let missing = e.payple_window(base.clone()).await;
    assert_eq!(missing["PCD_PAY_RST"], "error", "{missing}");
    let mut bad = base.clone();
    bad["PCD_CARD_VER"] = json!("03");
    assert_eq!(e.payple_window(bad).await["PCD_PAY_RST"], "error");
    assert_eq!(e.ledger().await["totals"]["charges"], 0);
    let mut ok = base;
    ok["PCD_CARD_VER"] = json!("01");
    let v = e.payple_window(ok).await;
    assert_eq!(v["PCD_PAY_RST"], "success", "{v}");
    assert_eq!(e.ledger().await["totals"]["charges"], 1);
}
