//! Preparing a checkout at its PG (DESIGN §2): what a partner's request may say about the PG (its
//! options object, named after the PG: `payple`, `steppay`), and what the partner's page needs to
//! start the first payment — Payple's window parameters, StepPay's order and pay URL, StepPay's
//! SDK parameters — with the reference the payment will carry, which verify compares with the PG's
//! answer later.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::payple::WindowWork;
use super::{Adapter, Payer, PgCustomer, PgError};
use paycycle_domain::attempt::SubscriptionId;
use paycycle_domain::customer::Customer;
use paycycle_domain::money::Krw;

/// A checkout request's PG part was refused: `code` and `message` for the 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutRefusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> CheckoutRefusal {
    CheckoutRefusal { code, message: message.into() }
}

/// Payple's options: `work` is `PAY` (default: register and pay in the window), `CERT`
/// (register, authorize; paycycle confirms at verify) or `AUTH` (register only; paycycle charges
/// the first period at verify).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PaypleOptions {
    #[serde(default)]
    work: Option<WindowWork>,
}

/// StepPay managed's options: the product and price plan at StepPay (its amount must be the plan's).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SteppayOptions {
    product_code: String,
    price_code: String,
}

fn read_options<T: serde::de::DeserializeOwned>(name: &str, v: Option<&Value>) -> Result<Option<T>, CheckoutRefusal> {
    v.map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| refuse("invalid_request", format!("{name}: {e}")))
}

/// What the checkout starts with at its PG.
#[derive(Clone, Debug)]
pub struct CheckoutStart<'a> {
    pub checkout_id: &'a str,
    pub subscription_id: &'a SubscriptionId,
    pub plan_name: &'a str,
    pub amount: Krw,
    pub customer: &'a Customer,
    pub return_url: Option<&'a str>,
    pub error_url: Option<&'a str>,
    /// The request's options object of this PG.
    pub options: Option<&'a Value>,
    /// The PG's customer, where the PG keeps customers ([`Adapter::needs_pg_customer`]).
    pub pg_customer: Option<&'a PgCustomer>,
}

/// What the partner's page needs, and what the checkout keeps for verify.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The answer's object under the PG's name ([`Adapter::options_field`]).
    pub answer: Value,
    /// The reference the first payment will carry at the PG (default: the checkout id).
    pub reference: Option<String>,
    /// The PG-specific kind of window opened (Payple `PAY`/`CERT`/`AUTH`).
    pub work: Option<String>,
    /// Payple `PCD_PAYER_NO`: the number only this checkout's window registers a card under.
    pub payer_no: Option<String>,
}

/// Why a checkout could not be prepared at its PG.
#[derive(Clone, Debug)]
pub enum PrepareError {
    Pg(PgError),
    /// The PG's price is not the plan's amount (StepPay managed).
    PlanMismatch(String),
}

impl From<PgError> for PrepareError {
    fn from(e: PgError) -> Self {
        PrepareError::Pg(e)
    }
}

/// The Payple `PCD_PAYER_NO` of a checkout: a 10-digit number (the window takes up to 10) that
/// only this checkout's window registers a card under.
fn payer_no(checkout_id: &str) -> String {
    let h = paycycle_domain::ids::sha256_hex(checkout_id.as_bytes());
    let n = u64::from_str_radix(&h[..15], 16).unwrap_or(0) % 9_000_000_000 + 1_000_000_000;
    n.to_string()
}

impl Adapter<'_> {
    /// The request's and the answer's field for this PG's part: the PG's name.
    pub fn options_field(&self) -> &'static str {
        self.mode().pg().as_str()
    }

    /// Whether a checkout needs the PG's own customer first (StepPay managed: its orders are
    /// placed for a StepPay customer).
    pub fn needs_pg_customer(&self) -> bool {
        matches!(self, Adapter::SteppayManaged(_))
    }

    /// Checks a checkout request's PG part before anything is sent: whether the mode needs a
    /// return URL, and the PG's options. Answers the options in one canonical form (the PG's own
    /// fields in their order, absent ones `null`), so that a retried request is the same request
    /// however its client wrote them (the `Idempotency-Key` compares requests).
    pub fn check_checkout(
        &self,
        has_return_url: bool,
        options: Option<&Value>,
    ) -> Result<Option<Value>, CheckoutRefusal> {
        let name = self.options_field();
        match self {
            Adapter::Payple(_) => {
                if !has_return_url {
                    return Err(refuse("invalid_url", "return_url is required for this PG mode"));
                }
                // `work` is PAY, CERT or AUTH (serde refuses anything else, naming the three).
                let o: Option<PaypleOptions> = read_options(name, options)?;
                Ok(o.map(|o| json!(o)))
            }
            Adapter::SteppayManaged(_) => {
                if !has_return_url {
                    return Err(refuse("invalid_url", "return_url is required for this PG mode"));
                }
                let Some(o) = read_options::<SteppayOptions>(name, options)? else {
                    return Err(refuse("invalid_request", "steppay.product_code and steppay.price_code are required"));
                };
                for (field, v) in [("product_code", &o.product_code), ("price_code", &o.price_code)] {
                    if v.is_empty() || v.len() > 100 {
                        return Err(refuse("invalid_request", format!("steppay.{field} must be 1-100 characters")));
                    }
                }
                Ok(Some(json!(o)))
            }
            Adapter::SteppaySelf(_) if options.is_some() => {
                Err(refuse("invalid_request", "steppay options only apply to pg=steppay_managed"))
            }
            Adapter::SteppaySelf(_) => Ok(None),
        }
    }

    /// Whether this mode takes an options object (`payple`, `steppay`) at all.
    pub fn takes_options(&self) -> bool {
        !matches!(self, Adapter::SteppaySelf(_))
    }

    /// Creates the partner's customer at the PG ([`Self::needs_pg_customer`]). StepPay requires
    /// an email (`CustomerCreateDTO.email*`): a stable placeholder when the customer has none.
    pub async fn create_customer(&self, partner_id: &str, customer: &Customer) -> Result<PgCustomer, PgError> {
        let Adapter::SteppayManaged(c) = self else {
            return Err(PgError::Unsupported("this PG keeps no customers of its own"));
        };
        let placeholder = || {
            let h = paycycle_domain::ids::sha256_hex(format!("{partner_id}:{}", customer.id).as_bytes());
            format!("pc_{}@customers.invalid", &h[..20])
        };
        let email = customer.email.clone().unwrap_or_else(placeholder);
        c.create_customer(&customer.name, &email, customer.phone.as_deref()).await
    }

    /// Starts the first payment at the PG: what the partner's page needs.
    pub async fn prepare_checkout(&self, start: &CheckoutStart<'_>) -> Result<Prepared, PrepareError> {
        let name = self.options_field();
        match self {
            Adapter::Payple(client) => {
                let o: PaypleOptions =
                    read_options(name, start.options).map_err(|r| PgError::Invalid(r.message))?.unwrap_or_default();
                open_payple_window(client, o.work.unwrap_or(WindowWork::Pay), start).await
            }
            Adapter::SteppayManaged(client) => {
                let o: SteppayOptions = read_options(name, start.options)
                    .map_err(|r| PgError::Invalid(r.message))?
                    .ok_or_else(|| PgError::Invalid("steppay options are required".into()))?;
                create_steppay_order(client, &o, start).await
            }
            // What the StepPay SDK's payment request takes (seed 000 shows the method only as a
            // screenshot; field names follow the billing API's, unconfirmed). A *_BILL method
            // issues the billing key renewals charge.
            Adapter::SteppaySelf(_) => Ok(Prepared {
                answer: json!({"sdk": {
                    "amount": start.amount,
                    "method": "CARD_BILL",
                    "productName": start.plan_name,
                    "partnerOrderId": start.checkout_id,
                    "partnerUserId": start.customer.id,
                    "customerName": start.customer.name,
                }}),
                reference: None,
                work: None,
                payer_no: None,
            }),
        }
    }
}

impl Adapter<'_> {
    /// Starts a card change for a live subscription (DESIGN §13): what the partner's page needs
    /// to let the customer register a new card, with nothing charged.
    /// - Payple: an `AUTH` window (seed 003: "결제없이 등록만을 수행할 때는 PCD_PAY_WORK 를 AUTH로
    ///   설정합니다") under a payer number only this checkout registers, whose key verify confirms
    ///   (PUSERINFO) before the swap.
    /// - StepPay managed: StepPay's payment-method order for its subscription `pg_subscription`
    ///   (`PUT /api/v1/subscriptions/{id}/payment-method`, step-api-spec gateway/v1_product.json
    ///   `v1_changePaymentMethod`) and its pay page; StepPay keeps the card.
    /// - StepPay self: `Unsupported` — it issues a billing key only with a payment through its SDK.
    pub async fn prepare_card_change(
        &self,
        start: &CheckoutStart<'_>,
        pg_subscription: Option<&str>,
    ) -> Result<Prepared, PgError> {
        match self {
            Adapter::Payple(client) => match open_payple_window(client, WindowWork::Auth, start).await {
                Ok(p) => Ok(p),
                Err(PrepareError::Pg(e)) => Err(e),
                Err(PrepareError::PlanMismatch(why)) => Err(PgError::Invalid(why)),
            },
            Adapter::SteppayManaged(client) => {
                let id = pg_subscription.ok_or_else(|| PgError::Invalid("no StepPay subscription to change".into()))?;
                let order = client.change_payment_method(id).await?;
                let success = start.return_url.unwrap_or_default();
                let pay_url = client.pay_url(&order.order_code, success, start.error_url.unwrap_or(success))?;
                Ok(Prepared {
                    answer: json!({"order_code": order.order_code, "pay_url": pay_url.as_str()}),
                    reference: Some(order.order_code),
                    work: None,
                    payer_no: None,
                })
            }
            Adapter::SteppaySelf(_) => Err(PgError::Unsupported(
                "StepPay self issues a billing key only with a payment through its SDK: start a new checkout on the new card and cancel this subscription",
            )),
        }
    }
}

/// The Payple window's parameters for `work`, under a payer number only this checkout registers.
async fn open_payple_window(
    client: &crate::payple::PaypleClient,
    work: WindowWork,
    start: &CheckoutStart<'_>,
) -> Result<Prepared, PrepareError> {
    let payer = Payer {
        customer_id: start.customer.id.clone(),
        name: start.customer.name.clone(),
        phone: start.customer.phone.clone(),
        email: start.customer.email.clone(),
        payer_no: Some(payer_no(start.checkout_id)),
    };
    let return_url = start.return_url.unwrap_or_default();
    let params = client
        .window_params(
            work,
            start.checkout_id,
            start.plan_name,
            Some(start.amount),
            &payer,
            return_url,
            start.subscription_id.as_str(),
        )
        .await?;
    Ok(Prepared {
        answer: serde_json::to_value(&params).map_err(|e| PgError::Invalid(e.to_string()))?,
        reference: None,
        work: Some(work.as_str().to_string()),
        payer_no: payer.payer_no,
    })
}

/// StepPay managed: an order for the customer at StepPay's price, whose amount must be the plan's,
/// and the pay page's URL.
async fn create_steppay_order(
    client: &crate::steppay::SteppayClient,
    o: &SteppayOptions,
    start: &CheckoutStart<'_>,
) -> Result<Prepared, PrepareError> {
    let customer = start.pg_customer.ok_or_else(|| PgError::Invalid("no StepPay customer for the order".into()))?;
    let order = client.create_order(&customer.code, &o.product_code, &o.price_code).await?;
    // StepPay's price, a decimal (`19900.0`): read exactly; an unreadable one is a PG answer we do
    // not understand (502), never a check skipped.
    if let Some(left) = order.left_amount.as_deref() {
        let left = super::steppay::parse_amount(left, "leftAmount")?;
        if left != start.amount {
            return Err(PrepareError::PlanMismatch(format!(
                "StepPay's price {} is {left}, the plan says {}",
                o.price_code, start.amount
            )));
        }
    }
    let success = start.return_url.unwrap_or_default();
    let error = start.error_url.unwrap_or(success);
    let pay_url = client.pay_url(&order.order_code, success, error)?;
    Ok(Prepared {
        answer: json!({"order_code": order.order_code, "pay_url": pay_url.as_str()}),
        reference: Some(order.order_code),
        work: None,
        payer_no: None,
    })
}
