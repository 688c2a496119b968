//! The built-in simulated gateway: it answers by card token and keeps a ledger keyed by payment
//! id, so asking it twice about one payment (after a crash, a redelivery) never charges twice.

use super::{ChargeRequest, Charged, GatewayError, GatewayFuture, PaymentGateway, RefundRequest};
use crate::store::{payments, Store, StoreError};
use std::time::Duration;

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

fn outcome_from_ledger(payment_id: &str, outcome: &str) -> Result<Charged, GatewayError> {
    match outcome {
        "approved" => Ok(Charged { reference: payment_id.to_owned() }),
        reason => Err(GatewayError::Declined(reason.to_owned())),
    }
}

fn unavailable(e: StoreError) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

impl PaymentGateway for SimulatedGateway {
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> GatewayFuture<'a, Result<Charged, GatewayError>> {
        Box::pin(async move {
            let payment_id = request.payment_id;
            if let Some(earlier) = payments::find_charge(&self.ledger, payment_id).await.map_err(unavailable)? {
                return outcome_from_ledger(payment_id, &earlier);
            }
            let decided = match request.token {
                "tok_decline" => "card_declined",
                "tok_timeout" => std::future::pending().await,
                "tok_slow" => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "approved"
                }
                _ => "approved",
            };
            let first = payments::record_charge(&self.ledger, payment_id, request.amount, decided, chrono::Utc::now())
                .await
                .map_err(unavailable)?;
            outcome_from_ledger(payment_id, &first)
        })
    }

    // The ledger counts refund requests per payment (the evidence the tests read); it keeps no
    // amounts, so a partial refund is recorded as a request like a full one.
    fn refund<'a>(&'a self, request: RefundRequest<'a>) -> GatewayFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move { payments::refund_charge(&self.ledger, request.payment_id).await.map_err(unavailable) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;

    fn request<'a>(payment_id: &'a str, token: &'a str) -> ChargeRequest<'a> {
        ChargeRequest {
            payment_id,
            order_id: "order-1",
            customer: "buyer-1",
            token,
            amount: 5,
            currency: "KRW",
            idempotency_key: payment_id,
        }
    }

    #[tokio::test]
    async fn tokens_decide_the_outcome_and_repeats_are_answered_from_the_ledger() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        assert!(gateway.charge(request("p1", "tok_ok")).await.is_ok());
        assert_eq!(
            gateway.charge(request("p2", "tok_decline")).await,
            Err(GatewayError::Declined("card_declined".into()))
        );
        // Same payment id, other token: the first answer stands.
        assert!(gateway.charge(request("p1", "tok_decline")).await.is_ok());
    }

    #[tokio::test]
    async fn the_timeout_token_never_answers() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        let answer =
            tokio::time::timeout(Duration::from_millis(200), gateway.charge(request("p3", "tok_timeout"))).await;
        assert!(answer.is_err());
    }
}
