//! The StepPay client: self mode (billing charges on a billing idKey, refunds, receipts) and
//! managed mode (customers, orders, pay URLs, order lookups), webhook parsing and v2 signature
//! verification. `Secret-Token` on every call, `Secret-Key` on cancel (seeds 000/001).

pub mod transformers;
pub mod webhook;

use crate::budget::Budget;
use jiff::Timestamp;
use reqwest::Method;
use url::Url;

use self::transformers::{
    BillingRequest, CancelRequest, CancelResponse, CustomerBody, CustomerInfo, CustomerRequest, OrderBody,
    OrderCancelRequest, OrderItem, OrderRequest, Partner, PauseRequest, PaymentBody, PaymentStatus, Product,
    SubscriptionBody, SubscriptionStatus, WhenToPause, WhenToResume, classify,
};
use super::{
    ChargeRequest, Charged, FirstPayment, FirstPaymentEvidence, Lookup, PaymentGateway, PaymentState, PgError,
    RefundLookup, RefundRequest, Refunded, transport_error,
};
use paycycle_domain::money::Krw;
use paycycle_domain::secret::Secret;

use crate::credentials::Credentials;

#[derive(Clone, Debug)]
pub struct SteppayClient {
    http: reqwest::Client,
    base: Url,
    token: Secret,
    /// When set, the token is read from here per request (a rotated secret, `credentials`).
    credentials: Option<Credentials>,
    budget: Budget,
}

/// A StepPay amount that must be there. StepPay's amounts are decimals (`10000.0`; step-api-spec
/// `service/payment.json` `number`): read exactly, whole won only ([`Krw::parse_pg_decimal`]).
fn amount(s: Option<&str>, what: &str) -> Result<Krw, PgError> {
    let s = s.ok_or_else(|| PgError::Unrecognized {
        code: "missing".into(),
        message: format!("no {what} in StepPay's answer"),
    })?;
    parse_amount(s, what)
}

/// A StepPay amount, exactly; an unreadable one (a fraction, not a number) is an answer we do
/// not understand — never zero, never a default.
pub fn parse_amount(s: &str, what: &str) -> Result<Krw, PgError> {
    Krw::parse_pg_decimal(s)
        .map_err(|e| PgError::Unrecognized { code: "amount".into(), message: format!("{what} {s:?}: {e}") })
}

/// An amount StepPay may leave out: absent is `None`, present must be readable.
fn optional_amount(s: Option<&str>, what: &str) -> Result<Option<Krw>, PgError> {
    s.map(|s| parse_amount(s, what)).transpose()
}

/// A StepPay time (ISO with offset, or Korean local time without one).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok().or_else(|| s.parse::<jiff::Zoned>().ok().map(|z| z.timestamp())).or_else(|| {
        // StepPay may send local times without an offset: they are Korean time.
        s.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned(paycycle_domain::calendar::seoul()).ok())
            .map(|z| z.timestamp())
    })
}

/// The order type of a card registration (step-api-spec `OrderDTO.type`, dev-docs 06_구독..md).
const PAYMENT_METHOD_ORDER: &str = "PAYMENT_METHOD";

impl SteppayClient {
    pub fn new(http: reqwest::Client, base: Url, token: Secret) -> Self {
        Self { http, base, token, credentials: None, budget: Budget::unlimited("steppay") }
    }

    /// Reads the token from `credentials` at each request instead of the one given to [`Self::new`].
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        Self { credentials: Some(credentials), ..self }
    }

    /// The `Secret-Token` for the request being built now.
    async fn token(&self) -> Secret {
        match &self.credentials {
            Some(c) => c.current().await.steppay_secret_token.clone(),
            None => self.token.clone(),
        }
    }

    /// Every request within `budget` ([`crate::budget`]).
    pub fn with_budget(self, budget: Budget) -> Self {
        Self { budget, ..self }
    }

    /// The budget every request of this client waits on.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    fn url(&self, path: &str) -> Result<Url, PgError> {
        self.base.join(path).map_err(|e| PgError::Invalid(format!("bad StepPay path {path}: {e}")))
    }

    /// Sends a request; returns the body of a 2xx answer or the classified error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        header: &str,
        body: Option<String>,
        moves_money: bool,
    ) -> Result<String, PgError> {
        let token = self.token().await;
        let mut req = self.http.request(method, self.url(path)?).header(header, token.expose());
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = self.budget.send(req).await.map_err(|e| e.into_pg(moves_money))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| transport_error(&e, moves_money))?;
        if (200..300).contains(&status) { Ok(text) } else { Err(classify(status, &text, moves_money)) }
    }

    fn parse<T: serde::de::DeserializeOwned>(text: &str, moves_money: bool) -> Result<T, PgError> {
        serde_json::from_str(text).map_err(|e| {
            let reason = format!("unreadable StepPay answer: {e}");
            if moves_money {
                PgError::Unknown { reason }
            } else {
                PgError::Unrecognized { code: "body".into(), message: reason }
            }
        })
    }

    /// `POST /api/payment/billing`: charges the billing idKey. Only an explicit `COMPLETE` payment
    /// with its own idKey is approved (the success body is unconfirmed, PG-FACTS).
    pub async fn charge_billing(&self, req: &ChargeRequest) -> Result<Charged, PgError> {
        let charge_id = req.charge_id.to_string();
        let body = BillingRequest {
            id_key: &req.billing_key,
            partner: Partner { partner_order_id: &charge_id, partner_user_id: &req.payer.customer_id },
            product: Product { item_name: &req.goods, amount: req.amount.won(), quantity: 1 },
            customer: CustomerInfo {
                user_name: &req.payer.name,
                phone: req.payer.phone.as_deref(),
                email: req.payer.email.as_deref(),
            },
        };
        let body = serde_json::to_string(&body).map_err(|e| PgError::Invalid(e.to_string()))?;
        let text = self.send(Method::POST, "/api/payment/billing", "Secret-Token", Some(body), true).await?;
        let p: PaymentBody = Self::parse(&text, true)?;
        let status = p
            .payment_status
            .as_deref()
            .ok_or_else(|| PgError::Unknown { reason: "no paymentStatus in the billing answer".into() })?;
        match PaymentStatus::parse(status)? {
            PaymentStatus::Complete => {}
            PaymentStatus::Failed => {
                return Err(PgError::Declined {
                    hard: false,
                    code: "FAILED".into(),
                    message: "StepPay reports the payment FAILED".into(),
                });
            }
            other => return Err(PgError::Unknown { reason: format!("billing answered with status {other:?}") }),
        }
        let id_key = p
            .id_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| PgError::Unknown { reason: "COMPLETE without an idKey".into() })?;
        // The success body is unconfirmed (PG-FACTS): an answer without `amount` is taken as the
        // amount asked; one with an amount we cannot read is not understood (looked up).
        let charged = optional_amount(p.amount.as_deref(), "amount")?.unwrap_or(req.amount);
        if charged != req.amount {
            return Err(PgError::Unrecognized {
                code: "amount".into(),
                message: format!("charged {charged}, asked {}", req.amount),
            });
        }
        let approved_at = p.payment_date.as_deref().and_then(parse_time).unwrap_or_else(Timestamp::now);
        Ok(Charged { pg_payment_id: id_key, amount: charged, approved_at })
    }

    /// `POST /api/internal/payment/cancel` with `Secret-Key` (self mode, and any payment by idKey).
    pub async fn cancel(&self, req: &RefundRequest) -> Result<Refunded, PgError> {
        // step-api-spec `service/payment.json` (3ec8ceb9) `CancelRequestDTO{idKey*, requestPrice*}`.
        let body =
            serde_json::to_string(&CancelRequest { id_key: &req.pg_payment_id, request_price: req.amount.won() })
                .map_err(|e| PgError::Invalid(e.to_string()))?;
        let text = self.send(Method::POST, "/api/internal/payment/cancel", "Secret-Key", Some(body), true).await?;
        let r: CancelResponse = Self::parse(&text, true)?;
        refunded_from(r, req.amount)
    }

    /// `GET /api/payment/receipt/{idKey}`.
    pub async fn receipt(&self, id_key: &str) -> Result<PaymentBody, PgError> {
        let path = format!("/api/payment/receipt/{}", urlencode(id_key));
        let text = self.send(Method::GET, &path, "Secret-Token", None, false).await?;
        Self::parse(&text, false)
    }

    /// The receipt as a [`PaymentState`]: paid iff `paymentDate` is non-null (seed 002).
    pub async fn payment_state(&self, id_key: &str) -> Result<PaymentState, PgError> {
        Self::receipt_state(id_key, &self.receipt(id_key).await?)
    }

    /// The receipt of `id_key` as a [`PaymentState`], only if it is the payment of our charge
    /// `charge_id`: StepPay self charges send the charge id as `partner.partnerOrderId`
    /// (`POST /api/payment/billing`, seeds 000/001). **Unconfirmed**: that the receipt names it
    /// back (`partnerOrderId`; StepPay's public receipt sample, seed 002, does not show it — see
    /// `transformers::PaymentBody`). Its absence is made safe: a receipt of another order, or one
    /// that names none, is a `Mismatch`, so a person's word can never make another payment this
    /// charge's (if StepPay's receipt never carries it, a StepPay charge is recorded by its
    /// webhook's hint instead, never by a person's `paid`).
    pub async fn charge_state(&self, id_key: &str, charge_id: &str) -> Result<PaymentState, PgError> {
        let p = self.receipt(id_key).await?;
        let shown = paycycle_domain::pii::mask_reference(id_key);
        match p.partner_order_id.as_deref() {
            Some(got) if got == charge_id => Self::receipt_state(id_key, &p),
            Some(_) => {
                Err(PgError::Mismatch(format!("payment {shown} belongs to another order, not charge {charge_id}")))
            }
            None => Err(PgError::Mismatch(format!(
                "StepPay's receipt of payment {shown} names no partnerOrderId: it cannot be shown to be charge {charge_id}"
            ))),
        }
    }

    /// A StepPay receipt as a [`PaymentState`]: paid iff `paymentDate` is non-null (seed 002).
    fn receipt_state(id_key: &str, p: &PaymentBody) -> Result<PaymentState, PgError> {
        let status = PaymentStatus::parse(p.payment_status.as_deref().unwrap_or("STANDBY"))?;
        let paid = p.payment_date.is_some();
        let total = if paid { amount(p.amount.as_deref(), "amount")? } else { Krw::ZERO };
        // No canceled amount on the receipt: nothing canceled that it shows (receipt amounts are
        // unconfirmed, PG-FACTS); an unreadable one is not guessed.
        let refunded = optional_amount(p.canceled_amount.as_deref(), "canceledAmount")?.unwrap_or(Krw::ZERO);
        Ok(match status {
            PaymentStatus::Complete
            | PaymentStatus::PartialCanceled
            | PaymentStatus::CancelProgress
            | PaymentStatus::CanceledFail
                if paid =>
            {
                PaymentState::Paid {
                    pg_payment_id: id_key.to_string(),
                    amount: total,
                    refunded,
                    paid_at: p.payment_date.as_deref().and_then(parse_time),
                }
            }
            PaymentStatus::Canceled if paid => {
                PaymentState::Refunded { pg_payment_id: id_key.to_string(), amount: total }
            }
            PaymentStatus::Failed | PaymentStatus::UserCanceled | PaymentStatus::Canceled => {
                PaymentState::Failed { code: format!("{status:?}"), message: "StepPay payment not paid".into() }
            }
            PaymentStatus::Standby | PaymentStatus::VirtualBankStandby | PaymentStatus::CmsStandby => {
                PaymentState::Pending
            }
            // A paid status without `paymentDate` contradicts itself: no answer, never a decline
            // (a decline would move dunning on, and re-charge, a payment that may have been taken).
            other @ (PaymentStatus::Complete
            | PaymentStatus::PartialCanceled
            | PaymentStatus::CancelProgress
            | PaymentStatus::CanceledFail) => {
                return Err(PgError::Unrecognized {
                    code: format!("{other:?}"),
                    message: "StepPay's receipt says the payment went through but shows no paymentDate".into(),
                });
            }
        })
    }

    /// What the receipt says was refunded: definite only for a paid payment whose status says where
    /// its cancels stand. `CANCEL_PROGRESS` is no answer yet (step-api-spec `service/payment.json`
    /// lists it among the cancel answer's statuses); a canceled status without a readable amount is
    /// not guessed (receipt amounts are unconfirmed, PG-FACTS: only `paymentDate` and
    /// `paymentStatus` are documented, dev-docs `07-1`, `09-2`).
    ///
    /// A refund counts as done only on a canceled status (`CANCELED`, `PARTIAL_CANCELED`). `COMPLETE`
    /// is a snapshot of a payment with nothing canceled *yet*: the receipt promises no
    /// read-after-write, so the caller treats it as StepPay's word only once the refund request is
    /// old enough to have shown (refund's settling age). A `COMPLETE` receipt naming a canceled
    /// amount contradicts itself and is not read at all.
    pub async fn refund_state(&self, id_key: &str) -> Result<RefundLookup, PgError> {
        let p = self.receipt(id_key).await?;
        let status = PaymentStatus::parse(p.payment_status.as_deref().unwrap_or("STANDBY"))?;
        let canceled = optional_amount(p.canceled_amount.as_deref(), "canceledAmount")?;
        let unreadable = |why: &str| PgError::Unrecognized { code: format!("{status:?}"), message: why.into() };
        if p.payment_date.is_none() {
            return Err(unreadable("receipt of an unpaid payment"));
        }
        let refunded = match status {
            PaymentStatus::Complete => match canceled {
                Some(c) if !c.is_zero() => return Err(unreadable("COMPLETE with a canceled amount")),
                _ => Krw::ZERO,
            },
            // A cancel StepPay reports as failed: the payment stands with what was canceled before
            // — which only a canceled amount says (none is not read as nothing).
            PaymentStatus::CanceledFail => {
                canceled.ok_or_else(|| unreadable("CANCELED_FAIL without canceledAmount"))?
            }
            PaymentStatus::PartialCanceled => canceled.ok_or_else(|| unreadable("no canceledAmount"))?,
            PaymentStatus::Canceled => match canceled {
                Some(c) => c,
                None => amount(p.amount.as_deref(), "amount")?,
            },
            PaymentStatus::CancelProgress => return Ok(RefundLookup::InProgress),
            _ => return Err(unreadable("no refund state in this status")),
        };
        Ok(RefundLookup::Settled { refunded })
    }

    /// `POST /api/v1/customers` (managed mode needs the customer first): StepPay's own `id` and
    /// `code` of the new customer (`CustomerV1DTO`); an answer without them is not understood.
    pub async fn create_customer(
        &self,
        name: &str,
        email: &str,
        phone: Option<&str>,
    ) -> Result<super::PgCustomer, PgError> {
        let body = CustomerRequest {
            name,
            email,
            phone,
            marketing_sms: false,
            marketing_email: false,
            marketing_kakao: false,
            attributes: serde_json::json!({}),
        };
        let body = serde_json::to_string(&body).map_err(|e| PgError::Invalid(e.to_string()))?;
        let text = self.send(Method::POST, "/api/v1/customers", "Secret-Token", Some(body), false).await?;
        let c: CustomerBody = Self::parse(&text, false)?;
        match (c.id.filter(|i| !i.is_empty()), c.code.filter(|c| !c.is_empty())) {
            (Some(id), Some(code)) => Ok(super::PgCustomer { id, code }),
            _ => {
                Err(PgError::Unrecognized { code: "customer".into(), message: "a customer without id or code".into() })
            }
        }
    }

    /// `POST /api/v1/orders` for a StepPay product price plan.
    pub async fn create_order(
        &self,
        customer_code: &str,
        product_code: &str,
        price_code: &str,
    ) -> Result<OrderBody, PgError> {
        let body = OrderRequest {
            customer_code,
            items: vec![OrderItem { product_code, price_code, currency: "KRW", minimum_quantity: 1 }],
        };
        let body = serde_json::to_string(&body).map_err(|e| PgError::Invalid(e.to_string()))?;
        let text = self.send(Method::POST, "/api/v1/orders", "Secret-Token", Some(body), false).await?;
        Self::parse(&text, false)
    }

    /// `GET /api/v1/orders/{orderIdOrCode}`.
    pub async fn order(&self, id_or_code: &str) -> Result<OrderBody, PgError> {
        let path = format!("/api/v1/orders/{}", urlencode(id_or_code));
        let text = self.send(Method::GET, &path, "Secret-Token", None, false).await?;
        Self::parse(&text, false)
    }

    /// `GET /api/v1/subscriptions/{id}` (step-api-spec `merge/v1.json` at 3ec8ceb9, dev-docs
    /// `docs/06_구독.md`): the managed subscription's status as StepPay holds it — what a
    /// `subscription.updated` webhook is checked against, and the reconcile when one is missing.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionStatus, PgError> {
        let path = format!("/api/v1/subscriptions/{}", urlencode(id));
        let text = self.send(Method::GET, &path, "Secret-Token", None, false).await?;
        let body: SubscriptionBody = Self::parse(&text, false)?;
        if body.id.as_deref().is_some_and(|got| got != id) {
            return Err(PgError::Unrecognized {
                code: "id".into(),
                message: format!("asked for subscription {id}, StepPay answered another"),
            });
        }
        SubscriptionStatus::parse(&body.status)
    }

    /// `POST /api/v1/subscriptions/{id}/cancel {whenToCancel: NOW | END_OF_PERIOD}` (managed
    /// mode, PG-FACTS). The answer's body is not relied on: success is the 2xx.
    pub async fn cancel_subscription(&self, id: &str, at_period_end: bool) -> Result<(), PgError> {
        let path = format!("/api/v1/subscriptions/{}/cancel", urlencode(id));
        let when = if at_period_end { "END_OF_PERIOD" } else { "NOW" };
        let body = serde_json::json!({"whenToCancel": when}).to_string();
        self.send(Method::POST, &path, "Secret-Token", Some(body), false).await.map(|_| ())
    }

    /// `POST /api/v1/subscriptions/{subscriptionId}/pause` (merge/v1.json `v1_pauseSubscription`:
    /// only an ACTIVE subscription; 200). Success is the 2xx; the `ProductApiresponse` body is not read.
    pub async fn pause_subscription(&self, id: &str, at_period_end: bool) -> Result<(), PgError> {
        let path = format!("/api/v1/subscriptions/{}/pause", urlencode(id));
        let when_to_pause = if at_period_end { WhenToPause::Lazy } else { WhenToPause::Immediate };
        let pause = PauseRequest { when_to_pause, when_to_resume: WhenToResume::Nothing };
        let body = serde_json::to_string(&pause).map_err(|e| PgError::Invalid(e.to_string()))?;
        self.send(Method::POST, &path, "Secret-Token", Some(body), false).await.map(|_| ())
    }

    /// `POST /api/v1/subscriptions/{subscriptionId}/active`, no body (merge/v1.json
    /// `v1_activeSubscription`: a paused or pending-cancel subscription becomes ACTIVE; 201).
    pub async fn resume_subscription(&self, id: &str) -> Result<(), PgError> {
        let path = format!("/api/v1/subscriptions/{}/active", urlencode(id));
        self.send(Method::POST, &path, "Secret-Token", None, false).await.map(|_| ())
    }

    /// `PATCH /api/v1/orders/{orderIdOrCode}/cancel {requestPrice, reason}` — a managed payment's
    /// refund (merge/v1.json `v1_cancelOrder`: "결제가 완료된 주문건은 환불되며"). The 200 answer
    /// (`ProductApiresponse`) is StepPay's word that the order was refunded as asked ("정상적으로
    /// 취소됨"); its fields are not documented and not read. StepPay refusing it (4xx) moved no
    /// money; no answer, or a 5xx, is unknown and settled by the receipt lookup.
    pub async fn cancel_order(&self, order: &str, req: &RefundRequest) -> Result<Refunded, PgError> {
        let path = format!("/api/v1/orders/{}/cancel", urlencode(order));
        let reason = format!("paycycle refund {}", req.refund_id);
        let body = OrderCancelRequest { request_price: req.amount.won(), reason: &reason };
        let body = serde_json::to_string(&body).map_err(|e| PgError::Invalid(e.to_string()))?;
        self.send(Method::PATCH, &path, "Secret-Token", Some(body), true).await?;
        Ok(Refunded { pg_refund_id: None, amount: req.amount })
    }

    /// `PUT /api/v1/subscriptions/{subscriptionId}/payment-method` (step-api-spec
    /// gateway/v1_product.json `v1_changePaymentMethod`: "구독의 결제수단을 변경할 때 호출합니다.
    /// 변경을 위한 주문이 생성됩니다", body `SubscriptionChangePaymentMethodDTO`, nothing required;
    /// 201 `OrderDTO`): the order the customer pays on the pay page to register a new card for
    /// the managed subscription (dev-docs docs/06_구독..md "결제 수단 변경").
    pub async fn change_payment_method(&self, subscription_id: &str) -> Result<OrderBody, PgError> {
        let path = format!("/api/v1/subscriptions/{}/payment-method", urlencode(subscription_id));
        let text = self.send(Method::PUT, &path, "Secret-Token", Some("{}".into()), false).await?;
        let order: OrderBody = Self::parse(&text, false)?;
        match order.order_type.as_deref() {
            Some(PAYMENT_METHOD_ORDER) => Ok(order),
            other => Err(PgError::Unrecognized {
                code: "type".into(),
                message: format!("a payment-method change answered an order of type {other:?}"),
            }),
        }
    }

    /// Whether the customer registered a card on payment-method order `order_code`: the order
    /// lookup shows it a `PAYMENT_METHOD` order with a `paymentDate` (07-1's "paymentDate 가 null
    /// 이 아닌 경우 결제가 정상적으로 완료", documented for payments; that it also marks a
    /// registration is unconfirmed — without it nothing is swapped). Money it shows paid is
    /// returned for the caller to record: a registration charges nothing.
    pub async fn verify_payment_method_order(&self, order_code: &str) -> Result<FirstPayment, PgError> {
        let o = self.order(order_code).await?;
        if o.order_type.as_deref() != Some(PAYMENT_METHOD_ORDER) {
            return Err(PgError::Mismatch(format!("order {order_code} is not a payment-method order")));
        }
        if o.payment_date.is_none() {
            return Err(PgError::NotPaid(format!("no card was registered on order {order_code} yet")));
        }
        let paid = amount(o.paid_amount.as_deref(), "paidAmount")?;
        let charged = match (paid.won() > 0, o.id_key) {
            (true, Some(id_key)) => {
                let approved_at = o.payment_date.as_deref().and_then(parse_time).unwrap_or_else(Timestamp::now);
                Some(Charged { pg_payment_id: id_key, amount: paid, approved_at })
            }
            // Money moved but nothing names it: never swapped past unrecorded.
            (true, None) => {
                return Err(PgError::Unrecognized {
                    code: "idKey".into(),
                    message: format!("payment-method order {order_code} shows {paid} paid without idKey"),
                });
            }
            (false, _) => None,
        };
        Ok(FirstPayment { charged, billing_key: None })
    }

    /// The customer-facing pay page: `/api/public/orders/{orderCode}/pay?successUrl&errorUrl`.
    pub fn pay_url(&self, order_code: &str, success_url: &str, error_url: &str) -> Result<Url, PgError> {
        let mut url = self.url(&format!("/api/public/orders/{}/pay", urlencode(order_code)))?;
        url.query_pairs_mut().append_pair("successUrl", success_url).append_pair("errorUrl", error_url);
        Ok(url)
    }

    /// Verifies a managed first payment by order lookup: `paymentDate` non-null and the paid
    /// amount equal to what the checkout expects (another amount paid is `PaidOtherAmount`).
    pub async fn verify_order(&self, order_code: &str, expected: Krw) -> Result<FirstPayment, PgError> {
        let o = self.order(order_code).await?;
        if o.payment_date.is_none() {
            // Never a failure for good: a declined try leaves the order open, and the customer can
            // pay the same order again on StepPay's pay page (`/api/public/orders/{code}/pay`).
            return Err(PgError::NotPaid(match o.payment.filter(|p| p.error_code.is_some()) {
                Some(p) => format!(
                    "order {order_code} is not paid; its last try failed ({}): {}",
                    p.error_code.unwrap_or_default(),
                    p.error_message.unwrap_or_default()
                ),
                None => format!("order {order_code} is not paid"),
            }));
        }
        let paid = amount(o.paid_amount.as_deref(), "paidAmount")?;
        let id_key = o.id_key.clone().ok_or_else(|| PgError::Unrecognized {
            code: "idKey".into(),
            message: "paid order without idKey".into(),
        })?;
        let approved_at = o.payment_date.as_deref().and_then(parse_time).unwrap_or_else(Timestamp::now);
        if paid != expected {
            let charged = Charged { pg_payment_id: id_key, amount: paid, approved_at };
            return Err(PgError::PaidOtherAmount { charged, expected });
        }
        let subscription = o.subscriptions.first().map(|v| match v {
            serde_json::Value::Object(m) => m.get("id").map(|id| id.to_string()).unwrap_or_default(),
            other => other.to_string().trim_matches('"').to_string(),
        });
        Ok(FirstPayment {
            charged: Some(Charged { pg_payment_id: id_key, amount: paid, approved_at }),
            billing_key: subscription,
        })
    }

    /// Verifies a self first payment by receipt: paid, `COMPLETE`, the expected amount. A
    /// `*_BILL` payment's idKey is the billing key (seed 001), so it appears in messages only
    /// masked. With `partner_order_id` (the checkout), the receipt must name it: a payment of
    /// another order, or a receipt that names none, is a mismatch — nothing changes.
    pub async fn verify_payment(
        &self,
        id_key: &str,
        partner_order_id: Option<&str>,
        expected: Krw,
    ) -> Result<FirstPayment, PgError> {
        let p = self.receipt(id_key).await?;
        let shown = paycycle_domain::pii::mask_reference(id_key);
        if let Some(want) = partner_order_id {
            match p.partner_order_id.as_deref() {
                Some(got) if got == want => {}
                Some(_) => {
                    return Err(PgError::Mismatch(format!("payment {shown} belongs to another order, not {want}")));
                }
                None => {
                    return Err(PgError::Mismatch(format!(
                        "StepPay's receipt of payment {shown} names no partnerOrderId: it cannot be shown to be {want}'s"
                    )));
                }
            }
        }
        let status = PaymentStatus::parse(p.payment_status.as_deref().unwrap_or("STANDBY"))?;
        match status {
            PaymentStatus::Complete if p.payment_date.is_some() => {}
            PaymentStatus::Standby | PaymentStatus::VirtualBankStandby | PaymentStatus::CmsStandby => {
                return Err(PgError::NotPaid(format!("payment {shown} is {status:?}")));
            }
            _ => return Err(PgError::VerificationFailed(format!("payment {shown} {status:?}, not paid"))),
        }
        let paid = amount(p.amount.as_deref(), "amount")?;
        let charged = Charged {
            pg_payment_id: id_key.to_string(),
            amount: paid,
            approved_at: p.payment_date.as_deref().and_then(parse_time).unwrap_or_else(Timestamp::now),
        };
        if paid != expected {
            return Err(PgError::PaidOtherAmount { charged, expected });
        }
        let billing = p.payment_method.as_deref().is_some_and(|m| m.ends_with("_BILL"));
        Ok(FirstPayment { charged: Some(charged), billing_key: billing.then(|| id_key.to_string()) })
    }
}

/// Reads StepPay's cancel answer (`ApiResponseCancelResponse`, step-api-spec `service/payment.json`
/// at 3ec8ceb9): the refund is `response.cancelPayment{canceledAmount, paymentStatus, tid}`.
///
/// Only a canceled status (`CANCELED`, `PARTIAL_CANCELED`) with the amount asked is a refund done.
/// `CANCEL_PROGRESS` is StepPay's word that it took the refund and has not finished it: neither
/// succeeded nor failed, so `Unknown` — the refund stays reserved and is settled by the receipt
/// lookup (`refund_state`), never released, never sent again. `CANCELED_FAIL` is StepPay's explicit
/// failure (nothing refunded). `result: false` without a failure status is not guessed (unknown:
/// StepPay documents no meaning for it); neither is an answer without `cancelPayment`.
fn refunded_from(r: CancelResponse, asked: Krw) -> Result<Refunded, PgError> {
    let unknown = |why: &str| PgError::Unknown { reason: why.into() };
    let inner = r.response.ok_or_else(|| unknown("cancel answer without `response`"))?;
    let cp = inner.cancel_payment.ok_or_else(|| unknown("cancel answer without cancelPayment"))?;
    let status = cp.payment_status.as_deref().map(PaymentStatus::parse).transpose()?;
    match status {
        Some(PaymentStatus::CanceledFail) => {
            return Err(PgError::Declined {
                hard: false,
                code: "CANCELED_FAIL".into(),
                message: r.message.unwrap_or_else(|| "StepPay could not cancel".into()),
            });
        }
        Some(PaymentStatus::CancelProgress) => return Err(unknown("StepPay is still processing the cancel")),
        _ if r.result != Some(true) => return Err(unknown("cancel answer without result: true")),
        Some(PaymentStatus::Canceled | PaymentStatus::PartialCanceled) => {}
        None => return Err(unknown("cancel answer without a paymentStatus")),
        Some(other) => {
            return Err(PgError::Unrecognized {
                code: format!("{other:?}"),
                message: "unexpected status after cancel".into(),
            });
        }
    }
    let canceled = amount(cp.canceled_amount.as_deref(), "canceledAmount")?;
    if canceled != asked {
        return Err(PgError::Unrecognized {
            code: "amount".into(),
            message: format!("canceled {canceled}, asked {asked}"),
        });
    }
    Ok(Refunded { pg_refund_id: cp.tid.or(inner.tid), amount: canceled })
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl PaymentGateway for SteppayClient {
    async fn charge(&self, req: &ChargeRequest) -> Result<Charged, PgError> {
        self.charge_billing(req).await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Refunded, PgError> {
        self.cancel(req).await
    }

    async fn lookup(&self, q: &Lookup) -> Result<PaymentState, PgError> {
        match q {
            Lookup::PgPayment { pg_payment_id, .. } => self.payment_state(pg_payment_id).await,
            // StepPay publishes no lookup by partnerOrderId: unknown charges resolve by webhook
            // (PAYMENT carries the idKey) or by the idKey a repeated charge names.
            Lookup::Charge { .. } => Err(PgError::Unsupported("StepPay lookup by partnerOrderId")),
        }
    }

    async fn verify_first_payment(
        &self,
        evidence: &FirstPaymentEvidence,
        expected: Krw,
    ) -> Result<FirstPayment, PgError> {
        match evidence {
            FirstPaymentEvidence::SteppayOrder { order_code } => self.verify_order(order_code, expected).await,
            FirstPaymentEvidence::SteppayPayment { id_key, partner_order_id } => {
                self.verify_payment(id_key, partner_order_id.as_deref(), expected).await
            }
            FirstPaymentEvidence::PaypleResult { .. } => {
                Err(PgError::Invalid("Payple evidence sent to StepPay".into()))
            }
        }
    }
}

/// Whether StepPay's subscription status (`GET /api/v1/subscriptions/{id}`, merge/v1.json) is
/// already the one `change` asks for: the change was made there before.
pub(crate) fn already_changed(change: super::PgChange, status: SubscriptionStatus) -> bool {
    use super::PgChange;
    use SubscriptionStatus as S;
    match change {
        PgChange::Pause { at_period_end: false } => status == S::Pause,
        PgChange::Pause { at_period_end: true } => status == S::PendingPause,
        PgChange::Resume => status == S::Active,
        PgChange::Cancel { at_period_end: false } => matches!(status, S::Canceled | S::Expired),
        PgChange::Cancel { at_period_end: true } => status == S::PendingCancel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(v: serde_json::Value) -> Result<Refunded, PgError> {
        refunded_from(serde_json::from_value(v).unwrap(), Krw::new(4000).unwrap())
    }

    fn cancel_answer(result: bool, status: &str, amount: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"result": result, "code": 0, "message": "m", "id": "1",
            "response": {"tid": "t", "paymentReceiptUrl": "u",
                "cancelPayment": {"canceledAmount": amount, "tid": "t2", "paymentStatus": status,
                                  "canceledDate": "2026-01-01T00:00:00+09:00"}}})
    }

    #[test]
    fn the_documented_cancel_answer_is_read_exactly() {
        let done = answer(cancel_answer(true, "PARTIAL_CANCELED", serde_json::json!(4000.0))).unwrap();
        assert_eq!((done.amount.won(), done.pg_refund_id.as_deref()), (4000, Some("t2")));
        assert!(answer(cancel_answer(true, "CANCELED", serde_json::json!(4000))).is_ok());
        let progress = answer(cancel_answer(true, "CANCEL_PROGRESS", serde_json::json!(0.0))).unwrap_err();
        assert!(progress.outcome_unknown(), "in progress is neither succeeded nor failed: {progress:?}");
        assert!(matches!(
            answer(cancel_answer(false, "CANCELED_FAIL", serde_json::json!(0.0))),
            Err(PgError::Declined { hard: false, .. })
        ));
        assert!(answer(cancel_answer(false, "CANCELED", serde_json::json!(4000.0))).unwrap_err().outcome_unknown());
        let fraction = answer(cancel_answer(true, "CANCELED", serde_json::json!(4000.5))).unwrap_err();
        assert!(fraction.outcome_unknown(), "a fraction of a won is not an amount we asked for: {fraction:?}");
        let other = answer(cancel_answer(true, "CANCELED", serde_json::json!(3000.0))).unwrap_err();
        assert!(other.outcome_unknown(), "another amount than asked: {other:?}");
    }
}
