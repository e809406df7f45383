//! Stand-ins for the PGs' browser scripts, served at the sandbox's own URLs so that a partner's
//! page loads them exactly as it loads the real ones (issue #26):
//! - `GET /js/v1/payment.js` for Payple's `https://democpay.payple.kr/js/v1/payment.js`, which
//!   defines `PaypleCpayAuthCheck(obj)` (PAYPLECORP/sample_php `order_confirm.php`: the page builds
//!   `obj` with the `PCD_*` window fields and `PCD_RST_URL`, then calls it; without
//!   `callbackFunction` Payple posts the result to `PCD_RST_URL`).
//! - `GET /js/steppay-0.7.1.js` for StepPay's `https://cdn.steppay.kr/js/steppay-0.7.1.js`, which
//!   defines `Steppay.requestPay(params).cancel(f).success(f).error(f)` (dev-docs
//!   `09-2_결제_SDK.md`).
//!
//! Each shows a small "PG window" layer over the partner's page with a pay and a close button, then
//! goes through the sandbox's own customer routes (`/__sandbox/payple/window`,
//! `/__sandbox/steppay/sdk/pay`), so the ledger, faults and webhooks are the same as for every
//! other test. These scripts never see a partner secret: only what the page hands them.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The layer both stand-ins draw: a title, the goods and amount, a pay and a close button.
const LAYER: &str = r#"
  function sandboxLayer(title, goods, total, onPay, onClose) {
    var layer = document.createElement('div');
    layer.id = 'pg-sandbox-layer';
    layer.setAttribute('style', 'position:fixed;inset:0;background:rgba(0,0,0,.45);display:flex;align-items:center;justify-content:center;font-family:sans-serif;z-index:2147483647');
    var box = document.createElement('div');
    box.setAttribute('style', 'background:#fff;border-radius:10px;padding:24px 28px;min-width:320px;box-shadow:0 8px 30px rgba(0,0,0,.3)');
    var h = document.createElement('h2'); h.textContent = title; h.setAttribute('style', 'margin:0 0 12px;font-size:18px');
    var p = document.createElement('p'); p.textContent = goods + ' · ' + Number(total).toLocaleString('ko-KR') + '원';
    var card = document.createElement('p'); card.textContent = '카드 2121-****-****-2031 (sandbox)'; card.setAttribute('style', 'color:#555');
    var pay = document.createElement('button'); pay.id = 'pg-sandbox-pay'; pay.textContent = '결제하기';
    pay.setAttribute('style', 'background:#3b5bdb;color:#fff;border:0;border-radius:6px;padding:10px 18px;margin-right:8px;font-size:15px');
    var close = document.createElement('button'); close.id = 'pg-sandbox-close'; close.textContent = '닫기';
    close.setAttribute('style', 'border:1px solid #aaa;background:#fff;color:#222;border-radius:6px;padding:10px 18px;font-size:15px');
    pay.onclick = function () { pay.disabled = true; close.disabled = true; onPay(); };
    close.onclick = function () { pay.disabled = true; close.disabled = true; onClose(); };
    box.appendChild(h); box.appendChild(p); box.appendChild(card); box.appendChild(pay); box.appendChild(close);
    layer.appendChild(box);
    document.body.appendChild(layer);
    return layer;
  }
"#;

const PAYPLE: &str = r#"
  // The window posts the customer's result to PCD_RST_URL (the partner's return_url), as Payple
  // does when no callbackFunction is given (PAYPLECORP/sample_php order_confirm.php).
  window.PaypleCpayAuthCheck = function (obj) {
    function submit(action) {
      var form = document.createElement('form');
      form.method = 'post';
      form.action = origin + '/__sandbox/payple/window';
      Object.keys(obj).forEach(function (k) {
        var v = obj[k];
        if (v === null || v === undefined || typeof v === 'function' || typeof v === 'object') return;
        var input = document.createElement('input');
        input.type = 'hidden'; input.name = k; input.value = String(v);
        form.appendChild(input);
      });
      if (action) {
        var a = document.createElement('input');
        a.type = 'hidden'; a.name = 'SANDBOX_ACTION'; a.value = action;
        form.appendChild(a);
      }
      document.body.appendChild(form);
      form.submit();
    }
    sandboxLayer('Payple 결제창 (sandbox)', obj.PCD_PAY_GOODS || '', obj.PCD_PAY_TOTAL || 0,
      function () { submit(null); }, function () { submit('close'); });
  };
"#;

const STEPPAY: &str = r#"
  // requestPay accepts the parameters as StepPay's guide nests them (partner.partnerOrderId,
  // product.amount, paymentMethod …) or flat as paycycle's checkout hands them (amount, method,
  // partnerOrderId …). The body goes as text/plain: a simple request, no CORS preflight.
  window.Steppay = {
    requestPay: function (params) {
      var cbs = { success: function () {}, error: function () {}, cancel: function () {} };
      var chain = {
        success: function (f) { cbs.success = f; return chain; },
        error: function (f) { cbs.error = f; return chain; },
        cancel: function (f) { cbs.cancel = f; return chain; }
      };
      var partner = params.partner || {}, product = params.product || {}, customer = params.customer || {};
      var body = {
        amount: params.amount !== undefined ? params.amount : product.amount,
        method: params.method || params.paymentMethod || 'CARD_BILL',
        partnerOrderId: params.partnerOrderId || partner.partnerOrderId,
        productName: params.productName || product.itemName,
        customerName: params.customerName || customer.userName
      };
      function send(cancel) {
        if (cancel) body.cancel = true;
        fetch(origin + '/__sandbox/steppay/sdk/pay', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: JSON.stringify(body) })
          .then(function (r) { return r.json(); })
          .then(function (d) {
            var layer = document.getElementById('pg-sandbox-layer');
            if (layer) layer.remove();
            (d.status === 'success' ? cbs.success : d.status === 'cancel' ? cbs.cancel : cbs.error)(d);
          })
          .catch(function (e) { cbs.error({ status: 'error', message: String(e) }); });
      }
      sandboxLayer('StepPay 결제 (sandbox)', body.productName || '', body.amount || 0,
        function () { send(false); }, function () { send(true); });
      return chain;
    }
  };
"#;

fn script(body: &str) -> Response {
    let js = format!(
        "/* paycycle PG sandbox: a stand-in for the PG's browser script. Not the PG's code. */\n(function () {{\n  var origin = new URL(document.currentScript.src).origin;\n{LAYER}{body}}})();\n"
    );
    let mut r = js.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/javascript; charset=utf-8"));
    r
}

/// `GET /js/v1/payment.js` — Payple's window script, stood in.
pub async fn payple_payment_js() -> Response {
    script(PAYPLE)
}

/// `GET /js/steppay-0.7.1.js` — StepPay's payment SDK, stood in.
pub async fn steppay_sdk_js() -> Response {
    script(STEPPAY)
}

/// The SDK's payment request comes from the partner's page, another origin: the sandbox lets
/// any page read its answer (the real SDK talks to StepPay from StepPay's own iframe).
pub async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}
