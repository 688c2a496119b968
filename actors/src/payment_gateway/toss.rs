//! Toss Payments, through its public API as Toss documents it (API version 2022-11-16):
//!
//! - charge: `POST /v1/billing/{billingKey}` with `customerKey`, `amount`, `orderId`,
//!   `orderName`; the buyer's card token is the billing key, the buyer's id the customer key and
//!   bazaar's order id the order number;
//! - look up: `GET /v1/payments/orders/{orderId}`, after a charge whose answer was lost, and
//!   `GET /v1/payments/{paymentKey}`, for the payment a webhook names;
//! - refund: `POST /v1/payments/{paymentKey}/cancel` with `cancelReason` and, for a partial
//!   refund, `cancelAmount`.
//!
//! Every call authenticates with HTTP Basic auth (the secret key as the user name, an empty
//! password) and every call that moves money carries an `Idempotency-Key`, the same on every
//! attempt of one charge or refund: Toss answers a repeated key with the first answer instead of
//! moving money again. Each request has a timeout; a charge that timed out, lost its connection
//! or got a 5xx is not declined blindly: the gateway asks Toss for the order's payment and
//! decides from what Toss recorded, and when Toss cannot tell yet the outcome is
//! [`GatewayError::UnknownOutcome`], asked again later with the same key. So is a 4xx that is not
//! one of Toss's card refusals ([`CARD_REFUSALS`]): only those decline without a look.
//!
//! Webhooks: Toss posts `PAYMENT_STATUS_CHANGED` (`{eventType, createdAt, data: Payment}`) to
//! `POST /payments/webhooks/toss`; [`TossGateway::notice`] takes only the order number and the
//! payment key from it, and the payment looks the charge up here before changing anything.

use super::{
    judge, ChargeRecord, ChargeRequest, ChargeState, Charged, GatewayError, GatewayFuture, GatewaySetupError,
    LookupRequest, Notice, NoticeError, PaymentGateway, RefundRequest,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tracing::{error, info, warn};

/// Toss's production address.
pub const DEFAULT_API_URL: &str = "https://api.tosspayments.com";

/// What the Toss gateway needs to start.
#[derive(Clone)]
pub struct TossSettings {
    /// Where Toss's API is (`https://api.tosspayments.com`; an emulator's address in tests).
    pub api_url: String,
    /// The secret key (`test_sk_...` or `live_sk_...`), read from the environment only.
    pub secret_key: Option<String>,
    /// How long one HTTP request to Toss may take, connection included.
    pub timeout: Duration,
}

impl std::fmt::Debug for TossSettings {
    // The secret key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TossSettings")
            .field("api_url", &self.api_url)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for TossSettings {
    fn default() -> Self {
        Self { api_url: DEFAULT_API_URL.to_owned(), secret_key: None, timeout: Duration::from_secs(2) }
    }
}

/// The gateway that charges through Toss Payments.
pub struct TossGateway {
    client: reqwest::Client,
    api_url: String,
    secret_key: String,
}

/// A payment's state at Toss (`status` of Toss's Payment object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum TossStatus {
    Ready,
    InProgress,
    WaitingForDeposit,
    Done,
    Canceled,
    PartialCanceled,
    Aborted,
    Expired,
    /// A status this code does not know (Toss may add some): never taken for a decision.
    #[serde(other)]
    Unrecognized,
}

/// The fields of Toss's Payment object this gateway reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossPayment {
    payment_key: String,
    order_id: String,
    status: TossStatus,
    total_amount: i64,
    /// What is left after cancels; absent in an answer means nothing was cancelled.
    #[serde(default)]
    balance_amount: Option<i64>,
    #[serde(default)]
    failure: Option<TossFailure>,
}

impl TossPayment {
    /// The payment as the gateway trait's typed record.
    fn record(&self) -> ChargeRecord {
        let state = match self.status {
            // Cancelled later still means it was charged: `refunded` says how much went back.
            TossStatus::Done | TossStatus::Canceled | TossStatus::PartialCanceled => ChargeState::Charged,
            TossStatus::Aborted | TossStatus::Expired => ChargeState::Declined(
                self.failure.as_ref().map_or("payment_aborted".to_owned(), |f| f.code.to_ascii_lowercase()),
            ),
            TossStatus::Ready | TossStatus::InProgress | TossStatus::WaitingForDeposit | TossStatus::Unrecognized => {
                ChargeState::Pending(format!("toss says the payment is {:?}", self.status))
            }
        };
        let refunded = match self.status {
            TossStatus::Canceled => self.total_amount,
            _ => self.balance_amount.map_or(0, |left| (self.total_amount - left).clamp(0, self.total_amount)),
        };
        ChargeRecord {
            reference: self.payment_key.clone(),
            order_id: self.order_id.clone(),
            amount: self.total_amount,
            refunded,
            state,
        }
    }
}

/// Toss's error object (`{"code", "message"}`), also a failed payment's `failure`.
#[derive(Debug, Clone, Deserialize)]
struct TossFailure {
    code: String,
    #[serde(default)]
    message: String,
}

/// What came back from one HTTP call.
enum Answer {
    /// 2xx with its JSON body.
    Success(Value),
    /// Toss's error object with its status.
    Refused { status: u16, failure: TossFailure },
}

/// Why one HTTP call got no answer.
enum CallFailure {
    /// The connection was never made: Toss received nothing.
    NotSent(String),
    /// Sent (or maybe sent), then the answer never came: timed out, or the connection broke.
    Lost(String),
}

/// Toss's error codes that mean "your earlier request with this key or order number is (being)
/// processed": the truth is in the order's payment, not in this answer.
const ALREADY_TAKEN: &[&str] = &["ALREADY_PROCESSED_PAYMENT", "DUPLICATED_ORDER_ID", "IDEMPOTENT_REQUEST_PROCESSING"];

/// Toss's error codes of a failure on Toss's side, after which a charge may or may not exist.
const TOSS_SIDE: &[&str] = &[
    "PROVIDER_ERROR",
    "FAILED_INTERNAL_SYSTEM_PROCESSING",
    "FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING",
    "UNKNOWN_PAYMENT_ERROR",
];

/// Toss's error codes that mean the card (or the billing key) was refused for good: the only 4xx
/// answers that decline without asking Toss what it recorded. Any other 4xx (an `HTTP_*` code
/// made up for a proxy's page, a code this list does not know) is looked up first, since a
/// charge may stand behind it.
const CARD_REFUSALS: &[&str] = &[
    "REJECT_CARD_PAYMENT",
    "REJECT_CARD_COMPANY",
    "INVALID_REJECT_CARD",
    "INVALID_CARD_NUMBER",
    "INVALID_CARD_EXPIRATION",
    "INVALID_STOPPED_CARD",
    "INVALID_CARD_LOST_OR_STOLEN",
    "INVALID_CARD_INFO_RE_REGISTER",
    "INVALID_PASSWORD",
    "INVALID_CARD_INSTALLMENT_PLAN",
    "NOT_SUPPORTED_INSTALLMENT_PLAN_CARD_OR_MERCHANT",
    "NOT_SUPPORTED_MONTHLY_INSTALLMENT_PLAN",
    "EXCEED_MAX_DAILY_PAYMENT_COUNT",
    "EXCEED_MAX_PAYMENT_AMOUNT",
    "EXCEED_MAX_AMOUNT",
    "EXCEED_MAX_AUTH_COUNT",
    "BELOW_MINIMUM_AMOUNT",
    "NOT_AVAILABLE_PAYMENT",
    "NOT_REGISTERED_CARD_COMPANY",
    "NOT_MATCHES_CUSTOMER_KEY",
    "INVALID_BILL_KEY_REQUEST",
];

/// Toss's error codes that mean this node is misconfigured or throttled, not the card refused.
const OUR_SIDE: &[&str] = &["UNAUTHORIZED_KEY", "INVALID_API_KEY", "FORBIDDEN_REQUEST", "TOO_MANY_REQUESTS"];

impl TossGateway {
    /// Builds the gateway; refuses to without a secret key or with an address that is not
    /// `http(s)://`.
    pub fn new(settings: &TossSettings) -> Result<Self, GatewaySetupError> {
        let invalid = |why: &str| GatewaySetupError::Invalid("toss", why.to_owned());
        let secret_key = settings
            .secret_key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("needs its secret key in BAZAAR_TOSS_SECRET_KEY"))?;
        let api_url = settings.api_url.trim_end_matches('/').to_owned();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(invalid("toss_api_url must start with https:// (or http:// for a local emulator)"));
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| invalid(&format!("building the HTTP client: {e}")))?;
        Ok(Self { client, api_url, secret_key })
    }

    /// Sends one request to Toss and reads its JSON answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> Result<Answer, CallFailure> {
        let mut request =
            self.client.request(method, format!("{}{path}", self.api_url)).basic_auth(&self.secret_key, None::<&str>);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        // reqwest's errors name the URL, and a charge's URL holds the buyer's billing key: strip
        // it, since these reasons are logged. (They never hold the Authorization header.)
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                CallFailure::NotSent(e.without_url().to_string())
            } else {
                CallFailure::Lost(e.without_url().to_string())
            }
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| CallFailure::Lost(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            let value = serde_json::from_slice(&body)
                .map_err(|e| CallFailure::Lost(format!("unreadable answer with status {status}: {e}")))?;
            return Ok(Answer::Success(value));
        }
        // An error without Toss's error object (a proxy's page): keep the status, make up a code.
        let failure = serde_json::from_slice(&body)
            .unwrap_or_else(|_| TossFailure { code: format!("HTTP_{status}"), message: String::new() });
        Ok(Answer::Refused { status, failure })
    }

    /// Asks Toss what it recorded for the order, after a charge whose answer is not to be trusted
    /// or never came.
    async fn reconcile(&self, request: &ChargeRequest<'_>, why: &str) -> Result<Charged, GatewayError> {
        warn!(order_id = request.order_id, %why, "toss charge answer unusable; asking toss for the order's payment");
        match self.lookup_order(request.order_id).await {
            Ok(Some(payment)) => decide(&payment, request),
            Ok(None) => Err(GatewayError::UnknownOutcome(format!("{why}; toss has no payment for the order yet"))),
            Err(e) => Err(GatewayError::UnknownOutcome(format!("{why}; then the lookup failed: {e}"))),
        }
    }

    /// After a 4xx that is not a card refusal: Toss answered, so with no payment recorded for the
    /// order nothing was charged and the refusal stands; with one, the payment decides.
    async fn reconcile_refusal(
        &self,
        request: &ChargeRequest<'_>,
        status: u16,
        code: &str,
    ) -> Result<Charged, GatewayError> {
        warn!(
            order_id = request.order_id,
            status, code, "toss refused the charge with no card reason; asking toss for the order's payment"
        );
        match self.lookup_order(request.order_id).await {
            Ok(Some(payment)) => decide(&payment, request),
            Ok(None) => Err(GatewayError::Declined(code.to_ascii_lowercase())),
            Err(e) => {
                Err(GatewayError::UnknownOutcome(format!("toss answered {status} {code}; then the lookup failed: {e}")))
            }
        }
    }

    /// The order's payment at Toss; `None` when Toss has none.
    async fn lookup_order(&self, order_id: &str) -> Result<Option<TossPayment>, String> {
        self.lookup_path(&format!("/v1/payments/orders/{}", path_segment(order_id))).await
    }

    /// A payment at Toss, by the path that names it; `None` on 404.
    async fn lookup_path(&self, path: &str) -> Result<Option<TossPayment>, String> {
        match self.call(reqwest::Method::GET, path, None, None).await {
            Ok(Answer::Success(value)) => {
                serde_json::from_value(value).map(Some).map_err(|e| format!("unreadable payment: {e}"))
            }
            Ok(Answer::Refused { status: 404, .. }) => Ok(None),
            Ok(Answer::Refused { status, failure }) => Err(format!("{status} {}", failure.code)),
            Err(CallFailure::NotSent(e) | CallFailure::Lost(e)) => Err(e),
        }
    }
}

/// Decides a charge from the payment Toss recorded for its order.
fn decide(payment: &TossPayment, request: &ChargeRequest<'_>) -> Result<Charged, GatewayError> {
    let decided = judge(&payment.record(), request.order_id, request.amount);
    if let Err(GatewayError::Mismatch(why)) = &decided {
        // Not this charge: never approved on, and asking again cannot change what Toss recorded.
        error!(order_id = request.order_id, toss_amount = payment.total_amount, %why, "toss payment does not match the charge");
    }
    decided
}

/// The fields of Toss's webhook body this gateway reads (`PAYMENT_STATUS_CHANGED`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossWebhook {
    event_type: String,
    data: TossWebhookData,
}

/// The webhook's payment: only its ids are read; its status is Toss's claim, looked up again.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossWebhookData {
    order_id: String,
    #[serde(default)]
    payment_key: Option<String>,
}

/// Toss's limits on an order number (6 to 64 characters of letters, digits, `-` and `_`) and on a
/// payment key (200 characters): anything else is not Toss's.
fn plain_id(raw: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Percent-encodes one path segment (billing keys and order numbers are plain, but a token is
/// the buyer's input).
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl PaymentGateway for TossGateway {
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> GatewayFuture<'a, Result<Charged, GatewayError>> {
        Box::pin(async move {
            // Toss's billing-key payments are in won; nothing else is sent to it.
            if request.currency != "KRW" {
                return Err(GatewayError::Declined("unsupported_currency".into()));
            }
            let body = json!({
                "customerKey": request.customer,
                "amount": request.amount,
                "orderId": request.order_id,
                "orderName": format!("bazaar order {}", request.order_id),
            });
            let path = format!("/v1/billing/{}", path_segment(request.token));
            let answer = self.call(reqwest::Method::POST, &path, Some(request.idempotency_key), Some(body)).await;
            match answer {
                Ok(Answer::Success(value)) => match serde_json::from_value::<TossPayment>(value) {
                    Ok(payment) => {
                        let decided = decide(&payment, &request);
                        info!(order_id = request.order_id, status = ?payment.status, "toss answered the charge");
                        decided
                    }
                    Err(e) => self.reconcile(&request, &format!("unreadable payment: {e}")).await,
                },
                Ok(Answer::Refused { status, failure }) => {
                    let code = failure.code.as_str();
                    if ALREADY_TAKEN.contains(&code) || TOSS_SIDE.contains(&code) || status >= 500 {
                        self.reconcile(&request, &format!("toss answered {status} {code}")).await
                    } else if OUR_SIDE.contains(&code) || status == 401 || status == 429 {
                        error!(status, code, message = %failure.message, "toss refused this node's request");
                        Err(GatewayError::Unavailable(format!("toss answered {status} {code}")))
                    } else if CARD_REFUSALS.contains(&code) {
                        Err(GatewayError::Declined(code.to_ascii_lowercase()))
                    } else {
                        self.reconcile_refusal(&request, status, code).await
                    }
                }
                Err(CallFailure::NotSent(e)) => Err(GatewayError::Unavailable(e)),
                Err(CallFailure::Lost(e)) => self.reconcile(&request, &e).await,
            }
        })
    }

    fn refund<'a>(&'a self, request: RefundRequest<'a>) -> GatewayFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            // The cancel needs Toss's payment key, which the lookup by order number gives; it also
            // tells whether an earlier attempt already gave everything back.
            let payment = match self.lookup_order(request.order_id).await {
                Ok(Some(payment)) => payment,
                Ok(None) => return Err(GatewayError::Unavailable("toss has no payment for the order".into())),
                Err(e) => return Err(GatewayError::Unavailable(e)),
            };
            match payment.status {
                TossStatus::Canceled => return Ok(()),
                TossStatus::Done | TossStatus::PartialCanceled => {}
                // Never charged: there is nothing to give back, now or later.
                TossStatus::Aborted | TossStatus::Expired => {
                    return Err(GatewayError::Declined(format!("toss_payment_{:?}", payment.status).to_lowercase()))
                }
                // Still moving: asked again later, it may be charged (then refundable) or not.
                TossStatus::Ready
                | TossStatus::InProgress
                | TossStatus::WaitingForDeposit
                | TossStatus::Unrecognized => {
                    return Err(GatewayError::UnknownOutcome(format!(
                        "toss says the payment is {:?}: nothing to refund yet",
                        payment.status
                    )))
                }
            }
            let mut body = json!({ "cancelReason": request.reason });
            if let Some(amount) = request.amount {
                body["cancelAmount"] = amount.into();
            }
            let path = format!("/v1/payments/{}/cancel", path_segment(&payment.payment_key));
            match self.call(reqwest::Method::POST, &path, Some(request.idempotency_key), Some(body)).await {
                Ok(Answer::Success(_)) => Ok(()),
                Ok(Answer::Refused { failure, .. }) if failure.code == "ALREADY_CANCELED_PAYMENT" => Ok(()),
                // A refusal about this refund (an amount Toss no longer has, a payment it will not
                // cancel) is final: asking again gets the same answer, so it must not hold the
                // payment's saga lane forever. Bad credentials (401) and rate limits (429) are
                // this node's state, not the refund's, and are asked again.
                Ok(Answer::Refused { status, failure }) if refund_refusal_is_final(status) => {
                    error!(payment_id = request.payment_id, status, code = %failure.code, "toss refused the refund for good");
                    Err(GatewayError::Declined(failure.code.to_lowercase()))
                }
                Ok(Answer::Refused { status, failure }) => {
                    error!(payment_id = request.payment_id, status, code = %failure.code, "toss refused the refund");
                    Err(GatewayError::Unavailable(format!("toss answered {status} {}", failure.code)))
                }
                Err(CallFailure::NotSent(e)) => Err(GatewayError::Unavailable(e)),
                // Asked again with the same key, Toss answers with this attempt's result.
                Err(CallFailure::Lost(e)) => Err(GatewayError::UnknownOutcome(e)),
            }
        })
    }

    fn lookup<'a>(
        &'a self,
        request: LookupRequest<'a>,
    ) -> GatewayFuture<'a, Result<Option<ChargeRecord>, GatewayError>> {
        Box::pin(async move {
            let found = match request.reference {
                Some(key) => self.lookup_path(&format!("/v1/payments/{}", path_segment(key))).await,
                None => self.lookup_order(request.order_id).await,
            };
            found.map(|payment| payment.map(|p| p.record())).map_err(GatewayError::Unavailable)
        })
    }

    fn notice(&self, body: &[u8]) -> Result<Notice, NoticeError> {
        let webhook: TossWebhook = serde_json::from_slice(body)
            .map_err(|e| NoticeError::Malformed(format!("not a Toss webhook (eventType, data.orderId): {e}")))?;
        if webhook.event_type != "PAYMENT_STATUS_CHANGED" {
            return Err(NoticeError::Ignored(format!("event type {:?} needs nothing done", webhook.event_type)));
        }
        let data = webhook.data;
        if !plain_id(&data.order_id, 6, 64) {
            return Err(NoticeError::Malformed("data.orderId: not an order number".into()));
        }
        if data.payment_key.as_deref().is_some_and(|key| !plain_id(key, 1, 200)) {
            return Err(NoticeError::Malformed("data.paymentKey: not a payment key".into()));
        }
        Ok(Notice { order_id: data.order_id, reference: data.payment_key })
    }

    fn name(&self) -> &'static str {
        "toss"
    }
}

/// Whether Toss's refusal of a cancel is about the cancel itself (its amount, the payment's
/// state): Toss answers those with 400, 403, 404 or 409. A 401 (the node's key), 408 or 429 (too
/// many requests) says nothing about the refund and is asked again.
fn refund_refusal_is_final(status: u16) -> bool {
    matches!(status, 400 | 403 | 404 | 409 | 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(status: TossStatus, amount: i64) -> TossPayment {
        TossPayment {
            payment_key: "pk1".into(),
            order_id: "order-1".into(),
            status,
            total_amount: amount,
            balance_amount: None,
            failure: None,
        }
    }

    fn request() -> ChargeRequest<'static> {
        ChargeRequest {
            payment_id: "pay-1",
            order_id: "order-1",
            customer: "buyer-1",
            token: "bk",
            amount: 5_000,
            currency: "KRW",
            idempotency_key: "charge-pay-1",
        }
    }

    #[test]
    fn only_a_charge_toss_recorded_for_this_order_and_amount_is_approved() {
        assert!(decide(&payment(TossStatus::Done, 5_000), &request()).is_ok());
        assert!(decide(&payment(TossStatus::PartialCanceled, 5_000), &request()).is_ok());
        // Another amount is final: asking again cannot change what Toss recorded.
        assert!(matches!(decide(&payment(TossStatus::Done, 4_000), &request()), Err(GatewayError::Mismatch(_))));
        assert!(matches!(
            decide(&payment(TossStatus::InProgress, 5_000), &request()),
            Err(GatewayError::UnknownOutcome(_))
        ));
        let aborted = TossPayment {
            failure: Some(TossFailure { code: "REJECT_CARD_PAYMENT".into(), message: String::new() }),
            ..payment(TossStatus::Aborted, 5_000)
        };
        assert_eq!(decide(&aborted, &request()), Err(GatewayError::Declined("reject_card_payment".into())));
    }

    #[test]
    fn an_unknown_status_is_read_but_never_decided_on() {
        let parsed: TossPayment = serde_json::from_value(json!({
            "paymentKey": "pk1", "orderId": "order-1", "status": "SOMETHING_NEW", "totalAmount": 5000
        }))
        .unwrap();
        assert_eq!(parsed.status, TossStatus::Unrecognized);
        assert!(matches!(decide(&parsed, &request()), Err(GatewayError::UnknownOutcome(_))));
    }

    #[test]
    fn a_partly_cancelled_payment_reports_what_went_back() {
        let partly = TossPayment { balance_amount: Some(3_000), ..payment(TossStatus::PartialCanceled, 5_000) };
        assert_eq!((partly.record().refunded, partly.record().state), (2_000, ChargeState::Charged));
        assert_eq!(payment(TossStatus::Canceled, 5_000).record().refunded, 5_000);
        assert_eq!(payment(TossStatus::Done, 5_000).record().refunded, 0);
    }

    #[test]
    fn a_webhook_yields_only_its_ids_and_refuses_what_is_not_tosss() {
        let gateway =
            TossGateway::new(&TossSettings { secret_key: Some("test_sk_x".into()), ..TossSettings::default() })
                .unwrap();
        let body = json!({"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2022-01-01T00:00:00.000000",
            "data": {"paymentKey": "pk_1", "orderId": "order-123", "status": "DONE", "totalAmount": 1}});
        let notice = gateway.notice(body.to_string().as_bytes()).unwrap();
        assert_eq!(notice, Notice { order_id: "order-123".into(), reference: Some("pk_1".into()) });
        assert!(matches!(gateway.notice(b"{"), Err(NoticeError::Malformed(_))));
        assert!(matches!(
            gateway.notice(br#"{"eventType":"PAYMENT_STATUS_CHANGED","data":{}}"#),
            Err(NoticeError::Malformed(_))
        ));
        let bad_id = json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": {"orderId": "../../x"}});
        assert!(matches!(gateway.notice(bad_id.to_string().as_bytes()), Err(NoticeError::Malformed(_))));
        let other = json!({"eventType": "DEPOSIT_CALLBACK", "data": {"orderId": "order-123"}});
        assert!(matches!(gateway.notice(other.to_string().as_bytes()), Err(NoticeError::Ignored(_))));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("bk_1-a.b~"), "bk_1-a.b~");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn the_gateway_refuses_to_start_without_a_secret_key_and_never_prints_it() {
        assert!(TossGateway::new(&TossSettings::default()).is_err());
        let settings = TossSettings { secret_key: Some("test_sk_secret".into()), ..TossSettings::default() };
        assert!(!format!("{settings:?}").contains("test_sk_secret"));
        assert!(TossGateway::new(&settings).is_ok());
    }
}
