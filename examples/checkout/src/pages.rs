//! The shop's HTML: the plan page, the page that opens the PG, and the result pages. Everything
//! put into a page is escaped; no page carries the API key (the window parameters Payple's script
//! takes, one-time `PCD_AUTH_KEY` included, are meant for the browser).

use serde_json::Value;

use crate::{PLANS, Plan};

const STYLE: &str = "body{font-family:sans-serif;max-width:720px;margin:32px auto;padding:0 16px;color:#222}\
h1{font-size:22px}.plans{display:flex;gap:12px;flex-wrap:wrap}.plan{border:1px solid #ccc;border-radius:8px;padding:14px;flex:1;min-width:180px}\
.plan b{display:block;font-size:20px;margin:6px 0}button{background:#3b5bdb;color:#fff;border:0;border-radius:6px;padding:9px 16px;font-size:15px;cursor:pointer}\
label{display:block;margin:6px 0}input{padding:5px;width:240px}dl{display:grid;grid-template-columns:auto 1fr;gap:4px 14px}dt{color:#666}\
.ok{color:#2b8a3e}.err{color:#c92a2a}.note{color:#666;font-size:13px}";

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// JSON for a `<script>` block: `</script>` inside a value cannot close it.
fn script_json(v: &Value) -> String {
    v.to_string().replace("</", "<\\/").replace("<!--", "<\\!--")
}

/// `9,900원`.
pub fn won(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{}{out}원", if n < 0 { "-" } else { "" })
}

fn page(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"ko\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style>{head}</head>\
         <body><p class=\"note\">paycycle sample shop · partner page</p>{body}</body></html>",
        escape(title)
    )
}

/// The plans, one per PG mode, and the customer's details.
pub fn index() -> String {
    let plans: String = PLANS
        .iter()
        .map(|p| {
            format!(
                "<div class=\"plan\">{}<b>{}/월</b><button id=\"subscribe-{}\" name=\"plan\" value=\"{}\">구독하기</button></div>",
                escape(p.title),
                won(p.amount),
                escape(p.pg),
                escape(p.pg)
            )
        })
        .collect();
    let body = format!(
        "<h1>Pro 구독</h1><form method=\"post\" action=\"/subscribe\">\
         <label>고객 ID <input name=\"customer_id\" value=\"cus_browser\"></label>\
         <label>이름 <input name=\"name\" value=\"김민준\"></label>\
         <label>휴대폰 <input name=\"phone\" value=\"010-1234-5678\"></label>\
         <label>이메일 <input name=\"email\" value=\"minjun@example.com\"></label>\
         <div class=\"plans\">{plans}</div></form>\
         <p class=\"note\">The amount is the shop's, chosen on the server; the browser only names a plan.</p>"
    );
    page("Pro 구독", "", &body)
}

fn summary(plan: &Plan) -> String {
    format!("<h1>{} · {}/월</h1>", escape(plan.title), won(plan.amount))
}

/// Loads Payple's window script and opens the window with the checkout's parameters; Payple
/// posts the result to the shop's `/return/payple`.
pub fn payple(plan: &Plan, script: &str, params: &Value) -> String {
    let head = format!("<script src=\"{}\"></script>", escape(script));
    let body = format!(
        "{}<p>카드를 등록하고 첫 달을 결제합니다.</p><button id=\"pay\">결제하기</button>\
         <script>var params = {};\
         document.getElementById('pay').onclick = function () {{ PaypleCpayAuthCheck(params); }};</script>",
        summary(plan),
        script_json(params)
    );
    page("Payple 결제", &head, &body)
}

/// Loads StepPay's SDK and runs its payment with the checkout's SDK parameters; the result's
/// `idKey` goes back to the shop (`/return/steppay-self`), which has verify ask StepPay.
pub fn steppay_self(plan: &Plan, sdk: &str, checkout_id: &str, params: &Value) -> String {
    let head = format!("<script src=\"{}\"></script>", escape(sdk));
    let body = format!(
        "{}<p>카드를 등록하고 첫 달을 결제합니다.</p><button id=\"pay\">결제하기</button>\
         <form id=\"back\" method=\"post\" action=\"/return/steppay-self\">\
         <input type=\"hidden\" name=\"checkout_id\" value=\"{}\"><input type=\"hidden\" name=\"idKey\" value=\"\"></form>\
         <script>var params = {};\
         function back(d) {{ var f = document.getElementById('back'); f.idKey.value = (d && d.idKey) || ''; f.submit(); }}\
         document.getElementById('pay').onclick = function () {{ Steppay.requestPay(params).success(back).error(back).cancel(back); }};</script>",
        summary(plan),
        escape(checkout_id),
        script_json(params)
    );
    page("StepPay 결제", &head, &body)
}

fn text<'a>(v: &'a Value, fallback: &'a str) -> &'a str {
    v.as_str().unwrap_or(fallback)
}

/// verify's answer: the subscription and a cancel button, or why nothing was paid. `pg_said` is
/// the message the PG's window showed the customer (shown as such; verify decides).
pub fn result(plan: &Plan, status: u16, answer: &Value, pg_said: Option<&str>) -> String {
    if status != 200 {
        return failure(&summary(plan), "결제가 완료되지 않았습니다", status, answer, pg_said);
    }
    let (payment, sub) = (&answer["payment"], &answer["subscription"]);
    let body = format!(
        "<main id=\"result\" data-status=\"{status}\">{}<h1 class=\"ok\">구독이 시작되었습니다</h1><dl>\
         <dt>결제</dt><dd id=\"payment-id\">{}</dd><dt>금액</dt><dd id=\"payment-amount\">{}</dd>\
         <dt>구독</dt><dd id=\"subscription-id\">{}</dd><dt>상태</dt><dd id=\"subscription-state\">{}</dd></dl>\
         <form method=\"post\" action=\"/cancel\"><input type=\"hidden\" name=\"subscription_id\" value=\"{}\">\
         <button id=\"cancel\">구독 해지</button></form>\
         <p class=\"note\">Verified by paycycle with the PG, not taken from the browser.</p></main>",
        summary(plan),
        escape(text(&payment["id"], "?")),
        won(payment["amount"].as_i64().unwrap_or(0)),
        escape(text(&sub["id"], "?")),
        escape(text(&sub["state"], "?")),
        escape(text(&sub["id"], ""))
    );
    page("구독 완료", "", &body)
}

fn failure(heading: &str, title: &str, status: u16, answer: &Value, pg_said: Option<&str>) -> String {
    let pg = pg_said.map(|m| format!("<dt>PG</dt><dd id=\"pg-message\">{}</dd>", escape(m))).unwrap_or_default();
    let body = format!(
        "<main id=\"result\" data-status=\"{status}\">{heading}<h1 class=\"err\">{}</h1><dl>{pg}\
         <dt>코드</dt><dd id=\"error-code\">{}</dd><dt>사유</dt><dd id=\"error-message\">{}</dd></dl>\
         <p><a id=\"retry\" href=\"/\">다시 시도</a></p></main>",
        escape(title),
        escape(text(&answer["error"]["code"], "unknown")),
        escape(text(&answer["error"]["message"], ""))
    );
    page(title, "", &body)
}

/// The cancel's answer.
pub fn canceled(status: u16, answer: &Value) -> String {
    if status != 200 {
        return failure("", "해지하지 못했습니다", status, answer, None);
    }
    let body = format!(
        "<main id=\"result\" data-status=\"{status}\"><h1>구독이 해지되었습니다</h1><dl>\
         <dt>구독</dt><dd id=\"subscription-id\">{}</dd><dt>상태</dt><dd id=\"subscription-state\">{}</dd></dl>\
         <p><a href=\"/\">처음으로</a></p></main>",
        escape(text(&answer["id"], "?")),
        escape(text(&answer["state"], "?"))
    );
    page("구독 해지", "", &body)
}
