//! Issue #26 point 1: the sample checkout (`examples/checkout`) in a real browser. A customer
//! subscribes on each PG mode — Payple's window, StepPay's pay page, StepPay's SDK — through the
//! shop's page in headless Chromium; the card is declined once first (the sandbox's fault
//! injection), then paid; then the customer cancels. Everything is real: the local stack over
//! moto, the sandbox over HTTP, the shop's backend, and Debian's Chromium driven by chromedriver.
//!
//! Why WebDriver through `fantoccini`: Debian ships `chromium` with a matching `chromium-driver`,
//! so the driver always fits the browser (CDP crates pin a protocol revision, Playwright needs
//! Node and its own browser download, which this closed network refuses). fantoccini builds with
//! no TLS at all (default features off; plain HTTP to chromedriver on 127.0.0.1) on the
//! workspace's tokio/hyper 1, so no openssl or native-tls is pulled in, and it runs under nextest
//! like every other test.
//!
//! Screenshots go to `$TMPDIR/paycycle-checkout-screenshots`, or to `docs/` when `PAYCYCLE_UPDATE_SCREENSHOTS=1`
//! (README shows those). The test skips, loudly, only when Chromium or chromedriver is missing
//! after `make bootstrap` (which installs them where it can).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use paycycle_dev::{LocalStack, Options};
use paycycle_example_checkout::PLANS;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver started by this test on a free 127.0.0.1 port, stopped by its PID on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium with a fresh profile. The background-networking flags keep Chromium from
/// calling out on its own (this machine refuses it); the dead proxy sends anything that is not
/// loopback nowhere, so no traffic leaves 127.0.0.1 (Chromium never proxies loopback).
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--proxy-server=http://127.0.0.1:9",
        "--window-size=1000,760",
        "--lang=ko-KR",
    ];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps = json!({"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}});
    let caps = caps.as_object().cloned().expect("an object");
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session with headless Chromium")
}

fn temp_dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("paycycle-{what}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// `docs/` with `PAYCYCLE_UPDATE_SCREENSHOTS=1`, else a temporary directory (CI keeps the tree clean).
fn screenshot_dir() -> PathBuf {
    if std::env::var("PAYCYCLE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&docs).expect("docs/");
        docs
    } else {
        // One directory, overwritten by each run, so runs do not pile up in /tmp.
        let dir = std::env::temp_dir().join("paycycle-checkout-screenshots");
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }
}

struct Run {
    stack: LocalStack,
    shop: paycycle_example_checkout::Shop,
    api_key: String,
    http: reqwest::Client,
    shots: PathBuf,
}

impl Run {
    async fn shot(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("checkout-{name}.png")), png).expect("the screenshot is written");
    }

    async fn ledger_charges(&self) -> Vec<Value> {
        let r = self.http.get(format!("{}/__admin/ledger", self.stack.sandbox.base_url())).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["charges"].as_array().cloned().unwrap_or_default()
    }

    async fn decline_next_charge(&self) {
        let fault = json!({"operation": "charge", "count": 1, "fault": {"kind": "decline", "hard": false}});
        let r = self.http.post(format!("{}/__admin/scenarios", self.stack.sandbox.base_url())).json(&fault).send();
        assert!(r.await.unwrap().status().is_success());
    }

    async fn subscription(&self, id: &str) -> Value {
        let r = self.http.get(format!("{}/subscriptions/{id}", self.stack.api_url())).bearer_auth(&self.api_key);
        r.send().await.unwrap().json().await.unwrap()
    }
}

/// Waits until the browser is on `path` of the shop and the page has its `#result`; its
/// `data-status` (verify's or cancel's HTTP status, as the shop got it).
async fn result_on(c: &Client, path: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(url) = c.current_url().await
            && url.path() == path
            && let Ok(el) = c.find(Locator::Css("#result")).await
            && let Ok(Some(status)) = el.attr("data-status").await
        {
            return status.parse().expect("a status");
        }
        assert!(Instant::now() < deadline, "no result page at {path}; at {:?}", c.current_url().await.ok());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

/// The shop's page for `customer`, the plan of `pg` chosen, and (Payple's window, StepPay's SDK)
/// the PG layer's pay button pressed. Screenshot of the layer as `window`, if named.
async fn subscribe(run: &Run, c: &Client, pg: &str, customer: &str, window: Option<&str>) {
    c.goto(&run.shop.url()).await.unwrap();
    let id = c.find(Locator::Css("input[name=customer_id]")).await.unwrap();
    id.clear().await.unwrap();
    id.send_keys(customer).await.unwrap();
    if window.is_none() && pg == "payple" {
        // The shop's plans page, once (README).
        run.shot(c, "shop").await;
    }
    c.find(Locator::Css(&format!("#subscribe-{pg}"))).await.unwrap().click().await.unwrap();
    if pg == "steppay_managed" {
        return; // the backend redirects to StepPay's pay page, which sends the customer back
    }
    c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#pay")).await.unwrap().click().await.unwrap();
    let layer = c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#pg-sandbox-pay")).await.unwrap();
    if let Some(name) = window {
        run.shot(c, name).await;
    }
    layer.click().await.unwrap();
}

/// One customer on one PG mode: declined once, then paid, then canceled.
async fn journey(run: &Run, c: &Client, pg: &str, return_path: &str) {
    let plan = PLANS.iter().find(|p| p.pg == pg).unwrap();
    let customer = format!("cus_browser_{pg}");
    let charges_before = run.ledger_charges().await.len();

    run.decline_next_charge().await;
    subscribe(run, c, pg, &customer, None).await;
    let status = result_on(c, return_path).await;
    assert!((400..500).contains(&status), "{pg}: a declined card is a 4xx from verify, got {status}");
    let code = text(c, "#error-code").await;
    assert!(["payment_not_completed", "payment_failed"].contains(&code.as_str()), "{pg}: {code}");
    if pg == "payple" {
        // What Payple's window told the customer, shown as the PG's word; verify decided.
        assert!(text(c, "#pg-message").await.starts_with("[test]"));
    }
    run.shot(c, &format!("{pg}-declined")).await;
    assert_eq!(run.ledger_charges().await.len(), charges_before, "{pg}: the decline charged nothing");

    let window = (pg != "steppay_managed").then(|| format!("{pg}-window"));
    subscribe(run, c, pg, &customer, window.as_deref()).await;
    assert_eq!(result_on(c, return_path).await, 200, "{pg}: {}", c.source().await.unwrap_or_default());
    assert_eq!(text(c, "#subscription-state").await, "active");
    let amount = paycycle_example_checkout::won(plan.amount);
    assert_eq!(text(c, "#payment-amount").await, amount);
    let sub = text(c, "#subscription-id").await;
    assert!(!c.source().await.unwrap().contains(&run.api_key), "the API key never reaches a page");
    run.shot(c, &format!("{pg}-paid")).await;
    // The PG's side of the money: exactly one charge, the plan's amount.
    let charges = run.ledger_charges().await;
    assert_eq!(charges.len(), charges_before + 1, "{pg}: one charge");
    assert_eq!(charges.last().unwrap()["amount"].as_i64(), Some(plan.amount));
    let s = run.subscription(&sub).await;
    assert_eq!((s["state"].as_str(), s["customer_id"].as_str()), (Some("active"), Some(customer.as_str())), "{s}");

    c.find(Locator::Css("#cancel")).await.unwrap().click().await.unwrap();
    assert_eq!(result_on(c, "/cancel").await, 200);
    assert_eq!(text(c, "#subscription-state").await, "canceled");
    run.shot(c, &format!("{pg}-canceled")).await;
    assert_eq!(run.subscription(&sub).await["state"], "canceled");
}

async fn scenario(run: &Run, c: &Client) {
    c.set_window_size(1000, 760).await.unwrap();
    journey(run, c, "payple", "/return/payple").await;
    journey(run, c, "steppay_managed", "/return/steppay").await;
    journey(run, c, "steppay_self", "/return/steppay-self").await;
    // Bad input to the shop is a clear JSON 4xx (and nothing reaches paycycle).
    let r = run.http.post(format!("{}/return/payple", run.shop.url())).form(&[("PCD_PAY_OID", "chk_forged")]).send();
    let r = r.await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_checkout");
    let r = run.http.post(format!("{}/subscribe", run.shop.url())).form(&[("plan", "free"), ("customer_id", "c")]);
    let r = r.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unknown_plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_subscribes_is_declined_once_and_cancels_on_each_pg_mode_in_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian's chromium and \
             chromium-driver); `make bootstrap` installs them where apt-get and root are available !!!!!!!!\n"
        );
        return;
    }
    let stack = LocalStack::start(Options { api_port: 0, ..Options::default() }).await.unwrap();
    let api_key = stack.create_api_key("browser", "default").await.unwrap();
    let shop = paycycle_dev::start_example_shop(&stack, &api_key, 0).await.unwrap();
    let run = Run { stack, shop, api_key, http: reqwest::Client::new(), shots: screenshot_dir() };
    let driver = Driver::start();
    let profile = temp_dir("chromium-profile");
    let client = browser(&driver, &profile).await;
    // The scenario runs in its own task so that a failed assert still closes the browser (and
    // chromedriver then Chromium) before the driver is stopped.
    let run = std::sync::Arc::new(run);
    let (r, c) = (run.clone(), client.clone());
    let outcome = tokio::spawn(async move { scenario(&r, &c).await }).await;
    let _ = client.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    println!("screenshots in {}", run.shots.display());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
