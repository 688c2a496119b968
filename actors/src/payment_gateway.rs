//! Where payments are charged. The gateway is pluggable behind [`PaymentGateway`]; the built-in
//! [`SimulatedGateway`] answers by card token and keeps a ledger keyed by payment id, so asking it
//! twice about one payment (after a crash, a redelivery) never charges twice.

use crate::store::{payments, Store, StoreError};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the gateway can live behind `dyn`.
pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the gateway decided about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money moved.
    Approved,
    /// The card was refused, with the reason to show.
    Declined(String),
}

/// Why the gateway could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Its ledger (or the network to it) failed.
    #[error("gateway unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

/// A payment provider. Both calls must be idempotent by payment id.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `amount` to the card behind `token` for `payment_id`. May never answer (the caller
    /// bounds it with a timeout).
    fn charge<'a>(
        &'a self,
        payment_id: &'a str,
        token: &'a str,
        amount: i64,
    ) -> GatewayFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// Gives back what `payment_id` charged.
    fn refund<'a>(&'a self, payment_id: &'a str) -> GatewayFuture<'a, Result<(), GatewayError>>;
}

/// The built-in gateway: approves every token except `tok_decline` (declined, `card_declined`),
/// `tok_timeout` (never answers) and `tok_slow` (approves after about a second).
pub struct SimulatedGateway {
    ledger: Store,
}

impl SimulatedGateway {
    /// Builds the gateway over its ledger.
    pub fn new(ledger: Store) -> Self {
        Self { ledger }
    }
}

fn outcome_from_ledger(outcome: &str) -> ChargeOutcome {
    match outcome {
        "approved" => ChargeOutcome::Approved,
        reason => ChargeOutcome::Declined(reason.to_owned()),
    }
}

impl PaymentGateway for SimulatedGateway {
    fn charge<'a>(
        &'a self,
        payment_id: &'a str,
        token: &'a str,
        amount: i64,
    ) -> GatewayFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            if let Some(earlier) = payments::find_charge(&self.ledger, payment_id).await? {
                return Ok(outcome_from_ledger(&earlier));
            }
            let decided = match token {
                "tok_decline" => "card_declined",
                "tok_timeout" => std::future::pending().await,
                "tok_slow" => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "approved"
                }
                _ => "approved",
            };
            let first = payments::record_charge(&self.ledger, payment_id, amount, decided, chrono::Utc::now()).await?;
            Ok(outcome_from_ledger(&first))
        })
    }

    fn refund<'a>(&'a self, payment_id: &'a str) -> GatewayFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move { Ok(payments::refund_charge(&self.ledger, payment_id).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;

    #[tokio::test]
    async fn tokens_decide_the_outcome_and_repeats_are_answered_from_the_ledger() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        assert_eq!(gateway.charge("p1", "tok_ok", 5).await.unwrap(), ChargeOutcome::Approved);
        assert_eq!(
            gateway.charge("p2", "tok_decline", 5).await.unwrap(),
            ChargeOutcome::Declined("card_declined".into())
        );
        // Same payment id, other token: the first answer stands.
        assert_eq!(gateway.charge("p1", "tok_decline", 5).await.unwrap(), ChargeOutcome::Approved);
    }

    #[tokio::test]
    async fn the_timeout_token_never_answers() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        let answer = tokio::time::timeout(Duration::from_millis(200), gateway.charge("p3", "tok_timeout", 5)).await;
        assert!(answer.is_err());
    }
}
