//! Issue #15: input limits. While slow clients trickle bodies byte by byte, others send bodies
//! over API Gateway's 10 MiB and our 64 KiB limit and JSON nested 30,000 deep, webhook-ingest keeps
//! answering genuine webhooks — each one stored exactly once — and every abuse gets a JSON 4xx.
//! (In AWS, API Gateway buffers requests, so slow clients never reach the Lambda; the local
//! stack's HTTP server is where they would hurt, and it must not let them.)

use std::time::Duration;

use paycycle_dev::{LocalStack, Options};
use tokio::io::AsyncWriteExt;

fn payple_result(i: usize) -> String {
    format!(
        "PCD_PAY_RST=success&PCD_PAY_CODE=0000&PCD_PAY_OID=limits-{i}&PCD_PAY_TYPE=card&PCD_PAY_WORK=PAY&PCD_PAY_TOTAL=9900"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_keeps_answering_under_slow_huge_and_deep_requests() {
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let addr = stack.api_addr;
    let url = format!("{}/webhooks/payple", stack.api_url());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    // 40 slow clients: headers promise 60 KB, the body comes a byte every 100 ms.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..40 {
        slow.spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
            let head = "POST /webhooks/payple HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..600 {
                if s.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    // Abusers in a loop: 12 MiB bodies (over the gateway limit), 65 KiB+ bodies, deep JSON.
    let huge = "a".repeat(12 * 1024 * 1024);
    let over = "a".repeat(64 * 1024 + 1);
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let mut abuse = tokio::task::JoinSet::new();
    for (want, body, ct) in [
        (413, huge, "application/json"),
        (413, over, "application/x-www-form-urlencoded"),
        (400, deep, "application/json"),
    ] {
        let (http, url) = (http.clone(), url.clone());
        abuse.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let r = http.post(&url).header("content-type", ct).body(body.clone()).send().await;
                match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let json: serde_json::Value = r.json().await.unwrap_or_default();
                        statuses.push((status, json["error"]["code"].as_str().unwrap_or("").to_string()));
                    }
                    // A server may close a connection whose body it refuses before reading it.
                    Err(e) => statuses.push((0, e.to_string())),
                }
            }
            (want, statuses)
        });
    }

    // Meanwhile, genuine webhooks: every one answered 200 and stored once; a second delivery of
    // each is a duplicate, not a second event.
    let deliver = |i: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(payple_result(i))
                .send()
                .await
                .unwrap_or_else(|e| panic!("webhook {i} not answered: {e}"));
            assert_eq!(r.status(), 200, "webhook {i}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    for duplicate in [false, true] {
        for i in 0..30 {
            let v = deliver(i).await;
            assert_eq!(v["duplicate"], duplicate, "webhook {i}: {v}");
        }
    }

    while let Some(r) = abuse.join_next().await {
        let (want, statuses) = r.unwrap();
        for (status, code) in &statuses {
            assert!(
                *status == 0 || *status == want,
                "abusive request answered {status} {code} (want {want} or a refused body): {statuses:?}"
            );
            if *status != 0 {
                assert!(!code.is_empty(), "a 4xx without the JSON error shape");
            }
        }
        assert!(statuses.iter().any(|(s, _)| *s == want), "never answered {want}: {statuses:?}");
    }
    slow.abort_all();
}
