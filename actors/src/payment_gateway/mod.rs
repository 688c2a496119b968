//! Where payments are charged: the [`PaymentGateway`] trait, the gateways that implement it, and
//! [`build`], the one place that maps the `gateway` setting to one of them.
//!
//! A charge carries what a real payment provider needs ([`ChargeRequest`]: amount and currency,
//! order id, customer, card token and an idempotency key) and fails with a [`GatewayError`] that
//! says what the caller may do next: a decline is final, an unavailable gateway did not take the
//! charge, an unknown outcome may have moved money and must be asked again with the same key.
//!
//! - [`simulated`]: answers by card token from a ledger in the database (development, tests).
//! - [`toss`]: Toss Payments' billing-key API over HTTPS.
//!
//! A gateway also answers what it recorded for an order ([`PaymentGateway::lookup`], a typed
//! [`ChargeRecord`]): the payment asks it after a charge it stopped waiting for
//! ([`PaymentGateway::settle_abandoned`]) and when the provider notifies a change
//! ([`PaymentGateway::notice`], `POST /payments/webhooks/{name}`), never trusting the notice
//! itself. [`judge`] is the one rule that turns a record into a charge's outcome.
//!
//! Adding a gateway: a file here implementing the trait, and an arm in [`build`] for its name.

mod simulated;
mod toss;

pub use simulated::SimulatedGateway;
pub use toss::{TossGateway, TossSettings, DEFAULT_API_URL as DEFAULT_TOSS_API_URL};

use crate::store::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so the gateway can live behind `dyn`.
pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One charge, as a payment provider needs it.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRequest<'a> {
    /// bazaar's payment id (the simulated ledger's key).
    pub payment_id: &'a str,
    /// bazaar's order id: the provider's order number, by which a charge is looked up after a
    /// lost answer (one payment per order: a declined payment cancels its order).
    pub order_id: &'a str,
    /// Who pays: the buyer's id (Toss's `customerKey`).
    pub customer: &'a str,
    /// The card to charge: the token the buyer gave (Toss's billing key).
    pub token: &'a str,
    /// The amount, in the currency's smallest unit.
    pub amount: i64,
    /// Three upper-case letters, like `KRW`.
    pub currency: &'a str,
    /// Sent with every attempt of this charge, so a repeated request never charges twice.
    pub idempotency_key: &'a str,
}

/// Giving money back for a charged payment.
#[derive(Debug, Clone, Copy)]
pub struct RefundRequest<'a> {
    /// bazaar's payment id.
    pub payment_id: &'a str,
    /// bazaar's order id, by which the provider finds the charge.
    pub order_id: &'a str,
    /// How much to give back; `None`: all that is left.
    pub amount: Option<i64>,
    /// Why, as the provider records it.
    pub reason: &'a str,
    /// Sent with every attempt of this refund.
    pub idempotency_key: &'a str,
}

/// The provider's reference of an approved charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// The provider's id of the payment (Toss's `paymentKey`), for the logs.
    pub reference: String,
}

/// What to look up at the provider: the order's charge, or the charge a notification named.
#[derive(Debug, Clone, Copy)]
pub struct LookupRequest<'a> {
    /// bazaar's payment id (the simulated ledger's key).
    pub payment_id: &'a str,
    /// bazaar's order id: the provider's order number.
    pub order_id: &'a str,
    /// The provider's id of the charge, when a notification named one (Toss's `paymentKey`);
    /// the record found by it is only believed if it is for `order_id`.
    pub reference: Option<&'a str>,
}

/// Where a charge is at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeState {
    /// The money moved (some or all of it may have been given back since: see `refunded`).
    Charged,
    /// Refused for good, with the reason to show.
    Declined(String),
    /// Still being decided, or in a state this code does not know: never decided on.
    Pending(String),
}

/// A charge as the provider recorded it: the only thing a decision is taken on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    /// The provider's id of the charge.
    pub reference: String,
    /// The order number it was charged under.
    pub order_id: String,
    /// What was charged.
    pub amount: i64,
    /// What has been given back of it.
    pub refunded: i64,
    /// Where it is.
    pub state: ChargeState,
}

/// Decides a charge from what the provider recorded: approved only when the record is this
/// order's and of this amount.
pub fn judge(record: &ChargeRecord, order_id: &str, amount: i64) -> Result<Charged, GatewayError> {
    if record.order_id != order_id || record.amount != amount {
        return Err(GatewayError::Mismatch(format!(
            "the provider's charge {} is for order {} and {} units, not order {order_id} and {amount}",
            record.reference, record.order_id, record.amount
        )));
    }
    match &record.state {
        ChargeState::Charged => Ok(Charged { reference: record.reference.clone() }),
        ChargeState::Declined(reason) => Err(GatewayError::Declined(reason.clone())),
        ChargeState::Pending(why) => Err(GatewayError::UnknownOutcome(why.clone())),
    }
}

/// What a provider's notification names, once parsed (nothing in it is believed but the ids to
/// look up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// bazaar's order id, as the provider's order number.
    pub order_id: String,
    /// The provider's id of the charge, if the notice carries one.
    pub reference: Option<String>,
}

/// Why a notification was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// This gateway takes no notifications (the route answers 404).
    #[error("this gateway takes no notifications")]
    NotAccepted,
    /// Not the provider's format: the reason names the field (the route answers 400).
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but of a kind that needs nothing done (the route answers 200).
    #[error("ignored: {0}")]
    Ignored(String),
}

/// Why a gateway call did not succeed; each variant tells the caller what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The provider refused, for good: the reason is shown to the buyer (`card_declined`).
    #[error("declined: {0}")]
    Declined(String),
    /// The provider could not be asked, or said it took nothing: nothing moved; ask later.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The request may have moved money and the provider could not yet tell: ask again later
    /// with the same idempotency key, never with a new one.
    #[error("outcome unknown: {0}")]
    UnknownOutcome(String),
    /// The provider recorded a charge for the order that is not this charge (another amount):
    /// final, never approved on and never asked again (asking again cannot change the record).
    #[error("charge mismatch: {0}")]
    Mismatch(String),
}

/// A payment provider. Both calls must be idempotent by their idempotency key.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges the request's card. May never answer (the caller bounds it with a timeout).
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> GatewayFuture<'a, Result<Charged, GatewayError>>;

    /// Gives back (part of) what a payment charged.
    fn refund<'a>(&'a self, request: RefundRequest<'a>) -> GatewayFuture<'a, Result<(), GatewayError>>;

    /// What the provider recorded for the order's charge; `None` when it has none.
    fn lookup<'a>(
        &'a self,
        request: LookupRequest<'a>,
    ) -> GatewayFuture<'a, Result<Option<ChargeRecord>, GatewayError>>;

    /// The outcome of a charge whose caller stopped waiting for it (the payment's
    /// `gateway_timeout`): what the provider recorded, or [`GatewayError::UnknownOutcome`] (ask
    /// again with the same key) when it recorded nothing yet, since the abandoned request may
    /// still be charging. A gateway whose abandoned charge cannot move money says so instead.
    fn settle_abandoned<'a>(&'a self, request: ChargeRequest<'a>) -> GatewayFuture<'a, Result<Charged, GatewayError>> {
        Box::pin(async move {
            let lookup = LookupRequest { payment_id: request.payment_id, order_id: request.order_id, reference: None };
            match self.lookup(lookup).await? {
                Some(record) => judge(&record, request.order_id, request.amount),
                None => Err(GatewayError::UnknownOutcome("the provider has no charge for the order yet".into())),
            }
        })
    }

    /// Parses a notification the provider posted to `POST /payments/webhooks/{name}`.
    fn notice(&self, body: &[u8]) -> Result<Notice, NoticeError> {
        let _ = body;
        Err(NoticeError::NotAccepted)
    }

    /// The gateway's name, as the `gateway` setting and the webhook route spell it.
    fn name(&self) -> &'static str;
}

/// The `gateway` setting and what each gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The gateway's name: one of [`KINDS`].
    pub kind: String,
    /// Toss Payments' address, key and timeouts (read when `kind` is `toss`).
    pub toss: TossSettings,
}

/// The names the `gateway` setting accepts.
pub const KINDS: &[&str] = &["simulated", "toss"];

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewaySetupError {
    #[error("gateway: one of {KINDS:?}, got {0:?}")]
    UnknownKind(String),
    #[error("gateway {0}: {1}")]
    Invalid(&'static str, String),
}

/// Builds the gateway the settings name; `ledger` is the simulated gateway's database.
pub fn build(settings: &GatewaySettings, ledger: Store) -> Result<Arc<dyn PaymentGateway>, GatewaySetupError> {
    match settings.kind.as_str() {
        "simulated" => Ok(Arc::new(SimulatedGateway::new(ledger))),
        "toss" => Ok(Arc::new(TossGateway::new(&settings.toss)?)),
        other => Err(GatewaySetupError::UnknownKind(other.to_owned())),
    }
}
